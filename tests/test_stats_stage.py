"""The analysis stage reads replies + scores from the run store and writes the results tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.spec import spec_from_dict
from audit.stats import analysis_table, analyze_run
from audit.stats.stage import RESULTS_COLUMNS
from audit.store import RunStore

GROUPS = [("Black", "woman"), ("White", "woman"), ("Black", "man"), ("White", "man")]
CUES = ["explicit_tag", "implicit_name"]


def fill_store(run_dir, *, n_posts=24, styles=("plain", "warm"), samples=2, gap=-0.3, seed=0, spec_extra=None,
               level=False):
    """A run store filled directly: variants, requests, replies and scores with a planted gap for
    'Black woman' on the empathy measure (0..2 scale) and random refusals."""
    rng = np.random.default_rng(seed)
    spec = spec_from_dict({"name": "stage-test", "styles": list(styles), "samples": samples,
                           "output": str(run_dir), **(spec_extra or {})})
    store = RunStore(run_dir)
    store.put_spec(spec)
    variants = []
    for p in range(n_posts):
        pid = f"post{p:03d}"
        variants.append(dict(variant_id=f"{pid}-control", post_id=pid, topic="t", risk="low", group="control",
                             cue_type="control", alternative=None, cue_text="", text=f"post {p}", race=None,
                             gender=None))
        for race, gender in GROUPS:
            for cue in CUES:
                variants.append(dict(variant_id=f"{pid}-{race}-{gender}-{cue}", post_id=pid, topic="t", risk="low",
                                     group=f"{race} {gender}", cue_type=cue, alternative="a1", cue_text="x",
                                     text=f"post {p} ({race} {gender})", race=race, gender=gender))
    vdf = pd.DataFrame(variants)
    store.put_variants(vdf)
    u = rng.normal(0, 0.3, n_posts)
    scores = []
    for v in variants:
        for style in styles:
            for s in range(samples):
                key = f"{v['variant_id']}|{style}|{s}"
                store.put_request(dict(request_key=key, purpose="reply", variant_id=v["variant_id"], model_label="m1",
                                       endpoint_id="test", model_name="test", style=style, sample_index=s,
                                       messages=[{"role": "user", "content": v["text"]}], params={}))
                store.put_reply(dict(request_key=key, status="ok", text="reply"))
                p = int(v["post_id"][4:])
                emp = 1.0 + u[p] + (gap if v["group"] == "Black woman" else 0) + 0.1 * (style == "warm") \
                    + rng.normal(0, 0.4)
                scores.append((key, "epitome", "empathy", float(emp), None))
                scores.append((key, "refusal", "refusal", float(rng.random() < 0.2), None))
                if level:
                    scores.append((key, "epitome", "ER", float(rng.choice([0, 1, 2])), None))
    store.put_scores(scores)
    store.close()
    return spec


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    spec = fill_store(run_dir)
    result = analyze_run(spec, run_dir)
    return spec, run_dir, result


def test_analysis_table_joins_replies_and_scores(analysed):
    spec, run_dir, _ = analysed
    with RunStore(run_dir, create=False) as store:
        t = analysis_table(store, spec)
    assert {"request_key", "post_id", "group", "cue_type", "style", "model_label", "sample_index", "outcome", "value",
            "race", "gender"} <= set(t.columns)
    assert set(t.outcome) == {"epitome.empathy", "refusal.refusal"}
    assert len(t) == 24 * 9 * 2 * 2 * 2


def test_results_table_follows_the_contract(analysed):
    spec, run_dir, result = analysed
    with RunStore(run_dir, create=False) as store:
        res = store.query_df("SELECT * FROM results")
        tables = set(store.table_names())
    assert {"results", "results_paired", "results_intersectional", "results_power", "analysis_meta"} <= tables
    assert list(res.columns) == RESULTS_COLUMNS
    # family: 2 outcomes x 3 style blocks x (pooled + 2 cue types) x 4 groups
    assert len(res) == 2 * 3 * 3 * 4
    assert res.family_id.nunique() == 1
    assert set(res["style"]) == {"pooled", "plain", "warm"}
    assert set(res["cue_type"]) == {"pooled", *CUES}
    assert res.p_holm.notna().all() and (res.p_holm >= res.p_value - 1e-12).all()
    emp = res[(res.outcome == "epitome.empathy") & (res["style"] == "pooled") & (res.cue_type == "pooled")]
    bw = emp[emp.group == "Black woman"].iloc[0]
    assert bw.ci_low <= -0.3 <= bw.ci_high and bool(bw.significant_holm)
    assert bw.rel_ci_low <= bw.relative_gap <= bw.rel_ci_high and bw.relative_gap < 0
    assert "post:inner" in bw.method  # samples -> variant variance component
    ref = res[res.outcome == "refusal.refusal"]
    assert ref.method.str.contains("gee").all()
    meta = dict(store_meta(run_dir))
    with RunStore(run_dir, create=False) as store:
        disp = store.table_df("results_disparity")
    assert len(disp) == 2  # one max - min test per outcome, in the same family
    assert int(meta["family_size"]) == len(res) + len(disp)
    assert disp.p_holm.ge(disp.p_value - 1e-12).all()
    assert "holm" in meta["corrections"] and "statsmodels" in meta["software"]


def store_meta(run_dir):
    with RunStore(run_dir, create=False) as store:
        return store.query_df("SELECT key, value FROM analysis_meta").itertuples(index=False)


def test_paired_intersectional_and_power_tables(analysed):
    _, run_dir, result = analysed
    paired = result.paired
    assert {"family_id", "outcome", "model_label", "style", "cue_type", "group", "reference", "t", "dof", "p_value",
            "cohen_d"} <= set(paired.columns)
    bw = paired[(paired.outcome == "epitome.empathy") & (paired["style"] == "pooled") & (paired.cue_type == "pooled")
                & (paired.group == "Black woman")].iloc[0]
    assert bw.t < 0 and bw.dof == 23
    inter = result.intersectional
    assert {"group", "race", "gender", "estimate", "ci_low", "ci_high", "relative_gap", "shrinkage"} <= set(inter.columns)
    assert set(inter.race.dropna()) == {"Black", "White"}
    power = result.power
    assert {"outcome", "model_label", "detectable_gap", "detectable_relative_gap", "power", "alpha"} <= set(power.columns)
    assert (power.detectable_gap > 0).all()
    # the formulas: MDE = (z_{1-a/2m} + z_.8) SE; power at the spec's 5% gap from the same SE
    from scipy import stats

    row = power.iloc[0]
    zc = stats.norm.ppf(1 - 0.05 / (2 * row.family_size))
    assert row.detectable_gap == pytest.approx((zc + stats.norm.ppf(0.8)) * row.se)
    assert row.power_at_gap == pytest.approx(stats.norm.cdf(0.05 * abs(row.ref_mean) / row.se - zc))
    with RunStore(run_dir, create=False) as store:
        assert len(store.query_df("SELECT * FROM results_power")) == len(power)


def test_rerun_replaces_results(analysed):
    spec, run_dir, result = analysed
    again = analyze_run(spec, run_dir)
    with RunStore(run_dir, create=False) as store:
        assert len(store.query_df("SELECT * FROM results")) == len(again.results) == len(result.results)
    pd.testing.assert_series_equal(again.results.estimate, result.results.estimate)


def test_outcome_selection_and_extra_reference(tmp_path):
    spec = fill_store(tmp_path, n_posts=12, styles=("plain",), samples=1,
                      spec_extra={"analysis": {"outcomes": ["empathy"], "extra_references": ["White man"]}})
    r = analyze_run(spec, tmp_path).results
    assert set(r.outcome) == {"epitome.empathy"}
    assert set(r.reference) == {"control", "White man"}
    assert set(r["style"]) == {"pooled"}
    wm = r[r.reference == "White man"]
    assert "control" in set(wm.group) and "White man" not in set(wm.group)


def test_level_outcomes_get_a_binary_level_above_zero(tmp_path):
    spec = fill_store(tmp_path, n_posts=8, styles=("plain",), samples=1, level=True)
    with RunStore(tmp_path, create=False) as store:
        t = analysis_table(store, spec)
    assert {"epitome.ER", "epitome.ER>0"} <= set(t.outcome)
    assert "epitome.empathy>0" not in set(t.outcome)
    er = t[t.outcome == "epitome.ER"].set_index("request_key").value
    er0 = t[t.outcome == "epitome.ER>0"].set_index("request_key").value
    assert ((er.loc[er0.index] > 0).astype(float) == er0).all()
    r = analyze_run(spec, tmp_path).results
    assert r[r.outcome == "epitome.ER>0"].method.str.contains("gee|GEE").all()


def test_unknown_outcome_and_empty_store_are_clear_errors(tmp_path):
    spec = fill_store(tmp_path / "a", n_posts=6, styles=("plain",), samples=1,
                      spec_extra={"analysis": {"outcomes": ["warmth"]}})
    with pytest.raises(AuditError, match="warmth"):
        analyze_run(spec, tmp_path / "a")
    empty = spec_from_dict({"name": "empty", "output": str(tmp_path / "b")})
    RunStore(tmp_path / "b").close()
    with pytest.raises(AuditError, match="no scored replies"):
        analyze_run(empty, tmp_path / "b")
