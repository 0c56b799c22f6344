"""Binary outcomes of the suites that score one 0/1 per answer (stigma, crisis appropriateness).

Shared by :mod:`audit.stigma.analysis` and :mod:`audit.appropriateness.analysis`:

- :func:`cluster_bootstrap_ci`: the 95% percentile CI of a rate ``r = sum(s) / sum(n)`` by the
  cluster bootstrap. Clusters (vignettes, stimuli) are resampled with replacement: ``B`` multinomial
  weightings ``w_b`` of the ``K`` clusters (``w_b ~ Multinomial(K, 1/K)``), ``r_b = sum_k w_bk s_k /
  sum_k w_bk n_k`` with ``s_k, n_k`` the cluster's count of ones and of answers (Davison & Hinkley
  1997, section 3.8; Field & Welsh 2007). Answers inside a cluster are not independent, so the
  cluster, not the answer, is the resampled unit.
- :func:`rate_table`: rates per cell with those CIs.
- :func:`binary_gap`: :func:`audit.stats.gap_test` on a 0/1 outcome (GEE logistic, exchangeable
  working correlation within clusters, Mancl & DeRouen bias-reduced sandwich SEs, gaps on the
  probability scale by standardisation, delta-method CIs), where a model that cannot be fitted gives
  rows with method ``not fitted`` and the reason, rather than stopping the family.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError


def cluster_bootstrap_ci(s: np.ndarray, n: np.ndarray, n_boot: int, rng: np.random.Generator,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``sum(s) / sum(n)`` over clusters (see the module docstring); NaN with fewer
    than two clusters or no answer."""
    s, n = np.asarray(s, float), np.asarray(n, float)
    if len(s) < 2 or n.sum() == 0:
        return np.nan, np.nan
    w = rng.multinomial(len(s), np.full(len(s), 1.0 / len(s)), size=n_boot).astype(float)
    den = w @ n
    ok = den > 0
    r = (w[ok] @ s) / den[ok]
    a = (1 - level) / 2
    lo, hi = np.quantile(r, [a, 1 - a])
    return float(lo), float(hi)


def rate_table(data: pd.DataFrame, outcome: str, by: Sequence[str], cluster: str, *, n_boot: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """Per ``by`` cell: ``rate`` (mean of the non-missing ``outcome``), its cluster-bootstrap 95% CI
    (``ci_low, ci_high``), ``n`` (answers) and ``n_clusters``. One generator seeded with ``seed``
    draws every cell's resamples in cell order, so the table is reproducible."""
    rng = np.random.default_rng(seed)
    rows = []
    d = data[data[outcome].notna()]
    for key, g in d.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        per = g.groupby(cluster)[outcome].agg(["sum", "count"])
        lo, hi = cluster_bootstrap_ci(per["sum"].to_numpy(float), per["count"].to_numpy(float), n_boot, rng)
        rows.append({**dict(zip(by, key)), "rate": float(g[outcome].mean()), "ci_low": lo, "ci_high": hi,
                     "n": int(len(g)), "n_clusters": int(per.shape[0])})
    return pd.DataFrame(rows, columns=[*by, "rate", "ci_low", "ci_high", "n", "n_clusters"])


def binary_gap(d: pd.DataFrame, *, outcome: str, term: str, reference: str, factors: Sequence[str], cluster: str,
               where: str) -> pd.DataFrame:
    """Gaps of every level of ``term`` to ``reference`` in the GEE logistic model of
    :func:`audit.stats.gap_test` (``outcome ~ term + factors``, clustered by ``cluster``); factors
    with a single level are left out. Empty when ``term`` has one level or lacks the reference; a
    model that cannot be fitted gives one ``not fitted`` row per level with the reason. A missing
    level of ``term`` or of a factor is an AuditError naming the column."""
    from .gaps import gap_test

    for col in (term, *(f for f in factors if f in d.columns)):
        n_missing = int(d[col].isna().sum())
        if n_missing:  # a missing level would be sorted against text (a TypeError) or fitted as a level
            raise AuditError(f"{n_missing} rows have no {col} level", where=f"{where}, column '{col}'",
                             fix="fill the cells or drop those rows before the analysis (reanalysis: --drop-blank)")
    if d[term].nunique() < 2 or reference not in set(d[term].astype(str)):
        return pd.DataFrame()
    used = [f for f in factors if f in d.columns and d[f].nunique() > 1]
    try:
        with warnings.catch_warnings():  # separation warnings of the optimiser: the row's method/warning say it
            warnings.simplefilter("ignore", RuntimeWarning)
            return gap_test(d, outcome=outcome, group=term, control=reference, cluster=cluster, factors=used,
                            allow_missing=True, where=where)
    except AuditError as exc:
        return pd.DataFrame([dict(group=g, reference=reference, method="not fitted", warning=exc.message)
                             for g in sorted(set(d[term].astype(str)) - {reference})])


__all__ = ["binary_gap", "cluster_bootstrap_ci", "rate_table"]
