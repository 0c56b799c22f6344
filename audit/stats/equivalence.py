"""Equivalence tests: is a gap small enough to accept, too large, or not known? (TOST verdicts)

A gap test asks whether a gap is distinguishable from zero; "not significant" is then easily read as
"fair", which it is not (a small audit finds nothing). An equivalence test asks the question a
decision needs: is the gap inside a margin ``+-m`` stated before the data were seen
(``analysis.margins``)? This module holds the pure functions; :func:`equivalence_table` applies them
to the stored results and disparities.

Two one-sided tests (TOST; Schuirmann 1987; Lakens 2017)
-------------------------------------------------------
For an estimate ``d`` of a gap ``D`` with standard error ``s`` (normal reference, as the Wald tests
of :mod:`audit.stats.gaps`) and a margin ``m > 0``::

    H0_low:  D <= -m   rejected when  z_low  = (d + m) / s >  z_{1-a};  p_low  = 1 - Phi(z_low)
    H0_high: D >= +m   rejected when  z_high = (d - m) / s < -z_{1-a};  p_high = Phi(z_high)
    p_within = max(p_low, p_high)

Equivalence (``|D| < m``) is declared when ``p_within < a``: both one-sided tests reject, i.e. the
``1 - 2a`` confidence interval ``d +- z_{1-a} s`` lies inside ``(-m, m)``. The size is ``a`` at
``|D| = m`` whatever ``s`` (the test is an intersection-union test; Berger & Hsu 1996). The mirror
test of a gap larger than the margin (``H0: |D| <= m``) rejects when the same ``1 - 2a`` interval
lies wholly outside ``[-m, m]``::

    p_exceed = min(1 - p_high, 1 - p_low)

**Relative margins** (``"5%"`` of the reference mean ``R``): the hypotheses are on the ratio
``D / R``. With the joint covariance of ``(d, r)`` (``r`` the reference mean's estimate) the test of
``D / R = c`` is the Wald test of ``D - c R = 0`` (the inversion that gives Fieller's interval, the
CI of the relative gaps in :func:`audit.stats.gaps.fieller_ratio`)::

    t(c) = sign(r) (d - c r) / sqrt(Var d - 2 c Cov(d, r) + c^2 Var r)
    p_high = Phi(t(m)),   p_low = 1 - Phi(t(-m))

so the relative verdict agrees with Fieller's ``1 - 2a`` interval lying inside ``(-m, m)``.

**The max - min disparity** ``D >= 0`` (:mod:`audit.stats.disparity`) has only the upper side: its
test reads the cluster-bootstrap CI already computed (level ``1 - a``, basic interval) as a normal
interval, ``s_up = (ci_high - D) / z_{1-a/2}`` and ``s_low = (D - ci_low) / z_{1-a/2}``::

    p_within = Phi((D - m) / s_up),        p_exceed = 1 - Phi((D - m) / s_low)

**Multiplicity.** The p-values of every comparison with a margin are adjusted in the families of the
gap tests (:mod:`audit.stats.family`): one Holm family, or with ``analysis.primary`` Holm within the
confirmatory family and Benjamini-Hochberg within the exploratory one. The family of equivalence
claims is the comparisons that have a margin.

**Verdicts** (at the family's level ``a`` on the adjusted p-values):

* ``within margin``: ``p_within`` adjusted < a;
* ``exceeds margin``: ``p_exceed`` adjusted < a;
* ``gap, size undetermined``: neither, but the gap test says the gap is not zero (significant in
  its family);
* ``inconclusive``: none of these.

References: Schuirmann, D. J. (1987), A comparison of the two one-sided tests procedure and the power
approach for assessing the equivalence of average bioavailability, J Pharmacokinet Biopharm 15(6);
Lakens, D. (2017), Equivalence tests: a practical primer for t tests, correlations, and
meta-analyses, Soc Psychol Personal Sci 8(4); Berger, R. L. & Hsu, J. C. (1996), Bioequivalence
trials, intersection-union tests and equivalence confidence sets, Statistical Science 11(4);
Fieller, E. C. (1954), Some problems in interval estimation, JRSS B 16(2).

Example
-------
>>> from audit.stats.equivalence import tost_p, verdict
>>> p_within, p_exceed = tost_p(-0.031, 0.0097, 0.05)
>>> round(p_within, 4), verdict(p_within, p_exceed, off_zero=True, alpha=0.05)
(0.0251, 'within margin')
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from ..spec import parse_margin
from .corrections import bh, holm

__all__ = ["parse_margin", "tost_p", "tost_p_ratio", "disparity_tost_p", "tost_ci", "verdict", "VERDICTS",
           "WITHIN", "EXCEEDS", "UNDETERMINED", "INCONCLUSIVE", "NOT_ESTIMABLE", "NO_MARGIN",
           "margin_for", "equivalence_table", "plain_verdict", "rate_verdicts"]

WITHIN, EXCEEDS, UNDETERMINED, INCONCLUSIVE = ("within margin", "exceeds margin", "gap, size undetermined",
                                               "inconclusive")
NOT_ESTIMABLE, NO_MARGIN = "not estimable", "no margin"
VERDICTS = (WITHIN, EXCEEDS, UNDETERMINED, INCONCLUSIVE)


def tost_p(estimate: Any, se: Any, margin: Any) -> tuple[Any, Any]:
    """(p_within, p_exceed) of the two one-sided tests of ``|D| < margin`` and of ``|D| > margin``
    (formulas in the module docstring). Arrays broadcast; NaN where ``se`` is not positive."""
    d, s, m = (np.asarray(x, dtype=float) for x in (estimate, se, margin))
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(s > 0, s, np.nan)
        p_low = stats.norm.sf((d + m) / s)          # H0: D <= -m
        p_high = stats.norm.cdf((d - m) / s)        # H0: D >= +m
    within = np.maximum(p_low, p_high)
    exceed = np.minimum(1 - p_high, 1 - p_low)
    return _out(within), _out(exceed)


def tost_p_ratio(a: Any, r: Any, vaa: Any, var: Any, vrr: Any, margin: Any) -> tuple[Any, Any]:
    """(p_within, p_exceed) for the relative gap ``D / R`` against ``+-margin`` (a share): the Wald
    tests of ``D - c R = 0`` at ``c = +-margin`` with the joint covariance of the gap ``a`` and the
    reference mean ``r`` (``vaa``, ``var`` = Cov, ``vrr``); the inversion behind Fieller's interval."""
    a, r, vaa, var, vrr, m = (np.asarray(x, dtype=float) for x in (a, r, vaa, var, vrr, margin))
    sign = np.sign(r)

    def t(c):
        with np.errstate(invalid="ignore", divide="ignore"):
            v = vaa - 2 * c * var + c * c * vrr
            return sign * (a - c * r) / np.sqrt(np.where(v > 0, v, np.nan))

    p_high = stats.norm.cdf(t(m))
    p_low = stats.norm.sf(t(-m))
    within = np.maximum(p_low, p_high)
    exceed = np.minimum(1 - p_high, 1 - p_low)
    return _out(within), _out(exceed)


