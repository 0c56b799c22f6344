"""The report streams (issue 31, item 3): it never reads every reply's facts or every score into memory.

A million-reply report held 3.8 GB of per-reply frames (``RunStore.replies_df`` and ``scores_df``).
Now its tables and figures come from SQL aggregates and bounded reads (:mod:`audit.report.facts`).
The checks: the golden run's report is re-rendered with every whole-run reader of the store made to
fail, and still equals the golden files (results.json and every table, ``tables/replies.csv``
included); a "large" run (the sample limit lowered) draws its distribution figure from a bounded
sample that says so, and its refusal chart from counts that equal the per-reply counts.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from audit.report import facts as facts_module
from audit.report import render
from audit.report.data import collect
from audit.report.figures import distributions, refusals
from audit.store import RunStore
from synthetic_store import fill_store
from test_golden_run import GOLDEN, _clean, _csv_rows, _same, golden_run  # noqa: F401 - golden_run is a fixture


def _forbid_whole_run_reads(monkeypatch) -> list[str]:
    """Make every store method that reads all of a run's reply rows or scores raise; return the calls."""
    calls: list[str] = []
    original = RunStore.replies_df

    def replies_df(self, purpose="reply", *args, **kwargs):
        if purpose == "reply":
            calls.append("replies_df")
            raise AssertionError("the report read every reply (RunStore.replies_df)")
        return original(self, purpose, *args, **kwargs)  # probe requests: one per variant

    def refuse(name):
        def method(self, *args, **kwargs):
            calls.append(name)
            raise AssertionError(f"the report read every reply (RunStore.{name})")
        return method

    monkeypatch.setattr(RunStore, "replies_df", replies_df)
    for name in ("scores_df", "reply_units_df", "score_cells", "score_matrix"):
        monkeypatch.setattr(RunStore, name, refuse(name))
    return calls


def test_the_golden_report_is_unchanged_without_reading_every_reply(golden_run, monkeypatch):
    calls = _forbid_whole_run_reads(monkeypatch)
    render(golden_run, replies_table=True)
    assert calls == []
    root = str(golden_run.parent)
    got = _clean(json.loads((golden_run / "results.json").read_text(encoding="utf-8")), root)
    _same(got, json.loads((GOLDEN / "results.json").read_text(encoding="utf-8")), "results.json")
    names = sorted(p.name for p in (golden_run / "tables").glob("*.csv"))
    assert names == sorted(p.name for p in (GOLDEN / "tables").glob("*.csv")) and "replies.csv" in names
    for name in names:
        got_rows = _csv_rows((golden_run / "tables" / name).read_text(encoding="utf-8"), root)
        want = _csv_rows((GOLDEN / "tables" / name).read_text(encoding="utf-8"), root)
        assert len(got_rows) == len(want), name
        for i, (row, gold) in enumerate(zip(got_rows, want)):
            _same(row, gold, f"{name}[{i}]", name[:-4], row)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return fill_store(tmp_path_factory.mktemp("streams") / "run")


def test_a_large_run_draws_its_figures_from_a_sample_and_from_counts(synthetic, monkeypatch):
    """With the sample limit below the run's size (as at a million replies): the distribution figure
    reads at most that many replies and says so in its caption; the refusal chart is drawn from SQL
    counts whose totals equal the per-reply ones (content-filtered replies counted as refusals)."""
    with RunStore(synthetic, create=False) as st:  # the per-reply truth, read here by the test only
        r = st.replies_df("reply", texts=False)
        sc = st.scores_df()
    answered = r[r["status"].isin(["ok", "content_filter"])]
    ref = sc[sc["measure"] == "refusal"].set_index("request_key")["value"]
    val = answered["request_key"].map(ref).where(answered["status"] != "content_filter", 1.0).dropna()
    n_ok = int((r["status"] == "ok").sum())
    limit = 10
    assert n_ok > limit
    monkeypatch.setattr(facts_module, "SAMPLE_REPLIES", limit)
    monkeypatch.setattr("audit.report.data.SAMPLE_REPLIES", limit)
    monkeypatch.setattr("audit.report.figures.SAMPLE_REPLIES", limit)
    calls = _forbid_whole_run_reads(monkeypatch)
    data = collect(synthetic)
    try:
        sample, n_answered = data.sample
        assert n_answered == n_ok and sample["request_key"].nunique() == limit
        # the sample: the answered replies with the smallest request keys
        assert sorted(sample["request_key"].unique()) == sorted(r.loc[r["status"] == "ok", "request_key"])[:limit]
        fo = distributions(data)
        assert fo.missing is None and f"sample of {limit:,} of the {n_ok:,} answered replies" in fo.caption
        fo = refusals(data)
        assert fo.missing is None and "Wilson" in fo.caption
        assert f"{int((val >= 0.5).sum())} of {len(val)} answered replies were refusals" in fo.alt
        counts = data.facts.refusal_counts()
        want = pd.DataFrame({"grp": answered.loc[val.index, "group"], "cue_type": answered.loc[val.index, "cue_type"],
                             "x": val}).groupby(["grp", "cue_type"])["x"].agg(["count", "sum"]).reset_index()
        assert counts["n"].tolist() == want["count"].tolist() and counts["refused"].tolist() == want["sum"].tolist()
    finally:
        data.close()
    assert calls == []


