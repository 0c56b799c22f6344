"""Intervals that agree with the p-values beside them, and stay within what the quantity can take.

A report that shows a 95% CI beside a Holm-adjusted p-value invites a contradiction: with 392 tests an
unadjusted 95% CI can exclude zero while the Holm p is 1. :func:`holm_intervals` adds, for every gap
test, an interval at the **Holm-consistent level** of its family::

    level = 1 - alpha / max(m - R, 1)

with ``m`` tests in the family (every row with a p-value: gaps, max - min disparities, model
comparisons) and ``R`` of them rejected by Holm (1979). With every test two-sided Wald
(``est +- z se``, ``p = 2 Phi(-|est / se|)``) this interval excludes 0 **exactly when** the Holm
p-value is below ``alpha``:

* a rejected test of rank ``k <= R`` has ``p <= alpha / (m - k + 1) <= alpha / (m - R + 1) < alpha / (m - R)``;
* a test Holm did not reject has ``p >= p_(R+1) >= alpha / (m - R)`` (step ``R + 1`` failed).

With nothing rejected the level is Bonferroni's ``1 - alpha / m``: the intervals then hold
simultaneously with probability at least ``1 - alpha``. With some rejected they are the Holm-compatible
intervals of the non-informative kind (Strassburger & Bretz 2008 give informative ones for the rejected
tests; they touch 0, which a reader takes for "no gap", so they are not used here).

The relative gap's interval at that level is Fieller's (:func:`audit.stats.gaps.safe_ratio`, from the
stored ``ref_se`` and ``cov_gap_ref``), reported only where the reference mean is safely off 0.

:func:`clip_to_range` keeps every interval within what the quantity can take: an outcome on
``[lo, hi]`` has gaps in ``[-(hi - lo), hi - lo]`` (a share difference in [-1, 1]), and a relative gap
of a non-negative outcome is at least -100%.

Example
-------
>>> import pandas as pd
>>> df = pd.DataFrame({"outcome": ["y", "y"], "estimate": [0.5, 0.1], "se": [0.1, 0.1],
...                    "p_value": [5.7e-7, 0.317], "p_holm": [1.1e-6, 0.317], "significant_holm": [True, False]})
>>> out = holm_intervals(df, alpha=0.05)
>>> round(float(out["ci_level_adj"].iloc[0]), 4), bool(out["ci_low_adj"].iloc[0] > 0), bool(out["ci_low_adj"].iloc[1] < 0)
(0.95, True, True)
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .gaps import safe_ratio

__all__ = ["holm_level", "holm_intervals", "clip_to_range", "ADJ_COLUMNS"]

ADJ_COLUMNS = ["ci_level_adj", "ci_low_adj", "ci_high_adj", "rel_ci_low_adj", "rel_ci_high_adj"]


def holm_level(m: int, rejected: int, alpha: float = 0.05) -> float:
    """The Holm-consistent confidence level ``1 - alpha / max(m - R, 1)`` (module docstring).

    >>> round(float(holm_level(392, 0)), 6)
    0.999872
    """
    return 1.0 - alpha / max(int(m) - int(rejected), 1)


def _family_counts(tables: Iterable[pd.DataFrame]) -> dict[str, tuple[int, int]]:
    """``{family: (m, R)}`` over every table's rows with a p-value (``family`` column, else one family)."""
    counts: dict[str, list[int]] = {}
    for t in tables:
        if t is None or t.empty or "p_value" not in t:
            continue
        fam = t["family"].astype(str) if "family" in t else pd.Series("all", index=t.index)
        has_p = pd.to_numeric(t["p_value"], errors="coerce").notna()
        sig = t["significant_holm"].astype(object).fillna(False).astype(bool) if "significant_holm" in t \
            else pd.Series(False, index=t.index)
        for f, idx in fam[has_p].groupby(fam[has_p]).groups.items():
            c = counts.setdefault(str(f), [0, 0])
            c[0] += len(idx)
            c[1] += int(sig.loc[idx].sum())
    return {k: (v[0], v[1]) for k, v in counts.items()}


