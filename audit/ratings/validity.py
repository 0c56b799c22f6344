"""Does the scorer treat groups alike? The scorers' values against the human consensus, by group.

A scorer whose error depends on the group creates a gap by itself: if it under-scores replies to one
group's posts by 0.2 levels, the automated gap of that group is 0.2 levels too low, whatever the
model did. This module measures the error on the human-rated replies. pandas in, pandas out.

The frame (:func:`validity_frame`): one row per rated reply, scorer and measure, with the scorer's
value, the human consensus (:func:`audit.ratings.agreement.consensus`) and the reply's post and group
(``control`` for the control). Measures with a human counterpart: ``ER``, ``IP``, ``EX`` of any
scorer (epitome, llm-judge, hf-classifier, ...) and the epitome composite ``empathy``, whose human
counterpart is the mean of the consensus ER, IP and EX (replies with all three rated).

:func:`scorer_validity`, per scorer, measure and group (and ``all``):

- ``accuracy``: share of (reply, rater) pairs where the scorer's level equals the rater's level;
- ``weighted_kappa``: quadratic-weighted Cohen's kappa over the same pairs (Cohen 1968); both for
  the 0/1/2 measures only, and over pairs with every rater rather than against a consensus, which
  may be 1.5 for two disagreeing raters (with one rater per reply the two are the same);
- ``bias`` = mean over replies of (scorer - human consensus), in levels, with a 95% CI from the
  cluster-robust (by post, CR1) standard error of the mean and a t(G - 1) quantile, G = posts.

:func:`differential_error_test`, per scorer and measure, tests whether the error depends on the
group. The model, as a formula:

    error_i = scorer_i - human_i = a_post(i) + b_group(i) + e_i,   H0: b_g is the same for every group
                                                                     (the control included)

with the errors of one post's replies allowed to be correlated (the post effect ``a``, and ``e``
exchangeable within a post). The test is a **within-post permutation test** (Fisher's randomization
logic; Good 2005, *Permutation, Parametric and Bootstrap Tests of Hypotheses*, ch. 3): the statistic
is the between-group sum of squares of the within-post errors,
``T = sum_g (sum_{i in g} r_i)^2 / n_g`` with ``r_i = error_i - mean error of post(i)``, and the
p-value is ``(1 + #{T* >= T}) / (B + 1)`` over ``B`` shuffles of the group labels within each post
(the post effects stay with their posts, so clustering by post is respected exactly). It is exact
under H0 whatever the number of posts, where a cluster-robust Wald test (CR1 covariance by post, F
with the Hotelling small-cluster correction) rejected 9% of true nulls at 0.05 in our simulation with
30 posts and 9 groups; the permutation test rejected 5% (tests/test_ratings_agreement.py checks <= 7%
over 200 replicates, and its power against a planted bias). It is most sensitive to a difference of
mean error between groups, which is what biases a gap; a group whose errors are only more variable
can also be flagged. Posts whose rated replies all belong to one group carry no information and drop
out. Holm's correction runs over every (scorer, measure) tested.

**Between posts** (an observational release: every post under one group, so no post compares two
groups and the within-post test has nothing to permute): the same statistic on the errors centred
at their overall mean, ``T = sum_g n_g (mean_g - mean)^2``, tested by a **null-imposed cluster
bootstrap** (Davison & Hinkley 1997, *Bootstrap Methods and their Application*, sec. 4.4 and 3.8;
Hall & Wilson 1991): each group's errors are shifted to the common mean (H0 true in the resampling
world), whole posts are resampled with replacement within each group (each group keeps its number
of posts, so unequal groups stay unequal), and ``p = (1 + #{T* >= T}) / (B + 1)``. The difference in
mean error between the highest and lowest group gets a percentile CI from the same resampling of the
unshifted errors. Used when no rated post has replies of two groups; where some do (a mixed design),
the within-post test runs on those. Where neither can run, the reason says why (one group rated, or a
group rated on fewer than two posts).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..scorers.validation import confusion_matrix, quadratic_weighted_kappa
from ..stats.corrections import holm
from .agreement import consensus

HUMAN_MEASURES = ("ER", "IP", "EX")
COMPOSITE = "empathy"
CONTROL = "control"
FORMULA = ("scorer - human = post + group + e; H0: equal group effects; within-post permutation test of the "
           "between-group sum of squares (between posts, where no post has two groups: a null-imposed cluster "
           "bootstrap of it)")
WITHIN = "within-post permutation test"
BETWEEN = "between-post cluster bootstrap"
#: Fewest rated posts per group for the between-post bootstrap.
MIN_POSTS_BETWEEN = 2


def validity_frame(scores: pd.DataFrame, ratings: pd.DataFrame, replies: pd.DataFrame) -> pd.DataFrame:
    """Rows ``request_key, post_id, group, cue_type, model_label, scorer, measure, scorer_value, human,
    n_raters, error`` for every rated reply and every scorer measure with a human counterpart.

    ``scores``: long scores (``request_key, scorer, measure, value``); ``ratings``: the human ratings
    (``request_key, rater, measure, value``); ``replies``: ``request_key, post_id`` and ``group`` (or
    ``group_name``) and ``cue_type``."""
    cols = ["request_key", "post_id", "group", "cue_type", "model_label", "scorer", "measure", "scorer_value",
            "human", "n_raters", "error"]
    cons = consensus(ratings)
    if cons.empty or scores is None or scores.empty:
        return pd.DataFrame(columns=cols)
    wide = cons.pivot_table(index="request_key", columns="measure", values="value")
    if set(HUMAN_MEASURES) <= set(wide.columns):
        comp = wide[list(HUMAN_MEASURES)].dropna().mean(axis=1)
        n_comp = cons[cons["measure"].isin(HUMAN_MEASURES)].groupby("request_key")["n_raters"].min()
        cons = pd.concat([cons, pd.DataFrame({"request_key": comp.index, "measure": COMPOSITE, "value": comp.values,
                                              "n_raters": n_comp.reindex(comp.index).values})], ignore_index=True)
    human = cons.rename(columns={"value": "human"})
    sc = scores[scores["measure"].isin(human["measure"].unique()) & scores["value"].notna()]
    sc = sc.rename(columns={"value": "scorer_value"})[["request_key", "scorer", "measure", "scorer_value"]]
    df = sc.merge(human, on=["request_key", "measure"], how="inner")
    rep = replies.copy()
    if "group" not in rep.columns:
        rep["group"] = rep["group_name"]
    rep["group"] = rep["group"].where(rep["cue_type"] != CONTROL, CONTROL)
    if "model_label" not in rep.columns:
        rep["model_label"] = None
    df = df.merge(rep[["request_key", "post_id", "group", "cue_type", "model_label"]].drop_duplicates("request_key"),
                  on="request_key", how="inner")
    df["scorer_value"] = df["scorer_value"].astype(float)
    df["error"] = df["scorer_value"] - df["human"]
    return df[cols].sort_values(["scorer", "measure", "group", "request_key"]).reset_index(drop=True)


def cluster_mean(values: np.ndarray, clusters: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean with a cluster-robust (CR1) standard error and t(G - 1) CI: ``(mean, se, ci_low, ci_high)``.

    se^2 = G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2; NaN CI with one cluster.
    """
    x = np.asarray(values, float)
    n = len(x)
    if n == 0:
        return (math.nan,) * 4
    m = float(x.mean())
    sums = pd.Series(x - m).groupby(np.asarray(clusters)).sum().to_numpy()
    g = len(sums)
    if g < 2:
        return m, math.nan, math.nan, math.nan
    se = math.sqrt(g / (g - 1) * float(np.sum(sums ** 2)) / n ** 2)
    t = float(stats.t.ppf((1 + level) / 2, g - 1))
    return m, se, m - t * se, m + t * se


