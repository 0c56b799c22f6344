"""Multiple-comparison corrections across the whole family of tests of an audit.

:func:`adjust_family` adds Holm (family-wise error rate) and Benjamini-Hochberg (false discovery
rate) adjusted p-values to a results table, over *every* row of the table: the family is all tests
an audit makes (groups x cue types x outcomes x styles x models), written down as the table itself.

Formulas (``p_(1) <= ... <= p_(m)`` the sorted raw p-values):

* Holm (1979): ``p_holm_(i) = max_{k <= i} min(1, (m - k + 1) p_(k))``. Controls the FWER at
  ``alpha`` under any dependence between the tests.
* Benjamini & Hochberg (1995): ``p_bh_(i) = min_{k >= i} min(1, m p_(k) / k)``. Controls the FDR
  under independence or positive regression dependence (PRDS).

Both are computed here in a few vectorised lines (statsmodels' ``multipletests`` gives the same
numbers, checked in the tests, but runs a full garbage collection on every call, which dominates
a calibration simulation).
Rows with a missing p-value (a test that could not be fitted) are not part of the family and get
missing adjusted values.

Example
-------
>>> import pandas as pd
>>> from audit.stats import adjust_family
>>> adjust_family(pd.DataFrame({"p_value": [0.01, 0.04, 0.03]}))["p_holm"].round(3).tolist()
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
__all__ = ["adjust_family", "adjust_within", "holm", "bh"]


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values of the 1-d array ``p`` (no missing values)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values of the 1-d array ``p`` (no missing values)."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum.accumulate((m * p[order] / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def adjust_family(results: pd.DataFrame, *, alpha: float = 0.05, p_col: str = "p_value") -> pd.DataFrame:
    """Return a copy of ``results`` with ``p_holm``, ``p_bh`` and ``significant_holm`` added.

    Holm (1979) step-down and Benjamini-Hochberg (1995) step-up adjustment over every row with a
    p-value (formulas in the module docstring); rows without one get missing adjusted values.

    >>> adjust_family(pd.DataFrame({"p_value": [0.01, 0.04, None]}), alpha=0.05)["significant_holm"].tolist()
    [True, True, False]

    Parameters
    ----------
    results : one row per test; ``p_col`` holds the raw two-sided p-values.
    alpha : family-wise level for ``significant_holm`` (``p_holm < alpha``).
    """
    out = results.copy()
    p = pd.to_numeric(out[p_col], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(p)
    p_holm = np.full(len(p), np.nan)
    p_bh = np.full(len(p), np.nan)
    if ok.any():
        p_holm[ok] = holm(p[ok])
        p_bh[ok] = bh(p[ok])
    out["p_holm"] = p_holm
    out["p_bh"] = p_bh
    out["significant_holm"] = np.where(ok, p_holm < alpha, False)
    return out


def adjust_within(results: pd.DataFrame, family: str = "family", *, alpha: float = 0.05,
                  p_col: str = "p_value") -> pd.DataFrame:
    """:func:`adjust_family` separately within each value of the column ``family`` (e.g. the
    confirmatory and the exploratory family of a pre-registered analysis); adds ``significant_bh``
    (``p_bh < alpha``), on which an exploratory family's discoveries are called.

    >>> df = pd.DataFrame({"p_value": [0.01, 0.04, 0.03], "family": ["confirmatory", "exploratory", "exploratory"]})
    >>> adjust_within(df)[["p_holm", "p_bh"]].round(3).values.tolist()
    [[0.01, 0.01], [0.06, 0.04], [0.06, 0.04]]
    """
    out = results.copy()
    out["p_holm"], out["p_bh"], out["significant_holm"] = np.nan, np.nan, False
    for _, idx in out.groupby(family, sort=True).groups.items():
        adj = adjust_family(out.loc[idx], alpha=alpha, p_col=p_col)
        out.loc[idx, ["p_holm", "p_bh", "significant_holm"]] = adj[["p_holm", "p_bh", "significant_holm"]]
    out["p_holm"] = out["p_holm"].astype(float)
    out["p_bh"] = out["p_bh"].astype(float)
    out["significant_holm"] = out["significant_holm"].astype(bool)
    out["significant_bh"] = (out["p_bh"] < alpha).fillna(False).astype(bool)
    return out
