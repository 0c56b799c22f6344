"""Within-post paired contrasts: each variant against its own control post (pingouin).

A robustness check beside the mixed model that assumes nothing about the random-effects
distribution: for every base post ``i`` and group ``g`` (and cue type), average the outcome over
the group's variants and samples (``ybar_ig``) and over the post's control replies (``ybar_i0``);
the contrast is the paired t-test of ``ybar_ig`` against ``ybar_i0`` over posts
(the test of :func:`pingouin.ttest` with ``paired=True``, :func:`_paired_t`)::

    d_i = ybar_ig - ybar_i0,   t = mean(d) / (sd(d) / sqrt(n)),   dof = n - 1

``cohen_d`` is pingouin's Cohen's d for the pair (:func:`pingouin.compute_effsize`). Posts without a control reply or without the group are left out.

Example
-------
>>> import numpy as np, pandas as pd
>>> from audit.stats import paired_contrasts
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"post": np.repeat(np.arange(30), 2), "group": np.tile(["control", "A"], 30)})
>>> df["y"] = rng.normal(size=60) + 0.8 * (df.group == "A")
>>> float(paired_contrasts(df, "y", "group", "control", "post")["dof"].iloc[0])
29.0
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from .degenerate import is_constant
from .textcodes import text_factorize

__all__ = ["paired_contrasts", "PAIRED_COLUMNS"]

PAIRED_COLUMNS = ["group", "reference", "mean_diff", "t", "dof", "p_value", "cohen_d", "ci_low", "ci_high",
                  "n_posts"]


def paired_contrasts(
    data: pd.DataFrame, outcome: str, group: str, control: str, cluster: str, *, by: str | None = None,
    weight: str | None = None,
) -> pd.DataFrame:
    """Paired t-tests of each group's per-post mean against the same post's control mean.

    Returns one row per group (and per ``by`` level plus ``'pooled'`` when ``by`` is given) with
    ``group, reference, mean_diff, t, dof, p_value, cohen_d, ci_low, ci_high, n_posts``. ``weight``: a
    column of observation counts, the rows being cells whose ``outcome`` is their mean
    (:mod:`audit.stats.cells`); the per-post means are then ``sum n ybar / sum n``.

    The per-post means are sums over integer codes (``bincount``) and the tests :func:`_paired_t`, which
    computes what :func:`pingouin.ttest` (``paired=True``) reports, number for number, without the power
    and Bayes factor it also computes and this table does not report (most of its time: an analysis has
    hundreds of these tests).
    """
    cols = [outcome, group, cluster] + ([by] if by else []) + ([weight] if weight else [])
    d = data[list(dict.fromkeys(cols))]
    y = pd.to_numeric(d[outcome], errors="coerce").to_numpy(dtype=float)
    keep = ~np.isnan(y)
    wt = d[weight].to_numpy(dtype=float) if weight else np.ones(len(d))
    if weight:
        keep &= wt > 0
    keep &= d[cluster].notna().to_numpy()  # a row without a post pairs with nothing (a group-by drops it)
    d, y, wt = d[keep], y[keep], wt[keep]
    # the groups as integer codes of their texts (a text per row, compared with each group's name, was most
    # of this function's time at a million replies)
    g, gtext = text_factorize(d[group])
    code_of = {t: i for i, t in enumerate(gtext)}
    ccode, _ = pd.factorize(d[cluster], sort=True)  # posts in sorted order, as a group-by visits them
    ncl = int(ccode.max()) + 1 if len(ccode) else 0
    wy = wt * y
    is_ctrl = g == code_of.get(str(control), -1)
    n0 = np.bincount(ccode[is_ctrl], wt[is_ctrl], minlength=ncl)
    mean0 = np.bincount(ccode[is_ctrl], wy[is_ctrl], minlength=ncl) / np.where(n0 > 0, n0, 1.0)
    rest = np.flatnonzero(~is_ctrl)
    out = []
    levels = [("pooled", rest)]
    if by:
        lv_of = d[by].iloc[rest]
        levels += [(str(lv), rest[pos]) for lv, pos in
                   pd.Series(np.arange(len(rest)), index=lv_of.index).groupby(lv_of, sort=True).indices.items()]
    for lv, rows in levels:
        gsub = g[rows]
        for gl in sorted(gtext[pd.unique(gsub)]):
            sel = rows[gsub == code_of[gl]]
            n = np.bincount(ccode[sel], wt[sel], minlength=ncl)
            common = (n > 0) & (n0 > 0)
            x = np.bincount(ccode[sel], wy[sel], minlength=ncl)[common] / n[common]
            yv = mean0[common]
            row = dict(group=gl, reference=str(control), n_posts=int(common.sum()))
            if by:
                row[by] = lv
            scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(yv)))) if len(x) else 0.0
            if len(x) >= 2 and not is_constant(x - yv, scale=scale):  # audit.stats.degenerate
                row.update(_paired_t(x, yv))
            else:
                row.update(mean_diff=float(np.mean(x - yv)) if len(x) else np.nan, t=np.nan,
                           dof=float(len(x) - 1), p_value=np.nan, cohen_d=np.nan, ci_low=np.nan, ci_high=np.nan)
            out.append(row)
    cols = PAIRED_COLUMNS[:1] + ([by] if by else []) + PAIRED_COLUMNS[1:]
    return pd.DataFrame(out, columns=cols)


def _paired_t(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> dict:
    """The paired t-test of :func:`pingouin.ttest` (``paired=True``, two-sided), its formulas as pingouin
    0.7 computes them: ``t`` and ``p`` of :func:`scipy.stats.ttest_rel`, ``dof = n - 1``, the CI of the
    mean difference ``(t -+ t_{dof, 1 - alpha/2}) se`` with ``se = sd(x - y) / sqrt(n)``, and Cohen's
    d-avg ``|mean(x) - mean(y)| / sqrt((var x + var y) / 2)`` (Cumming 2012; pingouin's ``cohen_d``). The CI
    bounds are rounded to 2 decimals, as pingouin's table rounds them."""
    n = len(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, p = stats.ttest_rel(x, y)
        dof = n - 1
        se = np.sqrt(np.var(x - y, ddof=1) / n)
        tcrit = stats.t.ppf(1 - (1 - confidence) / 2, dof)
        # pingouin rounds its CI95 column to 2 decimals (its default option 'round.column.CI95'), so the
        # paired CIs have always been rounded so; kept, the table unchanged (see the report of issue 31)
        ci = np.round(np.array([t - tcrit, t + tcrit]) * se, 2)
        d = (x.mean() - y.mean()) / np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2)
    return dict(mean_diff=float(np.mean(x - y)), t=float(t), dof=float(dof), p_value=float(p),
                cohen_d=float(abs(d)), ci_low=float(ci[0]), ci_high=float(ci[1]))