def disparity_tost_p(estimate: Any, ci_low: Any, ci_high: Any, margin: Any, *, alpha: float = 0.05
                     ) -> tuple[Any, Any]:
    """(p_within, p_exceed) of a max - min disparity ``D >= 0`` against ``margin`` from its
    ``1 - alpha`` bootstrap CI read as a normal interval (module docstring)."""
    d, lo, hi, m = (np.asarray(x, dtype=float) for x in (estimate, ci_low, ci_high, margin))
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        s_up = np.where(hi - d > 0, (hi - d) / z, np.nan)
        s_low = np.where(d - lo > 0, (d - lo) / z, np.nan)
        within = stats.norm.cdf((d - m) / s_up)
        exceed = stats.norm.sf((d - m) / s_low)
    return _out(within), _out(exceed)


def tost_ci(estimate: Any, se: Any, alpha: float = 0.05) -> tuple[Any, Any]:
    """The ``1 - 2 alpha`` confidence interval ``d +- z_{1-alpha} s`` whose inclusion in ``(-m, m)``
    is the TOST at level ``alpha``."""
    z = stats.norm.ppf(1 - alpha)
    d, s = np.asarray(estimate, dtype=float), np.asarray(se, dtype=float)
    return _out(d - z * s), _out(d + z * s)


def verdict(p_within: float, p_exceed: float, *, off_zero: bool, alpha: float = 0.05) -> str:
    """The verdict of one comparison from its (adjusted) TOST p-values and whether the gap test calls
    it different from zero (module docstring)."""
    if not (np.isfinite(p_within) or np.isfinite(p_exceed)):
        return NOT_ESTIMABLE
    if np.isfinite(p_within) and p_within < alpha:
        return WITHIN
    if np.isfinite(p_exceed) and p_exceed < alpha:
        return EXCEEDS
    return UNDETERMINED if off_zero else INCONCLUSIVE


