"""Gap tests: does the outcome of group G differ from the reference (control), by how much, how sure?

One function per procedure, pandas in and out (as pingouin):

* :func:`validate_table` - one clear :class:`~audit.errors.AuditError` for a table that cannot be
  analysed (missing columns, absent reference level, constant outcome, too few clusters, ...).
* :func:`gap_test` - mixed-model gaps of every group against the reference, with absolute,
  relative and standardised effect sizes, optionally per level of a ``by`` column and pooled.

Continuous outcomes
-------------------
Linear mixed model, REML, fitted exactly on per-cluster sufficient statistics
(:mod:`audit.stats.fastlmm`, identical to lme4 / statsmodels ``MixedLM``)::

    y = b0 + sum_g b_g [group = g] + factors + u_post (+ v_post:inner) + e

``b_g`` is the absolute gap of group ``g`` to the reference; Wald ``z = b_g / se`` with a normal
reference distribution (as statsmodels ``MixedLM``); 95% CI ``b_g +- 1.96 se``.

Binary outcomes (values only 0/1)
----------------------------------
Population-averaged logistic model fitted by GEE (Liang & Zeger 1986) with an exchangeable working
correlation within posts and robust (sandwich) standard errors with the Mancl & DeRouen (2001)
small-sample bias correction (plain sandwich SEs are too small with few posts). The gap is reported on the
probability scale: ``p_g - p_ref`` where both are the mean predicted probabilities over the
reference rows' covariates with the group indicator set to ``g`` or the reference (standardisation);
CIs by the delta method; the p-value is the Wald test of that same probability-scale gap (delta-method
SE), so p-value and CI always agree (the log-odds-ratio Wald test does not: under near-separation its
SE collapses, Hauck & Donner 1977). Where GEE cannot
be fitted (no events in a group, perfect separation) the linear mixed model on the 0/1 outcome
(linear probability model) is used instead and the row says so.

Effect sizes
------------
* absolute gap ``b_g`` with 95% CI;
* relative gap ``b_g / m_ref`` where ``m_ref = c' b``, ``c = mean_{reference rows}(x)``, is the
  model-based reference mean; its 95% CI is Fieller's interval for a ratio using the joint
  covariance of (``b_g``, ``m_ref``) (Fieller 1954): ``{r : (b_g - r m)^2 <= z^2 Var(b_g - r m)}``.
  Unlike the delta method, it contains 0 exactly when the absolute gap's CI does. Not reported
  (NaN, with a warning) unless the reference mean is safely off 0: Fieller's
  ``g = z^2 Var(m_ref) / m_ref^2`` at most :data:`FIELLER_G_MAX` (0.25, i.e. the reference mean at
  least 2 z standard errors from 0). At ``g >= 1`` the set is unbounded; close below 1 it is bounded
  but absurdly wide (seen: +4.7% to +2090.1%), so only the absolute gap is stated;
* binary outcomes: the probability-scale gap and its CI are clipped to [-1, 1] and the relative
  gap's lower bound to -100% (a share cannot fall below 0);
* ``ref_se`` and ``cov_gap_ref`` (the reference mean's SE and its covariance with the gap) are kept, so
  an interval at another level (:mod:`audit.stats.intervals`) can be computed without refitting;
* standardised gap ``b_g / sqrt(s2_post + s2_inner + s2)`` (the "d" of Westfall, Kenny & Judd 2014,
  total-variance standardisation) for the linear model; ``log OR * sqrt(3) / pi`` (Chinn 2000) for
  GEE.

Fallbacks (always named in ``method`` and ``warning``): nested model -> post-only random intercept
(if the nested fit fails) -> OLS with post-clustered (CR1) standard errors (if the mixed fit fails).
Where no post has more than one row, the post variance is not identifiable (it cannot be told apart
from the residual): OLS with cluster-robust (CR1) standard errors is fitted directly and named so.

No silent drops (:mod:`audit.stats.missing`, :mod:`audit.stats.designs`)
-------------------------------------------------------------------------
Every row reports ``n_missing`` (outcomes missing in the group; ``ref_n_missing`` in the reference),
``n_clusters`` (the effective sample size: clusters in the group and its reference) and ``design``
(counterfactual | observational | mixed). When the share of missing outcomes of a group differs from
the reference's (Fisher exact test, ``p < alpha``), :func:`gap_test` refuses unless
``allow_missing=True``; a group without any usable value is then a ``not fitted`` row with the reason.
Group levels are matched as written (:func:`audit.stats.missing.match_level`).

Example
-------
>>> import numpy as np, pandas as pd
>>> from audit.stats import gap_test
>>> rng = np.random.default_rng(1)
>>> df = pd.DataFrame({"post": np.repeat(np.arange(40), 3), "group": np.tile(["control", "A", "B"], 40)})
>>> df["y"] = 1.0 + 0.5 * (df.group == "A") + rng.normal(0, 1, 40)[df.post] + rng.normal(0, .5, len(df))
>>> res = gap_test(df, outcome="y", group="group", control="control", cluster="post")
>>> list(res.group)
['A', 'B']
"""

from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import AuditError
from .cells import Cells, cell_weights, cells_binary
from .degenerate import (CONSTANT, attach_warnings, captured, numerical_only, constant_arms, constant_pair_reason, constant_value,
                         is_constant, no_standard_error)
from .designs import design_codes, design_of_codes
from .fastlmm import NestedRIFit, fit_nested_ri
from .textcodes import as_text, text_codes, text_factorize
from .missing import differential_missingness, level_labels, match_level, missing_by_group, missing_note

