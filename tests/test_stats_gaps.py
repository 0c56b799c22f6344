"""Gap tests: planted gaps are recovered within their CIs, effect sizes are right, bad tables fail clearly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.errors import AuditError
from audit.stats import adjust_family, gap_test, paired_contrasts, partial_pool
from audit.stats.gaps import fieller_ratio
from audit.stats.simulate import simulate_audit_table


def test_planted_gap_recovered_within_ci():
    # 11% lower than the control for group A, nothing for B; replicate samples -> nested model
    t = simulate_audit_table(n_posts=80, groups=["A", "B"], cue_types=["tag", "name"], samples=2,
                             styles=["plain", "warm"], gaps={"A": -0.11}, ref_mean=1.0, sd_post=0.4, sd_variant=0.1,
                             sd_resid=0.5, seed=42)
    r = gap_test(t, outcome="value", factors=["style"], inner="variant_id", by="cue_type")
    a = r[(r.group == "A") & (r.cue_type == "pooled")].iloc[0]
    b = r[(r.group == "B") & (r.cue_type == "pooled")].iloc[0]
    assert a.ci_low <= -0.11 <= a.ci_high
    assert a.rel_ci_low <= -0.11 <= a.rel_ci_high
    assert a.p_value < 0.01 and a.ci_high < 0           # detected
    assert b.ci_low <= 0 <= b.ci_high                    # no gap planted
    assert a.method.startswith("lmm (1|post)+(1|post:inner)")
    # per cue type rows exist and the planted gap is inside each CI
    per_cue = r[(r.group == "A") & (r.cue_type != "pooled")]
    assert set(per_cue.cue_type) == {"tag", "name"}
    assert ((per_cue.ci_low <= -0.11) & (-0.11 <= per_cue.ci_high)).all()
    # sample sizes
    assert a.n == 80 * 2 * 2 * 2 and a.n_posts == 80


def test_ci_coverage_of_planted_gap():
    """Over 60 seeds the 95% CI covers the planted gap about 95% of the time (binomial bounds)."""
    cover_abs = cover_rel = 0
    n = 60
    for seed in range(n):
        t = simulate_audit_table(n_posts=25, groups=["A"], gaps={"A": 0.2}, ref_mean=2.0, sd_post=0.5,
                                 sd_resid=0.5, seed=1000 + seed)
        a = gap_test(t, outcome="value").iloc[0]
        cover_abs += a.ci_low <= 0.2 <= a.ci_high
        cover_rel += a.rel_ci_low <= 0.1 <= a.rel_ci_high
    # P(X <= 51 | n=60, p=.95) < 0.5%: a CI with real 95% coverage passes, one with 85% fails
    assert cover_abs >= 52 and cover_rel >= 52


def test_effect_sizes_match_their_formulas():
    t = simulate_audit_table(n_posts=40, groups=["A"], gaps={"A": -0.3}, ref_mean=1.5, seed=3)
    a = gap_test(t, outcome="value").iloc[0]
    # no covariates: the model-based reference mean is the intercept, the gap the A coefficient
    assert a.relative_gap == pytest.approx(a.estimate / a.ref_mean)
    assert a.ci_high - a.ci_low == pytest.approx(2 * stats.norm.ppf(0.975) * a.se)
    assert a.p_value == pytest.approx(2 * stats.norm.sf(abs(a.estimate / a.se)))
    # balanced design: the gap equals the difference of the raw group means
    means = t.groupby("group")["value"].mean()
    assert a.estimate == pytest.approx(means["A"] - means["control"], abs=1e-10)
    assert np.sign(a.std_effect) == np.sign(a.estimate) and abs(a.std_effect) < abs(a.estimate) / 0.3


def test_fieller_interval_agrees_with_the_absolute_test():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b = rng.normal(0, 1), rng.uniform(0.5, 3)
        vaa, vbb = rng.uniform(0.01, 0.5), rng.uniform(0.001, 0.05)
        vab = rng.uniform(-0.9, 0.9) * np.sqrt(vaa * vbb)
        r, lo, hi = fieller_ratio(a, b, vaa, vab, vbb, 1.96)
        assert lo <= r <= hi
        assert (lo <= 0 <= hi) == (abs(a) / np.sqrt(vaa) <= 1.96)


def test_binary_outcome_uses_gee_and_recovers_gap():
    t = simulate_audit_table(n_posts=150, groups=["A", "B"], binary=True, ref_mean=0.3, gaps={"A": 0.15},
                             sd_post=0.1, seed=9)
    r = gap_test(t, outcome="value")
    a = r[r.group == "A"].iloc[0]
    assert a.method.startswith("gee logistic")
    assert a.ci_low <= 0.15 <= a.ci_high and a.p_value < 0.01
    obs = t.groupby("group")["value"].mean()
    assert a.estimate == pytest.approx(obs["A"] - obs["control"], abs=1e-6)  # saturated model: raw proportions


def test_binary_without_events_in_a_group_falls_back_and_says_so():
    t = simulate_audit_table(n_posts=30, groups=["A"], binary=True, ref_mean=0.3, seed=1)
    t.loc[t.group == "A", "value"] = 0.0
    a = gap_test(t, outcome="value").iloc[0]
    assert "fallback" in a.method and "no variation" in a.warning


def test_mixedlm_method_gives_the_same_numbers():
    t = simulate_audit_table(n_posts=30, groups=["A", "B"], gaps={"A": 0.2}, seed=4)
    fast = gap_test(t, outcome="value")
    slow = gap_test(t, outcome="value", method="mixedlm")
    assert np.allclose(fast.estimate, slow.estimate, atol=1e-6)
    assert np.allclose(fast.se, slow.se, atol=1e-4)


@pytest.mark.parametrize(
    "mutate, kwargs, message",
    [
        (lambda t: t.drop(columns=["post_id"]), {}, "not found"),
        (lambda t: t, {"control": "nobody"}, "does not occur"),
        (lambda t: t.assign(value=1.0), {}, "constant"),
        (lambda t: t[t.post_id.isin(["p0", "p1", "p2"])], {}, "cluster"),
        (lambda t: t.assign(value="high"), {}, "not numeric"),
        (lambda t: t[t.group == "control"], {}, "only the reference"),
        (lambda t: t.iloc[:0], {}, "no rows"),
        (lambda t: t.assign(post_id=t.post_id.where(t.index != 5)), {}, "missing values"),
    ],
    ids=["missing-column", "absent-control", "constant", "few-clusters", "not-numeric", "one-group", "empty",
         "missing-cluster"],
)
def test_bad_tables_raise_one_clear_error(mutate, kwargs, message):
    t = simulate_audit_table(n_posts=20, groups=["A"], seed=0)
    args = dict(outcome="value") | kwargs
    with pytest.raises(AuditError) as err:
        gap_test(mutate(t), where="my.csv", **args)
    assert message in err.value.message and err.value.where == "my.csv" and err.value.fix


def test_collinear_factor_is_a_clear_error():
    t = simulate_audit_table(n_posts=20, groups=["A"], seed=0)
    with pytest.raises(AuditError, match="collinear"):
        gap_test(t, outcome="value", factors=["cue_type"])


def test_holm_and_bh_match_their_definitions():
    p = np.array([0.001, 0.01, 0.02, 0.03, 0.2, np.nan])
    out = adjust_family(pd.DataFrame({"p_value": p}))
    m = 5
    order = np.argsort(p[:5])
    holm = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[:5][order]))
    bh = np.minimum.accumulate((m * p[:5][order] / np.arange(1, m + 1))[::-1])[::-1]
    assert np.allclose(out.p_holm.to_numpy()[:5][order], holm)
    assert np.allclose(out.p_bh.to_numpy()[:5][order], np.minimum(bh, 1))
    assert np.isnan(out.p_holm.iloc[5]) and not out.significant_holm.iloc[5]
    assert (out.p_holm[:5] >= out.p_bh[:5] - 1e-15).all()
    # and statsmodels agrees, on random p-values with ties
    from statsmodels.stats.multitest import multipletests

    q = np.round(np.random.default_rng(3).uniform(0, 0.2, 40), 3)
    got = adjust_family(pd.DataFrame({"p_value": q}))
    assert np.allclose(got.p_holm, multipletests(q, method="holm")[1])
    assert np.allclose(got.p_bh, multipletests(q, method="fdr_bh")[1])


def test_paired_contrasts_match_scipy():
    t = simulate_audit_table(n_posts=30, groups=["A", "B"], cue_types=["tag", "name"], gaps={"A": -0.2}, seed=5)
    r = paired_contrasts(t, "value", "group", "control", "post_id", by="cue_type")
    a = r[(r.group == "A") & (r.cue_type == "pooled")].iloc[0]
    x = t[t.group == "A"].groupby("post_id").value.mean()
    y = t[t.group == "control"].groupby("post_id").value.mean()
    ref = stats.ttest_rel(x, y.loc[x.index])
    assert a.t == pytest.approx(ref.statistic) and a.p_value == pytest.approx(ref.pvalue)
    assert a.dof == 29 and a.n_posts == 30
    assert set(r.cue_type) == {"pooled", "tag", "name"}


def test_partial_pooling_shrinks_noisy_cells_more():
    cells = pd.DataFrame({"estimate": [-0.05, -0.15, -0.10, -0.20, -0.60], "se": [0.02, 0.02, 0.02, 0.02, 0.30]})
    out = partial_pool(cells)
    assert out.tau.iloc[0] > 0
    assert out.shrinkage.iloc[4] > 0.5 > out.shrinkage.iloc[0]
    mu = out.pooled_mean.iloc[0]
    assert abs(out.pooled_estimate.iloc[4] - mu) < 0.5 * abs(-0.60 - mu)
    assert (out.pooled_se <= out.raw_se + 1e-12).all()
    # homogeneous cells: tau = 0 and every cell gets the precision-weighted mean
    same = partial_pool(pd.DataFrame({"estimate": [0.1, 0.1001, 0.0999], "se": [0.05, 0.05, 0.05]}))
    assert same.tau.iloc[0] == pytest.approx(0.0, abs=1e-3)
    assert np.allclose(same.pooled_estimate, 0.1, atol=1e-3)


def test_partial_pooling_reduces_error_of_extreme_cells():
    """Simulated truth: pooled estimates are closer to the true cell gaps than raw ones on average."""
    rng = np.random.default_rng(1)
    raw_err = pooled_err = 0.0
    for _ in range(200):
        truth = rng.normal(-0.1, 0.05, 6)
        se = rng.choice([0.03, 0.15], 6)
        est = truth + rng.normal(0, se)
        out = partial_pool(pd.DataFrame({"estimate": est, "se": se}))
        raw_err += np.sum((est - truth) ** 2)
        pooled_err += np.sum((out.pooled_estimate.to_numpy() - truth) ** 2)
    assert pooled_err < 0.8 * raw_err


def test_permute_within_keeps_each_posts_labels():
    from audit.stats import permute_within

    t = simulate_audit_table(n_posts=10, groups=["A", "B", "C"], cue_types=["tag", "name"], seed=1)
    p = permute_within(t, "group", "post_id", seed=3, also=("cue_type",))
    key = ["post_id", "group", "cue_type"]
    assert (t.groupby(key).size().sort_index() == p.groupby(key).size().sort_index()).all()
    assert (p["value"] == t["value"]).all() and (p["group"] != t["group"]).any()


def test_binary_gap_p_value_and_ci_never_disagree_even_near_separation():
    """A report must not call a gap significant while its 95% CI contains 0. The demo audit once
    produced p = 3e-9 with a CI of -0.06 to +0.31 when the p-value came from the log-odds-ratio Wald
    test under near-separation; this is that pattern (6 posts, one post with no events in the
    control, groups almost always 1)."""
    control = {"p1": [1, 0], "p2": [1, 1], "p3": [1, 1], "p4": [0, 0], "p5": [1, 1], "p6": [1, 1]}
    groups = {
        "A": {"p1": [1, 1, 1, 1], "p2": [1, 1, 1, 1], "p3": [1, 1, 1, 1], "p4": [1, 1, 1, 0],
              "p5": [1, 1, 1, 1], "p6": [1, 1, 1, 1]},
        "B": {"p1": [1, 1, 1, 0], "p2": [1, 1, 1, 1], "p3": [1, 1, 1, 1], "p4": [1, 1, 0, 0],
              "p5": [1, 1, 1, 1], "p6": [1, 1, 1, 1]},
        "C": {"p1": [1, 0, 1, 0], "p2": [1, 1, 0, 1], "p3": [1, 1, 1, 1], "p4": [0, 1, 0, 0],
              "p5": [1, 1, 1, 0], "p6": [1, 1, 1, 1]},
    }
    rows = [{"post": p, "group": "control", "y": float(v)} for p, vs in control.items() for v in vs]
    rows += [{"post": p, "group": g, "y": float(v)} for g, per in groups.items() for p, vs in per.items() for v in vs]
    res = gap_test(pd.DataFrame(rows), outcome="y", group="group", control="control", cluster="post", method="gee")
    assert len(res) == 3 and res["method"].str.contains("gee").all()
    for r in res.itertuples():
        excludes_zero = r.ci_low > 0 or r.ci_high < 0
        assert (r.p_value < 0.05) == excludes_zero, (r.group, r.p_value, r.ci_low, r.ci_high)


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("groups", [["A", "B", "C"], ["Asian", "Asian man", "Black woman"]])
def test_one_cue_type_per_group_reuses_the_pooled_fit_number_for_number(monkeypatch, binary, groups):
    """With one cue type besides the control's, the group-by-cue-type model is the pooled model: its rows
    (relabelled) must equal a refit of the condition model exactly; with two cue types it is refitted."""
    import audit.stats.gaps as gaps_mod

    t = simulate_audit_table(n_posts=30, groups=groups, gaps={groups[0]: -0.3}, samples=2, binary=binary,
                             ref_mean=0.4 if binary else 1.0, seed=11)
    kw = dict(outcome="value", group="group", control="control", cluster="post_id", by="cue_type",
              inner="variant_id")
    fits = []
    real = gaps_mod._fit_stated
    monkeypatch.setattr(gaps_mod, "_fit_stated", lambda *a: fits.append(a[2]) or real(*a))
    shortcut = gap_test(t, **kw)
    assert len(fits) == 1  # the pooled fit only
    monkeypatch.setattr(gaps_mod, "_condition_is_group", lambda *a: None)
    refit = gap_test(t, **kw)
    assert len(fits) == 3 and fits[-1] == "__condition__"
    pd.testing.assert_frame_equal(shortcut, refit, check_exact=True)
    assert set(shortcut["cue_type"]) == {"pooled", "explicit_tag"}
    # two cue types: each group has two levels, the condition model is another model and is fitted
    t2 = simulate_audit_table(n_posts=30, groups=groups, cue_types=["tag", "name"], seed=11)
    fits.clear()
    monkeypatch.setattr(gaps_mod, "_condition_is_group", real_condition_is_group)
    gap_test(t2, **kw)
    assert fits == ["group", "__condition__"]


from audit.stats.gaps import _condition_is_group as real_condition_is_group  # noqa: E402


def test_a_gee_fallback_is_refitted_by_cue_type(monkeypatch):
    """The pooled GEE fell back (no variation in a group): its reason names the groups, so the condition
    model is fitted on its own, as before, and names its labels' groups."""
    import audit.stats.gaps as gaps_mod

    t = simulate_audit_table(n_posts=30, groups=["A", "B"], binary=True, ref_mean=0.4, seed=2)
    t.loc[t["group"] == "A", "value"] = 0.0
    fits = []
    real = gaps_mod._fit_stated
    monkeypatch.setattr(gaps_mod, "_fit_stated", lambda *a: fits.append(a[2]) or real(*a))
    r = gap_test(t, outcome="value", group="group", control="control", cluster="post_id", by="cue_type")
    assert fits == ["group", "__condition__"]
    assert r["method"].str.contains("GEE fallback").all()
