"""Exchangeable logistic GEE fitted from cell counts: statsmodels' algorithm, summed per cluster.

Why not ``statsmodels.GEE`` on the observations: it loops over clusters in Python and needs every
observation, so its time grows with the replies (a million replies: 200,000 rows per outcome and
model, ~20 s a fit on the project's machine), while every quantity it computes depends on a cluster
only through sums over that cluster's observations. This module computes the same iterates from the
cells of :mod:`audit.stats.cells` (a cell: observations sharing their covariates and cluster; a 0/1
outcome makes each cell two *pseudo-rows*, its ones and its zeros, each with a count), vectorised over
clusters. It follows ``statsmodels.genmod.GEE.fit`` (statsmodels 0.14-0.15) step by step, so the
estimates equal statsmodels' up to summation order (checked in ``tests/test_gee_cells.py``):

* start: the independence GLM (``statsmodels.GLM``, IRLS) on the distinct (covariates, value) rows with
  their counts as frequency weights, which is the GLM of the observations (same sums, same starting means);
* mean update (Fisher scoring): with ``u_j = D_j / s_j`` (``D_j = x_j dmu/deta``, ``s_j = sqrt(mu_j (1 -
  mu_j))``), standardised residuals ``e_j = (y_j - mu_j) / s_j``, counts ``c_j``, cluster size ``k_i``,
  ``a`` the exchangeable correlation and ``c_i = a / (1 - a) / (1 + a (k_i - 1))``, the inverse working
  covariance ``V_i^-1 = S^-1 [I / (1 - a) - c_i 11'] S^-1`` gives per cluster

      B_i = sum_j c_j u_j u_j' / (1 - a) - c_i U_i U_i',   U_i = sum_j c_j u_j
      g_i = sum_j c_j u_j e_j / (1 - a) - c_i U_i E_i,     E_i = sum_j c_j e_j

  and the step ``(sum B_i)^-1 sum g_i``; stop when ``|sum g_i| < ctol`` after at least one update of ``a``;
* ``a`` (moment estimator with ``ddof = p``): ``phi = sum c e^2 / (N - p)``,
  ``a = sum_i (E_i^2 - sum_j c_j e_j^2) / 2 / phi / (P (P - p) / P)``, ``P = sum_i k_i (k_i - 1) / 2``;
* robust covariance ``C (sum g_i g_i') C`` with ``C = (sum B_i)^-1``, and the bias-reduced one of
  Mancl & DeRouen (2001, Biometrics 57:126), ``C (sum t_i t_i') C`` with ``t_i = D_i' V_i^-1 (I - H_i)^-1 r_i``
  and ``H_i = D_i C D_i' V_i^-1``. statsmodels solves the ``k_i x k_i`` system per cluster; by the
  Woodbury identity ``(I - D C D' V^-1)^-1 r = r + D (I - C B_i)^-1 C g_i``, so
  ``t_i = g_i + B_i (I - C B_i)^-1 C g_i``, a ``p x p`` solve per cluster.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["GeeCellsFit", "gee_logit_cells"]


@dataclass
class GeeCellsFit:
    params: np.ndarray
    cov_robust: np.ndarray
    cov_bias_reduced: np.ndarray
    cov_naive: np.ndarray
    dep_param: float
    iterations: int
    converged: bool


def _pseudo_rows(y: np.ndarray, n: np.ndarray, X: np.ndarray, cluster: np.ndarray):
    """Each cell's ones and zeros as two rows with counts (rows of count 0 dropped), sorted by cluster."""
    n = np.asarray(n, dtype=float)
    ones = np.rint(np.asarray(y, dtype=float) * n)
    zeros = n - ones
    m = len(n)
    value = np.concatenate([np.ones(m), np.zeros(m)])
    count = np.concatenate([ones, zeros])
    cell = np.concatenate([np.arange(m), np.arange(m)])
    keep = count > 0
    value, count, cell = value[keep], count[keep], cell[keep]
    order = np.argsort(cluster[cell], kind="stable")
    value, count, cell = value[order], count[order], cell[order]
    return value, count, X[cell], cluster[cell]