__all__ = ["gap_test", "validate_table", "design_matrix", "fieller_ratio", "GAP_COLUMNS", "MIN_CLUSTERS", "is_binary",
           "FIELLER_G_MAX", "safe_ratio"]

#: Fieller's g above which a relative gap is not reported (the reference mean is too close to 0).
FIELLER_G_MAX = 0.25

MIN_CLUSTERS = 5
GAP_COLUMNS = [
    "group", "reference", "estimate", "se", "ci_low", "ci_high", "ref_mean", "relative_gap", "rel_ci_low",
    "rel_ci_high", "std_effect", "z", "p_value", "n", "n_posts", "n_missing", "ref_n_missing", "n_clusters", "design",
    "method", "converged", "warning", "ref_se", "cov_gap_ref",
]
NO_REPEATS = "ols, cluster-robust (CR1) by post; no post repeats, so a post variance is not identifiable"


def is_binary(values: pd.Series | np.ndarray) -> bool:
    v = pd.unique(np.asarray(values, dtype=float))
    v = v[~np.isnan(v)]
    return len(v) == 2 and set(v.tolist()) <= {0.0, 1.0}


def validate_table(
    data: pd.DataFrame,
    outcome: str,
    group: str,
    control: str,
    cluster: str,
    factors: tuple[str, ...] | list[str] = (),
    inner: str | None = None,
    *,
    where: str = "the table",
    min_clusters: int = MIN_CLUSTERS,
    cells: Cells | None = None,
) -> pd.DataFrame:
    """Check a long table for a gap test and return the usable rows (outcome not missing).

    Raises one :class:`AuditError` saying what is wrong, where and what to do. The returned rows carry
    the group levels as written (:func:`audit.stats.missing.level_labels`); ``control`` may name its
    level as text or number (``0`` finds ``0.0``). ``cells``: the rows are cells
    (:mod:`audit.stats.cells`), ``outcome`` their means.
    """
    _check_columns(data, outcome, group, cluster, factors, inner, where)
    y = pd.to_numeric(data[outcome], errors="coerce")
    d = data.loc[y.notna()].copy()
    d[outcome] = y[y.notna()].astype(float)
    for c in [group, cluster, *factors] + ([inner] if inner else []):
        if d[c].isna().any():
            i = int(np.flatnonzero(d[c].isna().to_numpy())[0])
            raise AuditError(f"column '{c}' has missing values (first at data row {d.index[i]})", where=where,
                             fix=f"fill or drop the rows without a '{c}'")
    if d.empty:
        raise AuditError(f"outcome column '{outcome}' has no values", where=where, fix="choose a scored outcome")
    d[group] = level_labels(d[group])
    gvals = d[group]
    ctrl = match_level(gvals, control)
    if ctrl is None:
        levels = ", ".join(sorted(set(gvals))[:15])
        raise AuditError(
            f"reference level '{control}' does not occur in column '{group}' (levels: {levels})", where=where,
            fix="give a level that occurs with --control",
        )
    if gvals.nunique() < 2:
        raise AuditError(f"column '{group}' has only the reference level", where=where,
                         fix="the table needs rows of at least one other group")
    if is_constant(_observed_values(d, outcome, cells)):  # relative to the outcome's scale (audit.stats.degenerate)
        raise AuditError(
            f"outcome '{outcome}' is constant ({constant_value(_observed_values(d, outcome, cells)):g}) in every row: "
            "there is no gap to test",
            where=where, fix="choose an outcome that varies",
        )
    ncl = d[cluster].nunique()
    if ncl < min_clusters:
        raise AuditError(
            f"only {ncl} cluster(s) in '{cluster}'; a random-intercept model needs at least {min_clusters}",
            where=where, fix="analyse more posts (or give the right --cluster column)",
        )
    return d


def _observed_values(d: pd.DataFrame, outcome: str, cells: Cells | None) -> np.ndarray:
    """The values the constancy rules (:mod:`audit.stats.degenerate`) judge: the outcome of the rows, or
    of cells their smallest and largest values (the same minimum, maximum and scale as their
    observations), the ``vmin`` of every cell before the ``vmax`` of every cell."""
    if cells is None:
        return d[outcome].to_numpy(dtype=float)
    return np.concatenate([d[cells.lo].to_numpy(dtype=float), d[cells.hi].to_numpy(dtype=float)])


def _check_columns(data, outcome, group, cluster, factors, inner, where) -> None:
    """The table exists, has the named columns and a numeric (or missing) outcome."""
    if not isinstance(data, pd.DataFrame) or data.empty:
        raise AuditError("the table has no rows", where=where, fix="give a table with one row per reply")
    needed = [outcome, group, cluster, *factors] + ([inner] if inner else [])
    missing = [c for c in dict.fromkeys(needed) if c not in data.columns]
    if missing:
        cols = ", ".join(map(str, list(data.columns)[:20]))
        raise AuditError(
            f"column(s) {missing} not found (columns are: {cols})", where=where,
            fix="name existing columns with --outcome/--group/--cluster/--factor",
        )
    y = pd.to_numeric(data[outcome], errors="coerce")
    bad = data[outcome].notna() & y.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise AuditError(
            f"outcome column '{outcome}' is not numeric (row {i + 1}: {data[outcome].iloc[i]!r})", where=where,
            fix="give a numeric outcome (scores, 0/1 for yes/no outcomes)",
        )


