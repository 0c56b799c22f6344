"""Exact linear mixed model with nested random intercepts, fitted on per-cluster sufficient statistics.

Model (one or two nested levels of random intercepts)::

    y_ijk = x_ijk' beta + u_i + v_ij + e_ijk
    u_i ~ N(0, s2_post),  v_ij ~ N(0, s2_inner),  e_ijk ~ N(0, s2)

``i`` is the outer cluster (base post), ``j`` the optional inner cluster nested in it (e.g. the
variant, whose replicate samples share a variant effect), ``k`` the observation. In lme4 notation
``y ~ X + (1 | post)`` or ``y ~ X + (1 | post) + (1 | post:variant)``.

Why hand-written: statsmodels' ``MixedLM`` handles any covariance structure by looping over groups
in Python, which is about 19x slower than lme4 on a 40,000-row random-intercept model. For nested
random intercepts the marginal covariance of a cluster has a closed-form inverse and determinant
(Sherman-Morrison twice), so the REML/ML criterion, profiled over ``beta`` and ``s2``, needs only

* the global Gram matrix ``[X y]'[X y]`` (computed once, O(N p^2)),
* the per-inner-cluster sums of ``[X y]`` and sizes (computed once, O(N p)),

after which each evaluation of the criterion costs O(n_clusters p^2), independent of N (less where
cells share their size: :class:`_Patterns`). Where ``X`` has few distinct rows (a design of dummies,
:func:`_design_rows`) both are summed by design row: bincounts over the rows' (cluster, design row)
pairs and sparse products, O(N) instead of O(N p^2) (a million cells, 45 columns: seconds -> tenths). The fit is
*exact* (the same criterion lme4 optimises, to optimiser tolerance), not an approximation; it is
checked against statsmodels ``MixedLM`` and lme4 in ``tests/test_stats_fastlmm.py`` and
``tests/test_lme4_agreement.py``.

Formulae (``H = V / s2``, ``g_p = s2_post / s2``, ``g_v = s2_inner / s2``; ``S_j`` the column sums
of ``[X y]`` over inner cluster ``j`` of size ``n_j``)::

    a_j = 1 / (1 + n_j g_v),       c_j = g_v a_j,        t_i = sum_{j in i} n_j a_j
    Q_i = sum_{j in i} a_j S_j,    d_i = g_p / (1 + g_p t_i)
    [X y]' H^-1 [X y] = G - sum_j c_j S_j S_j' - sum_i d_i Q_i Q_i'
    log|H| = sum_j log(1 + n_j g_v) + sum_i log(1 + g_p t_i)

With ``A = X'H^-1X``, ``beta = A^-1 X'H^-1 y`` and ``r = y'H^-1y - beta' A beta``:

    -2 l_REML = (N - p) (1 + log(2 pi r / (N - p))) + log|H| + log|A|
    -2 l_ML   = N (1 + log(2 pi r / N)) + log|H|

``s2 = r / (N - p)`` (REML) or ``r / N`` (ML) and ``Cov(beta) = s2 A^-1`` (as in lme4's ``vcov``).
The relative standard deviations ``theta = sqrt(g)`` are optimised on ``[0, inf)`` like lme4's
``theta``; a fit with ``theta`` on the boundary 0 is reported as singular.

References: Bates, Maechler, Bolker & Walker (2015), Fitting linear mixed-effects models using lme4,
J. Stat. Softw. 67(1); Searle, Casella & McCulloch (1992), Variance Components, ch. 6.

Example
-------
>>> import numpy as np
>>> from audit.stats.fastlmm import fit_nested_ri
>>> rng = np.random.default_rng(0)
>>> post = np.repeat(np.arange(50), 8)
>>> x = rng.integers(0, 2, post.size).astype(float)
>>> y = 1 + 0.5 * x + rng.normal(0, 1, 50)[post] + rng.normal(0, 1, post.size)
>>> fit = fit_nested_ri(y, np.column_stack([np.ones_like(x), x]), post)
>>> bool(abs(fit.params[1] - 0.5) < 3 * fit.bse[1])
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse

__all__ = ["NestedRIFit", "fit_nested_ri"]

_SINGULAR_THETA = 1e-4


@dataclass
class NestedRIFit:
    """Result of :func:`fit_nested_ri`."""

    params: np.ndarray          # fixed effects, in the columns' order
    cov_params: np.ndarray      # s2 * (X'V^-1X)^-1 (scaled back to V)
    scale: float                # residual variance s2
    var_post: float             # outer random-intercept variance
    var_inner: float            # inner random-intercept variance (0 when there is no inner level)
    theta: np.ndarray           # relative SDs (outer[, inner]) as lme4's getME(fit, "theta")
    criterion: float            # -2 log (restricted) likelihood, as lme4's deviance / REMLcrit
    reml: bool
    converged: bool
    singular: bool
    n_obs: int
    n_groups: int
    n_inner: int
    warnings: list[str] = field(default_factory=list)

    @property
    def bse(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov_params))

    @property
    def llf(self) -> float:
        return -0.5 * self.criterion


def _newton2(f, x0: np.ndarray, max_iter: int = 50) -> tuple[np.ndarray, bool]:
    """Minimise a smooth function of two non-negative parameters by Newton's method with central
    finite-difference derivatives and backtracking; returns (x, converged). Used for the interior
    optimum of the two-component criterion (a handful of iterations instead of hundreds of
    derivative-free evaluations); the caller falls back to Powell's method when it fails."""
    x = np.asarray(x0, dtype=float).copy()
    fx = f(x)
    for _ in range(max_iter):
        h = 1e-4 * np.maximum(x, 1e-2)
        if np.any(x - h < 0):
            return x, False
        g = np.zeros(2)
        H = np.zeros((2, 2))
        fpp = {}
        for i in range(2):
            e = np.zeros(2)
            e[i] = h[i]
            fp, fm = f(x + e), f(x - e)
            g[i] = (fp - fm) / (2 * h[i])
            H[i, i] = (fp - 2 * fx + fm) / h[i] ** 2
            fpp[i] = e
        e0, e1 = fpp[0], fpp[1]
        H[0, 1] = H[1, 0] = (f(x + e0 + e1) - f(x + e0 - e1) - f(x - e0 + e1) + f(x - e0 - e1)) / (4 * h[0] * h[1])
        try:
            if np.any(np.linalg.eigvalsh(H) <= 0):
                return x, False
            step = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            return x, False
        t = 1.0
        while True:
            xn = np.maximum(x + t * step, 0.0)
            fn = f(xn)
            if fn <= fx or t < 1e-6:
                break
            t /= 2
        if fn > fx:
            return x, False
        moved = np.max(np.abs(xn - x))
        x, fx = xn, fn
        if moved < 1e-9 * max(1.0, float(np.max(x))):
            return x, bool(np.all(x > 0))
    return x, False


