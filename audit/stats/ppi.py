"""Prediction-powered gap estimates: gaps on the human scale, from a few human ratings and a scorer on
every reply, with confidence intervals that respect the clustering of replies by post.

An automated scorer that under-scores replies to one group creates a gap that is not there (or hides
one that is). Human ratings of a sample of the replies measure the gap on the scale that matters, but
a small sample gives a wide CI. Prediction-powered inference (PPI; Angelopoulos, Bates, Fannjiang,
Jordan & Zrnic, *Prediction-powered inference*, Science 382, 2023) combines both: the scorer's mean
over all replies, corrected by the scorer's mean error measured on the rated ones. PPI++
(Angelopoulos, Duchi & Zrnic, *PPI++: Efficient prediction-powered inference*, 2023,
arXiv:2311.01453) weights the scorer by a power-tuning factor ``lambda`` chosen to minimise the
variance; ``lambda = 0`` is the human-only estimate, ``lambda = 1`` plain PPI.

The estimator, per arm ``a`` (the group, or the reference) with ``N_a`` replies of which ``n_a`` are
human-rated (``Y`` the human value, ``Yhat`` the scorer's)::

    theta_a(lambda_a) = lambda_a * mean_{N_a}(Yhat) + mean_{n_a}(Y - lambda_a * Yhat)
    gap = theta_g - theta_ref

It is unbiased for the human-scale gap for every fixed ``lambda`` when the rated replies are a random
sample of each arm (whatever the scorer's error, also an error that differs by group). An arm pools
cue types, styles and models: a rating sample that is stratified over them must rate each stratum at
the same rate (or the scorer's error must not differ between strata), else the correction is
weighted wrongly; the estimator has no sampling weights.

**Clustering.** Replies to one post (its control and its variants, several samples) are correlated,
and a rated reply is correlated with the unrated ones of its post. The standard error is the
delete-one-post jackknife (Quenouille 1956; Tukey 1958) of the whole estimator, ``lambda``
re-estimated in each replicate, computed in closed form from per-post sums (no refitting loop)::

    theta_(-c) = the estimate without post c (all its rated and unrated replies),  c = 1..C
    Var(gap) = (C - 1) / C * sum_c (theta_(-c) - mean_c theta_(-c))^2

and the CI is ``gap +- t_{C-1, 1-alpha/2} * SE``. Posts are the independent units and the choice
of rated replies is part of the sampling, the frame of the audit's mixed model. The jackknife is
asymptotically the cluster-robust (sandwich) variance of the linearised estimator, larger in small
samples, and it carries the estimation of ``lambda``; the analytic sandwich with ``lambda`` held fixed
covered 92.2% with 40 posts in the coverage simulation, the jackknife 94.2% (both 94% or more with
100 posts). The same jackknife gives the CIs of the automated and the human-only gaps, so the three
are compared on one footing. ``ppi-python`` (``ppi_py``) has no clustering and assumes the
unlabelled sample is disjoint from the labelled one, while here every rated reply is one of all
``N``; hence this module computes the estimator itself.

**Power tuning.** For one arm whose rated replies are part of all ``N_a`` (rated share ``f``), the
variance is ``Var(Y) / n_a * (1 - (1 - f)(2 lambda b - lambda^2 Var(Yhat) / Var(Y)))`` with
``b = Cov(Y, Yhat) / Var(Y)``, minimised by ``lambda_a = Cov(Y, Yhat) / Var(Yhat)`` (PPI++'s
``lambda*`` for this design; :func:`ppi_halfwidth`). Each arm's ``lambda`` is that ratio on its
rated replies, clipped to [0, 1] (as ``ppi_py`` does with ``clip=True``), so the estimator lies
between the human-only one (0) and plain PPI (1). Choosing ``lambda`` to minimise the clustered
variance estimate itself overfits with few posts (90.6% coverage with 40 posts in the simulation).

**Several raters.** A reply rated by several people enters with the mean of their ratings (the
consensus value); rater disagreement then lives in ``Y``'s variance, which the CI includes.

Example
-------
>>> import numpy as np, pandas as pd
>>> from audit.stats.ppi import ppi_gap
>>> rng = np.random.default_rng(0)
>>> post = np.repeat(np.arange(60), 4); grp = np.tile(["control", "control", "B", "B"], 60)
>>> y = 1.0 - 0.2 * (grp == "B") + rng.normal(0, .3, 60)[post] + rng.normal(0, .5, 240)
>>> yhat = y - 0.3 * (grp == "B") + rng.normal(0, .3, 240)          # under-scores group B by 0.3
>>> rated = rng.random(240) < 0.25
>>> df = pd.DataFrame(dict(post=post, group=grp, scorer=yhat, human=np.where(rated, y, np.nan)))
>>> r = ppi_gap(df, group="group", reference="control", cluster="post", scorer="scorer", human="human")
>>> r[["kind", "estimate", "ci_low", "ci_high"]].round(2).values.tolist()   # the true gap is -0.2
[['automated', -0.57, -0.71, -0.43], ['ppi', -0.31, -0.48, -0.14], ['human', -0.33, -0.6, -0.06]]

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import AuditError

__all__ = ["ppi_gap", "ppi_gap_arrays", "ppi_table", "consensus_values", "GapEstimate", "ratings_needed",
           "ppi_halfwidth", "KINDS", "PPI_COLUMNS",
           "MIN_RATED"]

#: The three estimates of one gap, in the order a report shows them.
KINDS = ("automated", "ppi", "human")
#: Fewest rated replies per arm (and posts with a rated reply) for a human-only or PPI estimate.
MIN_RATED = 3


@dataclass(frozen=True)
class GapEstimate:
    """One estimate of a gap: ``kind`` (automated / ppi / human), estimate, standard error, CI, the
    power-tuning factors (PPI only), and the sizes it rests on."""

    kind: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    lambda_group: float
    lambda_reference: float
    n_rated: int
    n_all: int
    n_clusters: int
    warning: str = ""


def _sums(codes: np.ndarray, C: int, arm: np.ndarray, rated: np.ndarray, yhat: np.ndarray,
          y: np.ndarray) -> np.ndarray:
    """Per-post sums of one arm, shape (7, C): N_c, sum Yhat (all); n_c, sum Y, sum Yhat, sum Yhat^2,
    sum Y Yhat (rated)."""
    ra = arm & rated
    cols = [(arm, None), (arm, yhat), (ra, None), (ra, y), (ra, yhat), (ra, yhat * yhat), (ra, y * yhat)]
    return np.stack([np.bincount(codes[m], weights=None if w is None else w[m], minlength=C) for m, w in cols])


def _arm_estimates(S: np.ndarray, lam: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(automated, PPI, human, lambda) of one arm from sums ``S`` (7, K): each column one
    data set (the whole, or the whole less one post). ``lam`` None: power-tuned (:func:`_lambda`)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        N, sh_all, n, sy, sh, shh, syh = S
        auto = sh_all / N
        my, mh = sy / n, sh / n
        if lam is None:
            var_h = (shh - n * mh * mh) / (n - 1)
            cov = (syh - n * my * mh) / (n - 1)
            lam_ = np.where(var_h > 1e-12, np.clip(cov / np.where(var_h > 1e-12, var_h, 1.0), 0.0, 1.0), 0.0)
        else:
            lam_ = np.full(N.shape, float(lam))
        ppi = lam_ * auto + my - lam_ * mh
    return auto, ppi, my, lam_


def ppi_gap_arrays(cluster: np.ndarray, in_group: np.ndarray, in_reference: np.ndarray, yhat: np.ndarray,
                   y: np.ndarray, *, alpha: float = 0.05, lam: float | tuple[float, float] | None = None
                   ) -> dict[str, GapEstimate]:
    """The three estimates of one gap (group - reference) from arrays, one element per reply.

    ``cluster``: post of each reply (any labels); ``in_group`` / ``in_reference``: boolean arm masks;
    ``yhat``: the scorer's value; ``y``: the human (consensus) value, NaN where the reply is not
    rated. ``lam``: None for PPI++ power tuning, else a fixed ``lambda`` (one number for both arms, or
    ``(lambda_group, lambda_reference)``). Returns ``{"automated", "ppi", "human"}`` ->
    :class:`GapEstimate` (formulas in the module docstring).
    """
    yhat = np.asarray(yhat, dtype=float)
    y = np.asarray(y, dtype=float)
    g0, r0 = np.asarray(in_group, bool), np.asarray(in_reference, bool)
    keep = (g0 | r0) & np.isfinite(yhat)
    _, codes = np.unique(np.asarray(cluster)[keep], return_inverse=True)
    yhat, y, g, r = yhat[keep], y[keep], g0[keep], r0[keep]
    C = int(codes.max()) + 1 if len(codes) else 0
    rated = np.isfinite(y)
    y = np.where(rated, y, 0.0)
    Sg, Sr = _sums(codes, C, g, rated, yhat, y), _sums(codes, C, r, rated, yhat, y)
    Ng, ng, Nr, nr = int(Sg[0].sum()), int(Sg[2].sum()), int(Sr[0].sum()), int(Sr[2].sum())
    rated_posts = int(len(np.unique(codes[rated]))) if rated.any() else 0
    tq = stats.t.ppf(1 - alpha / 2, max(C - 1, 1))
    lam_g, lam_r = (None, None) if lam is None else ((lam, lam) if np.isscalar(lam) else lam)
    # column 0: all posts; column 1 + c: all posts but post c (the delete-one-post jackknife)
    Tg = np.column_stack([Sg.sum(axis=1), Sg.sum(axis=1, keepdims=True) - Sg])
    Tr = np.column_stack([Sr.sum(axis=1), Sr.sum(axis=1, keepdims=True) - Sr])
    eg, er = _arm_estimates(Tg, lam_g), _arm_estimates(Tr, lam_r)
    n_all = Ng + Nr

    def est(kind: str, i: int, n: int = 0, lg: float = np.nan, lr: float = np.nan) -> GapEstimate:
        theta = eg[i] - er[i]
        loo = theta[1:]
        if not np.isfinite(theta[0]) or C < 2 or not np.all(np.isfinite(loo)):
            se = np.nan
        else:
            se = float(np.sqrt((C - 1) / C * np.sum((loo - loo.mean()) ** 2)))
        v = float(theta[0])
        return GapEstimate(kind, v, se, v - tq * se, v + tq * se, lg, lr, n, n_all, C)

    out = {"automated": est("automated", 0)}
    if min(ng, nr) < MIN_RATED or rated_posts < MIN_RATED or C < 2:
        why = (f"too few human-rated replies ({ng} in the group, {nr} in the reference, {rated_posts} posts; "
               f"at least {MIN_RATED} of each are needed)")
        for kind in ("ppi", "human"):
            out[kind] = GapEstimate(kind, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, ng + nr, n_all, C, why)
        return out
    out["ppi"] = est("ppi", 1, ng + nr, float(eg[3][0]), float(er[3][0]))
    out["human"] = est("human", 2, ng + nr, 0.0, 0.0)
    return out


def ppi_gap(data: pd.DataFrame, *, group: str, reference: str, cluster: str, scorer: str, human: str,
            alpha: float = 0.05, lam: float | None = None, where: str = "the table") -> pd.DataFrame:
    """Automated, prediction-powered (PPI++) and human-only gaps of every group to ``reference``.

    ``data``: one row per reply with columns ``cluster`` (post), ``group``, ``scorer`` (the scorer's
    value, every reply) and ``human`` (the human consensus value, NaN where not rated). Returns one
    row per group and kind (``automated``, ``ppi``, ``human``) with ``estimate, se, ci_low, ci_high,
    lambda_group, lambda_reference, n_rated, n_all, n_clusters, warning``; formulas and references in
    the module docstring.
    """
    for c in (group, cluster, scorer, human):
        if c not in data.columns:
            raise AuditError(f"column '{c}' is missing", where=where,
                             fix="give a table with columns " + ", ".join((group, cluster, scorer, human)))
    levels = data[group].astype(str)
    if reference not in set(levels):
        raise AuditError(f"the reference group '{reference}' has no rows", where=where,
                         fix="choose a reference that occurs in column " + group)
    cl = data[cluster].astype(str).to_numpy()
    yhat = pd.to_numeric(data[scorer], errors="coerce").to_numpy(float)
    y = pd.to_numeric(data[human], errors="coerce").to_numpy(float)
    is_ref = (levels == reference).to_numpy()
    rows = []
    for gname in sorted(set(levels) - {reference}):
        res = ppi_gap_arrays(cl, (levels == gname).to_numpy(), is_ref, yhat, y, alpha=alpha, lam=lam)
        for kind in KINDS:
            e = res[kind]
            rows.append(dict(group=gname, reference=reference, kind=kind, estimate=e.estimate, se=e.se,
                             ci_low=e.ci_low, ci_high=e.ci_high, lambda_group=e.lambda_group,
                             lambda_reference=e.lambda_reference, n_rated=e.n_rated, n_all=e.n_all,
                             n_clusters=e.n_clusters, warning=e.warning))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- ratings needed


def _arm_counts(n_rated: int, n_all: int, share: float, rated_share: float | None) -> tuple[tuple[float, float],
                                                                                        tuple[float, float]]:
    """((N_g, n_g), (N_r, n_r)): replies and ratings of the group arm and the reference arm."""
    N = (share * n_all, (1.0 - share) * n_all)
    want = 0.5 if rated_share is None else rated_share
    n_g = min(want * n_rated, N[0])
    n_r = min(n_rated - n_g, N[1])
    n_g = min(n_rated - n_r, N[0])  # an arm too small for its share gives the rest to the other
    return (N[0], n_g), (N[1], n_r)


def ppi_halfwidth(n_rated: int, *, n_all: int, sd: float, rho: float, deff: float = 1.0, alpha: float = 0.05,
                  tuned: bool = True, share: float = 0.5, rated_share: float | None = None) -> float:
    """Expected 95% CI half-width of a prediction-powered gap with ``n_rated`` human ratings in all.

    Arms: the group has ``share * n_all`` replies and the reference the rest (``share`` 0.5: equal
    arms); the ratings go ``rated_share`` to the group (None: half to each arm, as a rating packet
    allocates them, capped at an arm's size; ``rated_share = share`` is a random sample of all the
    replies). Assumptions: the human values have SD ``sd`` in both arms, the scorer's values
    correlate ``rho`` with them and have the same SD (a calibrated scorer), ratings are a random
    sample of each arm, and clustering inflates every variance by the design effect
    ``deff = 1 + (m - 1) * ICC`` (Kish 1965; ``m`` replies per post). With ``n_a`` ratings of an arm's
    ``N_a`` replies and ``f_a = n_a / N_a``, the variance of one arm's estimator (rated replies part of
    all ``N_a``; linearisation as in the module docstring, no clustering) is::

        Var(theta_a) = sd^2 / n_a * (1 - (1 - f_a) (2 lambda rho - lambda^2)) * deff

    minimised by ``lambda = rho`` (PPI++'s power tuning, Angelopoulos, Duchi & Zrnic 2023) at
    ``sd^2 / n_a * (1 - rho^2 (1 - f_a)) * deff``; ``tuned=False`` gives plain PPI (``lambda = 1``):
    ``sd^2 / n_a * (2 (1 - rho) (1 - f_a) + f_a) * deff``. Human ratings alone (``lambda = 0``) give
    ``sd^2 / n_a * deff``. The gap's variance is the sum over the two arms (positive within-post
    correlation of the arms only narrows it: conservative), and the half-width is
    ``z_{1-alpha/2} * sqrt(Var)``. Unequal arms matter through ``n_a``: with 25% of the replies in the
    group and the ratings a random sample of all, ``1/n_g + 1/n_r`` is 4/3 of its value at equal
    arms, and the half-width 15% wider.
    """
    if n_rated < 2 or n_all < n_rated:
        raise AuditError(f"need 2 <= n_rated <= n_all, not n_rated={n_rated}, n_all={n_all}",
                         fix="give more replies (n_all) than human ratings")
    if not 0 < share < 1 or (rated_share is not None and not 0 < rated_share < 1):
        raise AuditError(f"arm shares must lie strictly between 0 and 1 (share {share}, rated share {rated_share})",
                         fix="give the replies of each arm (--arms GROUP,REFERENCE)")
    var = 0.0
    for N_a, n_a in _arm_counts(n_rated, n_all, share, rated_share):
        if n_a < 1:
            return float("inf")
        f = min(n_a / N_a, 1.0)
        factor = 1.0 - rho ** 2 * (1.0 - f) if tuned else 2.0 * (1.0 - rho) * (1.0 - f) + f
        var += sd ** 2 / n_a * factor * deff
    return float(stats.norm.ppf(1 - alpha / 2) * np.sqrt(var))


def ratings_needed(halfwidth: float, *, n_all: int, sd: float, rho: float, deff: float = 1.0,
                   alpha: float = 0.05, share: float = 0.5, rated_share: float | None = None) -> int:
    """The fewest human ratings (both arms together) for a PPI++ gap CI of half-width ``halfwidth``
    (:func:`ppi_halfwidth`'s assumptions and arms); raises when even rating all ``n_all`` replies is
    not enough."""
    kw = dict(n_all=n_all, sd=sd, rho=rho, deff=deff, alpha=alpha, share=share, rated_share=rated_share)
    if halfwidth <= 0:
        raise AuditError(f"the CI half-width must be positive, not {halfwidth}", fix="give e.g. 0.1")
    if ppi_halfwidth(n_all, **kw) > halfwidth:
        best = ppi_halfwidth(n_all, **kw)
        raise AuditError(f"even rating all {n_all} replies gives a CI of +-{best:.3g}, wider than +-{halfwidth:g}",
                         fix="audit more posts (more replies), or accept a wider CI")
    lo, hi = 2, int(n_all)
    while lo < hi:  # the half-width falls monotonically with n_rated
        mid = (lo + hi) // 2
        if ppi_halfwidth(mid, **kw) <= halfwidth:
            hi = mid
        else:
            lo = mid + 1
    return int(lo)


# --------------------------------------------------------------------------- a run's gaps


#: Columns of the ``results_ppi`` table of a run.
PPI_COLUMNS = ["outcome", "model_label", "group", "reference", "kind", "estimate", "se", "ci_low", "ci_high",
               "lambda_group", "lambda_reference", "n_rated", "n_all", "n_clusters", "human_measure", "warning"]
#: The EPITOME mechanisms whose mean is the ``empathy`` composite (also on the human scale).
COMPOSITE = ("ER", "IP", "EX")


def consensus_values(human: pd.DataFrame) -> pd.DataFrame:
    """One human value per (request_key, measure): the mean over raters (``rater`` column, if any).

    A reply rated by several people enters PPI with the mean of their levels; their disagreement is
    then part of ``Y``'s variance and so of every CI. Columns: ``request_key, measure, value``.
    """
    need = {"request_key", "measure", "value"}
    if not need <= set(human.columns):
        raise AuditError("human ratings need columns request_key, measure, value; got " + ", ".join(human.columns),
                         fix="pass RunStore.human_ratings_df() or a table with those columns")
    h = human[["request_key", "measure", "value"]].copy()
    h["value"] = pd.to_numeric(h["value"], errors="coerce")
    h = h[h["value"].notna()]
    return h.groupby(["request_key", "measure"], as_index=False, sort=True)["value"].mean()


def _human_for(outcome: str, wide: pd.DataFrame) -> tuple[pd.Series | None, str]:
    """The human values on the scale of ``outcome`` (``scorer.measure``, or ``scorer.measure>0``):
    the rated measure of the same name, ``> 0`` for a derived any-level outcome, and for ``empathy``
    the mean of the rated ER, IP and EX when no one rated ``empathy`` itself."""
    measure = outcome.rpartition(".")[2]
    any_level = measure.endswith(">0")
    base = measure[:-2] if any_level else measure
    if base in wide.columns:
        v, name = wide[base], base
    elif base == "empathy" and all(m in wide.columns for m in COMPOSITE):
        v, name = wide[list(COMPOSITE)].mean(axis=1, skipna=False), "mean(ER, IP, EX)"
    else:
        return None, ""
    if any_level:
        v = (v > 0).astype(float).where(v.notna())
        name = f"{name}>0"
    return v, name


def ppi_table(table: pd.DataFrame, human: pd.DataFrame, *, reference: str = "control",
              alpha: float = 0.05) -> pd.DataFrame:
    """Automated, PPI++ and human-only gaps of every outcome the humans rated, per model.

    ``table``: an :func:`audit.stats.analysis_table` (scorer values, long per outcome); ``human``:
    ``request_key, measure, value`` (several raters allowed: :func:`consensus_values`). An outcome
    ``scorer.M`` gets the human measure ``M`` (every scorer of one mechanism is compared with the
    same human ratings). Styles and cue types are pooled, the reference is ``reference``. Returns
    :data:`PPI_COLUMNS`; no rows when no outcome was rated.
    """
    if human is None or human.empty or table.empty:
        return pd.DataFrame(columns=PPI_COLUMNS)
    wide = consensus_values(human).pivot(index="request_key", columns="measure", values="value")
    parts = []
    for (outcome, model), d in table.groupby(["outcome", "model_label"], sort=True):
        hv, name = _human_for(str(outcome), wide)
        if hv is None:
            continue
        d = d.drop_duplicates("request_key")
        d = d.assign(human=d["request_key"].map(hv).astype(float))
        if d["human"].notna().sum() == 0:
            continue
        r = ppi_gap(d, group="group", reference=reference, cluster="post_id", scorer="value", human="human",
                    alpha=alpha, where=f"outcome {outcome}, model {model}")
        r.insert(0, "outcome", outcome)
        r.insert(1, "model_label", model)
        r["human_measure"] = name
        parts.append(r)
    if not parts:
        return pd.DataFrame(columns=PPI_COLUMNS)
    return pd.concat(parts, ignore_index=True)[PPI_COLUMNS]
