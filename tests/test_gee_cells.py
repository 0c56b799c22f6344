"""The cell GEE (audit.stats.gee_cells) equals statsmodels' GEE on the observations the cells hold."""

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.genmod.cov_struct import Exchangeable
from statsmodels.tools.sm_exceptions import IterationLimitWarning

from audit.stats.cells import expand_binary
from audit.stats.gee_cells import gee_logit_cells


def _data(seed, clusters, groups, max_rep, factor=False):
    rng = np.random.default_rng(seed)
    m = clusters * groups * (2 if factor else 1)
    cl = np.repeat(np.arange(clusters), groups * (2 if factor else 1))
    g = np.tile(np.repeat(np.arange(groups), 2 if factor else 1), clusters)
    cols = [np.ones(m)] + [(g == j) * 1.0 for j in range(1, groups)]
    if factor:
        f = np.tile([0.0, 1.0], m // 2)
        cols.append(f)
    X = np.column_stack(cols)
    n = rng.integers(1, max_rep + 1, m).astype(float)
    eta = -0.4 + 0.5 * (g == 1) + rng.normal(0, 0.8, clusters)[cl] + (0.3 * X[:, -1] if factor else 0)
    ones = rng.binomial(n.astype(int), 1 / (1 + np.exp(-eta)))
    return ones / n, n, X, cl


def _statsmodels(y, n, X, cl, maxiter=100):
    row, ye = expand_binary(y, n)
    order = np.argsort(cl[row], kind="stable")
    model = sm.GEE(ye[order], X[row][order], groups=cl[row][order], family=sm.families.Binomial(),
                   cov_struct=Exchangeable())
    return model.fit(maxiter=maxiter, cov_type="bias_reduced")


@pytest.mark.parametrize("seed,clusters,groups,max_rep,factor", [
    (0, 40, 9, 3, False), (1, 200, 3, 1, False), (2, 60, 5, 12, True), (3, 15, 2, 40, False)])
def test_equals_statsmodels_on_the_observations(seed, clusters, groups, max_rep, factor):
    y, n, X, cl = _data(seed, clusters, groups, max_rep, factor)
    ref = _statsmodels(y, n, X, cl)
    fit = gee_logit_cells(y, n, X, cl, maxiter=100)
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.cov_bias_reduced, ref.cov_params(), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(fit.cov_robust, ref.cov_robust, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(fit.cov_naive, ref.cov_naive, rtol=1e-9, atol=1e-14)
    assert fit.dep_param == pytest.approx(ref.model.cov_struct.dep_params, rel=1e-9)
    assert fit.iterations == len(ref.model._fit_history["params"])


def test_cells_split_differently_give_the_same_fit():
    """Cells are sufficient: one cell of 6 observations and the same observations as 6 cells of one."""
    y, n, X, cl = _data(4, 30, 3, 6)
    big = gee_logit_cells(y, n, X, cl)
    row, ye = expand_binary(y, n)
    small = gee_logit_cells(ye, np.ones(len(ye)), X[row], cl[row])
    np.testing.assert_allclose(big.params, small.params, rtol=1e-10)
    np.testing.assert_allclose(big.cov_bias_reduced, small.cov_bias_reduced, rtol=1e-9)


def test_warns_as_statsmodels_at_the_iteration_limit():
    y, n, X, cl = _data(5, 40, 3, 4)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        fit = gee_logit_cells(y, n, X, cl, maxiter=2)
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        _statsmodels(y, n, X, cl, maxiter=2)
    assert not fit.converged
    assert [str(w.message) for w in ours if issubclass(w.category, IterationLimitWarning)] == \
        [str(w.message) for w in theirs if issubclass(w.category, IterationLimitWarning)] != []


def test_a_continuous_covariate_makes_every_cell_its_own_row_and_still_equals_statsmodels():
    """More distinct covariate rows than fastlmm._MAX_DESIGN_ROWS: the counts are kept per cell."""
    y, n, X, cl = _data(6, 250, 9, 3)
    x = np.random.default_rng(6).normal(size=len(y))
    X = np.column_stack([X, x])
    from audit.stats.fastlmm import _MAX_DESIGN_ROWS, _design_rows

    assert len(y) > _MAX_DESIGN_ROWS and _design_rows(X) is None
    ref = _statsmodels(y, n, X, cl)
    fit = gee_logit_cells(y, n, X, cl)
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fit.cov_bias_reduced, ref.cov_params(), rtol=1e-9, atol=1e-14)