def _group_sums(idx: np.ndarray, n_groups: int, M: np.ndarray) -> np.ndarray:
    """Column sums of M per group label idx (0..n_groups-1): one ``bincount`` per column (each group's
    rows added in row order, as a stable sort and ``reduceat`` would; no sorted copy of M)."""
    out = np.empty((n_groups, M.shape[1]))
    for k in range(M.shape[1]):
        out[:, k] = np.bincount(idx, M[:, k], minlength=n_groups)
    return out


def _labels(values: np.ndarray, sort: bool = True) -> tuple[np.ndarray, int]:
    """``np.unique(values, return_inverse=True)``'s codes (the labels in sorted order) and their count, by
    hashing (:func:`pandas.factorize` with ``sort=True``) instead of sorting every row: at a million text
    labels np.unique took seconds. ``sort=False``: codes in order of appearance (no sort of the distinct
    labels either). Labels pandas cannot hash to codes (a missing value) go to np.unique."""
    v = np.asarray(values)
    try:
        codes, uniq = pd.factorize(v, sort=sort)
    except TypeError:
        codes = None
    if codes is None or (len(codes) and codes.min() < 0):
        uniq, codes = np.unique(v, return_inverse=True)
        return codes.ravel().astype(np.intp), len(uniq)
    return codes.astype(np.intp, copy=False), len(uniq)