def _pairs(sub: pd.DataFrame, ratings: pd.DataFrame) -> tuple[list[int], list[int]]:
    """(scorer level, rater level) for every (reply, rater) pair of ``sub`` (one scorer, one measure)."""
    r = ratings[ratings["value"].notna() & (ratings["measure"] == sub["measure"].iloc[0])]
    j = sub[["request_key", "scorer_value"]].merge(r[["request_key", "value"]], on="request_key")
    j = j[j["scorer_value"].isin((0.0, 1.0, 2.0))]
    return j["scorer_value"].astype(int).tolist(), j["value"].astype(int).tolist()


def scorer_validity(frame: pd.DataFrame, ratings: pd.DataFrame) -> pd.DataFrame:
    """Per ``scorer, measure, group`` (``all`` first): ``n_items, n_posts, human_mean, scorer_mean,
    bias, bias_se, bias_ci_low, bias_ci_high, accuracy, weighted_kappa`` (module docstring)."""
    cols = ["scorer", "measure", "group", "n_items", "n_posts", "human_mean", "scorer_mean", "bias", "bias_se",
            "bias_ci_low", "bias_ci_high", "accuracy", "weighted_kappa"]
    rows = []
    for (scorer, measure), d in frame.groupby(["scorer", "measure"], sort=True):
        groups = [("all", d)] + [(g, d[d["group"] == g]) for g in _group_order(d["group"])]
        for g, sub in groups:
            mean, se, lo, hi = cluster_mean(sub["error"].to_numpy(), sub["post_id"].to_numpy())
            row = dict(scorer=scorer, measure=measure, group=g, n_items=len(sub), n_posts=int(sub["post_id"].nunique()),
                       human_mean=float(sub["human"].mean()), scorer_mean=float(sub["scorer_value"].mean()),
                       bias=mean, bias_se=se, bias_ci_low=lo, bias_ci_high=hi, accuracy=np.nan, weighted_kappa=np.nan)
            if measure in HUMAN_MEASURES:
                s, h = _pairs(sub, ratings)
                if s:
                    row.update(accuracy=float(np.mean(np.equal(s, h))),
                               weighted_kappa=quadratic_weighted_kappa(confusion_matrix(h, s)))
            rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _group_order(groups: pd.Series) -> list[str]:
    names = sorted(set(groups.dropna()))
    return ([CONTROL] if CONTROL in names else []) + [g for g in names if g != CONTROL]


