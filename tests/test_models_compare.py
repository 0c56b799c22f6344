"""Differences of gaps between models and runs (audit.stats.models_compare): recovery of a planted
difference, calibration under the null, the correction family, sampling variability and the
samples-versus-posts advice. Seeded simulations on synthetic tables (audit.stats.simulate)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.stats.corrections import adjust_family
from audit.stats.models_compare import gap_interaction, sampling_variability, samples_vs_posts
from audit.stats.simulate import simulate_audit_table
from audit.stats.stage import analyze_scores


def two_models(gap_a: float, gap_b: float, *, seed: int, n_posts: int = 40, samples: int = 1, sd_variant: float = 0.0,
               sd_post: float = 0.3) -> pd.DataFrame:
    """Two models replying to the same posts and variants: a shared post effect, each model its own noise."""
    a = simulate_audit_table(n_posts=n_posts, gaps={"A": gap_a}, model_label="m1", seed=seed, samples=samples,
                             sd_variant=sd_variant, sd_post=sd_post)
    b = simulate_audit_table(n_posts=n_posts, gaps={"A": gap_b}, model_label="m2", seed=seed + 10_000,
                             samples=samples, sd_variant=sd_variant, sd_post=sd_post)
    post_effect = np.random.default_rng(seed + 1).normal(0, 0.5, n_posts)  # the same posts: a shared effect
    for t in (a, b):
        t["value"] += post_effect[t["post_id"].str[1:].astype(int).to_numpy()]
    return pd.concat([a, b], ignore_index=True)


def test_planted_difference_of_gaps_is_recovered_within_its_ci():
    covered, signs = 0, 0
    for seed in range(30):
        r = gap_interaction(two_models(-0.5, -0.1, seed=seed), outcome="value", between="model_label",
                            reference_level="m1")
        row = r[r["group"] == "A"].iloc[0]
        covered += row["ci_low"] <= 0.4 <= row["ci_high"]
        signs += row["estimate"] > 0
        # the gap of each model is reported too, and the difference is exactly their difference
        assert row["gap"] - row["gap_reference_model"] == pytest.approx(row["estimate"], abs=1e-9)
    assert covered >= 25  # nominal 95%: 28.5 of 30 expected; 25 is below the 1% binomial quantile
    assert signs >= 28


def test_difference_matches_two_separate_gap_estimates_in_a_balanced_design():
    """With one row per variant and the post effect in common, the difference of gaps is the difference
    of the two models' within-post gaps (balanced design: OLS and the mixed model agree)."""
    t = two_models(-0.4, 0.0, seed=3)
    r = gap_interaction(t, outcome="value", between="model_label", reference_level="m1")
    means = t.groupby(["model_label", "group"])["value"].mean()
    want = (means["m2", "A"] - means["m2", "control"]) - (means["m1", "A"] - means["m1", "control"])
    assert r.set_index("group").loc["A", "estimate"] == pytest.approx(want, abs=1e-8)


def test_null_calibration_of_the_interaction_tests():
    """No difference between the models (gaps planted, equal in both): the rejection rate at 5% is 5%."""
    p = []
    for seed in range(300):
        r = gap_interaction(two_models(-0.3, -0.3, seed=seed, n_posts=25), outcome="value", between="model_label",
                            reference_level="m1")
        p += r["p_value"].tolist()
    p = np.asarray(p)
    rate = float((p < 0.05).mean())
    assert 0.03 <= rate <= 0.075, rate  # 600 tests: binomial 99% band around 0.05 is about 0.028-0.074
    assert 0.4 <= float(np.mean(p)) <= 0.6  # uniform under the null


def test_several_models_join_the_correction_family_and_one_model_adds_nothing():
    t = two_models(-0.5, 0.0, seed=1)
    one = analyze_scores(t[t["model_label"] == "m1"], paired_check=False)
    assert "results_models" not in one.tables and one.models.empty
    two = analyze_scores(t, paired_check=False, reference_model="m1")
    m = two.models
    assert set(m["model_label"]) == {"m2"} and set(m["reference_model"]) == {"m1"}
    a = m.set_index("group").loc["A"]
    assert a["ci_low"] <= 0.5 <= a["ci_high"] and a["significant_holm"]
    # Holm over every test of the family at once: gaps, disparities and differences of gaps
    allp = pd.concat([two.results[["p_value"]], two.disparity[["p_value"]], m[["p_value"]]], ignore_index=True)
    joint = adjust_family(allp)["p_holm"].to_numpy()
    assert np.allclose(m["p_holm"].to_numpy(), joint[-len(m):])
    assert np.allclose(two.results["p_holm"].to_numpy(), joint[:len(two.results)])
    fam = dict(zip(two.meta["key"], two.meta["value"]))
    assert int(fam["family_size"]) == len(allp) and fam["reference_model"] == "m1"