def design_matrix(
    d: pd.DataFrame, group: str, reference: str, factors: tuple[str, ...] | list[str] = ()
) -> tuple[np.ndarray, list[str], list[str]]:
    """Intercept + treatment dummies of ``group`` (reference dropped) + dummies of each factor
    (first sorted level dropped). Returns (X, column names, group levels in column order)."""
    gcode, gtext = text_factorize(d[group])  # labels compared as integer codes (textcodes)
    levels = [lv for lv in sorted(gtext) if lv != str(reference)]
    cols = [np.ones(len(d))]
    names = ["Intercept"]
    for lv in levels:
        cols.append((gcode == list(gtext).index(lv)).astype(float))
        names.append(f"{group}[{lv}]")
    for f in factors:
        fcode, ftext = text_factorize(d[f])
        flev = sorted(ftext)
        for lv in flev[1:]:
            cols.append((fcode == list(ftext).index(lv)).astype(float))
            names.append(f"{f}[{lv}]")
    return np.column_stack(cols), names, levels


@dataclass
class _Fit:
    params: np.ndarray
    cov: np.ndarray
    method: str
    converged: bool
    warnings: list[str]
    total_sd: float
    link: str = "identity"
    raw: NestedRIFit | None = None


def _fit_lmm(y, X, clusters, inner, reml, w=None, ss=0.0) -> _Fit:
    """``w``, ``ss``: the rows are cells of ``w`` observations with mean ``y`` and ``ss`` the total
    within-cell sum of squares (:mod:`audit.stats.cells`); the fits are those of the observations.
    ``X`` may be :func:`audit.stats.fastlmm.fit_nested_ri`'s ``(D, r)`` (``X = D[r]``, built only for OLS)."""
    warns: list[str] = []
    if isinstance(X, tuple):
        D, r = X

        def full():
            return np.asarray(D, dtype=float)[r]
    else:
        def full():
            return X
    if not pd.Series(clusters).duplicated().any() and (w is None or np.all(w == 1)):
        fit = _fit_ols_cluster(y, full(), clusters, [], w, ss)
        fit.method = NO_REPEATS
        return fit
    if inner is not None:
        try:
            f = fit_nested_ri(y, X, clusters, inner, reml=reml, weights=w, within_ss=ss)
            if f.converged:
                return _Fit(f.params, f.cov_params, "lmm (1|post)+(1|post:inner), " + ("REML" if reml else "ML"),
                            True, f.warnings, float(np.sqrt(f.var_post + f.var_inner + f.scale)), raw=f)
            warns.append("nested model did not converge (" + "; ".join(f.warnings) + "); fell back to (1|post)")
        except np.linalg.LinAlgError as exc:
            warns.append(f"nested model failed ({exc}); fell back to (1|post)")
    try:
        f = fit_nested_ri(y, X, clusters, None, reml=reml, weights=w, within_ss=ss)
        if f.converged:
            return _Fit(f.params, f.cov_params, "lmm (1|post), " + ("REML" if reml else "ML"), True,
                        warns + f.warnings, float(np.sqrt(f.var_post + f.scale)), raw=f)
        warns.append("random-intercept model did not converge (" + "; ".join(f.warnings) + ")")
    except np.linalg.LinAlgError as exc:
        warns.append(f"random-intercept model failed ({exc})")
    return _fit_ols_cluster(y, full(), clusters, warns + ["fell back to OLS with post-clustered standard errors"], w,
                            ss)


def _fit_ols_cluster(y, X, clusters, warns, w=None, ss=0.0) -> _Fit:
    if w is not None:
        return _ols_cluster_cells(y, X, clusters, warns, w, ss)
    import statsmodels.api as sm

    codes = pd.factorize(pd.Series(clusters))[0]
    res = sm.OLS(y, X).fit(cov_type="cluster", cov_kwds={"groups": codes})
    return _Fit(np.asarray(res.params), np.asarray(res.cov_params()), "ols, cluster-robust (CR1) by post",
                True, warns, float(np.sqrt(res.scale)))


def _ols_cluster_cells(y, X, clusters, warns, w, ss) -> _Fit:
    """OLS with cluster-robust (CR1) covariance from cells (:mod:`audit.stats.cells`), in closed form.

    Hand-written because statsmodels needs the observations, which the cells summarise. With ``B =
    sum_c w_c x_c x_c'``, ``b = B^-1 sum_c w_c x_c ybar_c``, cell residuals ``e_c = ybar_c - x_c'b`` and
    per-cluster scores ``u_g = sum_{c in g} w_c x_c e_c`` (the sum of the observations' ``x e``)::

        Cov(b) = G/(G-1) (N-1)/(N-p) B^-1 (sum_g u_g u_g') B^-1,     s2 = (sum_c w_c e_c^2 + ss) / (N - p)

    the CR1 estimator of statsmodels' ``cov_type="cluster"`` (Cameron & Miller 2015, eq. 11) on the
    observations themselves."""
    w = np.asarray(w, dtype=float)
    N, p = float(w.sum()), X.shape[1]
    B = X.T @ (X * w[:, None])
    b = np.linalg.solve(B, X.T @ (w * y))
    e = y - X @ b
    codes = pd.factorize(pd.Series(clusters))[0]
    ng = int(codes.max()) + 1
    U = np.zeros((ng, p))
    np.add.at(U, codes, X * (w * e)[:, None])
    Binv = np.linalg.inv(B)
    cov = Binv @ (U.T @ U) @ Binv * (ng / (ng - 1.0)) * ((N - 1.0) / (N - p))
    scale = (float(w @ (e * e)) + float(ss)) / (N - p)
    return _Fit(b, cov, "ols, cluster-robust (CR1) by post", True, warns, float(np.sqrt(scale)))