def holm_intervals(results: pd.DataFrame, *, alpha: float = 0.05, others: Iterable[pd.DataFrame] = (),
                   ranges: Mapping[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """A copy of ``results`` with :data:`ADJ_COLUMNS`: the Holm-consistent level of the row's family
    and the absolute (``ci_*_adj``) and relative (``rel_ci_*_adj``, Fieller) intervals at that level,
    clipped to the outcome's range (:func:`clip_to_range`). ``others``: the other tables of the same
    correction family (disparities, model comparisons), which count in ``m`` and ``R``."""
    out = results.copy()
    for c in ADJ_COLUMNS:
        out[c] = np.nan
    if out.empty:
        return out
    counts = _family_counts([out, *others])
    fam = out["family"].astype(str) if "family" in out else pd.Series("all", index=out.index)
    num = {c: (pd.to_numeric(out[c], errors="coerce") if c in out else pd.Series(np.nan, index=out.index)).to_numpy(float)
           for c in ("estimate", "se", "p_value", "ref_mean", "ref_se", "cov_gap_ref")}
    ok = np.isfinite(num["p_value"]) & np.isfinite(num["se"])
    level = np.array([holm_level(*counts.get(f, (1, 0)), alpha) for f in fam])
    z = stats.norm.ppf(1 - (1 - level) / 2)
    est, se = num["estimate"], num["se"]
    out["ci_level_adj"] = np.where(ok, level, np.nan)
    out["ci_low_adj"] = np.where(ok, est - z * se, np.nan)
    out["ci_high_adj"] = np.where(ok, est + z * se, np.nan)
    lows = _lower_relative(out, ranges).to_numpy(float)
    rel_lo, rel_hi = np.full(len(out), np.nan), np.full(len(out), np.nan)
    for i in np.flatnonzero(ok & np.isfinite(num["ref_se"])):  # Fieller: a quadratic per row
        _, rel_lo[i], rel_hi[i] = safe_ratio(est[i], num["ref_mean"][i], se[i] ** 2, num["cov_gap_ref"][i],
                                             num["ref_se"][i] ** 2, z[i], lower=lows[i])
    out["rel_ci_low_adj"], out["rel_ci_high_adj"] = rel_lo, rel_hi
    return clip_to_range(out, ranges, columns=(("ci_low_adj", "ci_high_adj"), ("rel_ci_low_adj", "rel_ci_high_adj")))


def _lower_relative(df: pd.DataFrame, ranges: Mapping[str, tuple[float, float]] | None) -> pd.Series:
    """-1 (-100%) for an outcome whose range starts at 0 or above, else no bound."""
    rng = ranges or {}
    return df["outcome"].astype(str).map(
        lambda o: -1.0 if o in rng and rng[o] is not None and float(rng[o][0]) >= 0 else -np.inf)


def clip_to_range(df: pd.DataFrame, ranges: Mapping[str, tuple[float, float]] | None,
                  columns: Iterable[tuple[str, str]] = (("ci_low", "ci_high"), ("rel_ci_low", "rel_ci_high"))
                  ) -> pd.DataFrame:
    """Clip each (absolute) interval pair to ``[-(hi - lo), hi - lo]`` of the outcome's range and each
    relative pair (a name starting ``rel_``) to at least -1 for a non-negative outcome; outcomes
    without a declared range are left as they are. The point estimate is never moved.

    >>> d = pd.DataFrame({"outcome": ["s"], "estimate": [0.3], "ci_low": [-0.4], "ci_high": [1.3],
    ...                   "ref_mean": [0.2], "relative_gap": [1.5], "rel_ci_low": [-1.6], "rel_ci_high": [6.0]})
    >>> clip_to_range(d, {"s": (0, 1)})[["ci_low", "ci_high", "rel_ci_low"]].values.tolist()
    [[-0.4, 1.0, -1.0]]
    """
    if not ranges or df.empty:
        return df
    out = df.copy()
    width = out["outcome"].astype(str).map(
        lambda o: float(ranges[o][1]) - float(ranges[o][0]) if ranges.get(o) is not None else np.inf)
    lows = _lower_relative(out, ranges)
    for lo_c, hi_c in columns:
        if lo_c not in out or hi_c not in out:
            continue
        lo = pd.to_numeric(out[lo_c], errors="coerce")
        hi = pd.to_numeric(out[hi_c], errors="coerce")
        if lo_c.startswith("rel_"):
            out[lo_c] = np.where(lo.notna(), np.maximum(lo, lows), lo)
        else:
            out[lo_c] = np.where(lo.notna(), np.maximum(lo, -width), lo)
            out[hi_c] = np.where(hi.notna(), np.minimum(hi, width), hi)
    return out