def plain_verdict(v: str | None) -> str:
    """The verdict in words for a reader."""
    return {WITHIN: "within margin", EXCEEDS: "exceeds margin",
            UNDETERMINED: "a gap, but its size relative to the margin is undetermined",
            INCONCLUSIVE: "inconclusive", NOT_ESTIMABLE: "not estimable",
            NO_MARGIN: "no margin stated"}.get(str(v), str(v))


def margin_for(outcome: str, margins: Mapping[str, Any] | None) -> tuple[float, str] | None:
    """The parsed margin of ``outcome`` (``scorer.measure``) in ``margins`` (keys ``scorer.measure``
    exactly, or a bare measure matching the part after the last dot), or None."""
    if not margins:
        return None
    o = str(outcome)
    if o in margins:
        return parse_margin(margins[o])
    for k, v in margins.items():
        if "." not in k and o.rpartition(".")[2] == k:
            return parse_margin(v)
    return None


def _out(x: np.ndarray) -> Any:
    return float(x) if np.ndim(x) == 0 else x


# ----------------------------------------------------------------------------- tables


def _adjust(p: np.ndarray, methods: np.ndarray) -> np.ndarray:
    """Holm or BH within each family (``methods``: 'holm' | 'bh' per row; NaN p-values left out)."""
    out = np.full(len(p), np.nan)
    for meth in ("holm", "bh"):
        idx = np.flatnonzero((methods == meth) & np.isfinite(p))
        if len(idx):
            out[idx] = (holm if meth == "holm" else bh)(p[idx])
    return out