def _fit_mixedlm(y, X, clusters, inner, reml) -> _Fit:
    """statsmodels MixedLM (the slow reference implementation), for cross-checks."""
    from statsmodels.regression.mixed_linear_model import MixedLM

    k = X.shape[1]
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(k)])
    df["y"] = y
    df["g"] = clusters
    vc = None
    if inner is not None:
        df["inner"] = inner
        vc = {"inner": "0 + C(inner)"}
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        m = MixedLM.from_formula("y ~ 0 + " + " + ".join(f"x{i}" for i in range(k)), df, groups="g",
                                 re_formula="1", vc_formula=vc)
        r = m.fit(reml=reml)
    k = X.shape[1]
    msgs = sorted({str(w.message).splitlines()[0] for w in numerical_only(caught)})
    re_var = float(np.sum(np.diag(np.atleast_2d(r.cov_re)))) + float(np.sum(np.asarray(r.vcomp)))
    return _Fit(np.asarray(r.fe_params), np.asarray(r.cov_params())[:k, :k], "statsmodels MixedLM",
                bool(r.converged), msgs, float(np.sqrt(re_var + r.scale)))


def _fit_gee_logit(y, X, clusters) -> _Fit:
    import statsmodels.api as sm
    from statsmodels.genmod.cov_struct import Exchangeable

    codes = pd.factorize(pd.Series(clusters))[0]
    order = np.argsort(codes, kind="stable")
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        m = sm.GEE(y[order], X[order], groups=codes[order], family=sm.families.Binomial(), cov_struct=Exchangeable())
        r = m.fit(maxiter=100, cov_type="bias_reduced")
    msgs = sorted({str(w.message).splitlines()[0] for w in numerical_only(caught)})
    conv = not any("converge" in s.lower() for s in msgs)
    return _Fit(np.asarray(r.params), np.asarray(r.cov_params()), "gee logistic, exchangeable within post, bias-reduced robust SE",
                conv, msgs, float("nan"), link="logit")


def _fit_gee_logit_cells(y, w, X, clusters) -> _Fit:
    """:func:`_fit_gee_logit` from 0/1 cells (``y`` their means, ``w`` their sizes): the same estimates,
    summed per cluster (:mod:`audit.stats.gee_cells`), in time that grows with the cells."""
    from .gee_cells import gee_logit_cells

    codes = pd.factorize(pd.Series(clusters))[0]
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        r = gee_logit_cells(y, w, X, codes, maxiter=100)
    msgs = sorted({str(m.message).splitlines()[0] for m in numerical_only(caught)})
    conv = not any("converge" in s.lower() for s in msgs)
    return _Fit(r.params, r.cov_bias_reduced, "gee logistic, exchangeable within post, bias-reduced robust SE",
                conv, msgs, float("nan"), link="logit")


def fieller_ratio(a: float, b: float, vaa: float, vab: float, vbb: float, z: float) -> tuple[float, float, float]:
    """Ratio ``a / b`` with Fieller's confidence interval (Fieller 1954).

    The interval is ``{r : (a - r b)^2 <= z^2 (vaa - 2 r vab + r^2 vbb)}``; it contains 0 exactly when
    the Wald test of ``a = 0`` does not reject, so relative and absolute gaps never disagree about
    significance (the delta method can). Returns NaNs when ``b`` is not significantly different
    from 0 (``b^2 <= z^2 vbb``), where the set is unbounded.
    """
    qa = b * b - z * z * vbb
    if not (np.isfinite(qa) and qa > 0 and b != 0):
        return np.nan, np.nan, np.nan
    qb = -2.0 * (a * b - z * z * vab)
    qc = a * a - z * z * vaa
    disc = max(qb * qb - 4 * qa * qc, 0.0)
    lo = (-qb - np.sqrt(disc)) / (2 * qa)
    hi = (-qb + np.sqrt(disc)) / (2 * qa)
    return a / b, float(lo), float(hi)


