"""The exact fast random-intercept path agrees with statsmodels MixedLM (the reference implementation)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM

from audit.stats.fastlmm import fit_nested_ri
from audit.stats.gaps import design_matrix
from audit.stats.simulate import simulate_audit_table


def _mixedlm(t: pd.DataFrame, X: np.ndarray, nested: bool, reml: bool):
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    df["y"], df["g"], df["v"] = t["value"].to_numpy(), t["post_id"].to_numpy(), t["variant_id"].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = MixedLM.from_formula("y ~ 0 + " + " + ".join(df.columns[: X.shape[1]]), df, groups="g", re_formula="1",
                                 vc_formula={"v": "0 + C(v)"} if nested else None)
        return m.fit(reml=reml)


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("reml", [True, False])
def test_agrees_with_statsmodels_mixedlm(nested, reml):
    t = simulate_audit_table(n_posts=40, groups=["A", "B", "C"], cue_types=["tag", "name"], samples=2 if nested else 1,
                             gaps={"A": -0.2}, sd_post=0.5, sd_variant=0.4, sd_resid=0.6, seed=11)
    X, _, _ = design_matrix(t, "group", "control")
    f = fit_nested_ri(t["value"].to_numpy(), X, t["post_id"].to_numpy(), t["variant_id"].to_numpy() if nested else None,
                      reml=reml)
    r = _mixedlm(t, X, nested, reml)
    k = X.shape[1]
    assert np.max(np.abs(f.params - r.fe_params.to_numpy())) < 1e-6
    assert np.max(np.abs(f.bse - r.bse.to_numpy()[:k])) < 1e-4
    assert f.scale == pytest.approx(r.scale, rel=1e-4)
    assert f.var_post == pytest.approx(float(r.cov_re.iloc[0, 0]), rel=1e-3, abs=1e-6)
    if nested:
        assert f.var_inner == pytest.approx(float(r.vcomp[0]), rel=1e-3, abs=1e-6)
    # the criterion is -2 log-likelihood: no worse than statsmodels' optimum
    assert f.criterion <= -2 * r.llf + 1e-6
    assert f.converged and not f.singular


def test_singular_fit_is_reported_and_equals_ols():
    rng = np.random.default_rng(5)
    n = 400
    post = np.repeat(np.arange(40), 10)
    x = rng.integers(0, 2, n).astype(float)
    y = 1 + 0.3 * x + rng.normal(0, 1, n)  # no post effect at all
    y = y - pd.Series(y).groupby(post).transform("mean").to_numpy() + y.mean()  # force between-post variance to ~0
    X = np.column_stack([np.ones(n), x])
    f = fit_nested_ri(y, X, post)
    assert f.singular and any("singular" in w for w in f.warnings)
    beta_ols = np.linalg.lstsq(X, y, rcond=None)[0]
    assert np.allclose(f.params, beta_ols, atol=1e-8)


def test_rank_deficient_design_raises():
    X = np.column_stack([np.ones(20), np.r_[np.ones(10), np.zeros(10)], np.r_[np.ones(10), np.zeros(10)]])
    with pytest.raises(np.linalg.LinAlgError):
        fit_nested_ri(np.arange(20.0), X, np.repeat(np.arange(5), 4))


def test_invariant_to_row_order_and_cluster_labels():
    t = simulate_audit_table(n_posts=25, groups=["A", "B"], gaps={"A": 0.3}, seed=3)
    X, _, _ = design_matrix(t, "group", "control")
    f1 = fit_nested_ri(t["value"].to_numpy(), X, t["post_id"].to_numpy())
    perm = np.random.default_rng(0).permutation(len(t))
    labels = pd.factorize(t["post_id"])[0] * 7 + 3
    f2 = fit_nested_ri(t["value"].to_numpy()[perm], X[perm], labels[perm])
    assert np.allclose(f1.params, f2.params, atol=1e-10) and np.allclose(f1.bse, f2.bse, atol=1e-8)


def test_an_outcome_the_fixed_effects_reproduce_exactly_is_a_stated_zero_variance_fit():
    """Every cell of a group has the same value and no within-cell spread: the REML criterion is log(0)
    everywhere. The fit says so (no optimiser crash, as scipy's Powell gave on this case), with zero
    variances and standard errors, which the gap test then reports as 'no standard error'."""
    import numpy as np

    from audit.stats.fastlmm import fit_nested_ri

    X = np.array([[1, 1, 0], [1, 0, 1], [1, 0, 0]] * 5, dtype=float)
    y = X @ np.array([-0.473, 0.1361, 0.0])
    clusters = np.repeat(np.arange(5), 3)
    inner = np.arange(15)
    weights = np.tile([1.0, 2.0, 1.0], 5)
    fit = fit_nested_ri(y, X, clusters, inner, weights=weights, within_ss=0.0)
    np.testing.assert_allclose(fit.params, [-0.473, 0.1361, 0.0], atol=1e-12)
    assert np.all(fit.bse == 0) and fit.scale == 0 and fit.singular
    assert any("reproduce the outcome exactly" in w for w in fit.warnings)
    moved = fit_nested_ri(y + np.random.default_rng(1).normal(0, 0.05, len(y)), X, clusters, inner,
                          weights=weights, within_ss=0.0)
    assert not any("reproduce the outcome exactly" in w for w in moved.warnings) and np.all(moved.bse > 0)
