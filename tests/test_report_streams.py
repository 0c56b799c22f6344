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
