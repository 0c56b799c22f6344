"""Runs compared (audit.compare): the comparability checks refuse or warn with exact messages, the
classification rule, and, end to end, a two-model run and a comparison of two runs against
deterministic local servers (tests/two_model_runs.py), both reports checked in Chromium; the tidy export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.compare import _Run, check_comparable, classify, compare_runs
from audit.errors import AuditError
from audit.stats import adjust_family
from audit.stats.simulate import simulate_audit_table

INFO = {"epitome": {"name": "epitome", "version": "2"}}
DECODING = {"temperature": ["0.7"], "max_tokens": ["64"]}


def fake_run(label: str, table: pd.DataFrame, info=None, decoding=None, styles=None) -> _Run:
    return _Run(label, Path(f"/runs/{label}"), table, info or INFO, decoding or DECODING,
                styles or {"plain": "abc123"}, {"m": "model @ http://x"}, None)


def table(seed: int = 0, n_posts: int = 10, gap: float = 0.0, posts_from: int = 0) -> pd.DataFrame:
    t = simulate_audit_table(n_posts=n_posts, gaps={"A": gap}, seed=seed)
    t["post_id"] = "p" + (t["post_id"].str[1:].astype(int) + posts_from).astype(str)
    t["variant_id"] = t["post_id"] + "v" + t["variant_id"].str.split("v").str[1]
    return t


def test_no_shared_variant_is_refused():
    with pytest.raises(AuditError) as e:
        check_comparable([fake_run("A", table()), fake_run("B", table(posts_from=100))])
    assert "share no variant" in e.value.message and "content hash" in e.value.message
    assert "/runs/A" in e.value.message


def test_no_shared_outcome_is_refused():
    b = table().assign(outcome="length.words")
    with pytest.raises(AuditError) as e:
        check_comparable([fake_run("A", table()), fake_run("B", b)])
    assert "share no scored outcome" in e.value.message and "length.words" in e.value.message


def test_partial_overlap_warns_with_its_size():
    c = check_comparable([fake_run("A", table(n_posts=10)), fake_run("B", table(n_posts=10, posts_from=4))])
    # 10 posts x 3 variants each, 6 posts shared
    assert c.shared_variants == 18 and c.variants == {"A": 30, "B": 30}
    assert any(w.startswith("partial overlap: 18 variants shared by every run (A: 30, B: 30 variants in each)")
               for w in c.warnings)


def test_scorer_version_decoding_and_style_differences_are_named():
    c = check_comparable([
        fake_run("A", table()),
        fake_run("B", table(), info={"epitome": {"name": "epitome", "version": "3"}},
                 decoding={"temperature": ["0.0"], "max_tokens": ["64"]}, styles={"plain": "zzz999"}),
    ])
    assert "scorer epitome: 'version' differs (A: 2; B: 3)" in c.differences
    assert "decoding 'temperature' differs (A: [\"0.7\"]; B: [\"0.0\"])" in c.differences
    assert any(d.startswith("prompt style 'plain' has a different prompt text") for d in c.differences)
    assert not c.same_model_and_spec
    same = check_comparable([fake_run("A", table()), fake_run("B", table(seed=1))])
    assert same.differences == [] and same.warnings == [] and same.same_model_and_spec


@pytest.mark.parametrize("args, want", [
    ((-0.5, -0.8, -0.2, True, -0.05, -0.3, 0.2, False, True), "closed"),
    ((-0.5, -0.8, -0.2, True, -0.05, -0.3, 0.2, False, False), "unchanged"),  # lost significance only
    ((0.05, -0.2, 0.3, False, -0.5, -0.8, -0.2, True, True), "opened"),
    ((-0.5, -0.8, -0.2, True, 0.5, 0.2, 0.8, True, True), "reversed"),
    ((-0.8, -1.0, -0.6, True, -0.4, -0.6, -0.2, True, True), "narrowed"),
    ((-0.4, -0.6, -0.2, True, -0.8, -1.0, -0.6, True, True), "widened"),
])
def test_classification_rule(args, want):
    assert classify(*args) == want


# ----------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from audit.testing import StubServer
    from two_model_runs import fixed_reply, gap_reply, run_demo

    tmp = tmp_path_factory.mktemp("compare")
    with StubServer(reply=gap_reply, model="golden-model") as a, \
            StubServer(reply=fixed_reply, model="golden-model") as b:
        assert run_demo(tmp / "A", [("v1", a)]) == 0
        assert run_demo(tmp / "M", [("v1", a), ("v2", b)]) == 0
        assert run_demo(tmp / "A2", [("v1", a)]) == 0   # the same model and spec again: an identical rerun
    return tmp


def test_two_model_run_report_in_chromium(runs):
    from audit.report.browser import check_report, find_chromium

    m = runs / "M"
    models = pd.read_csv(m / "tables" / "results_models.csv")
    res = pd.read_csv(m / "tables" / "results.csv")
    assert set(models["model_label"]) == {"v2"} and set(models["reference_model"]) == {"v1"}
    # the two versions differ only in posts with a 'Black' cue: every other difference of gaps is 0
    other = models[~models["group"].str.startswith("Black")]
    assert np.allclose(other["estimate"], 0, atol=1e-9)
    assert not np.allclose(models.loc[models["group"].str.startswith("Black"), "estimate"], 0, atol=1e-6)
    # each model's pooled gap in results_models equals that model's pooled gap (balanced, no style factor)
    pooled = res[(res["style"] == "pooled") & (res["cue_type"] == "pooled") & (res["reference"] == "control")]
    er = pooled[(pooled["outcome"] == "epitome.empathy")].set_index(["model_label", "group"])["estimate"]
    mr = models[models["outcome"] == "epitome.empathy"].set_index("group")
    assert np.allclose(mr["gap"], er["v2"].loc[mr.index], atol=1e-8)
    assert np.allclose(mr["gap_reference_model"], er["v1"].loc[mr.index], atol=1e-8)
    md = (m / "report.md").read_text(encoding="utf-8")
    assert "### Models compared" in md and "figures/models-forest.png" in md
    assert (m / "figures" / "models-heatmap.png").stat().st_size > 10_000
    one = (runs / "A" / "report.md").read_text(encoding="utf-8")
    assert "Models compared" not in one and not (runs / "A" / "tables" / "results_models.csv").exists()
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (bash tests/system-deps.sh)")
    verdict = check_report(m / "report.html")
    assert verdict.ok, verdict.problems
    ids = {i["id"] for i in verdict.page.images}
    assert {"fig-models-forest", "fig-models-heatmap"} <= ids
    assert "Models compared: is one model's gap different" in verdict.page.text


def test_compare_two_runs_report_in_chromium(runs, capsys):
    """Version 2 fixed version 1's planted gap (Black groups, Emotional Reactions): both gaps are
    'closed'; the same server on the same prompts (A and M:v1) changes nothing."""
    import json

    from audit.cli import main
    from audit.report.browser import check_page, find_chromium

    out = runs / "cmp-all"
    status = main(["compare", str(runs / "A"), str(runs / "M"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert "compared A vs M:v1 vs M:v2 on 102 variants shared by every run (A: 102, M: 102 variants in each)" in printed
    # no refusal at all: a constant outcome is not compared, which is said and is nothing to act on (exit 0)
    assert status == 0 and "note: outcome refusal.refusal not compared" in printed and "warning:" not in printed
    j = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert j["versions"] == ["A", "M:v1", "M:v2"] and j["reference_run"] == "A"
    d = pd.DataFrame(j["differences"])
    same = d[d["run"] == "M:v1"]  # the same server replied to the same prompts: no difference at all
    assert np.allclose(same["estimate"], 0, atol=1e-9) and set(same["status"]) == {"unchanged"}
    assert sum(j["counts"].values()) == len(d) and j["comparability"]["differences"] == []

    out = runs / "cmp"  # one outcome: a family of 16 differences, where 6 posts can show the change
    assert main(["compare", str(runs / "A"), str(runs / "M"), "--out", str(out), "--outcome", "ER"]) == 0
    j = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    d = pd.DataFrame(j["differences"]).set_index(["run", "group"])
    closed = d[d["status"] == "closed"]
    assert sorted(closed.index) == [("M:v2", "Black man"), ("M:v2", "Black woman")]
    assert (closed["gap_reference_run"] < -0.5).all() and (closed["ci_low"] > 0).all()  # v1's gap, and it moved up
    assert (closed["gap_ci_low"] < 0).all() and (closed["gap_ci_high"] > 0).all()
    assert set(d.drop(closed.index)["status"]) == {"unchanged"} and j["counts"]["closed"] == 2
    assert (out / "tables" / "compare_differences.csv").exists()
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "| epitome.ER | Black woman | M:v2 | **closed** |" in md
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (bash tests/system-deps.sh)")
    page = check_page(out / "compare.html")
    assert page.loaded and not page.console_errors and not page.failed_requests and not page.external_requests
    assert page.script_elements == 0
    imgs = {i["id"]: i for i in page.images}
    assert {"fig-compare-forest", "fig-compare-heatmap"} <= set(imgs)
    assert all(i["complete"] and i["width"] > 200 for i in imgs.values())
    assert "Gaps: closed, opened, unchanged" in page.text and "absence of evidence" in page.text
    assert "Compared with A: 2 closed, 14 unchanged" in page.text


def test_compare_refuses_different_designs(runs, tmp_path):
    with pytest.raises(AuditError) as e:
        compare_runs([runs / "A"])
    assert "at least two" in e.value.message
    with pytest.raises(AuditError) as e:
        compare_runs([runs / "A", tmp_path])
    assert "no run store found" in e.value.message


def test_tidy_export_columns_and_rows(runs, tmp_path):
    import audit
    from audit.cli import main
    from audit.store import RunStore
    from audit.tidy import TIDY_COLUMNS

    df = audit.tidy_table(runs / "M")
    with RunStore(runs / "M", create=False) as st:
        n_requests = len(st.replies_df("reply"))
        n_measures = len(st.scores_df()[["scorer", "measure"]].drop_duplicates())
        n_scores = st.count_scores()
    assert len(df) == n_requests * n_measures == 204 * 7
    assert list(df.columns[:len(TIDY_COLUMNS)]) == TIDY_COLUMNS and {"race", "gender"} <= set(df.columns)
    assert df["score"].notna().sum() == n_scores  # every stored score once; nothing else
    assert not df.duplicated(["request_key", "scorer", "measure"]).any()
    assert set(df["model_label"]) == {"v1", "v2"} and set(df.loc[df["group"] == "control", "cue_type"]) == {"control"}
    for suffix in (".csv", ".parquet"):
        f = tmp_path / f"tidy{suffix}"
        assert main(["export", str(runs / "M"), "--table", "tidy", "--out", str(f)]) == 0
        back = pd.read_csv(f) if suffix == ".csv" else pd.read_parquet(f)
        assert len(back) == len(df) and list(back.columns) == list(df.columns)


def test_replicate_runs_give_the_sampling_variance():
    """Two runs of the same model and spec are replicates: the variance between their replies to a
    variant is the sampling variance (planted: sd_resid 0.5 -> 0.25). They are pooled only when they
    show no change beyond noise (no significant shift of the mean here: checked first; with seed 7 the
    two halves happen to differ at p = 0.029 and are rightly not pooled, 1 seed in 20 at alpha 0.05)."""
    from audit.compare import Comparability, _shift_p, _variability

    t = simulate_audit_table(n_posts=60, samples=2, sd_variant=0.2, sd_resid=0.5, seed=1)
    t["run"] = np.where(t["sample_index"] == 0, "A", "B")
    t["sample_index"] = 0
    assert _shift_p(t, "A", "B") > 0.05
    comp = Comparability(["A", "B"], {"A": 180, "B": 180}, 180, ["epitome.empathy"], ["plain"],
                         same_model_and_spec=True)
    v = _variability(t, comp)
    assert list(v["replicate"]) == ["run"] and v["model_label"].iloc[0] == "runs A, B"
    assert v["source"].iloc[0].startswith("runs A, B as replicates")
    assert v["var_sample"].iloc[0] == pytest.approx(0.25, rel=0.2)
    assert v["var_variant"].iloc[0] == pytest.approx(0.04, abs=0.04)
    comp.same_model_and_spec = False  # different models: their difference is no sampling noise
    assert _variability(t, comp).empty


def test_changed_runs_of_one_model_are_not_pooled_as_replicates():
    """Two runs of one model and spec whose gap changed significantly (issue 25 K1): their difference is a
    change, not sampling noise. They are not pooled; the sampling variance comes from the within-run
    samples (planted sd_resid 0.5 -> 0.25) and the notes say so."""
    from audit.compare import Comparability, _variability
    from audit.stats.models_compare import gap_interaction, sampling_variability

    t = simulate_audit_table(n_posts=60, samples=4, sd_variant=0.2, sd_resid=0.5, seed=8)
    t["run"] = np.where(t["sample_index"] < 2, "A", "B")
    t["sample_index"] = t["sample_index"] % 2
    t.loc[(t["run"] == "B") & (t["group"] != "control"), "value"] += 2.0   # B's gap moved by +2
    diff = gap_interaction(t, outcome="value", between="run", reference_level="A", inner="variant_id")
    diff = adjust_family(diff.assign(outcome="epitome.empathy"))
    assert diff["significant_holm"].all()
    comp = Comparability(["A", "B"], {"A": 180, "B": 180}, 180, ["epitome.empathy"], ["plain"],
                         same_model_and_spec=True)
    v = _variability(t, comp, diff)
    assert set(v["replicate"]) == {"sample_index"} and set(v["model_label"]) == {"A", "B"}
    assert v["var_sample"].to_numpy() == pytest.approx([0.25, 0.25], rel=0.25)
    assert v["source"].str.startswith("within-run samples").all()
    assert any("not pooled as replicates: B differs from A beyond noise" in n and "within-run samples" in n
               for n in comp.notes)
    # what pooling the changed runs as replicates says: the change counted as noise, variance ~4x
    pooled = sampling_variability(t.assign(model_label="all runs"), replicate="run")
    assert pooled["var_sample"].iloc[0] > 0.8
    one_sample = t[t["sample_index"] == 0]
    comp.notes = []
    assert _variability(one_sample, comp, diff).empty      # no within-run samples: not estimated, and said
    assert any("not estimated" in n for n in comp.notes)


def test_identical_reruns_compare_with_exit_0_and_are_not_replicates(runs, capsys):
    """Two runs of one deterministic model and spec (issue 25 K2, issue 28 H10): exit 0, the identical
    replies are named, and no 'sampling variance 0' comes from pooling them."""
    import json

    from audit.cli import main

    out = runs / "cmp-rerun"
    assert main(["compare", str(runs / "A"), str(runs / "A2"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: runs A and A2 replied identically to every request" in printed and "warning:" not in printed
    j = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    assert not [v for v in j["variability"] if v["replicate"] == "run"]
    assert set(pd.DataFrame(j["differences"])["status"]) == {"unchanged"}
    assert "replied identically" in (out / "compare.md").read_text(encoding="utf-8")


def test_a_run_compared_with_itself_or_its_copy_is_refused(runs, tmp_path, capsys):
    import shutil

    from audit.cli import main

    shutil.copytree(runs / "A", tmp_path / "copy")
    for other in (runs / "A", tmp_path / "copy"):
        assert main(["compare", str(runs / "A"), str(other), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "is the same run as" in err and "not replicates" in err and len(err.strip().splitlines()) == 1
    assert "a copy of it" in err
    for alpha in ("2", "0", "-0.1", "1"):
        assert main(["compare", str(runs / "A"), str(runs / "A2"), "--out", str(tmp_path / "out"),
                     "--alpha", alpha]) == 2
        err = capsys.readouterr().err
        assert "alpha must be between 0 and 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