def test_a_small_run_draws_every_reply(synthetic, monkeypatch):
    """Below the limit the 'sample' is the whole run: the figures are drawn as before, and say nothing
    of a sample."""
    calls = _forbid_whole_run_reads(monkeypatch)
    data = collect(synthetic)
    try:
        sample, n_answered = data.sample
        assert sample["request_key"].nunique() == n_answered
        assert "sample" not in distributions(data).caption
        assert "bootstrap" in refusals(data).caption
    finally:
        data.close()
    assert calls == []


# ----------------------------------------------------------------------------- the stored group summary


def _messy(run_dir):
    """The synthetic run made messier for the per-group summary: a second model whose replies give one
    length each (constant) and one group of a single reply, a group label differing only by case, NULL
    scores, a score of a failed reply and a request never answered (neither is counted), and two
    failed replies."""
    run = fill_store(run_dir, with_results=False, failed=2)
    with RunStore(run, create=False) as st:
        v = st.variants_df()
        odd = v[(v["post_id"] == "p02") & (v["group"] == "Black woman") & (v["cue_type"] == "explicit_tag")].iloc[0]
        st.put_variants(pd.DataFrame([dict(variant_id="casevariant00001", post_id="p02", topic="t", risk="low",
                                           group="black woman", cue_type="explicit_tag", alternative="x",
                                           cue_text="[black woman]", text="[black woman] \"quoted\"\nline",
                                           race="Black", gender="woman")]))
        targets = [(vid, g) for vid, g in zip(v["variant_id"], v["group"]) if g in ("control", "White woman")]
        targets += [(odd["variant_id"], "single"), ("casevariant00001", "case")]
        scores, n = [], 0
        for i, (vid, g) in enumerate(targets):
            for s in range(1 if g == "single" else 2):
                key = f"m2-{i}-{s}"
                st.put_request(dict(request_key=key, purpose="reply", variant_id=vid, model_label="m2",
                                    endpoint_id="http://m2", model_name="m2", style="plain", style_hash="f" * 64,
                                    sample_index=s, messages=[{"role": "user", "content": "x"}], params={}))
                if g == "control" and s == 1 and n == 0:  # failed, yet scored: not counted
                    st.put_reply(dict(request_key=key, status="failed", error="boom"))
                    scores.append((key, "length", "words", 99.0, None))
                    n += 1
                    continue
                st.put_reply(dict(request_key=key, status="ok", text="seven words in this reply right here"))
                scores += [(key, "length", "words", 7.0, None),
                           (key, "sentiment", "compound", None if s else 0.1 * (i % 7) - 0.25, "unparseable"),
                           (key, "refusal", "refusal", float(i % 3 == 0), None)]
        st.put_request(dict(request_key="m2-unanswered", purpose="reply", variant_id=odd["variant_id"],
                            model_label="m2", endpoint_id="http://m2", model_name="m2", style="plain",
                            style_hash="f" * 64, sample_index=5, messages=[{"role": "user", "content": "y"}],
                            params={}))
        st.put_scores(scores)
    return run


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    return _messy(tmp_path_factory.mktemp("messy") / "run")


def _store_summary(run):
    """What :func:`audit.stats.stage.analyze_store` stores besides the fits (the synthetic run has too few
    posts to fit): the summary from the cells' sums and the fingerprint of its inputs."""
    from audit.stats.stage import analysis_cells, inputs_fingerprints, store_group_summary

    with RunStore(run, create=False) as st:
        fp = inputs_fingerprints(st)
        _, summary = analysis_cells(st, st.latest_spec(), group_summary=True)
        store_group_summary(st, None if fp["content_filter"] else summary, fp["group_summary"])
    return summary


