"""No silent drops in the statistics (issue 14): missing outcomes counted per group, differential
missingness refused unless allowed, empty groups listed with their reason, group levels matched as
written, the design (counterfactual / observational / mixed) detected and stated, an identifiable
model where posts never repeat, and collinearity errors that name --by."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.cli import main
from audit.errors import AuditError
from audit.stats import analyze_table, gap_test
from audit.stats.designs import detect_design
from audit.stats.gaps import NO_REPEATS
from audit.stats.missing import differential_missingness, missing_by_group
from audit.stats.simulate import simulate_audit_table


def _counterfactual(n_posts=120, gap=0.0, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"post": np.repeat(np.arange(n_posts), 2), "group": np.tile(["control", "A"], n_posts)})
    df["score"] = 2.0 + gap * (df.group == "A") + rng.normal(0, .5, n_posts)[df.post] + rng.normal(0, .5, len(df))
    return df


def _selectively_missing(df, n=42):
    """The n lowest outcomes of group A go missing (the issue's case: no true gap, a large apparent one)."""
    low = df[df.group == "A"].nsmallest(n, "score").index
    return df.assign(score=df["score"].where(~df.index.isin(low)))


def test_differential_missingness_is_refused_and_counted_when_allowed():
    df = _selectively_missing(_counterfactual())
    with pytest.raises(AuditError) as err:
        analyze_table(df, outcome="score", group="group", control="control", cluster="post", where="t.csv")
    assert "missing outcomes differ" in err.value.message and "A 42 of 120" in err.value.message
    assert "--allow-missing" in err.value.fix and err.value.where == "t.csv"
    res = analyze_table(df, outcome="score", group="group", control="control", cluster="post", allow_missing=True)
    row = res.iloc[0]
    assert row["n_missing"] == 42 and row["ref_n_missing"] == 0 and row["n"] == 78
    assert "missing outcomes differ" in row["warning"]


def test_missing_at_random_in_every_group_is_not_flagged_more_than_alpha():
    rng = np.random.default_rng(5)
    flags = 0
    for _ in range(300):
        df = pd.DataFrame({"group": np.repeat(["control", "A"], 100),
                           "y": np.where(rng.random(200) < 0.15, np.nan, 1.0)})
        flags += bool(differential_missingness(missing_by_group(df, "y", "group"), "control")["flagged"].iloc[0])
    assert flags / 300 <= 0.06  # Fisher's exact test is conservative: at most alpha, plus Monte Carlo slack


def test_equal_missingness_is_analysed_and_counted_beside_each_estimate():
    df = _counterfactual(gap=0.4, seed=1)
    drop = df.groupby("group").head(6).index  # 6 missing in each group
    df.loc[drop, "score"] = np.nan
    res = analyze_table(df, outcome="score", group="group", control="control", cluster="post")
    assert res.loc[0, "n_missing"] == 6 and res.loc[0, "ref_n_missing"] == 6
    assert res.loc[0, "ci_low"] <= 0.4 <= res.loc[0, "ci_high"]


def test_a_group_without_usable_values_is_listed_with_its_reason():
    t = simulate_audit_table(n_posts=20, groups=["A", "B"], seed=0)
    t.loc[t.group == "B", "value"] = np.nan
    with pytest.raises(AuditError) as err:
        gap_test(t, outcome="value")
    assert "B 20 of 20" in err.value.message
    res = gap_test(t, outcome="value", allow_missing=True)
    b = res[res.group == "B"].iloc[0]
    assert b["method"] == "not fitted" and "no usable values" in b["warning"] and b["n_missing"] == 20
    assert res[res.group == "A"]["p_value"].notna().all()
    fam = analyze_table(t, outcome="value", group="group", control="control", cluster="post_id", allow_missing=True)
    assert sorted(fam.group) == ["A", "B"]


def test_float_coded_group_levels_are_matched_as_written(tmp_path, capsys):
    df = _counterfactual(gap=0.5, seed=2)
    df["group"] = df["group"].map({"control": 0.0, "A": 1.0})
    res = gap_test(df, outcome="score", group="group", control="0", cluster="post")
    assert res["group"].tolist() == ["1"] and res["reference"].tolist() == ["0"]
    path = tmp_path / "float.csv"
    df.to_csv(path, index=False)  # written as 0.0 / 1.0
    rc = main(["analyze", str(path), "--outcome", "score", "--group", "group", "--control", "0", "--cluster", "post",
               "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and rows[0]["group"] == "1.0" and rows[0]["reference"] == "0.0"


def test_design_is_detected_and_the_effective_sample_size_is_the_clusters():
    cf = _counterfactual(n_posts=30)
    assert detect_design(cf, "group", "post").kind == "counterfactual"
    r = gap_test(cf, outcome="score", group="group", control="control", cluster="post")
    assert r.loc[0, "design"] == "counterfactual" and r.loc[0, "n_clusters"] == 30 and r.loc[0, "n"] == 30
    obs = cf.assign(post=np.where(cf.group == "A", cf.post + 1000, cf.post))
    obs = pd.concat([obs, obs.assign(score=obs.score + 0.1)])  # two rows per post, each post under one group
    r = gap_test(obs, outcome="score", group="group", control="control", cluster="post")
    assert r.loc[0, "design"] == "observational" and r.loc[0, "n_clusters"] == 60 and r.loc[0, "method"].startswith("lmm")
    mixed = pd.concat([cf, obs[obs.post >= 1000]])
    assert detect_design(mixed, "group", "post").kind == "mixed"
    statement = detect_design(obs, "group", "post").statement()
    assert "not a counterfactual comparison" in statement and "60 posts (120 rows)" in statement


def test_posts_that_never_repeat_get_an_identifiable_model_that_recovers_a_planted_gap():
    rng = np.random.default_rng(11)
    n = 400
    df = pd.DataFrame({"post": np.arange(n), "group": np.where(np.arange(n) % 2, "A", "control")})
    df["score"] = 1.0 - 0.3 * (df.group == "A") + rng.normal(0, 0.6, n)
    r = gap_test(df, outcome="score", group="group", control="control", cluster="post").iloc[0]
    assert r["method"] == NO_REPEATS and "lmm" not in r["method"]
    assert r["ci_low"] <= -0.3 <= r["ci_high"] and r["p_value"] < 0.05 and r["design"] == "observational"


def test_observational_table_states_its_design_on_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"post": np.repeat(np.arange(40), 3), "group": np.repeat(np.where(np.arange(40) % 2, "A", "c"), 3)})
    df["score"] = rng.normal(0, 1, len(df))
    path = tmp_path / "obs.csv"
    df.to_csv(path, index=False)
    rc = main(["analyze", str(path), "--outcome", "score", "--group", "group", "--control", "c", "--cluster", "post"])
    out = capsys.readouterr().out
    assert rc == 0 and "Observational design" in out and "Effective sample size: 40 posts (120 rows)" in out


def test_collinear_factor_error_names_by():
    t = simulate_audit_table(n_posts=20, groups=["A"], cue_types=["tag", "name"], seed=0)
    with pytest.raises(AuditError) as err:
        gap_test(t, outcome="value", factors=["cue_type"])
    assert "collinear" in err.value.message and "--by cue_type" in err.value.fix
    assert gap_test(t, outcome="value", by="cue_type")["cue_type"].tolist() == ["pooled", "name", "tag"]


def test_the_run_analysis_states_its_design_and_counts_per_row():
    from audit.stats import analyze_scores
    from audit.stats.simulate import simulate_audit_table as sim

    t = sim(n_posts=12, groups=["A"], cue_types=["tag"], seed=4).assign(outcome="x.y", model_label="m",
                                                                        style="plain", sample_index=0)
    t["request_key"] = [f"k{i}" for i in range(len(t))]
    res = analyze_scores(t, paired_check=False)
    meta = dict(zip(res.meta.key, res.meta.value))
    assert meta["design"] == "counterfactual" and "12 posts" in meta["design_statement"]
    assert set(res.results["design"]) == {"counterfactual"} and (res.results["n_clusters"] == 12).all()
