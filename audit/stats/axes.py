"""Pooled axis contrasts: each level of one axis against that axis's reference level, averaged over the
levels of the other axes, from the same model as the cell-level gaps (issue 27, C6).

With race x gender groups (``Black man``, ``Black woman``, ``White man``, ``White woman``) and the control,
the gap model (:func:`audit.stats.gap_test`) gives each cell's gap to the control, ``g[r, s]``. The pooled
race contrast of Black against White is the average, over the gender levels ``s`` for which both cells
exist, of the within-gender differences::

    c(Black vs White) = (1 / |S|) sum_s ( g[Black, s] - g[White, s] )

a linear contrast of the fitted gaps, so its standard error is ``sqrt(w' V w)`` with ``V`` the
covariance of the fixed effects of that one fit (and the delta-method gradients of the probability-scale
gaps for 0/1 outcomes fitted by GEE); Wald z test, 95% CI. It answers "Black vs White, whatever the
gender" without exporting, pivoting and refitting. The contrasts are labelled as pooled over the other
axes and are exploratory: they get their own Holm and BH adjustment within this table and do not enter
the family of the cell-level gaps.

Reference level of each axis: its level in ``reference_group`` (a group such as ``White man``, or a level
such as ``White``); otherwise the first of the axis's levels in sorted order (stated in every row).

Example
-------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> cells = ["control", "Black man", "Black woman", "White man", "White woman"]
>>> d = pd.DataFrame([(p, g) for p in range(40) for g in cells], columns=["post_id", "group"])
>>> d["value"] = rng.normal(0, 1, 40)[d.post_id] - 0.8 * d.group.str.startswith("Black") + rng.normal(0, .3, len(d))
>>> ax = pd.DataFrame({"race": ["Black", "Black", "White", "White"], "gender": ["man", "woman"] * 2},
...                   index=cells[1:])
>>> r = axis_contrasts(d, outcome="value", axes_of=ax, reference_group="White")
>>> r[["axis", "level", "reference"]].values.tolist()
[['gender', 'woman', 'man'], ['race', 'Black', 'White']]
>>> bool(abs(r.set_index("axis").loc["race", "estimate"] + 0.8) < 0.2)
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .corrections import bh, holm
from .cells import Cells, cell_weights, cells_binary
from .gaps import _expit, _fit_one, is_binary, validate_table

__all__ = ["axis_contrasts", "axis_references", "AXIS_COLUMNS"]

AXIS_COLUMNS = ["axis", "level", "reference", "estimate", "se", "ci_low", "ci_high", "z", "p_value", "p_holm", "p_bh",
                "n_pairs", "pairs", "method"]


def axis_references(axes_of: pd.DataFrame, reference_group: str | None = None) -> dict[str, str]:
    """The reference level of every axis (module doc): from ``reference_group`` where it names one, else
    the first level in sorted order."""
    refs = {}
    ref_row = axes_of.loc[reference_group] if reference_group in axes_of.index else None
    for a in axes_of.columns:
        levels = sorted(axes_of[a].dropna().astype(str).unique())
        if ref_row is not None and pd.notna(ref_row[a]):
            refs[a] = str(ref_row[a])
        elif reference_group in levels:
            refs[a] = str(reference_group)
        else:
            refs[a] = levels[0] if levels else ""
    return refs


def _cell_gaps(fit, X: np.ndarray, is_ref: np.ndarray, n_levels: int,
               w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each group's gap to the reference and its gradient in the fixed effects (rows: groups in the
    design matrix's order), as :func:`audit.stats.gaps._gap_rows` computes them (``w``: the rows are
    cells of that many observations)."""
    b = fit.params
    est, grads = np.zeros(n_levels), np.zeros((n_levels, len(b)))
    for j in range(1, n_levels + 1):
        if fit.link == "identity":
            est[j - 1], grads[j - 1, j] = b[j], 1.0
        else:
            Xr = X[is_ref]
            X0 = Xr.copy()
            X0[:, 1:n_levels + 1] = 0.0
            Xg = X0.copy()
            Xg[:, j] = 1.0
            p0, p1 = _expit(X0 @ b), _expit(Xg @ b)
            if w is None:
                est[j - 1] = float(p1.mean() - p0.mean())
                grads[j - 1] = (p1 * (1 - p1)) @ Xg / len(Xg) - (p0 * (1 - p0)) @ X0 / len(X0)
            else:
                wr = w[is_ref] / w[is_ref].sum()
                est[j - 1] = float(wr @ p1 - wr @ p0)
                grads[j - 1] = (wr * p1 * (1 - p1)) @ Xg - (wr * p0 * (1 - p0)) @ X0
    return est, grads