def test_the_summary_from_the_cells_equals_the_sql_one(messy):
    """The per-group summary the analysis makes from its cells is the SQL GROUP BY's: the same rows,
    counts and order; a 0/1 outcome's mean and SD bit for bit (from the count of ones); a constant
    outcome's SD exactly 0 and a single value's NaN; other means and SDs to rounding."""
    from audit.report.facts import ReplyFacts

    summary = _store_summary(messy)
    with RunStore(messy, create=False) as st:
        sql = ReplyFacts(st).group_summary()
    assert len(summary) == len(sql) > 0
    for c in ("model_label", "outcome", "group", "cue_type", "n"):
        assert summary[c].tolist() == sql[c].tolist(), c
    binary = sql["outcome"] == "refusal.refusal"
    for c in ("mean", "sd", "sum"):
        got, want = summary[c].to_numpy(float), sql[c].to_numpy(float)
        assert ((got == want) | (pd.isna(got) & pd.isna(want)))[binary.to_numpy()].all(), c
        close = abs(got - want) <= 1e-12 * abs(want) + 1e-12
        assert (close | (pd.isna(got) & pd.isna(want))).all(), c
    m2 = summary[(summary["model_label"] == "m2") & (summary["outcome"] == "length.words")]
    assert (m2["mean"] == 7.0).all() and set(m2["group"]) >= {"black woman", "Black woman", "control"}
    assert (m2.loc[m2["n"] > 1, "sd"] == 0.0).all() and m2.loc[m2["n"] == 1, "sd"].isna().all()
    assert m2.loc[m2["group"] == "control", "n"].sum() == sql.loc[(sql["model_label"] == "m2") & (
        sql["outcome"] == "length.words") & (sql["group"] == "control"), "n"].sum()  # the failed reply's 99 left out


def test_the_report_reads_the_stored_summary_only_while_its_inputs_are_the_store_s(messy, tmp_path):
    """A stored summary whose inputs are the store's is read (not recomputed: a value planted in it
    shows); once a score changes, the report computes the summary from the replies again."""
    import shutil

    from audit.report.facts import ReplyFacts

    run = tmp_path / "run"
    shutil.copytree(messy, run)
    _store_summary(run)
    with RunStore(run, create=False) as st:
        with st.transaction() as c:
            c.execute("UPDATE group_summary SET mean = 123.0 WHERE model_label = 'm2' AND outcome = 'length.words'")
    data = collect(run)
    try:
        gs = data.group_summary
        assert (gs.loc[(gs["model_label"] == "m2") & (gs["outcome"] == "length.words"), "mean"] == 123.0).all()
    finally:
        data.close()
    with RunStore(run, create=False) as st:  # a score changes after the analysis: the stored summary is stale
        with st.transaction() as c:
            c.execute("UPDATE scores SET value = 8.0 WHERE request_key = 'm2-0-0' AND measure = 'words'")
        sql = ReplyFacts(st).group_summary()
    data = collect(run)
    try:
        gs = data.group_summary
        assert 123.0 not in set(gs["mean"])
        pd.testing.assert_frame_equal(gs.reset_index(drop=True), sql.reset_index(drop=True))
    finally:
        data.close()


def test_a_run_with_content_filtered_replies_stores_no_summary(messy, tmp_path):
    """The cells' sums count a content-filtered reply's scores (its refusal is 1); the report's summary
    counts status ok only: such a run keeps no stored summary, and the report computes it."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(messy, run)
    _store_summary(run)
    with RunStore(run, create=False) as st:
        assert "group_summary" in st.table_names()
        v = st.variants_df()
        st.put_request(dict(request_key="cf-1", purpose="reply", variant_id=v["variant_id"].iloc[0], model_label="m2",
                            endpoint_id="http://m2", model_name="m2", style="plain", style_hash="f" * 64,
                            sample_index=9, messages=[{"role": "user", "content": "z"}], params={}))
        st.put_reply(dict(request_key="cf-1", status="content_filter"))
        st.put_scores([("cf-1", "refusal", "refusal", 1.0, "content_filter")])
    _store_summary(run)
    with RunStore(run, create=False) as st:
        assert "group_summary" not in st.table_names() and st.get_meta("group_summary_inputs_sha256") is None


def test_the_golden_run_stores_its_summary_and_the_report_uses_it(golden_run):
    """The pipeline's analysis stores the per-group summary with the fingerprint of its inputs; it is
    the SQL's summary (the golden tables above are rendered from it)."""
    from audit.report.facts import ReplyFacts
    from audit.stats.stage import inputs_fingerprints, stored_group_summary

    with RunStore(golden_run, create=False) as st:
        stored = stored_group_summary(st, inputs_fingerprints(st)["group_summary"])
        sql = ReplyFacts(st).group_summary()
    assert stored is not None and len(stored) == len(sql) > 0
    assert stored["n"].tolist() == sql["n"].tolist()
    assert ((stored["mean"] - sql["mean"]).abs() <= 1e-12 * sql["mean"].abs() + 1e-12).all()


