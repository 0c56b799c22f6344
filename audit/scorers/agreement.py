"""Agreement between scorers that scored the same run (e.g. ``epitome`` vs ``llm-judge``).

For every pair of scorers that share a measure (ER, IP, EX, empathy) and every such measure,
:func:`scorer_agreement` compares their scores on the replies both scored (NaN excluded):

- ``n``: replies scored by both;
- ``spearman`` (and its p-value): rank correlation, for any measure;
- for level measures (ER, IP, EX: values 0/1/2): ``exact`` (share of identical levels) and
  ``weighted_kappa``: Cohen's kappa with quadratic weights (Cohen 1968), computed by
  :func:`audit.scorers.validation.quadratic_weighted_kappa` as in scorer validation;
- ``mean_a``, ``mean_b``, ``mean_diff`` (b - a): a systematic offset between the scorers.

Low agreement does not say which scorer is right; it says the audit's conclusion may depend on the
scorer, so the report states it next to the gaps.
"""

from __future__ import annotations

import itertools
from typing import Any

import pandas as pd

from .validation import confusion_matrix, quadratic_weighted_kappa

LEVEL_MEASURES = ("ER", "IP", "EX")


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
                conf = confusion_matrix(x.astype(int).tolist(), y.astype(int).tolist())
                row.update(exact=float((x == y).mean()), weighted_kappa=quadratic_weighted_kappa(conf))
            if n:
                row.update(mean_a=float(x.mean()), mean_b=float(y.mean()), mean_diff=float(y.mean() - x.mean()))
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def scorer_agreement(store: Any) -> pd.DataFrame:
    """Agreement between every pair of scorers of the run that share a measure (empty if fewer than 2)."""
    return agreement_table(store.scores_df())
