"""Power: how large a gap can an audit detect, and how many posts and samples does it need?

Two procedures:

* :func:`detectable_gap` - analytic minimum detectable gap of an audit that was run, from the
  standard error of its gap estimates::

      MDE = (z_{1 - alpha / (2 m)} + z_{power}) * se,        relative MDE = MDE / |ref_mean|

  with ``m`` the family size (Bonferroni level ``alpha / m``, which is Holm's first step and so a
  slightly conservative stand-in for Holm). Reference: Bloom (1995), Minimum detectable effects,
  Evaluation Review 19(5).

* :func:`simulate_power` - Monte-Carlo power of a planned design for a given relative gap, from
  variance components (pilot or stated): each simulated audit has ``n_posts`` base posts, a control
  and one variant per group x cue type per post, ``samples`` replies per variant; one group carries
  the gap ``rel_gap * ref_mean``. The planted gap is tested with the same exact mixed model the
  audit uses (:func:`audit.stats.fastlmm.fit_nested_ri`) at the Bonferroni level ``alpha / m``.
  Power is the rejection rate; its Monte-Carlo standard error is reported.

Example
-------
>>> from audit.stats import simulate_power
>>> r = simulate_power(n_posts=30, samples=1, n_groups=2, n_cue_types=1, sd_post=0.3, sd_resid=0.5,
...                    ref_mean=1.0, rel_gap=0.2, n_sims=20, seed=1)
>>> 0 <= r["power"] <= 1
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .fastlmm import fit_nested_ri

__all__ = ["detectable_gap", "simulate_power", "power_grid", "pilot_components", "tost_power", "tost_units_needed"]


def detectable_gap(se: float, ref_mean: float, *, alpha: float = 0.05, family_size: int = 1,
                   power: float = 0.8) -> tuple[float, float]:
    """(absolute, relative) minimum detectable gap at ``power`` for a test with standard error ``se``."""
    m = max(int(family_size), 1)
    mde = (stats.norm.ppf(1 - alpha / (2 * m)) + stats.norm.ppf(power)) * float(se)
    rel = mde / abs(ref_mean) if ref_mean and np.isfinite(ref_mean) else np.nan
    return float(mde), float(rel)


def tost_power(true_gap: float, se: float, margin: float, *, level: float = 0.05) -> float:
    """Power of the equivalence test (TOST, :mod:`audit.stats.equivalence`) at ``level`` for a true gap
    inside the margin, or of the test of a gap beyond it for one outside, with standard error ``se``::

        |D| < m:  power = max(0, Phi((m - |D|) / se - z) - Phi((-m - |D|) / se + z))   (both sides reject)
        |D| > m:  power = Phi((|D| - m) / se - z)                                       z = z_{1 - level}

    (Schuirmann 1987; the normal approximation of Chow & Liu 2008, ch. 5)."""
    d, m = abs(float(true_gap)), float(margin)
    if not (se > 0 and m > 0 and np.isfinite(d)):
        return float("nan")
    z = stats.norm.ppf(1 - level)
    if d < m:
        return float(max(0.0, stats.norm.cdf((m - d) / se - z) - stats.norm.cdf((-m - d) / se + z)))
    return float(stats.norm.cdf((d - m) / se - z))


def tost_units_needed(true_gap: float, se: float, n_now: int, margin: float, *, level: float = 0.05,
                      power: float = 0.8, max_factor: float = 1e4) -> int | None:
    """Units (posts, or human ratings where the scorer is the bottleneck) that decide a comparison
    whose gap is ``true_gap`` (usually the estimate) with ``power``: the planner's normal
    approximation (:mod:`audit.stats.planner`: the standard error falls as ``1 / sqrt(n)``) solved
    for the TOST, ``se(n) = se * sqrt(n_now / n)``, the smallest ``n >= n_now`` with
    :func:`tost_power` ``>= power``. None when no number up to ``max_factor * n_now`` does (a gap
    on the margin is never decided)."""
    if not (se > 0 and n_now and n_now > 0 and np.isfinite(true_gap)):
        return None
    if tost_power(true_gap, se, margin, level=level) >= power:
        return int(n_now)
    lo, hi = float(n_now), float(n_now) * max_factor
    if tost_power(true_gap, se * np.sqrt(n_now / hi), margin, level=level) < power:
        return None
    for _ in range(60):  # bisection on n (power rises with n)
        mid = np.sqrt(lo * hi)
        if tost_power(true_gap, se * np.sqrt(n_now / mid), margin, level=level) >= power:
            hi = mid
        else:
            lo = mid
        if hi - lo < 0.5:
            break
    return int(np.ceil(hi))


def simulate_power(
    *,
    n_posts: int,
    samples: int,
    n_groups: int,
    n_cue_types: int,
    sd_post: float,
    sd_resid: float,
    ref_mean: float,
    rel_gap: float,
    sd_variant: float = 0.0,
    alpha: float = 0.05,
    family_size: int = 1,
    n_sims: int = 200,
    seed: int = 0,
) -> dict:
    """Monte-Carlo power to detect a relative gap ``rel_gap`` for one group (see module docstring).

    Returns a dict with ``power``, ``mc_se``, ``n_sims``, ``n_rows`` (per simulated audit) and the
    design and variance components used.
    """
    rng = np.random.default_rng(seed)
    G, C, S = int(n_groups), int(n_cue_types), int(samples)
    n_var = 1 + G * C                                   # control + one variant per group x cue type
    post = np.repeat(np.arange(n_posts), n_var * S)
    vidx = np.tile(np.repeat(np.arange(n_var), S), n_posts)
    grp = np.where(vidx == 0, 0, 1 + (vidx - 1) // C)    # 0 = control, 1..G groups
    N = post.size
    X = np.column_stack([np.ones(N)] + [(grp == g).astype(float) for g in range(1, G + 1)])
    shift = rel_gap * ref_mean * (grp == 1)
    level = alpha / max(int(family_size), 1)
    # the audit fits (1|post:variant) when variants are sampled repeatedly; with no variant variance
    # that fit is singular and equals the post-only model, so the cheaper model is used then
    inner = post * n_var + vidx if S > 1 and sd_variant > 0 else None
    hits = 0
    for _ in range(int(n_sims)):
        y = (ref_mean + shift + rng.normal(0, sd_post, n_posts)[post]
             + (rng.normal(0, sd_variant, n_posts * n_var)[post * n_var + vidx] if sd_variant > 0 else 0.0)
             + rng.normal(0, sd_resid, N))
        f = fit_nested_ri(y, X, post, inner)
        z = f.params[1] / f.bse[1]
        hits += bool(2 * stats.norm.sf(abs(z)) < level)
    pw = hits / n_sims
    return dict(power=pw, mc_se=float(np.sqrt(max(pw * (1 - pw), 1e-12) / n_sims)), n_sims=int(n_sims),
                n_rows=int(N), n_posts=int(n_posts), samples=S, n_groups=G, n_cue_types=C, rel_gap=rel_gap,
                sd_post=sd_post, sd_variant=sd_variant, sd_resid=sd_resid, ref_mean=ref_mean,
                alpha=alpha, family_size=int(family_size))


def power_grid(posts: list[int], samples: list[int], *, target: float = 0.8, **kw) -> pd.DataFrame:
    """:func:`simulate_power` over a grid of ``posts`` x ``samples``; adds ``meets_target``."""
    rows = []
    for s in samples:
        for i, n in enumerate(sorted(posts)):
            r = simulate_power(n_posts=n, samples=s, **{**kw, "seed": kw.get("seed", 0) + 1000 * s + i})
            r["meets_target"] = r["power"] >= target
            rows.append(r)
    return pd.DataFrame(rows)


def pilot_components(table: pd.DataFrame, outcome: str, *, reference: str = "control") -> dict:
    """Variance components of a pilot run for :func:`simulate_power`.

    Fits the pooled gap model ``value ~ group + (1|post_id) [+ (1|post_id:variant_id)]`` (REML) to
    the rows of ``outcome`` in an :func:`audit.stats.analysis_table` and returns ``sd_post``,
    ``sd_variant``, ``sd_resid``, ``ref_mean`` (model-based mean of the reference group), and the
    pilot's ``n_posts`` and ``samples``.
    """
    from ..errors import AuditError
    from .gaps import design_matrix, validate_table

    d = table[table["outcome"] == outcome]
    if d.empty:
        have = ", ".join(sorted(table["outcome"].unique())) or "none"
        raise AuditError(f"the pilot has no scores for outcome '{outcome}' (it has: {have})",
                         fix="choose a pilot outcome with --outcome")
    d = validate_table(d, "value", "group", reference, "post_id", where=f"pilot outcome {outcome}")
    X, _, _ = design_matrix(d, "group", reference)
    inner = d["variant_id"].astype(str).to_numpy() if d.groupby("variant_id").size().max() > 1 else None
    f = fit_nested_ri(d["value"].to_numpy(float), X, d["post_id"].astype(str).to_numpy(), inner)
    is_ref = d["group"].astype(str).to_numpy() == str(reference)
    return dict(sd_post=float(np.sqrt(f.var_post)), sd_variant=float(np.sqrt(f.var_inner)),
                sd_resid=float(np.sqrt(f.scale)), ref_mean=float(X[is_ref].mean(axis=0) @ f.params),
                n_posts=int(d["post_id"].nunique()),
                samples=int(d.groupby(["variant_id", "style"]).size().max()) if "style" in d else 1,
                outcome=outcome, singular=f.singular)


# --------------------------------------------------------------------------- human ratings

#: Default assumptions of :func:`ratings_plan` (``empathy-audit power --ratings-ci``): ``sd`` the SD of
#: a human EPITOME level (0/1/2 spread over all three levels: about 0.7); ``rho`` the scorer-human
#: correlation (0.6: between the shipped classifier's IP/EX and ER agreement); ``deff`` the design
#: effect of rating several replies of one post (1.5: e.g. 3 rated replies per post with ICC 0.25);
#: ``replies`` the replies of the two arms of one gap.
RATINGS_DEFAULTS = {"sd": 0.7, "rho": 0.6, "deff": 1.5, "replies": 1000}


def ratings_plan(halfwidth: float, *, replies: int = 1000, sd: float = 0.7, rho: float = 0.6, deff: float = 1.5,
                 alpha: float = 0.05, grid: tuple[int, ...] = (50, 100, 200, 400, 800), share: float = 0.5,
                 rated_share: float | None = None) -> dict:
    """How many human ratings give a prediction-powered gap CI of +-``halfwidth``.

    Uses :func:`audit.stats.ppi.ppi_halfwidth` (PPI++ variance with the rated replies part of all
    ``replies``; assumptions stated there): ``share`` of the replies are the group's (unequal arms:
    not 0.5), ``rated_share`` of the ratings go to the group (None: half, as a packet allocates
    them). Returns ``needed`` (ratings, both arms together), the assumptions, and ``table``: rows of
    (ratings, PPI half-width, human-only half-width) over ``grid``.
    """
    from .ppi import _arm_counts, ppi_halfwidth, ratings_needed

    arms = dict(share=share, rated_share=rated_share)
    needed = ratings_needed(halfwidth, n_all=replies, sd=sd, rho=rho, deff=deff, alpha=alpha, **arms)
    z = stats.norm.ppf(1 - alpha / 2)

    def human_only(n: int) -> float:
        (_, ng), (_, nr) = _arm_counts(n, replies, share, rated_share)
        return float(z * np.sqrt(sd ** 2 * deff * (1 / ng + 1 / nr))) if min(ng, nr) >= 1 else float("inf")

    rows = [dict(ratings=n, ppi_halfwidth=ppi_halfwidth(n, n_all=replies, sd=sd, rho=rho, deff=deff, alpha=alpha,
                                                        **arms),
                 human_only_halfwidth=human_only(n))
            for n in sorted(set(grid) | {needed}) if 2 <= n <= replies]
    equal = share == 0.5 and rated_share in (None, 0.5)
    return dict(halfwidth=halfwidth, needed=needed, replies=replies, sd=sd, rho=rho, deff=deff, alpha=alpha,
                share=share, rated_share=rated_share, table=rows,
                assumptions=("two arms of equal size" if equal else
                             f"arms of {share:.0%} (group) and {1 - share:.0%} (reference) of the replies, "
                             + ("ratings split equally between them" if rated_share is None else
                                f"{rated_share:.0%} of the ratings in the group")) +
                            ", ratings a random sample of each arm, a calibrated scorer "
                            "correlating rho with the human values, design effect deff for clustering by post; "
                            "PPI++ variance Var = sd^2/n_arm * (1 - rho^2 (1 - f_arm)) * deff per arm, summed")


def ratings_assumptions(table: pd.DataFrame, human: pd.DataFrame, outcome: str | None = None,
                        reference: str = "control") -> dict:
    """``sd``, ``rho``, ``deff`` and ``replies`` for :func:`ratings_plan` from a run's ratings: the SD
    of the human consensus values, their correlation with ``outcome``'s scorer values, the design
    effect ``1 + (m - 1) ICC`` of the rated replies (``m`` rated replies per post, ICC of the human
    values by post, one-way ANOVA estimator) and the arms of the gap with the widest CI: the smallest
    group against ``reference`` (without a control: the largest group), as ``replies`` (both arms),
    ``share`` (the group's share of them) and ``rated_share`` (the group's share of the ratings).
    ``outcome`` None: ``epitome.ER`` when rated, else the first rated outcome by name."""
    from ..errors import AuditError
    from .ppi import _human_for, consensus_values

    wide = consensus_values(human).pivot(index="request_key", columns="measure", values="value")
    if outcome is None:
        rated = [o for o in sorted(table["outcome"].unique()) if _human_for(str(o), wide)[0] is not None]
        outcome = "epitome.ER" if "epitome.ER" in rated else (rated[0] if rated else "(none)")
    d = table[table["outcome"] == outcome].drop_duplicates("request_key")
    hv, _ = _human_for(outcome, wide)
    if d.empty or hv is None:
        raise AuditError(f"the run has no human ratings for outcome '{outcome}'",
                         fix="import ratings first (`empathy-audit ratings import`) or choose --outcome")
    d = d.assign(human=d["request_key"].map(hv)).dropna(subset=["human"])
    if len(d) < 5:
        raise AuditError(f"only {len(d)} rated replies for '{outcome}': too few to estimate the assumptions",
                         fix="rate more replies, or state --rho, --sd and --deff")
    sd = float(d["human"].std(ddof=1))
    rho = float(np.corrcoef(d["human"], d["value"])[0, 1]) if d["value"].std() > 0 else 0.0
    sizes = d.groupby("post_id").size()
    m = float(sizes.mean())
    within = d.groupby("post_id")["human"].var(ddof=1).dropna()
    msw = float(within.mean()) if len(within) else sd ** 2
    between = float(d.groupby("post_id")["human"].mean().var(ddof=1)) if len(sizes) > 1 else 0.0
    var_post = max(between - msw / max(m, 1.0), 0.0)
    icc = var_post / (var_post + msw) if var_post + msw > 0 else 0.0
    arms = table[table["outcome"] == outcome].drop_duplicates("request_key").groupby("group").size()
    # the gap whose CI is widest: the smallest group against the reference (the control, or without
    # one the largest group, which a release's reference usually is), with the run's own split of ratings
    ref = reference if reference in arms.index else arms.idxmax()
    others = arms.drop(ref) if len(arms) > 1 else arms
    g = others.idxmin()
    rated = d.groupby("group").size()
    n_g, n_r = int(rated.get(g, 0)), int(rated.get(ref, 0))
    return dict(sd=sd, rho=max(rho, 0.0), deff=1.0 + (m - 1.0) * icc, replies=int(arms[g] + arms[ref]),
                share=float(arms[g] / (arms[g] + arms[ref])) if g != ref else 0.5,
                rated_share=float(n_g / (n_g + n_r)) if n_g and n_r and g != ref else None,
                n_rated=int(len(d)), outcome=outcome, arms={str(g): int(arms[g]), str(ref): int(arms[ref])})