def axis_contrasts(data: pd.DataFrame, *, outcome: str, axes_of: pd.DataFrame, group: str = "group",
                   control: str = "control", cluster: str = "post_id", factors: tuple[str, ...] | list[str] = (),
                   inner: str | None = None, reference_group: str | None = None, alpha: float = 0.05,
                   method: str = "auto", cells: Cells | None = None) -> pd.DataFrame:
    """Pooled contrasts of every axis level against the axis's reference (module doc).

    ``axes_of``: index = the non-control groups, one column per axis (the group's level). Needs at
    least two axes; returns an empty table otherwise. Columns: ``AXIS_COLUMNS`` (``pairs``: the cell
    pairs averaged, ``n_pairs`` their number). ``cells``: ``data`` is a table of cells
    (:mod:`audit.stats.cells`), fitted exactly from their statistics.
    """
    ax = axes_of.dropna(how="any")
    ax = ax[[a for a in ax.columns if ax[a].astype(str).nunique() >= 2]]
    if ax.shape[1] < 2:
        return pd.DataFrame(columns=AXIS_COLUMNS)
    d = validate_table(data[data[outcome].notna()], outcome, group, control, cluster, factors, inner,
                       where=f"outcome '{outcome}'", cells=cells)
    binary = cells_binary(d, cells) if cells is not None else is_binary(d[outcome])
    _, fit = _fit_one(d, outcome, group, control, cluster, tuple(factors), inner, method, True, alpha, binary, cells)
    from .gaps import design_matrix

    X, _, levels = design_matrix(d, group, control, factors)
    is_ref = d[group].astype(str).to_numpy() == str(control)
    est, grads = _cell_gaps(fit, X, is_ref, len(levels), cell_weights(d, cells))
    pos = {g: i for i, g in enumerate(levels)}
    refs = axis_references(ax, reference_group)
    zc = stats.norm.ppf(1 - alpha / 2)
    rows = []
    cells = ax.loc[[g for g in ax.index if g in pos]].astype(str)
    for a in sorted(ax.columns):
        others = [o for o in ax.columns if o != a]
        for lv in sorted(cells[a].unique()):
            if lv == refs[a]:
                continue
            pairs = []
            for g, row in cells[cells[a] == lv].iterrows():
                partner = cells[(cells[a] == refs[a]) & (cells[others] == row[others]).all(axis=1)]
                if len(partner) == 1:
                    pairs.append((g, partner.index[0]))
            if not pairs:
                continue
            w = np.mean([grads[pos[g]] - grads[pos[r]] for g, r in pairs], axis=0)
            e = float(np.mean([est[pos[g]] - est[pos[r]] for g, r in pairs]))
            se = float(np.sqrt(w @ fit.cov @ w))
            z = e / se if se > 0 else np.nan
            rows.append(dict(axis=a, level=lv, reference=refs[a], estimate=e, se=se, ci_low=e - zc * se,
                             ci_high=e + zc * se, z=z, p_value=float(2 * stats.norm.sf(abs(z))) if se > 0 else np.nan,
                             n_pairs=len(pairs), pairs="; ".join(f"{g} - {r}" for g, r in pairs),
                             method=f"pooled over {', '.join(others)}: mean of within-level differences of the cell "
                                    f"gaps, one fit ({fit.method})"))
    out = pd.DataFrame(rows, columns=[c for c in AXIS_COLUMNS if c not in ("p_holm", "p_bh")])
    if out.empty:
        return pd.DataFrame(columns=AXIS_COLUMNS)
    ok = out["p_value"].notna().to_numpy()
    out["p_holm"], out["p_bh"] = np.nan, np.nan
    if ok.any():
        out.loc[ok, "p_holm"] = holm(out.loc[ok, "p_value"].to_numpy(dtype=float))
        out.loc[ok, "p_bh"] = bh(out.loc[ok, "p_value"].to_numpy(dtype=float))
    return out[AXIS_COLUMNS]
