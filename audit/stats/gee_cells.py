"""Exchangeable logistic GEE fitted from cell counts: statsmodels' algorithm, summed per cluster.

Why not ``statsmodels.GEE`` on the observations: it loops over clusters in Python and needs every
observation, so its time grows with the replies (a million replies: 200,000 rows per outcome and
model, ~20 s a fit on the project's machine), while every quantity it computes depends on a cluster
only through sums over that cluster's observations. This module computes the same iterates from the
cells of :mod:`audit.stats.cells` (a cell: observations sharing their covariates and cluster; of a 0/1
outcome it holds a count of ones and a count of zeros), vectorised over clusters: an observation's mean, derivative and residual depend only on its covariate row and its
value, so every per-cluster sum is a product of the counts of ones and zeros per (cluster, distinct
covariate row) with quantities of those rows. It follows ``statsmodels.genmod.GEE.fit`` (statsmodels
0.14-0.15) step by step, so the estimates equal statsmodels' up to summation order (checked in
``tests/test_gee_cells.py``):

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


def gee_logit_cells(y: np.ndarray, n: np.ndarray, X: np.ndarray, cluster: np.ndarray, *,
                    maxiter: int = 100, ctol: float = 1e-6) -> GeeCellsFit:
    """Logistic GEE with an exchangeable working correlation within ``cluster``, from cells.

    ``y``: each cell's mean of 0/1 observations; ``n``: its number of observations; ``X``: its covariate
    row; ``cluster``: its cluster as integer codes. Equals ``statsmodels.GEE(obs_y, obs_X, groups=...,
    family=Binomial(), cov_struct=Exchangeable()).fit(maxiter, ctol, cov_type=...)`` on the observations
    the cells hold (module docstring); warns as statsmodels does when the iteration limit is reached or
    the update matrix is singular.

    The observations enter only through the counts of ones ``N1[g, r]`` and zeros ``N0[g, r]`` of each
    cluster g at each distinct covariate row r (an observation's mean, derivative and residual depend on
    nothing else), so every per-cluster sum is a (sparse) product of those counts with a quantity of
    the R distinct rows: a design of dummies has a few dozen, a continuous covariate makes each cell its
    own row."""
    import scipy.sparse as sp
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import IterationLimitWarning

    from .fastlmm import _design_rows

    y = np.asarray(y, dtype=float)
    n = np.asarray(n, dtype=float)
    X = np.asarray(X, dtype=float)
    ones = np.rint(y * n)
    zeros = n - ones
    keep = n > 0
    ones, zeros, X, cluster = ones[keep], zeros[keep], X[keep], np.asarray(cluster)[keep]
    _, cid = np.unique(cluster, return_inverse=True)
    cid = cid.ravel()
    G = int(cid.max()) + 1 if len(cid) else 0
    dr = _design_rows(X)
    D, r = dr if dr is not None else (X, np.arange(len(X)))  # the distinct rows, else every cell its own
    R, p = D.shape
    N1 = sp.csr_matrix((ones, (cid, r)), shape=(G, R))  # duplicates (cells of a cluster sharing a row) summed
    N0 = sp.csr_matrix((zeros, (cid, r)), shape=(G, R))
    Nt = N1 + N0
    c1, c0 = np.asarray(N1.sum(axis=0)).ravel(), np.asarray(N0.sum(axis=0)).ravel()  # per row, all clusters
    ct = c1 + c0
    k = np.asarray(Nt.sum(axis=1)).ravel()  # cluster sizes
    N = float(k.sum())
    family = sm.families.Binomial()
    # the start ignores the clusters: the independence GLM of the distinct (row, value) pairs with their
    # counts as frequency weights (a few dozen rows however many cells)
    seen = np.r_[c1 > 0, c0 > 0]
    glm = sm.GLM(np.r_[np.ones(R), np.zeros(R)][seen], np.vstack([D, D])[seen], family=family,
                 freq_weights=np.r_[c1, c0][seen])
    beta = np.asarray(glm.fit().params, dtype=float).copy()
    a = 0.0

    def parts(beta, a):
        lpr = D @ beta
        mu = family.link.inverse(lpr)
        s = np.sqrt(family.variance(mu))
        u = D * (family.link.inverse_deriv(lpr) / s)[:, None]  # (R, p)
        e1, e0 = (1.0 - mu) / s, (0.0 - mu) / s  # standardised residuals of a one and a zero
        ci = a / (1.0 - a) / (1.0 + a * (k - 1.0))
        U = Nt @ u  # (G, p): sum_j c_j u_j per cluster
        E = N1 @ e1 + N0 @ e0  # (G,): sum_j c_j e_j per cluster
        return u, e1, e0, U, E, ci

    def bmat_score(beta, a):
        u, e1, e0, U, E, ci = parts(beta, a)
        B = (u.T * ct) @ u / (1.0 - a) - (U * ci[:, None]).T @ U
        g = u.T @ (c1 * e1 + c0 * e0) / (1.0 - a) - U.T @ (ci * E)
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
        _, e1, e0, _, E, _ = parts(beta, a)
        ssr_c = N1 @ (e1 * e1) + N0 @ (e0 * e0)
        scale = ssr_c.sum() / (N * (N - p) / N)
        resid_pairs = np.sum((E ** 2 - ssr_c) / 2.0) / scale
        npairs = float(np.sum(0.5 * k * (k - 1.0)))
        a = resid_pairs / (npairs * (npairs - p) / npairs)
        updates += 1
    converged = del_params < ctol
    if not converged:
        warnings.warn("Iteration limit reached prior to convergence", IterationLimitWarning, stacklevel=2)

    # covariances at the final means and correlation (statsmodels' _covmat and _bc_covmat)
    u, e1, e0, U, E, ci = parts(beta, a)
    Gi = (N1 @ (u * e1[:, None]) + N0 @ (u * e0[:, None])) / (1.0 - a) - U * (ci * E)[:, None]
    B = (u.T * ct) @ u / (1.0 - a) - (U * ci[:, None]).T @ U
    try:
        C = np.linalg.inv(B)
    except np.linalg.LinAlgError:
        C = np.linalg.pinv(B)
    robust = C @ (Gi.T @ Gi) @ C
    # per-cluster B_i for the bias-reduced covariance
    Bi = np.asarray(Nt @ (u[:, :, None] * u[:, None, :]).reshape(R, p * p)).reshape(G, p, p) / (1.0 - a) \
        - ci[:, None, None] * U[:, :, None] * U[:, None, :]
    eye = np.eye(p)
    CB = np.einsum("ab,gbc->gac", C, Bi)
    Cg = Gi @ C.T
    t = Gi + np.einsum("gab,gb->ga", Bi, np.linalg.solve(eye[None] - CB, Cg[:, :, None])[:, :, 0])
    bias_reduced = C @ (t.T @ t) @ C
    return GeeCellsFit(beta, robust, bias_reduced, C, float(a), it + 1, converged)