def test_first_rows_walked_by_post_are_the_window_s(messy, tmp_path):
    """The first request per model (answered first) and per style (control first), found by walking the
    posts with LIMIT 1, are the window function's; with a request whose variant is not stored (it
    would sort first), the window function is used."""
    import shutil

    from audit.report.facts import ReplyFacts

    run = tmp_path / "run"
    shutil.copytree(messy, run)
    with RunStore(run, create=False) as st:
        f = ReplyFacts(st)
        models = sorted(f.summary()["model_label"].unique())
        for part, prefer, values in (("q.model_label", "r.status IS NOT NULL", models),
                                     ("q.style", "v.group_name = 'control'", ["plain"]),
                                     ("q.model_label", "r.status = 'failed'", models)):
            assert f.every_request_has_variant()
            want = f.first_rows(part, prefer)["request_key"].tolist()
            assert f.first_rows(part, prefer, values=values)["request_key"].tolist() == want and want
        st.put_request(dict(request_key="orphan", purpose="reply", variant_id="no-such-variant", model_label="m2",
                            endpoint_id="http://m2", model_name="m2", style="plain", style_hash="f" * 64,
                            sample_index=0, messages=[{"role": "user", "content": "o"}], params={}))
        assert not f.every_request_has_variant()
        want = f.first_rows("q.model_label", "r.status IS NOT NULL")["request_key"].tolist()
        assert f.first_rows("q.model_label", "r.status IS NOT NULL", values=models)["request_key"].tolist() == want


def test_analyze_hashes_the_summary_inputs_beside_the_pass_and_stores_no_summary_if_the_store_changed(golden_run,
                                                                                                     tmp_path,
                                                                                                     monkeypatch):
    """`empathy-audit analyze RUN_DIR` hashes the summary's inputs in a process beside the pass and the fits
    (not before them). The stored summary is kept only if no other connection committed while the store
    was read (PRAGMA data_version): a score changed mid-analysis leaves no summary, never a stale one marked
    fresh, and the report computes its summary from the replies."""
    import shutil

    import audit.stats.stage as stage_mod
    from audit.cli import main as cli_main
    from audit.report.facts import ReplyFacts
    from audit.stats.stage import inputs_fingerprints, stored_group_summary

    run = tmp_path / "run"
    shutil.copytree(golden_run, run)
    with RunStore(run, create=False) as st:
        with st.transaction() as c:
            c.execute("DROP TABLE IF EXISTS group_summary")
        st.delete_meta("group_summary_inputs_sha256")
    assert cli_main(["analyze", str(run)]) == 0
    with RunStore(run, create=False) as st:
        stored = stored_group_summary(st, inputs_fingerprints(st)["group_summary"])
        assert stored is not None and stored["n"].tolist() == ReplyFacts(st).group_summary()["n"].tolist()

    real = stage_mod._analyze_store_cells

    def meanwhile(store, spec, table):  # another connection commits a changed score during the fits
        with RunStore(run, create=False) as other:
            key = other.conn.execute("SELECT request_key FROM scores WHERE value IS NOT NULL LIMIT 1").fetchone()[0]
            with other.transaction() as c:
                c.execute("UPDATE scores SET value = value + 0.5 WHERE request_key = ? AND rowid = "
                          "(SELECT min(rowid) FROM scores WHERE request_key = ?)", (key, key))
        return real(store, spec, table)

    monkeypatch.setattr(stage_mod, "_analyze_store_cells", meanwhile)
    assert cli_main(["analyze", str(run)]) == 0
    with RunStore(run, create=False) as st:
        assert "group_summary" not in st.table_names() and st.get_meta("group_summary_inputs_sha256") is None