def safe_ratio(a: float, b: float, vaa: float, vab: float, vbb: float, z: float, *,
               lower: float = -np.inf, upper: float = np.inf) -> tuple[float, float, float]:
    """:func:`fieller_ratio` where the denominator is safely off zero (Fieller's ``g = z^2 vbb / b^2 <=``
    :data:`FIELLER_G_MAX`), else NaNs; the interval is clipped to ``[lower, upper]`` (e.g. ``lower=-1``:
    a relative gap of a non-negative outcome cannot be below -100%).

    >>> float(safe_ratio(-0.2, 1.0, 0.01, 0.0, 0.001, 1.96, lower=-1)[0])
    -0.2
    >>> bool(np.isnan(safe_ratio(-0.2, 0.1, 0.01, 0.0, 0.001, 1.96)[0]))
    True
    """
    if not (np.isfinite(b) and b != 0 and np.isfinite(vbb)) or z * z * vbb / (b * b) > FIELLER_G_MAX:
        return np.nan, np.nan, np.nan
    r, lo, hi = fieller_ratio(a, b, vaa, vab, vbb, z)
    if not np.isfinite(r):
        return r, lo, hi
    return r, float(min(max(lo, lower), r)), float(max(min(hi, upper), r))


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def _gap_rows(fit: _Fit, X: np.ndarray, is_ref: np.ndarray, names: list[str], levels: list[str],
              d: pd.DataFrame, group: str, cluster: str, reference: str, alpha: float,
              w: np.ndarray | None = None) -> list[dict]:
    zc = stats.norm.ppf(1 - alpha / 2)
    b, V = fit.params, fit.cov
    Xr = X[is_ref]
    wr = None if w is None else w[is_ref] / w[is_ref].sum()

    def rmean(A):  # mean over the reference observations (cells: weighted by their sizes)
        return A.mean(axis=0) if wr is None else wr @ A
    rows = []
    gcode, gtext = text_factorize(d[group])
    ccodes = pd.factorize(d[cluster])[0]
    for j, lv in enumerate(levels, start=1):
        warn = list(fit.warnings)
        if fit.link == "identity":
            c = rmean(Xr)
            ref_mean = float(c @ b)
            est = float(b[j])
            grad_est = np.zeros_like(b)
            grad_est[j] = 1.0
            grad_ref = c
            std = est / fit.total_sd if fit.total_sd > 0 else np.nan
            with np.errstate(invalid="ignore"):  # a negative variance of a degenerate fit: NaN, said in the row
                z = est / np.sqrt(V[j, j])
        else:
            # standardise over the reference rows: group indicator off (reference) or on (group lv)
            Xg = Xr.copy()
            Xg[:, 1:len(levels) + 1] = 0.0
            Xg[:, j] = 1.0
            X0 = Xr.copy()
            X0[:, 1:len(levels) + 1] = 0.0
            p0, p1 = _expit(X0 @ b), _expit(Xg @ b)
            ref_mean = float(rmean(p0))
            est = float(rmean(p1) - rmean(p0))
            if wr is None:
                grad_ref = (p0 * (1 - p0)) @ X0 / len(X0)
                grad_est = (p1 * (1 - p1)) @ Xg / len(Xg) - grad_ref
            else:
                grad_ref = (wr * p0 * (1 - p0)) @ X0
                grad_est = (wr * p1 * (1 - p1)) @ Xg - grad_ref
            std = float(b[j] * np.sqrt(3) / np.pi)
            z = None  # set below, on the probability scale of the reported gap and its CI
        with np.errstate(invalid="ignore"):
            se = float(np.sqrt(grad_est @ V @ grad_est))
        if z is None:
            # Wald test of the reported gap itself (delta-method SE), so the p-value and the CI can
            # never disagree. The log-odds-ratio Wald test did disagree under near-separation
            # (seen: p = 3e-9 with a 95% CI of -0.06 to +0.31): its SE collapses as an odds ratio
            # heads to infinity (Hauck & Donner 1977), while the probability-scale gap stays bounded.
            z = est / se if se > 0 else np.nan
        p = float(2 * stats.norm.sf(abs(z)))
        se_ref = float(np.sqrt(grad_ref @ V @ grad_ref))
        cov_gap_ref = float(grad_est @ V @ grad_ref)
        binary_gap = fit.link != "identity"
        rel, rel_lo, rel_hi = safe_ratio(est, ref_mean, se ** 2, cov_gap_ref, se_ref ** 2, zc,
                                         lower=-1.0 if binary_gap else -np.inf)
        if not np.isfinite(rel):
            warn.append("relative gap not reported: the reference mean is too close to 0 for a bounded ratio")
        lo_abs, hi_abs = est - zc * se, est + zc * se
        if binary_gap:  # a difference of two shares lies in [-1, 1]
            lo_abs, hi_abs = max(lo_abs, -1.0), min(hi_abs, 1.0)
        in_g = gcode == (list(gtext).index(lv) if lv in set(gtext) else -1)
        n_posts = len(np.unique(ccodes[in_g]))
        rows.append(dict(
            group=lv, reference=str(reference), estimate=est, se=se, ci_low=lo_abs, ci_high=hi_abs,
            ref_mean=ref_mean, relative_gap=rel, rel_ci_low=rel_lo, rel_ci_high=rel_hi, std_effect=float(std),
            z=float(z), p_value=p, n=int(in_g.sum() if w is None else round(float(w[in_g].sum()))),
            n_posts=int(n_posts),
            method=fit.method, converged=bool(fit.converged), warning="; ".join(dict.fromkeys(warn)) or None,
            ref_se=se_ref, cov_gap_ref=cov_gap_ref,
        ))
    return rows


def _full_rank(X: np.ndarray) -> bool:
    return bool(np.linalg.matrix_rank(X.T @ X) == X.shape[1])


