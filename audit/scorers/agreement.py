"""Agreement between scorers that scored the same run (e.g. ``epitome`` vs ``llm-judge``).

For every pair of scorers that share a measure (ER, IP, EX, empathy) and every such measure,
:func:`scorer_agreement` compares their scores on the replies both scored (NaN excluded):

- ``n``: replies scored by both;
- ``spearman`` (and its p-value): rank correlation, for any measure;
- for level measures (ER, IP, EX: values 0/1/2): ``exact`` (share of identical levels) and
  ``weighted_kappa``: Cohen's kappa with quadratic weights (Cohen 1968), the agreement statistic the
  EPITOME validation also reports, ``1 - sum(w*O) / sum(w*E)`` with ``w_ij = (i-j)^2 / (k-1)^2``,
  O the observed and E the chance-expected (outer product of marginals) joint distribution;
- ``mean_a``, ``mean_b``, ``mean_diff`` (b - a): a systematic offset between the scorers.

Low agreement does not say which scorer is right; it says the audit's conclusion may depend on the
scorer, so the report states it next to the gaps.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

LEVEL_MEASURES = ("ER", "IP", "EX")


def quadratic_weighted_kappa(a: np.ndarray, b: np.ndarray, levels: tuple[int, ...] = (0, 1, 2)) -> float:
    """Cohen's quadratic-weighted kappa between two integer ratings over ``levels``.

    >>> round(quadratic_weighted_kappa(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1])), 3)
    0.8
    """
    k = len(levels)
    idx = {lv: i for i, lv in enumerate(levels)}
    obs = np.zeros((k, k))
    for x, y in zip(a, b):
        obs[idx[int(x)], idx[int(y)]] += 1
    n = obs.sum()
    if n == 0:
        return math.nan
    obs /= n
    exp = np.outer(obs.sum(axis=1), obs.sum(axis=0))
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    w = (i - j) ** 2 / (k - 1) ** 2
    den = (w * exp).sum()
    return math.nan if den == 0 else float(1 - (w * obs).sum() / den)


def agreement_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Agreement from long scores ``(request_key, scorer, measure, value)`` (see module docstring)."""
    from scipy import stats

    cols = ["scorer_a", "scorer_b", "measure", "n", "spearman", "spearman_p", "exact", "weighted_kappa",
            "mean_a", "mean_b", "mean_diff"]
    s = scores[scores["value"].notna()]
    rows = []
    by = {k: g.set_index("request_key")["value"] for k, g in s.groupby(["scorer", "measure"])}
    scorers = sorted(s["scorer"].unique())
    for a, b in itertools.combinations(scorers, 2):
        for m in sorted({m for (sc, m) in by if sc == a} & {m for (sc, m) in by if sc == b}):
            x, y = by[(a, m)].align(by[(b, m)], join="inner")
            n = len(x)
            row: dict[str, Any] = {"scorer_a": a, "scorer_b": b, "measure": m, "n": n}
            if n >= 3 and x.nunique() > 1 and y.nunique() > 1:
                r = stats.spearmanr(x, y)
                row.update(spearman=float(r.statistic), spearman_p=float(r.pvalue))
            if m in LEVEL_MEASURES and n and set(x.unique()) | set(y.unique()) <= {0.0, 1.0, 2.0}:
                row.update(exact=float((x == y).mean()),
                           weighted_kappa=quadratic_weighted_kappa(x.to_numpy(), y.to_numpy()))
            if n:
                row.update(mean_a=float(x.mean()), mean_b=float(y.mean()), mean_diff=float(y.mean() - x.mean()))
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def scorer_agreement(store: Any) -> pd.DataFrame:
    """Agreement between every pair of scorers of the run that share a measure (empty if fewer than 2)."""
    return agreement_table(store.scores_df())