def gee_logit_cells(y: np.ndarray, n: np.ndarray, X: np.ndarray, cluster: np.ndarray, *,
                    maxiter: int = 100, ctol: float = 1e-6) -> GeeCellsFit:
    """Logistic GEE with an exchangeable working correlation within ``cluster``, from cells.

    ``y``: each cell's mean of 0/1 observations; ``n``: its number of observations; ``X``: its covariate
    row; ``cluster``: its cluster as integer codes. Equals ``statsmodels.GEE(obs_y, obs_X, groups=...,
    family=Binomial(), cov_struct=Exchangeable()).fit(maxiter, ctol, cov_type=...)`` on the observations
    the cells hold (module docstring); warns as statsmodels does when the iteration limit is reached or
    the update matrix is singular."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import ConvergenceWarning, IterationLimitWarning

    cluster = np.asarray(cluster)
    value, count, Xp, cl = _pseudo_rows(y, n, np.asarray(X, dtype=float), cluster)
    _, cid = np.unique(cl, return_inverse=True)
    G = int(cid.max()) + 1 if len(cid) else 0
    N = float(count.sum())
    p = Xp.shape[1]
    starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]]) if len(cid) else np.zeros(0, dtype=int)

    def csum(a):  # per-cluster sums of the rows of ``a`` (rows sorted by cluster)
        return np.add.reduceat(a, starts, axis=0)
    k = csum(count)  # cluster sizes
    family = sm.families.Binomial()
    # the start ignores the clusters: the pseudo-rows with the same covariates and value pooled (a few dozen
    # rows however many cells; IRLS's least squares on 130,000 pseudo-rows took half of the whole fit)
    uniq, inv = np.unique(np.column_stack([Xp, value]), axis=0, return_inverse=True)
    glm = sm.GLM(uniq[:, -1], uniq[:, :-1], family=family,
                 freq_weights=np.bincount(inv.ravel(), weights=count, minlength=len(uniq)))
    beta = np.asarray(glm.fit().params, dtype=float).copy()
    a = 0.0

    def parts(beta, a):
        lpr = Xp @ beta
        mu = family.link.inverse(lpr)
        s = np.sqrt(family.variance(mu))
        u = Xp * (family.link.inverse_deriv(lpr) / s)[:, None]
        e = (value - mu) / s
        ci = a / (1.0 - a) / (1.0 + a * (k - 1.0))
        cu = u * count[:, None]
        U = csum(cu)
        E = csum(count * e)
        return u, e, cu, U, E, ci

    def bmat_score(beta, a):
        u, e, cu, U, E, ci = parts(beta, a)
        B = (cu.T @ u) / (1.0 - a) - (U * ci[:, None]).T @ U
        g = (cu.T @ e) / (1.0 - a) - U.T @ (ci * E)
        return B, g

    del_params = -1.0
    updates = 0
    it = 0
    for it in range(maxiter):
        B, g = bmat_score(beta, a)
        try:
            step = np.linalg.solve(B, g)
        except np.linalg.LinAlgError:
            step = np.linalg.pinv(B) @ g
        beta = beta + step
        # statsmodels' convergence measure: the score at the means *before* this step
        del_params = float(np.sqrt(np.sum(g ** 2)))
        if del_params < ctol and updates > 0:
            break
        # exchangeable correlation at the new means (statsmodels' Exchangeable.update)
        _, e, _, _, E, _ = parts(beta, a)
        ssr_c = csum(count * e * e)
        scale = ssr_c.sum() / (N * (N - p) / N)
        resid_pairs = np.sum((E ** 2 - ssr_c) / 2.0) / scale
        npairs = float(np.sum(0.5 * k * (k - 1.0)))
        a = resid_pairs / (npairs * (npairs - p) / npairs)
        updates += 1
    converged = del_params < ctol
    if not converged:
        warnings.warn("Iteration limit reached prior to convergence", IterationLimitWarning, stacklevel=2)

    # covariances at the final means and correlation (statsmodels' _covmat and _bc_covmat)
    u, e, cu, U, E, ci = parts(beta, a)
    Gi = csum(u * (count * e)[:, None]) / (1.0 - a) - U * (ci * E)[:, None]
    B = (cu.T @ u) / (1.0 - a) - (U * ci[:, None]).T @ U
    try:
        C = np.linalg.inv(B)
    except np.linalg.LinAlgError:
        C = np.linalg.pinv(B)
    robust = C @ (Gi.T @ Gi) @ C
    # per-cluster B_i for the bias-reduced covariance
    Bi = csum(cu[:, :, None] * u[:, None, :]) / (1.0 - a) - ci[:, None, None] * U[:, :, None] * U[:, None, :]
    eye = np.eye(p)
    CB = np.einsum("ab,gbc->gac", C, Bi)
    Cg = Gi @ C.T
    t = Gi + np.einsum("gab,gb->ga", Bi, np.linalg.solve(eye[None] - CB, Cg[:, :, None])[:, :, 0])
    bias_reduced = C @ (t.T @ t) @ C
    return GeeCellsFit(beta, robust, bias_reduced, C, float(a), it + 1, converged)