def _fit_one(d, outcome, group, reference, cluster, factors, inner, method, reml, alpha, binary, cells=None):
    X, names, levels = design_matrix(d, group, reference, factors)
    rank = np.linalg.matrix_rank(X.T @ X)
    if rank < X.shape[1]:
        culprits = [f for f in factors if _full_rank(design_matrix(d, group, reference, [g for g in factors if g != f])[0])]
        use_by = " or ".join(f"--by {f} instead of --factor {f}" for f in culprits) or "--by COL instead of --factor COL"
        raise AuditError(
            f"the fixed effects are collinear (rank {rank} < {X.shape[1]} columns: {', '.join(names)})"
            + (f": {', '.join(culprits)} is determined by the group" if culprits else ""),
            where=f"outcome '{outcome}'",
            fix=f"use {use_by} (gaps per level of a column the group determines, e.g. a cue type that the control "
                "does not have), or drop the --factor",
        )
    y = d[outcome].to_numpy(dtype=float)
    # the labels as integers in the order of their texts (textcodes; the fits only compare them): a text
    # per row, and pairs of them as tuples, took seconds at a million cells
    clusters = text_codes(d[cluster])
    inn = text_codes(d[inner]) if inner else None
    w = cell_weights(d, cells)
    ss = float(d[cells.ss].sum()) if w is not None else 0.0
    if inn is not None:
        pair = pd.factorize(clusters.astype(np.int64) * (int(inn.max()) + 1) + inn)[0]
        if (pair.max() + 1 == len(d)) if w is None else np.bincount(pair, w).max() == 1:
            inn = None  # one row per inner cluster: the inner variance is not identified
    if method == "auto":
        method = "gee" if binary else "fast"
    if method == "gee":
        fit = None
        gcol = as_text(d[group])
        if w is None:
            counts = pd.crosstab(gcol, y)
        else:  # the cells' counts of ones and zeros per group
            ones = np.rint(y * w)
            counts = pd.DataFrame({0.0: w - ones, 1.0: ones}).groupby(gcol).sum()
            counts = counts.loc[:, (counts > 0).any(axis=0)]
        degenerate = (counts == 0).any(axis=1)
        if degenerate.any():
            why = f"no variation in group(s) {', '.join(counts.index[degenerate])}"
        else:
            try:
                fit = _fit_gee_logit(y, X, clusters) if w is None else _fit_gee_logit_cells(y, w, X, clusters)
                why = None if fit.converged and np.all(np.isfinite(fit.cov)) else "GEE did not converge"
            except Exception as exc:  # statsmodels raises several types on separation
                why = f"GEE failed ({type(exc).__name__}: {exc})"
        if why:
            fit = _fit_lmm(y, X, clusters, inn, reml, w, ss)
            fit.method = "linear probability " + fit.method + " (GEE fallback)"
            fit.warnings = [why + "; used the linear mixed model on the 0/1 outcome instead"] + fit.warnings
    elif method == "fast":
        fit = _fit_lmm(y, X, clusters, inn, reml, w, ss)
    elif method == "mixedlm":
        if w is not None:
            raise ValueError("method 'mixedlm' needs the observations, not cells")
        fit = _fit_mixedlm(y, X, clusters, inn, reml)
    elif method == "ols":
        fit = _fit_ols_cluster(y, X, clusters, [], w, ss)
    else:
        raise ValueError(f"unknown method {method!r}")
    gcode, gtext = text_factorize(d[group])
    is_ref = gcode == (list(gtext).index(str(reference)) if str(reference) in set(gtext) else -1)
    return _gap_rows(fit, X, is_ref, names, levels, d, group, cluster, reference, alpha, w), fit


def _condition_is_group(pairs: np.ndarray, gt: np.ndarray, bt: np.ndarray, pooled_rows: list[dict]) -> dict | None:
    """When every compared group has one level of ``by`` (e.g. one cue type besides the control's), the
    model with a group-by-level condition is the pooled model: its labels (``group\x1flevel``) are the groups
    one for one and sort as they do, so its design matrix, columns in the same order, and fit are the same,
    number for number. Returns ``{group: label}`` then, else None (refit). ``pairs``: the distinct codes
    ``group code * len(bt) + level code`` of the non-reference rows. Not where the pooled fit fell back
    from GEE: the reason names the groups, which the condition fit names by their labels."""
    groups = pairs // len(bt)
    if len(np.unique(groups)) != len(groups) or any("fallback" in str(r.get("method")) for r in pooled_rows):
        return None
    label_of = {str(gt[g]): str(gt[g]) + "\x1f" + str(bt[p % len(bt)]) for g, p in zip(groups, pairs)}
    names = sorted(label_of)
    if sorted(label_of.values()) != [label_of[g] for g in names]:
        return None
    if {str(r["group"]) for r in pooled_rows} - set(label_of):  # pragma: no cover - every fitted group has rows
        return None
    return label_of


def _fit_stated(*args):
    """:func:`_fit_one` with its numerical warnings caught and stated on its rows (audit.stats.degenerate)."""
    with captured() as caught:
        rows, fit = _fit_one(*args)
    return attach_warnings(rows, caught), fit


