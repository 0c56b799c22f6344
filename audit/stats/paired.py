"""Within-post paired contrasts: each variant against its own control post (pingouin).

A robustness check beside the mixed model that assumes nothing about the random-effects
distribution: for every base post ``i`` and group ``g`` (and cue type), average the outcome over
the group's variants and samples (``ybar_ig``) and over the post's control replies (``ybar_i0``);
the contrast is the paired t-test of ``ybar_ig`` against ``ybar_i0`` over posts
(:func:`pingouin.ttest` with ``paired=True``)::

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
import pingouin as pg

from .degenerate import is_constant

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
    """
    cols = [outcome, group, cluster] + ([by] if by else []) + ([weight] if weight else [])
    d = data[list(dict.fromkeys(cols))].copy()
    d[outcome] = pd.to_numeric(d[outcome], errors="coerce")
    d = d.dropna(subset=[outcome])
    d[group] = d[group].astype(str)
    if weight:
        d = d[d[weight] > 0]
        if (d[weight] == 1).all():
            weight = None  # one observation a cell: the rows' means, number for number
        else:
            d["__wy__"] = d[outcome] * d[weight]

    def mean_by(frame, keys):
        if not weight:
            return frame.groupby(keys)[outcome].mean()
        g = frame.groupby(keys)
        return g["__wy__"].sum() / g[weight].sum()

    ctrl = mean_by(d[d[group] == str(control)], cluster)
    rest = d[d[group] != str(control)]
    out = []
    levels = [("pooled", rest)]
    if by:
        levels += [(str(lv), sub) for lv, sub in rest.groupby(by, sort=True)]
    for lv, sub in levels:
        means = mean_by(sub, [group, cluster])
        for g in sorted(sub[group].unique()):
            m = means.loc[g]
            common = m.index.intersection(ctrl.index)
            row = dict(group=g, reference=str(control), n_posts=int(len(common)))
            if by:
                row[by] = lv
            x, y = m.loc[common].to_numpy(), ctrl.loc[common].to_numpy()
            scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(y)))) if len(common) else 0.0
            if len(common) >= 2 and not is_constant(x - y, scale=scale):  # audit.stats.degenerate
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = pg.ttest(x, y, paired=True)
                ci = r["CI95"].iloc[0] if "CI95" in r.columns else r.filter(like="CI").iloc[0, 0]
                row.update(mean_diff=float(np.mean(x - y)), t=float(r["T"].iloc[0]), dof=float(r["dof"].iloc[0]),
                           p_value=float(r["p_val"].iloc[0] if "p_val" in r.columns else r["p-val"].iloc[0]),
                           cohen_d=float(r["cohen_d"].iloc[0] if "cohen_d" in r.columns else r["cohen-d"].iloc[0]),
                           ci_low=float(ci[0]), ci_high=float(ci[1]))
            else:
                row.update(mean_diff=float(np.mean(x - y)) if len(common) else np.nan, t=np.nan,
                           dof=float(len(common) - 1), p_value=np.nan, cohen_d=np.nan, ci_low=np.nan, ci_high=np.nan)
            out.append(row)
    cols = PAIRED_COLUMNS[:1] + ([by] if by else []) + PAIRED_COLUMNS[1:]
    return pd.DataFrame(out, columns=cols)