def test_model_comparisons_are_exploratory_unless_the_reference_model_is_pre_registered():
    t = two_models(-0.5, 0.0, seed=2)
    loose = analyze_scores(t, paired_check=False, primary=["empathy"])
    assert set(loose.models["family"]) == {"exploratory"}
    stated = analyze_scores(t, paired_check=False, primary=["empathy"], reference_model="m1")
    assert set(stated.models["family"]) == {"confirmatory"}
    conf = pd.concat([stated.results.loc[stated.results["family"] == "confirmatory", ["p_value"]],
                      stated.disparity.loc[stated.disparity["family"] == "confirmatory", ["p_value"]],
                      stated.models[["p_value"]]], ignore_index=True)
    assert np.allclose(stated.models["p_holm"], adjust_family(conf)["p_holm"].to_numpy()[-len(stated.models):])


def test_reference_model_errors_name_the_key():
    t = two_models(-0.5, 0.0, seed=2)
    with pytest.raises(AuditError) as e:
        analyze_scores(t, paired_check=False, reference_model="nope")
    assert "reference model 'nope'" in e.value.message and "analysis.reference_model" in e.value.message
    from audit.spec import spec_from_dict

    with pytest.raises(Exception) as e2:
        spec_from_dict({"name": "x", "models": [{"label": "a"}], "analysis": {"reference_model": "b"}})
    assert "reference_model 'b'" in str(e2.value)
    with pytest.raises(AuditError) as e3:
        gap_interaction(t[t["model_label"] == "m1"], outcome="value", between="model_label")
    assert "nothing to compare" in e3.value.message


def test_sampling_variance_is_recovered_and_its_share_of_the_gap_variance():
    t = simulate_audit_table(n_posts=60, samples=3, sd_variant=0.3, sd_resid=0.6, seed=5)
    v = sampling_variability(t).iloc[0]
    assert v["var_sample"] == pytest.approx(0.36, rel=0.15)
    assert v["var_variant"] == pytest.approx(0.09, abs=0.05)
    want = (v["var_sample"] / 3) / (v["var_variant"] + v["var_sample"] / 3)
    assert v["share_sampling"] == pytest.approx(want)
    assert v["samples"] == 3 and v["replicate"] == "sample_index"
    assert sampling_variability(simulate_audit_table(n_posts=10, seed=1)).empty  # one sample: nothing to estimate


def test_samples_versus_posts_advice():
    a = samples_vs_posts(0.09, 0.36, n_posts=40, samples=1)
    assert a["share_sampling"] == pytest.approx(0.8)
    assert a["se_ratio_double_posts"] == pytest.approx(np.sqrt(0.5))
    assert a["se_ratio_double_samples"] == pytest.approx(np.sqrt((0.09 + 0.18) / 0.45))
    assert a["best_samples"] == 1  # replies are the only cost: more posts always
    # a new variant costs 16 replies (writing, checking): S* = sqrt(16 * 0.36 / 0.09) = 8
    assert samples_vs_posts(0.09, 0.36, n_posts=40, samples=1, cost_variant=16)["best_samples"] == 8
    quiet = samples_vs_posts(0.5, 0.01, n_posts=40, samples=2)
    assert quiet["advice"].startswith("add posts, not samples")


def test_power_advises_samples_versus_posts_from_the_variance_components():
    from audit.stats import plan_power

    plan = plan_power(None, gap=0.2, groups=2, sd_post=0.3, sd_variant=0.1, sd_resid=0.6, ref_mean=1.0,
                      posts=[20], samples=[1], sims=10, seed=1)
    note = next(n for n in plan.notes if n.startswith("samples versus posts"))
    # share = 0.36 / (0.01 + 0.36) = 97%
    assert "97% of a gap's variance" in note and "doubling the samples" in note
    silent = plan_power(None, gap=0.2, groups=2, sd_post=0.3, sd_resid=0.6, ref_mean=1.0, posts=[20], samples=[1],
                        sims=10, seed=1)
    assert not any(n.startswith("samples versus posts") for n in silent.notes)  # variant variance unknown


def test_a_run_with_repeated_samples_reports_its_sampling_variance():
    """samples > 1 in one run: the analysis stage adds results_variability (planted sd_resid 0.5 -> 0.25);
    with one sample per variant it adds nothing."""
    t = simulate_audit_table(n_posts=50, samples=3, sd_variant=0.2, sd_resid=0.5, seed=11)
    r = analyze_scores(t, paired_check=False)
    v = r.tables["results_variability"]
    assert len(v) == 1 and v["samples"].iloc[0] == 3 and v["replicate"].iloc[0] == "sample_index"
    assert v["var_sample"].iloc[0] == pytest.approx(0.25, rel=0.15)
    assert 0 < v["share_sampling"].iloc[0] < 1
    one = analyze_scores(simulate_audit_table(n_posts=50, samples=1, seed=11), paired_check=False)
    assert "results_variability" not in one.tables