def gap_test(
    data: pd.DataFrame,
    *,
    outcome: str,
    group: str = "group",
    control: str = "control",
    cluster: str = "post_id",
    factors: tuple[str, ...] | list[str] = (),
    inner: str | None = None,
    by: str | None = None,
    method: str = "auto",
    reml: bool = True,
    alpha: float = 0.05,
    where: str = "the table",
    allow_missing: bool = False,
    cells: Cells | None = None,
) -> pd.DataFrame:
    """Gap of every group to the reference level ``control`` in a mixed model with a random
    intercept per ``cluster`` (and per ``cluster:inner`` when ``inner`` is given).

    ``outcome ~ C(group, Treatment(control)) + factors + (1 | cluster) [+ (1 | cluster:inner)]``, REML,
    Wald z tests; 0/1 outcomes: GEE logistic (Liang & Zeger 1986) with Mancl & DeRouen (2001) robust
    SEs, gaps on the probability scale; relative gaps with Fieller (1954) CIs. The column arguments
    are keyword-only (``gap_test(df, outcome="score", group="group", control="control",
    cluster="post_id")``); their defaults are the column names of :func:`audit.stats.analysis_table`
    except ``outcome`` (there: ``"value"``).

    Parameters
    ----------
    data : long table, one row per observation (reply).
    outcome, group, cluster : column names; ``control`` is the reference level of ``group``.
    factors : further categorical fixed effects (e.g. prompt style).
    inner : optional inner cluster nested in ``cluster`` (e.g. variant id when each variant was
        sampled several times): adds the variance component ``(1 | cluster:inner)``.
    by : optional column (e.g. ``cue_type``): gaps are also reported per level of ``by``. When the
        reference rows have a single ``by`` value (the control has cue type ``control``) one model
        with a group-by-level condition is fitted; otherwise the data are split by level.
    method : ``auto`` (fast exact LMM; GEE logistic for 0/1 outcomes), ``fast``, ``mixedlm``
        (statsmodels, slow, for cross-checks), ``gee`` or ``ols`` (cluster-robust).
    reml : REML (default) or ML.  alpha : for the (1 - alpha) confidence intervals and the
        differential-missingness test.
    allow_missing : analyse even when the share of missing outcomes differs between a group and the
        reference (:func:`audit.stats.missing.differential_missingness`); the rows then say so.
    cells : the rows of ``data`` are cells of observations (:mod:`audit.stats.cells`: ``outcome`` the
        cell mean, and the columns named by ``cells``: observed and missing counts, within-cell sum of
        squares, min, max, 0/1 flag). The result is that of the observations themselves: the mixed
        models and OLS are fitted from the sufficient statistics, GEE from the cells' counts of ones
        and zeros, and ``n`` counts observations.

    Returns
    -------
    DataFrame with one row per compared group (and per ``by`` level, ``by`` column set to
    ``'pooled'`` or the level): ``group, reference, estimate, se, ci_low, ci_high, ref_mean,
    relative_gap, rel_ci_low, rel_ci_high, std_effect, z, p_value, n, n_posts, n_missing, ref_n_missing,
    n_clusters, design, method, converged, warning, ref_se, cov_gap_ref`` (a group with no usable
    value: ``method`` ``not fitted`` and the reason in ``warning``; ``ref_se`` the reference mean's SE
    and ``cov_gap_ref`` its covariance with the gap, which relative equivalence margins need). See the
    module docstring for the formulas.

    Example
    -------
    >>> from audit.stats.simulate import simulate_audit_table
    >>> t = simulate_audit_table(n_posts=30, groups=["A", "B"], gaps={"A": -0.5}, seed=3)
    >>> r = gap_test(t, outcome="value", group="group", control="control", cluster="post_id")
    >>> r[["group", "method"]].values.tolist(), bool(r["p_value"].iloc[0] < 0.05)
    ([['A', 'lmm (1|post), REML'], ['B', 'lmm (1|post), REML']], True)
    """
    _check_columns(data, outcome, group, cluster, factors, inner, where)
    ctrl = match_level(level_labels(data[group]), control) or str(control)
    counts = missing_by_group(data, outcome, group, cells=cells)
    diff = differential_missingness(counts, ctrl, alpha=alpha)
    flagged = diff[diff["flagged"]] if len(diff) else diff
    if len(flagged) and not allow_missing:
        raise AuditError(
            "; ".join(missing_note(r) for r in flagged.to_dict("records"))
            + ": the usable rows of these groups were selected differently, so their gaps can be wrong",
            where=where,
            fix="find out why the outcomes are missing (failed replies, unscorable text) and fill them in, or pass "
                "--allow-missing (allow_missing=True) to analyse anyway with the missing counts shown beside each gap",
        )
    notes = {r["group"]: missing_note(r) for r in flagged.to_dict("records")} if len(flagged) else {}
    empty = [r for r in diff.to_dict("records") if r["n_missing"] == r["n_rows"]] if len(diff) else []
    data_used = data
    if empty:
        gl = level_labels(data[group])
        data_used = data[~gl.isin([r["group"] for r in empty]).to_numpy()]
    d = None if empty and len(empty) == len(diff) else \
        validate_table(data_used, outcome, group, ctrl, cluster, factors, inner, where=where, cells=cells)
    miss = counts.set_index("group")["n_missing"].to_dict()
    by_counts = (missing_by_group(data, outcome, group, by, cells=cells).set_index(["group", by])["n_missing"].to_dict()
                 if by is not None else {})
    empty_rows = [dict(group=r["group"], reference=ctrl, n=0, n_posts=0, n_missing=r["n_missing"],
                       ref_n_missing=r["ref_n_missing"], method="not fitted", converged=False,
                       warning=f"no usable values: all {r['n_rows']} outcomes of this group are missing")
                  for r in empty]
    if d is None:  # no group other than the reference has a usable value
        out = pd.DataFrame(empty_rows, columns=GAP_COLUMNS)
        if by is not None:
            out.insert(1, by, "pooled")
        return out
    binary = cells_binary(d, cells) if cells is not None else is_binary(d[outcome])
    weight = cells.n if cells is not None else None

    def annotate(r: pd.DataFrame, sub: pd.DataFrame, level: str | None) -> pd.DataFrame:
        """Missing counts, effective sample size and design beside each estimate; a group whose arm and
        the reference's are both constant is not fitted (:mod:`audit.stats.degenerate`)."""
        is_ref = sub[group] == ctrl
        values = _observed_values(sub, outcome, cells)
        arms = constant_arms(values, np.tile(sub[group].to_numpy(), len(values) // max(len(sub), 1)))
        scale = float(np.nanmax(np.abs(values))) if len(values) and np.isfinite(values).any() else 0.0
        no_p = ["se", "ci_low", "ci_high", "relative_gap", "rel_ci_low", "rel_ci_high", "std_effect", "z", "p_value"]
        # the design of each group against the reference from the columns coded once (a copy of the rows of
        # each pair was ~3 ms a group)
        dg, dc, dw, dok = design_codes(sub, group, cluster, weight=weight)
        ref_rows = is_ref.to_numpy(dtype=bool)
        for i, g in r["group"].items():
            fitted = not str(r.at[i, "method"]).startswith("not fitted")
            why = constant_pair_reason(arms, g, ctrl) if fitted else None
            if why:
                r.loc[i, no_p] = np.nan
                r.at[i, "estimate"], r.at[i, "ref_mean"] = arms[g] - arms[ctrl], arms[ctrl]
                r.at[i, "method"], r.at[i, "converged"], r.at[i, "warning"] = CONSTANT, False, why
            elif fitted and no_standard_error(r.at[i, "se"], scale):
                r.loc[i, no_p] = np.nan
                note = ("no standard error: the variance of the gap is 0 up to rounding (the group's and the "
                        "reference's outcomes agree within every cluster, or the fit is numerically singular), "
                        "so no p-value")
                r.at[i, "warning"] = "; ".join(x for x in (note, r.at[i, "warning"]) if isinstance(x, str) and x)
            g_rows = (sub[group] == g).to_numpy(dtype=bool)
            if g_rows.any():
                m = dok & (ref_rows | g_rows)
                info = design_of_codes(dg[m], dc[m], dw[m])
                r.at[i, "n_clusters"], r.at[i, "design"] = info.n_clusters, info.kind
            if level is None:
                r.at[i, "n_missing"], r.at[i, "ref_n_missing"] = miss.get(g, 0), miss.get(ctrl, 0)
            else:
                r.at[i, "n_missing"] = by_counts.get((g, level), 0)
                r.at[i, "ref_n_missing"] = by_counts.get((ctrl, level), miss.get(ctrl, 0))
            if g in notes:
                r.at[i, "warning"] = "; ".join(x for x in (notes[g], r.at[i, "warning"]) if isinstance(x, str) and x)
        return r

    rows, _ = _fit_stated(d, outcome, group, ctrl, cluster, tuple(factors), inner, method, reml, alpha, binary, cells)
    pooled_rows = rows
    out = annotate(pd.DataFrame(rows + empty_rows, columns=GAP_COLUMNS).astype({"warning": object, "design": object}),
                   d, None)
    if by is None:
        return out
    out.insert(1, by, "pooled")
    parts = [out]
    ref_by = d.loc[d[group] == ctrl, by].astype(str).unique()
    if len(ref_by) == 1:
        cond = "__condition__"
        is_ref = (d[group] == ctrl).to_numpy(dtype=bool)
        # each distinct (group, level) pair's label made once, not a text per row
        gc, gt = text_factorize(d[group])
        bc, bt = text_factorize(d[by])
        pairs, which = np.unique(gc.astype(np.int64) * len(bt) + bc, return_inverse=True)
        label = np.array([gt[p // len(bt)] + "\x1f" + bt[p % len(bt)] for p in pairs], dtype=object)
        same = _condition_is_group(pairs[np.unique(which.ravel()[~is_ref])], gt, bt, pooled_rows)
        if same is not None:  # the condition model is the pooled model: its rows, relabelled (no second fit)
            rows = [dict(r, group=same[r["group"]]) for r in pooled_rows]
        else:
            dd = d.copy()
            dd[cond] = np.where(is_ref, ctrl, label[which.ravel()])
            rows, _ = _fit_stated(dd, outcome, cond, ctrl, cluster, tuple(factors), inner, method, reml, alpha,
                                  binary, cells)
        r = pd.DataFrame(rows, columns=GAP_COLUMNS).astype({"warning": object, "design": object})
        split = r["group"].str.split("\x1f", n=1, expand=True)
        r["group"] = split[0]
        r.insert(1, by, split[1])
        by_text = as_text(d[by])
        for lv, idx in r.groupby(by).groups.items():
            sub = d[((d[group] == ctrl).to_numpy(dtype=bool)) | (by_text == lv)]
            r.loc[idx] = annotate(r.loc[idx].copy(), sub, lv)
        parts.append(r)
    else:
        for lv in sorted(d[by].astype(str).unique()):
            sub = d[d[by].astype(str) == lv]
            if ctrl not in set(sub[group]) or sub[group].nunique() < 2:
                continue  # nothing to compare at this level
            try:
                sub = validate_table(sub, outcome, group, ctrl, cluster, factors, inner, where=f"{where}, {by}={lv}",
                                     cells=cells)
                rows, _ = _fit_stated(sub, outcome, group, ctrl, cluster, tuple(factors), inner, method, reml,
                                      alpha, binary, cells)
            except AuditError as exc:
                rows = [dict(group=g, reference=ctrl, method="not fitted", converged=False,
                             warning=exc.message) for g in sorted(set(d[group]) - {ctrl})]
            r = pd.DataFrame(rows, columns=GAP_COLUMNS).astype({"warning": object, "design": object})
            r = annotate(r, sub, lv)
            r.insert(1, by, lv)
            parts.append(r)
    return pd.concat(parts, ignore_index=True)