def group_error_test(error: np.ndarray, group: np.ndarray, cluster: np.ndarray, *, n_perm: int = 1999,
                     seed: int = 0) -> dict[str, float]:
    """The test of the module docstring for one measure: ``{"statistic", "p_value", "n_perm",
    "n_items", "n_posts", "n_groups", "method", "reason", "difference", "difference_ci_low",
    "difference_ci_high"}``: the within-post permutation test where some post has rated replies of two
    groups, else the between-post cluster bootstrap (:func:`between_post_error_test`); NaN, with the
    ``reason``, when neither can run.

    The statistic is the between-group sum of squares of the within-post errors,
    T = sum_g (sum_{i in g} r_i)^2 / n_g with r_i = error_i - mean error of post(i); the p-value is
    (1 + #{T_perm >= T}) / (n_perm + 1) over ``n_perm`` shuffles of the group labels within posts."""
    e = np.asarray(error, float)
    codes, levels = pd.factorize(pd.Series(np.asarray(group, object)), sort=True)
    post = pd.factorize(pd.Series(np.asarray(cluster, object)))[0]
    n, k = len(e), len(levels)
    n_posts = int(post.max()) + 1 if n else 0
    out = dict(statistic=math.nan, p_value=math.nan, n_perm=n_perm, n_items=n, n_posts=n_posts, n_groups=k,
               method=WITHIN, reason=None, difference=math.nan, difference_ci_low=math.nan,
               difference_ci_high=math.nan)
    if k < 2 or n == 0:
        out["reason"] = ("no rated reply" if n == 0 else f"only one group ({levels[0]}) has rated replies; "
                         "rate replies of another group to compare")
        return out
    mixed = pd.Series(codes).groupby(post).nunique()
    if not (mixed > 1).any():
        return {**out, **between_post_error_test(e, codes, levels, post, n_boot=n_perm, seed=seed)}
    r = e - pd.Series(e).groupby(post).transform("mean").to_numpy()
    n_g = np.bincount(codes, minlength=k).astype(float)

    def stat(labels: np.ndarray) -> np.ndarray:  # labels: (P, n) group codes
        p = labels.shape[0]
        sums = np.bincount((labels + k * np.arange(p)[:, None]).ravel(), weights=np.tile(r, p),
                           minlength=p * k).reshape(p, k)
        return (sums ** 2 / n_g).sum(axis=1)

    t_obs = float(stat(codes[None, :])[0])
    if t_obs <= 1e-12 * max(1.0, float(np.sum(r ** 2))):
        out.update(statistic=0.0, p_value=1.0)
        return out
    rng = np.random.default_rng(seed)
    base = np.argsort(post, kind="stable")
    exceed = 0
    for start in range(0, n_perm, 500):
        p = min(500, n_perm - start)
        order = np.argsort(post[None, :] + rng.random((p, n)), axis=1)  # within-post shuffles, posts in order
        labels = np.empty((p, n), dtype=codes.dtype)
        labels[:, base] = codes[order]
        exceed += int(np.sum(stat(labels) >= t_obs - 1e-12))
    out.update(statistic=t_obs, p_value=(1 + exceed) / (n_perm + 1))
    return out