#: The most distinct rows of ``X`` for which :func:`fit_nested_ri` sums by design row (:func:`_design_rows`).
_MAX_DESIGN_ROWS = 2048


def _design_rows(X: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct rows ``D`` of ``X`` and each row's index into them (``X == D[r]``), or None when there
    are more than :data:`_MAX_DESIGN_ROWS` (a continuous covariate) or ``X`` has a NaN.

    A design of dummies has a few dozen distinct rows however many cells it has. The rows are keyed by
    ``X v`` for a fixed random ``v`` and the match ``X == D[r]`` is then checked exactly, block by block. Equal
    rows could get different keys only if the product rounded them differently (then ``D`` holds a row
    twice, which changes no sum); different rows with equal keys (probability ~0) fail the check and
    give None, the row-wise path."""
    R, p = X.shape
    v = np.random.default_rng(20240531).standard_normal(p)
    key = np.einsum("ij,j->i", X, v)  # numpy's own loop: a BLAS product can stall on a busy machine
    uk, first, r = np.unique(key, return_index=True, return_inverse=True)
    if len(uk) > _MAX_DESIGN_ROWS:
        return None
    r = r.ravel()
    D = X[first]
    for a in range(0, R, 65536):
        if not np.array_equal(D[r[a:a + 65536]], X[a:a + 65536]):
            return None
    return D, r


class _Patterns:
    """The terms of :func:`fit_nested_ri`'s criterion, summed in advance over cells of equal size and
    over outer groups of equal composition, so that one evaluation costs O(patterns x q^2) instead of
    O(cells x q^2) (q = fixed effects + 1).

    With ``a_i = 1 / (1 + n_i gv)`` and ``c_i = gv a_i`` (cell i of size n_i) and, for outer group g,
    ``Q_g = sum_{i in g} a_i S_i``, ``t_g = sum_{i in g} n_i a_i``, ``d_g = gp / (1 + gp t_g)``::

        M = G - sum_i c_i S_i S_i' - sum_g d_g Q_g Q_g'
        log det H = sum_i log(1 + n_i gv) + sum_g log(1 + gp t_g)

    ``a_i`` depends on the cell only through its size m, so ``sum_i c_i S_i S_i' = sum_m c(m) A_m``
    with ``A_m`` the sum of ``S_i S_i'`` over cells of size m; ``Q_g = sum_m a(m) B_gm`` with ``B_gm``
    the sum of ``S_i`` over g's cells of size m; and groups with the same count of cells of each size
    (their *pattern*) share ``t_g`` and ``d_g``, so ``sum_g d_g Q_g Q_g' = sum_pat d_pat sum_{m,m'}
    a(m) a(m') C_pat,m,m'`` with ``C`` the sums of ``B_gm B_gm''`` over the pattern's groups. The
    same numbers as summing cell by cell (up to the order of floating-point additions); why: a counterfactual
    design has a handful of cell sizes and patterns however many posts it has, so a million replies cost
    what a thousand do. Not used (:meth:`build` returns None) when the patterns would take more than
    :data:`_PATTERN_FLOATS` numbers, e.g. a very unbalanced table.
    """

    def __init__(self, A, m_vals, n_per_m, C, pat_counts, pat_n):
        self.A, self.m, self.n_per_m, self.C, self.pat_counts, self.pat_n = A, m_vals, n_per_m, C, pat_counts, pat_n
        q = A.shape[1]
        # flat views for the two contractions of assemble(): one matrix-vector product each (an einsum
        # re-plans its contraction on every call, which cost more than the arithmetic)
        self._A = A.reshape(len(m_vals), q * q)
        self._C = C.reshape(-1, q * q)

    @staticmethod
    def _group_patterns(counts: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The distinct rows of ``counts`` (groups x cell sizes: each group's *pattern*) and each group's
        pattern, or None when the pattern sums would exceed :data:`_PATTERN_FLOATS` floats."""
        pats, pat_of_group = np.unique(counts, axis=0, return_inverse=True)
        K = counts.shape[1]
        if len(pats) * (K * q) ** 2 + K * q * q > _PATTERN_FLOATS:
            return None
        return pats, pat_of_group.ravel()

    @classmethod
    def build(cls, S: np.ndarray, n_cell: np.ndarray, gstarts: np.ndarray, n_groups: int) -> "_Patterns | None":
        q = S.shape[1]
        m_vals, m_idx = np.unique(n_cell, return_inverse=True)
        K = len(m_vals)
        group_of_cell = np.repeat(np.arange(n_groups), np.diff(np.r_[gstarts, len(n_cell)]))
        counts = np.zeros((n_groups, K))
        np.add.at(counts, (group_of_cell, m_idx), 1.0)
        found = cls._group_patterns(counts, q)
        if found is None:
            return None
        pats, pat_of_group = found
        A = np.zeros((K, q, q))
        for j in range(K):
            Sj = S[m_idx == j]
            A[j] = Sj.T @ Sj
        B = np.zeros((n_groups, K, q))
        np.add.at(B, (group_of_cell, m_idx), S)
        C = np.zeros((len(pats), K, K, q, q))
        for k in range(len(pats)):
            Bk = B[pat_of_group == k].reshape(-1, K * q)
            C[k] = (Bk.T @ Bk).reshape(K, q, K, q).transpose(0, 2, 1, 3)
        return cls(A, m_vals.astype(float), np.bincount(m_idx, minlength=K).astype(float), C, pats,
                   np.bincount(pat_of_group, minlength=len(pats)).astype(float))

    @classmethod
    def build_units(cls, F: "sparse.csr_matrix", Dc: np.ndarray, Yc: np.ndarray, n_cell: np.ndarray,
                    cell_group: np.ndarray, n_groups: int) -> "_Patterns | None":
        """:meth:`build` from the cells' sums by design row, without the cells' sums ``S`` themselves:
        ``S = [F Dc, Yc]`` with ``F`` (cells x design rows, sparse) the observations of each cell at each
        distinct row of the centred design ``Dc`` and ``Yc`` the cells' sums of the centred outcome
        (cells ordered by ``cell_group``). Then ``sum_{i of size m} S_i S_i' = [Dc' F_m'F_m Dc,
        Dc' F_m'Yc_m; ., Yc_m'Yc_m]`` and the group sums ``B_gm = [E_gm Dc, sum Yc]`` with ``E = H F``
        (``H`` the cells of each group and size): the same sums as :meth:`build`'s in another order,
        at the cost of the sparse products (O(cells)) instead of O(cells x q^2)."""
        p = Dc.shape[1]
        q = p + 1
        m_vals, m_idx = np.unique(n_cell, return_inverse=True)
        m_idx = m_idx.ravel()
        K = len(m_vals)
        gm = cell_group.astype(np.int64) * K + m_idx
        counts = np.bincount(gm, minlength=n_groups * K).astype(float).reshape(n_groups, K)
        found = cls._group_patterns(counts, q)
        if found is None:
            return None
        pats, pat_of_group = found
        A = np.zeros((K, q, q))
        for j in range(K):
            sel = m_idx == j
            Fj, Yj = F[sel], Yc[sel]
            A[j, :p, :p] = Dc.T @ (Fj.T @ Fj).toarray() @ Dc
            A[j, :p, p] = A[j, p, :p] = Dc.T @ (Fj.T @ Yj)
            A[j, p, p] = Yj @ Yj
        H = sparse.csr_matrix((np.ones(len(gm)), (gm, np.arange(len(gm)))), shape=(n_groups * K, len(gm)))
        B = np.empty((n_groups * K, q))
        B[:, :p] = (H @ F) @ Dc
        B[:, p] = np.bincount(gm, Yc, minlength=n_groups * K)
        B = B.reshape(n_groups, K, q)
        C = np.zeros((len(pats), K, K, q, q))
        for k in range(len(pats)):
            Bk = B[pat_of_group == k].reshape(-1, K * q)
            C[k] = (Bk.T @ Bk).reshape(K, q, K, q).transpose(0, 2, 1, 3)
        return cls(A, m_vals.astype(float), np.bincount(m_idx, minlength=K).astype(float), C, pats,
                   np.bincount(pat_of_group, minlength=len(pats)).astype(float))

    def assemble(self, G: np.ndarray, gp: float, gv: float) -> tuple[np.ndarray, float]:
        a = 1.0 / (1.0 + self.m * gv)
        t = self.pat_counts @ (self.m * a)
        d = gp / (1.0 + gp * t)
        coef = d[:, None, None] * np.multiply.outer(a, a)[None]  # (pattern, m, n): d_pat a(m) a(n)
        M = G - ((gv * a) @ self._A + coef.ravel() @ self._C).reshape(G.shape)
        logdet = float(self.n_per_m @ np.log1p(self.m * gv) + self.pat_n @ np.log1p(gp * t))
        return M, logdet


#: Upper bound on the numbers :class:`_Patterns` may hold (~32 MB).
_PATTERN_FLOATS = 4_000_000


def fit_nested_ri(
    y: np.ndarray,
    X: np.ndarray,
    groups: np.ndarray,
    inner: np.ndarray | None = None,
    *,
    reml: bool = True,
    weights: np.ndarray | None = None,
    within_ss: float = 0.0,
) -> NestedRIFit:
    """Fit ``y ~ X + (1|groups) [+ (1|groups:inner)]`` exactly, by REML (default) or ML.

    Parameters
    ----------
    y : (N,) outcome.  X : (N, p) full-rank fixed-effects design (include the intercept column), or the
    pair ``(D, r)`` of its distinct rows and each row's index into them (``X = D[r]``), which spares the
    caller building ``X`` (a million cells x 45 dummies: 360 MB).
    groups : (N,) outer cluster labels (any hashable values).  inner : (N,) optional inner cluster
    labels; they are interpreted as nested in ``groups`` (the pair identifies the inner cluster).
    reml : restricted maximum likelihood (default, as lme4) or maximum likelihood.
    weights, within_ss : the rows are *cells* of observations sharing their ``X`` row, cluster and
        inner cluster (:mod:`audit.stats.cells`): ``weights`` the number of observations of each cell
        (>= 1), ``y`` their mean and ``within_ss`` the total over cells of the sum of squares of the
        observations about their cell mean. The fit is then the fit of the observations themselves,
        exactly: the criterion depends on the data only through ``G = [X y]'[X y] = sum_c n_c z_c z_c'
        + within_ss e e'`` (``z_c`` the cell's centred ``[x_c, ybar_c]``, ``e`` the last unit vector)
        and the per-cluster sums ``S_j = sum_{c in j} n_c z_c`` with sizes ``n_j = sum_{c in j} n_c``,
        so the within-cell spread enters only through its total.

    Returns
    -------
    NestedRIFit with ``params``, ``bse``, ``cov_params``, variance components, ``theta``, the
    criterion (-2 log-likelihood), ``converged`` and ``singular`` flags and warnings.
    """
    y = np.asarray(y, dtype=float)
    if isinstance(X, tuple):  # (D, r): X = D[r], given by its distinct rows (never built here)
        D, r = np.asarray(X[0], dtype=float), np.asarray(X[1]).ravel()
        used, r = np.unique(r, return_inverse=True)
        rows = (D[used], r.ravel())
        R, p = len(r), D.shape[1]
        X0 = rows[0][rows[1][0]]
    else:
        X = np.asarray(X, dtype=float)
        R, p = X.shape
        X0 = X[0]
        rows = None
    if y.shape != (R,):
        raise ValueError("y and X have different numbers of rows")
    w = None if weights is None else np.asarray(weights, dtype=float)
    if w is not None and (w.shape != (R,) or np.any(w <= 0)):
        raise ValueError("weights must be one positive count per row")
    N = R if w is None else int(round(float(w.sum())))
    g_inv, n_groups = _labels(groups)
    if inner is None:
        cell = g_inv
        n_cells = n_groups
        cell_group = np.arange(n_groups)
    else:
        i_inv, n_in = _labels(inner, sort=False)  # only equality matters within a group (sorting took longer)
        ckeys, cell = np.unique(g_inv.astype(np.int64) * n_in + i_inv, return_inverse=True)  # (group, inner) pairs
        cell = cell.ravel()
        n_cells = len(ckeys)
        cell_group = ckeys // n_in  # sorted: cells come in order of their group
    ym = y.mean() if w is None else float(w @ y) / w.sum()
    if rows is None:
        rows = _design_rows(X)
    patterns = None
    if rows is not None:
        # Sums by distinct design row (_design_rows): G and the cells' sums from bincounts over the rows'
        # (cell, design row) units, O(N) however many fixed effects. The centring is the one below.
        D, r = rows
        u = len(D)
        wt = np.ones(R) if w is None else w
        yc = y - ym
        Wr = np.bincount(r, wt, minlength=u)
        const = np.all(D == D[:1], axis=0)
        shift = np.where(const, 0.0, (Wr @ D) / Wr.sum())
        Dc = D - shift
        ukeys, unit = np.unique(cell.astype(np.int64) * u + r, return_inverse=True)
        unit = unit.ravel()
        Wu = np.bincount(unit, wt, minlength=len(ukeys))
        Yu = np.bincount(unit, wt * yc, minlength=len(ukeys))
        cu, ru = ukeys // u, ukeys % u
        G = np.empty((p + 1, p + 1))
        G[:p, :p] = Dc.T @ (Dc * Wr[:, None])
        G[:p, p] = G[p, :p] = Dc.T @ np.bincount(ru, Yu, minlength=u)
        G[p, p] = float(wt @ (yc * yc)) + float(within_ss)
        n_cell = np.bincount(cell, wt, minlength=n_cells)
        Yc = np.bincount(cu, Yu, minlength=n_cells)
        F = sparse.csr_matrix((Wu, (cu, ru)), shape=(n_cells, u))
        gstarts = np.flatnonzero(np.r_[True, cell_group[1:] != cell_group[:-1]])
        patterns = _Patterns.build_units(F, Dc, Yc, n_cell, cell_group, len(gstarts))
        if patterns is None:  # the per-evaluation sums below need the cells' sums themselves
            S = np.empty((n_cells, p + 1))
            S[:, :p] = F @ Dc
            S[:, p] = Yc
        del F, unit, Wu, Yu
    else:
        # Centre the non-constant columns and y: the criterion is invariant, but the Gram-matrix
        # updates below subtract large nearly equal numbers and centring keeps them well conditioned.
        xm = X.mean(axis=0) if w is None else (w @ X) / w.sum()
        const = np.all(X == X[:1], axis=0)
        shift = np.where(const, 0.0, xm)
        Z = np.empty((R, p + 1))  # [X - shift, y - ym] in one array: at a million rows each copy is ~p x 8 MB
        np.subtract(X, shift, out=Z[:, :p])
        np.subtract(y, ym, out=Z[:, p])
        if w is None:
            G = Z.T @ Z
            S = _group_sums(cell, n_cells, Z)
            n_cell = np.bincount(cell, minlength=n_cells).astype(float)
        else:
            WZ = Z * w[:, None]
            G = Z.T @ WZ
            G[p, p] += float(within_ss)
            S = _group_sums(cell, n_cells, WZ)
            n_cell = np.bincount(cell, w, minlength=n_cells)
            del WZ
        del Z
        # order cells by group for reduceat
        order = np.argsort(cell_group, kind="stable")
        S, n_cell, cell_group = S[order], n_cell[order], cell_group[order]
        gstarts = np.flatnonzero(np.r_[True, cell_group[1:] != cell_group[:-1]])
        patterns = _Patterns.build(S, n_cell, gstarts, len(gstarts))
    has_inner = inner is not None and n_cells > n_groups
    dof = N - p if reml else N

    def assemble(theta: np.ndarray):
        gp = theta[0] ** 2
        gv = theta[1] ** 2 if has_inner else 0.0
        if patterns is not None:
            return patterns.assemble(G, gp, gv)
        M = G.copy()
        logdet = 0.0
        if gv > 0:
            a = 1.0 / (1.0 + n_cell * gv)
            c = gv * a
            M -= (S * c[:, None]).T @ S
            logdet += np.sum(np.log1p(n_cell * gv))
            Q = np.add.reduceat(S * a[:, None], gstarts, axis=0)
            t = np.add.reduceat(n_cell * a, gstarts)
        else:
            Q = np.add.reduceat(S, gstarts, axis=0) if has_inner else S
            t = np.add.reduceat(n_cell, gstarts) if has_inner else n_cell
        d = gp / (1.0 + gp * t)
        M -= (Q * d[:, None]).T @ Q
        logdet += np.sum(np.log1p(gp * t))
        return M, logdet

    def solve(theta: np.ndarray):
        M, logdetH = assemble(theta)
        A = M[:p, :p]
        b = M[:p, p]
        try:
            L = linalg.cho_factor(A, lower=True, check_finite=False)
        except linalg.LinAlgError:
            return None
        beta = linalg.cho_solve(L, b, check_finite=False)
        r = M[p, p] - b @ beta
        logdetA = 2.0 * np.sum(np.log(np.diag(L[0])))
        return beta, r, logdetH, logdetA, L

    def crit(theta: np.ndarray) -> float:
        s = solve(np.maximum(theta, 0.0))
        if s is None:
            return np.inf
        beta, r, logdetH, logdetA, _ = s
        if r <= 0:
            return np.inf
        val = dof * (1.0 + np.log(2.0 * np.pi * r / dof)) + logdetH
        if reml:
            val += logdetA
        return float(val)

    warnings: list[str] = []
    converged = True
    s0 = solve(np.zeros(2))
    if s0 is None:
        raise np.linalg.LinAlgError("the fixed-effects design matrix is rank deficient")
    # the fixed effects reproduce y (e.g. every group's values equal within each cell and no within-cell
    # spread): no residual variation, so the criterion is log(0) everywhere and no optimiser can run
    exact = not s0[1] > 1e-12 * float(assemble(np.zeros(2))[0][p, p])
    grid = np.r_[0.0, np.logspace(-3, 2.5, 12)]

    def min1d(f):
        """Global-then-local minimum of a 1-d function of theta >= 0: log grid, then bounded Brent."""
        vals = np.array([f(g) for g in grid])
        k = int(np.argmin(vals))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        # crit() returns inf where the criterion does not exist (r <= 0, A not positive definite): a
        # deliberate barrier. Brent's parabolic step then computes inf - inf, rejects it and takes a
        # golden-section step; numpy's "invalid value" warning about that says nothing about the fit.
        with np.errstate(invalid="ignore", over="ignore"):
            res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded",
                                           options={"xatol": 1e-10, "maxiter": 500})
        ok = bool(res.success) and k < len(grid) - 1
        if vals[0] <= res.fun:
            return 0.0, float(vals[0]), ok
        return float(res.x), float(res.fun), ok

    if exact:
        theta = np.zeros(2)
        warnings.append("the fixed effects reproduce the outcome exactly (no variation left within the groups): "
                        "the variances are 0 and no standard error can be estimated")
    elif not has_inner:
        t0, _, ok = min1d(lambda t: crit(np.array([t, 0.0])))
        theta = np.array([t0, 0.0])
        if not ok:
            converged = False
            warnings.append("optimiser did not converge (post variance at the search bound or Brent failed)")
    else:
        # the optimum is either on a boundary (one variance 0: a 1-d problem, solved as above) or
        # interior (Powell's derivative-free method from the best point of a coarse grid)
        tp, fp, okp = min1d(lambda t: crit(np.array([t, 0.0])))
        tv, fv, okv = min1d(lambda t: crit(np.array([0.0, t])))
        cands = [(fp, np.array([tp, 0.0])), (fv, np.array([0.0, tv]))]
        fb, tb = min(cands, key=lambda c: c[0])
        # a boundary optimum is accepted when moving into the interior increases the criterion
        zero = int(np.argmin(tb))
        probe = tb.copy()
        probe[zero] = 1e-3
        success = okp or okv
        if crit(probe) <= fb:
            coarse = np.array([0.1, 0.4, 1.0, 3.0])
            start = min(((crit(np.array([a, b])), np.array([a, b])) for a in coarse for b in coarse),
                        key=lambda c: c[0])[1]
            th, success = _newton2(crit, start)
            if not success:  # derivative-free fallback
                with np.errstate(invalid="ignore", over="ignore"):  # the same inf barrier as in min1d
                    res = optimize.minimize(crit, start, method="Powell", bounds=[(0.0, 1e3), (0.0, 1e3)],
                                            options={"xtol": 1e-8, "ftol": 1e-13, "maxiter": 10000})
                th = np.maximum(res.x, 0.0)
                success = bool(res.success)
            cands.append((crit(th), th))
        fbest, theta = min(cands, key=lambda c: c[0])
        if not success or not np.isfinite(fbest):
            converged = False
            warnings.append("optimiser did not converge")
    beta_c, r, logdetH, logdetA, L = solve(theta)
    scale = 0.0 if exact else max(r, 0.0) / dof  # exact: what is left of r is rounding (its sign varies by CPU)
    Ainv = linalg.cho_solve(L, np.eye(p), check_finite=False)
    cov_c = scale * Ainv
    # undo the centring: X beta = Xc beta + shift'beta; the intercept absorbs it
    # undo the centring: y = Xc b_c + ym = X b_c + (ym - shift'b_c); the intercept absorbs it
    icol = np.flatnonzero(const & (X0 != 0))
    T = np.eye(p)
    if len(icol):
        j0 = icol[0]
        T[j0, :] -= shift / X0[j0]
        beta = T @ beta_c
        beta[j0] += ym / X0[j0]
    else:
        beta = beta_c.copy()
        warnings.append("no intercept column: y was centred, estimates are for the centred outcome")
    cov = T @ cov_c @ T.T
    singular = bool(theta[0] < _SINGULAR_THETA or (has_inner and theta[1] < _SINGULAR_THETA))
    if singular:
        which = []
        if theta[0] < _SINGULAR_THETA:
            which.append("post")
        if has_inner and theta[1] < _SINGULAR_THETA:
            which.append("inner (variant)")
        warnings.append(
            "singular fit: the " + " and ".join(which) + " random-intercept variance is estimated as 0 "
            "(boundary); estimates equal those of the model without that term"
        )
    return NestedRIFit(
        params=beta, cov_params=cov, scale=float(scale),
        var_post=float(theta[0] ** 2 * scale), var_inner=float((theta[1] ** 2 if has_inner else 0.0) * scale),
        theta=theta[: 2 if has_inner else 1].copy(), criterion=crit(theta), reml=reml,
        converged=converged, singular=singular, n_obs=N, n_groups=n_groups,
        n_inner=n_cells if has_inner else 0, warnings=warnings,
    )
