"""Agreement between human raters, and their consensus. pandas in, pandas out.

Input everywhere: the long ratings table of :meth:`audit.store.RunStore.human_ratings_df`, columns
``request_key, rater, measure, value`` (one row per level a rater gave; value 0, 1 or 2).

- :func:`consensus`: one value per (reply, measure): the **median** of the raters' levels. With an
  even number of raters the median is the mean of the two middle levels, so two raters who say 1 and
  2 give 1.5 (ties between the middle levels go to their mean, never to one rater). With one rater
  the consensus is that rater's level.
- :func:`krippendorff_alpha`: Krippendorff's alpha for ordinal data,
  ``alpha = 1 - D_o / D_e`` with the observed disagreement ``D_o`` over all pairs of levels given to
  the same reply and the disagreement ``D_e`` expected by chance from the pooled levels, both with
  the ordinal distance ``delta(c, k)^2 = (sum_{g=c}^{k} n_g - (n_c + n_k) / 2)^2`` (Krippendorff 2011,
  *Computing Krippendorff's Alpha-Reliability*, https://repository.upenn.edu/asc_papers/43/; Hayes &
  Krippendorff 2007, Communication Methods and Measures 1:77-89). Replies rated by one rater only
  carry no pairs and drop out. Computed by the ``krippendorff`` package (Castro 2017); the CI is a
  percentile bootstrap over replies.
- :func:`pairwise_kappa`: for every pair of raters, the quadratic-weighted Cohen's kappa on the
  replies both rated, ``kappa_w = 1 - sum(w O) / sum(w E)``, ``w_ij = (i - j)^2 / (K - 1)^2``
  (Cohen 1968, Psychological Bulletin 70:213-220), via
  :func:`audit.scorers.validation.quadratic_weighted_kappa` (the same code as scorer validation), and
  the share of identical levels.
- :func:`inter_rater_agreement`: per measure, alpha with its CI, the mean pairwise kappa and exact
  agreement, and how many replies carry two or more ratings.

>>> import pandas as pd
>>> r = pd.DataFrame({"request_key": ["a", "a", "b"], "rater": ["r1", "r2", "r1"],
...                   "measure": ["ER", "ER", "ER"], "value": [1.0, 2.0, 0.0]})
>>> consensus(r).to_dict("records")
[{'request_key': 'a', 'measure': 'ER', 'value': 1.5, 'n_raters': 2}, {'request_key': 'b', 'measure': 'ER', 'value': 0.0, 'n_raters': 1}]
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ..scorers.validation import confusion_matrix, quadratic_weighted_kappa

LEVELS = (0.0, 1.0, 2.0)


def _valid(ratings: pd.DataFrame) -> pd.DataFrame:
    need = {"request_key", "rater", "measure", "value"}
    missing = need - set(ratings.columns)
    if missing:
        raise ValueError(f"the ratings table lacks column(s) {', '.join(sorted(missing))}")
    return ratings[ratings["value"].notna()]


def consensus(ratings: pd.DataFrame) -> pd.DataFrame:
    """The human consensus per reply and measure: ``request_key, measure, value, n_raters`` (module
    docstring: median of the raters' levels; with an even count, the mean of the two middle ones)."""
    r = _valid(ratings)
    out = (r.groupby(["request_key", "measure"], sort=True)["value"]
           .agg(value="median", n_raters="count").reset_index())
    out["value"] = out["value"].astype(float)
    out["n_raters"] = out["n_raters"].astype(int)
    return out[["request_key", "measure", "value", "n_raters"]]


def _matrix(r: pd.DataFrame) -> np.ndarray:
    """raters x replies matrix of levels (NaN: not rated) of one measure."""
    return r.pivot_table(index="rater", columns="request_key", values="value", aggfunc="first").to_numpy(float)


def _alpha(m: np.ndarray) -> float:
    import krippendorff

    pairable = np.sum(~np.isnan(m), axis=0) >= 2
    m = m[:, pairable]
    values = m[~np.isnan(m)]
    if m.shape[1] < 1 or len(np.unique(values)) < 2:
        return float("nan")  # no pairs, or one level only: alpha is undefined
    domain = sorted(set(LEVELS) | set(np.unique(values).tolist()))  # unused levels add no distance
    return float(krippendorff.alpha(reliability_data=m, level_of_measurement="ordinal", value_domain=domain))


def krippendorff_alpha(ratings: pd.DataFrame, measure: str | None = None, *, n_boot: int = 0,
                       seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Ordinal Krippendorff's alpha of one measure (or of the only one present) with a percentile
    bootstrap CI over replies when ``n_boot`` > 0: ``{"alpha", "ci_low", "ci_high", "n_items"}``,
    ``n_items`` = replies with two or more ratings.

    >>> import pandas as pd
    >>> r = pd.DataFrame({"request_key": list("aabbcc"), "rater": ["x", "y"] * 3, "measure": "ER",
    ...                   "value": [0., 0., 1., 1., 2., 2.]})
    >>> krippendorff_alpha(r)["alpha"]
    1.0
    """
    r = _valid(ratings)
    if measure is not None:
        r = r[r["measure"] == measure]
    elif r["measure"].nunique() > 1:
        raise ValueError("the ratings hold several measures: name one")
    m = _matrix(r) if len(r) else np.empty((0, 0))
    pairable = np.sum(~np.isnan(m), axis=0) >= 2 if m.size else np.array([], bool)
    m = m[:, pairable] if m.size else m
    out = {"alpha": _alpha(m) if m.size else float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
           "n_items": int(pairable.sum())}
    if n_boot and m.size and np.isfinite(out["alpha"]):
        rng = np.random.default_rng(seed)
        boots = [_alpha(m[:, rng.integers(0, m.shape[1], m.shape[1])]) for _ in range(n_boot)]
        boots = np.asarray([b for b in boots if np.isfinite(b)])
        if len(boots) >= n_boot // 2:
            out["ci_low"], out["ci_high"] = (float(x) for x in np.quantile(boots, [(1 - level) / 2, (1 + level) / 2]))
    return out


def pairwise_kappa(ratings: pd.DataFrame) -> pd.DataFrame:
    """Every pair of raters and measure: ``measure, rater_a, rater_b, n, exact, weighted_kappa`` on the
    replies both rated (quadratic weights; NaN when undefined, e.g. a single level)."""
    r = _valid(ratings)
    rows = []
    for measure, g in r.groupby("measure", sort=True):
        wide = g.pivot_table(index="request_key", columns="rater", values="value", aggfunc="first")
        for a, b in itertools.combinations(sorted(wide.columns), 2):
            both = wide[[a, b]].dropna()
            row = dict(measure=measure, rater_a=a, rater_b=b, n=len(both), exact=np.nan, weighted_kappa=np.nan)
            if len(both):
                x, y = both[a].astype(int).tolist(), both[b].astype(int).tolist()
                row.update(exact=float(np.mean(np.equal(x, y))),
                           weighted_kappa=quadratic_weighted_kappa(confusion_matrix(x, y)))
            rows.append(row)
    return pd.DataFrame(rows, columns=["measure", "rater_a", "rater_b", "n", "exact", "weighted_kappa"])


def inter_rater_agreement(ratings: pd.DataFrame, *, n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per measure: ``measure, n_raters, n_items_multi`` (replies with 2+ ratings), ``alpha`` (ordinal
    Krippendorff) with ``alpha_ci_low``/``alpha_ci_high`` (bootstrap over replies), and the mean over
    rater pairs of ``weighted_kappa`` and ``exact`` agreement."""
    r = _valid(ratings)
    pairs = pairwise_kappa(r)
    rows = []
    for measure, g in r.groupby("measure", sort=True):
        a = krippendorff_alpha(g, n_boot=n_boot, seed=seed)
        p = pairs[(pairs["measure"] == measure) & (pairs["n"] > 0)]
        rows.append(dict(measure=measure, n_raters=int(g["rater"].nunique()), n_items_multi=a["n_items"],
                         alpha=a["alpha"], alpha_ci_low=a["ci_low"], alpha_ci_high=a["ci_high"],
                         mean_weighted_kappa=float(p["weighted_kappa"].mean()) if len(p) else np.nan,
                         mean_exact=float(p["exact"].mean()) if len(p) else np.nan))
    return pd.DataFrame(rows, columns=["measure", "n_raters", "n_items_multi", "alpha", "alpha_ci_low",
                                       "alpha_ci_high", "mean_weighted_kappa", "mean_exact"])


__all__ = ["consensus", "inter_rater_agreement", "krippendorff_alpha", "pairwise_kappa"]