def between_post_error_test(error: np.ndarray, codes: np.ndarray, levels: Any, post: np.ndarray, *,
                            n_boot: int = 1999, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """The between-post test of the module docstring (no post with two groups): ``statistic``
    ``T = sum_g n_g (mean_g - mean)^2`` of the errors, ``p_value`` of the null-imposed cluster
    bootstrap (posts resampled within groups), ``difference`` (highest - lowest group mean error) with
    its percentile CI, ``method``, and ``reason`` (why not, with NaNs) when a group has fewer than
    :data:`MIN_POSTS_BETWEEN` rated posts. Written here rather than with ``scipy.stats.bootstrap``,
    which resamples rows, not whole posts within groups."""
    e = np.asarray(error, float)
    k = len(levels)
    out: dict[str, Any] = dict(method=BETWEEN, n_perm=n_boot, reason=None)
    posts_of = [np.unique(post[codes == g]) for g in range(k)]
    few = [(levels[g], len(p)) for g, p in enumerate(posts_of) if len(p) < MIN_POSTS_BETWEEN]
    if few:
        out["reason"] = (f"group {few[0][0]} has rated replies from {few[0][1]} post(s); the between-post bootstrap "
                         f"needs at least {MIN_POSTS_BETWEEN} rated posts per group")
        return out
    n_post = int(post.max()) + 1
    psum = np.bincount(post, e, n_post)
    pcnt = np.bincount(post, minlength=n_post).astype(float)
    n_g = np.bincount(codes, minlength=k).astype(float)
    m_g = np.bincount(codes, e, k) / n_g
    grand = float(e.sum() / n_g.sum())
    t_obs = float(np.sum(n_g * (m_g - grand) ** 2))
    hi, lo = int(np.argmax(m_g)), int(np.argmin(m_g))
    rng = np.random.default_rng(seed)
    sums, cnts = np.zeros((n_boot, k)), np.zeros((n_boot, k))
    shift = np.zeros((n_boot, k))  # sum over drawn posts of count * (grand - m_g): the null shift
    for g, ps in enumerate(posts_of):
        draw = ps[rng.integers(0, len(ps), size=(n_boot, len(ps)))]
        sums[:, g] = psum[draw].sum(axis=1)
        cnts[:, g] = pcnt[draw].sum(axis=1)
        shift[:, g] = cnts[:, g] * (grand - m_g[g])
    mb = sums / cnts                      # resampled group means (unshifted)
    m0 = (sums + shift) / cnts            # ... with H0 imposed
    g0 = (sums + shift).sum(axis=1) / cnts.sum(axis=1)
    t_null = np.sum(cnts * (m0 - g0[:, None]) ** 2, axis=1)
    p = (1 + int(np.sum(t_null >= t_obs - 1e-12))) / (n_boot + 1)
    diff_b = mb[:, hi] - mb[:, lo]
    q = np.percentile(diff_b, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    out.update(statistic=t_obs, p_value=float(p) if t_obs > 1e-12 else 1.0, difference=float(m_g[hi] - m_g[lo]),
               difference_ci_low=float(q[0]), difference_ci_high=float(q[1]))
    return out


def differential_error_test(frame: pd.DataFrame, *, alpha: float = 0.05, n_perm: int = 1999,
                            seed: int = 0) -> pd.DataFrame:
    """Per ``scorer, measure``: :func:`group_error_test` plus ``p_holm`` over all rows, ``differs``
    (``p_holm < alpha``), the groups with the lowest and highest mean error and the ``formula``."""
    cols = ["scorer", "measure", "n_items", "n_posts", "n_groups", "method", "statistic", "n_perm", "p_value",
            "p_holm", "differs", "lowest_group", "lowest_bias", "highest_group", "highest_bias", "difference",
            "difference_ci_low", "difference_ci_high", "reason", "formula"]
    rows = []
    for (scorer, measure), d in frame.groupby(["scorer", "measure"], sort=True):
        t = group_error_test(d["error"].to_numpy(), d["group"].to_numpy(), d["post_id"].to_numpy(), n_perm=n_perm,
                             seed=seed)
        means = d.groupby("group")["error"].mean()
        rows.append(dict(scorer=scorer, measure=measure, **t, lowest_group=means.idxmin() if len(means) else None,
                         lowest_bias=float(means.min()) if len(means) else np.nan,
                         highest_group=means.idxmax() if len(means) else None,
                         highest_bias=float(means.max()) if len(means) else np.nan, formula=FORMULA))
    out = pd.DataFrame(rows, columns=[c for c in cols if c not in ("p_holm", "differs")])
    p = out["p_value"].to_numpy(float) if len(out) else np.array([])
    ph = np.full(len(p), np.nan)
    ok = np.isfinite(p)
    if ok.any():
        ph[ok] = holm(p[ok])
    out["p_holm"] = ph
    out["differs"] = [bool(x < alpha) if np.isfinite(x) else None for x in ph]
    return out[cols]


__all__ = ["BETWEEN", "FORMULA", "HUMAN_MEASURES", "WITHIN", "between_post_error_test", "cluster_mean",
           "differential_error_test", "group_error_test",
           "scorer_validity", "validity_frame"]