def equivalence_table(results: pd.DataFrame, disparity: pd.DataFrame | None, margins: Mapping[str, Any], *,
                      alpha: float = 0.05, reference: str = "control"
                      ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Add the TOST columns to the gap tests (``results``) and the disparities, adjusted together.

    Per row of an outcome with a margin: ``margin`` (as written), ``margin_kind`` (absolute |
    relative | points), ``margin_abs`` (on the gap's scale: a relative margin times the reference
    mean), ``tost_ci_low, tost_ci_high`` (the ``1 - 2 alpha`` CI on the margin's scale: relative for
    a relative margin), ``p_within, p_exceed`` (raw), ``p_within_adj, p_exceed_adj`` (in the row's
    family: Holm, or BH in an exploratory family) and ``verdict``. Rows of outcomes without a margin
    get ``verdict = 'no margin'``. Gap rows use the relative test (:func:`tost_p_ratio`) where their
    joint covariance (``ref_se``, ``cov_gap_ref``) is known and the margin is relative; otherwise a
    relative margin is turned into an absolute one with the reference mean held fixed (the corrected
    gaps and the disparities). Off zero: ``significant_holm`` (``significant_bh`` in an exploratory
    family), or for a row whose ``verdict_source`` is ``ppi`` its CI excluding 0.
    """
    parts = []
    res = results.copy()
    res["_kind"] = "gap"
    parts.append(res)
    dis = None
    if disparity is not None and not disparity.empty:
        dis = disparity.copy()
        dis["_kind"] = "disparity"
        ref_means = _control_means(results, reference)
        dis["ref_mean"] = [ref_means.get((o, m), np.nan) for o, m in zip(dis["outcome"], dis["model_label"])]
        parts.append(dis)
    z1 = stats.norm.ppf(1 - alpha)
    for df in parts:
        n = len(df)
        cols = {c: np.full(n, np.nan) for c in ("margin_abs", "tost_ci_low", "tost_ci_high", "p_within",
                                                 "p_exceed")}
        written, kinds = [None] * n, [None] * n
        for i, rec in enumerate(df.to_dict("records")):
            mk = margin_for(rec["outcome"], margins)
            if mk is None:
                continue
            size, kind = mk
            written[i], kinds[i] = _written(rec["outcome"], margins), kind
            ref_mean = float(rec.get("ref_mean", np.nan)) if rec.get("ref_mean") is not None else np.nan
            m_abs = size * abs(ref_mean) if kind == "relative" else size
            cols["margin_abs"][i] = m_abs
            est = float(rec["estimate"]) if rec.get("estimate") is not None else np.nan
            if rec["_kind"] == "disparity":
                pw, pe = disparity_tost_p(est, rec.get("ci_low"), rec.get("ci_high"), m_abs, alpha=alpha)
                z2 = stats.norm.ppf(1 - alpha / 2)
                hi = rec.get("ci_high")
                cols["tost_ci_low"][i] = 0.0
                cols["tost_ci_high"][i] = est + (float(hi) - est) * z1 / z2 if hi is not None else np.nan
            else:
                se = float(rec["se"]) if rec.get("se") is not None else np.nan
                vab, sr = rec.get("cov_gap_ref"), rec.get("ref_se")
                if kind == "relative" and _finite(vab) and _finite(sr) and rec.get("verdict_source") != "ppi":
                    pw, pe = tost_p_ratio(est, ref_mean, se ** 2, float(vab), float(sr) ** 2, size)
                    from .gaps import fieller_ratio

                    _, lo, hi = fieller_ratio(est, ref_mean, se ** 2, float(vab), float(sr) ** 2, z1)
                    cols["tost_ci_low"][i], cols["tost_ci_high"][i] = lo, hi
                else:
                    pw, pe = tost_p(est, se, m_abs)
                    lo, hi = tost_ci(est, se, alpha)
                    if kind == "relative" and ref_mean:
                        lo, hi = sorted((lo / ref_mean, hi / ref_mean))
                    cols["tost_ci_low"][i], cols["tost_ci_high"][i] = lo, hi
            cols["p_within"][i], cols["p_exceed"][i] = pw, pe
        for c, v in cols.items():
            df[c] = v
        df["margin"] = written
        df["margin_kind"] = kinds
    both = pd.concat([p[["p_within", "p_exceed"] + (["family"] if "family" in p.columns else [])] for p in parts],
                     ignore_index=True)
    methods = (np.where(both["family"].astype(str) == "exploratory", "bh", "holm") if "family" in both.columns
               else np.full(len(both), "holm"))
    pw_adj = _adjust(both["p_within"].to_numpy(float), methods)
    pe_adj = _adjust(both["p_exceed"].to_numpy(float), methods)
    start = 0
    for df in parts:
        n = len(df)
        df["p_within_adj"] = pw_adj[start:start + n]
        df["p_exceed_adj"] = pe_adj[start:start + n]
        start += n
        out = []
        for rec in df.to_dict("records"):
            if rec["margin_kind"] is None or (isinstance(rec["margin_kind"], float) and np.isnan(rec["margin_kind"])):
                out.append(NO_MARGIN)
                continue
            out.append(verdict(rec["p_within_adj"], rec["p_exceed_adj"], off_zero=_off_zero(rec), alpha=alpha))
        df["verdict"] = out
    res = parts[0].drop(columns=["_kind"])
    if dis is not None:
        dis = parts[1].drop(columns=["_kind", "ref_mean"])
    return res, dis


def _written(outcome: str, margins: Mapping[str, Any]) -> str:
    o = str(outcome)
    v = margins[o] if o in margins else next(v for k, v in margins.items() if "." not in k and o.rpartition(".")[2] == k)
    return str(v)


def _finite(x: Any) -> bool:
    try:
        return x is not None and bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


def _off_zero(rec: dict[str, Any]) -> bool:
    if rec.get("verdict_source") == "ppi":
        lo, hi = rec.get("ci_low"), rec.get("ci_high")
        return _finite(lo) and _finite(hi) and (float(lo) > 0 or float(hi) < 0)
    if str(rec.get("family")) == "exploratory":
        return bool(rec.get("significant_bh"))
    return bool(rec.get("significant_holm"))


def _control_means(results: pd.DataFrame, reference: str) -> dict[tuple[str, str], float]:
    """The model-based control mean per (outcome, model) from the pooled gaps against the control."""
    r = results[results["reference"].astype(str) == str(reference)]
    for col in ("style", "cue_type"):
        if col in r.columns:
            r = r[r[col].astype(str) == "pooled"]
    g = r.groupby(["outcome", "model_label"])["ref_mean"].median()
    return {k: float(v) for k, v in g.items()}


def rate_verdicts(tests: pd.DataFrame, outcome: str, margins: Mapping[str, Any] | None, *,
                  alpha: float = 0.05) -> pd.DataFrame:
    """The TOST columns of :func:`equivalence_table` for a suite's family of rate gaps (the stigma
    and appropriateness suites' ``*_tests``: ``estimate, se, ref_mean, significant_holm`` of one
    outcome, e.g. ``stigma``), with the margin of ``outcome`` in ``margins`` (``"5pp"``: percentage
    points; ``"5%"``: of the reference rate). ``tests`` unchanged when it has no margin."""
    if tests is None or tests.empty or margin_for(outcome, margins) is None:
        return tests
    had = "outcome" in tests.columns
    eq, _ = equivalence_table(tests if had else tests.assign(outcome=outcome), None, margins, alpha=alpha)
    return eq if had else eq.drop(columns=["outcome"])
