"""The report's "Models compared" section (a run with several models) and the figures it shares with the
comparison of runs (:mod:`audit.compare`): a multi-model forest plot and a model x group heat map.

Only a run whose store has ``results_models`` (several models) gets the section, the two figures,
``tables/results_models.csv`` and the ``models_compared`` key of results.json; a one-model report is
unchanged. Colours are the Okabe-Ito palette (distinguishable with the common colour-vision
deficiencies); significance is shown by filled versus hollow markers, never by colour alone.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .figures import FigureOut, series_colours, _finish, _setup, mpl_text
from .findings import outcome_label

__all__ = ["models_context", "models_json", "forest_by_level", "gap_heatmap", "fmt_ci"]


def fmt_ci(lo: Any, hi: Any, digits: int = 3) -> str:
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        return "n/a"
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]" if np.isfinite(lo) and np.isfinite(hi) else "n/a"


def _num(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return f"{v:+.{digits}f}" if np.isfinite(v) else "n/a"


def _p(x: Any) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not np.isfinite(v) else ("<0.001" if v < 0.001 else f"{v:.3f}")


def forest_by_level(gaps: pd.DataFrame, level: str, *, fig_id: str, title: str, what: str,
                    catalog=None, levels: list[str] | None = None) -> FigureOut:
    """Gaps by group, one colour per level of ``level`` (a model or a run), one panel per outcome.

    ``gaps``: ``outcome, group, <level>, estimate, ci_low, ci_high, significant``.
    """
    fo = FigureOut(fig_id, title,
                   f"Each group's gap to the control with its 95% CI, one colour per {what} (styles and cue types "
                   "pooled). Filled markers: significant after Holm correction; hollow: not significant. The dashed "
                   "line is no gap.",
                   f"Forest plot of the gap of each group versus the control for each {what}, with 95% confidence "
                   "intervals.")
    if gaps is None or gaps.empty:
        fo.missing = "no gaps to show"
        return fo
    sns, Figure = _setup()
    levels = levels or list(dict.fromkeys(gaps[level].astype(str)))
    outcomes = sorted(gaps["outcome"].unique())
    groups = sorted(gaps["group"].astype(str).unique())
    cols = min(3, len(outcomes))
    nrow = math.ceil(len(outcomes) / cols)
    height = len(groups) * (0.22 * len(levels) + 0.25) + 1.2
    fig = Figure(figsize=(4.4 * cols + 1.4, nrow * height + 0.5))
    axes = np.atleast_1d(fig.subplots(nrow, cols, squeeze=False)).ravel()
    pal = series_colours()
    colour = {lv: pal[i % len(pal)] for i, lv in enumerate(levels)}
    step = 0.8 / max(len(levels), 1)
    for ax, o in zip(axes, outcomes):
        sub = gaps[gaps["outcome"] == o]
        for k, lv in enumerate(levels):
            s = sub[sub[level].astype(str) == lv]
            for _, r in s.iterrows():
                yv = groups.index(str(r["group"])) - 0.4 + (k + 0.5) * step  # the first level on top
                c = colour[lv]
                ax.plot([r["ci_low"], r["ci_high"]], [yv, yv], color=c, linewidth=1.5)
                ax.plot([r["estimate"]], [yv], marker="o", markersize=5.5, color=c,
                        markerfacecolor=c if bool(r.get("significant", False)) else "white", markeredgewidth=1.4)
        ax.axvline(0, color="0.3", linewidth=0.8, linestyle="--")
        ax.set_yticks(np.arange(len(groups)))
        ax.set_yticklabels([mpl_text(g) for g in groups], fontsize=7)
        ax.set_ylim(-0.6, len(groups) - 0.4)
        ax.invert_yaxis()
        ax.set_title(mpl_text(outcome_label(o, catalog)), fontsize=9)
        ax.set_xlabel("gap to the control (outcome units)", fontsize=8)
    for ax in axes[len(outcomes):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[lv], marker="o", label=mpl_text(lv)) for lv in levels]
    handles += [Line2D([], [], color="0.2", marker="o", linestyle="", label="significant (Holm)"),
                Line2D([], [], color="0.2", marker="o", markerfacecolor="white", linestyle="", label="not significant")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _finish(fo, fig, layout=False)


def gap_heatmap(gaps: pd.DataFrame, level: str, *, fig_id: str, title: str, what: str, catalog=None,
                levels: list[str] | None = None) -> FigureOut:
    """A heat map of the gaps: rows ``level`` (models or runs), columns groups, one panel per outcome; a
    diverging colour-blind-safe map centred on 0, each cell labelled with its gap (``*``: significant)."""
    fo = FigureOut(fig_id, title,
                   f"Gap to the control of each group (columns) for each {what} (rows), styles and cue types pooled; "
                   "purple: below the control, orange: above; * significant after Holm correction.",
                   f"Heat map of the gap of each group for each {what}.")
    if gaps is None or gaps.empty:
        fo.missing = "no gaps to show"
        return fo
    _, Figure = _setup()
    levels = levels or list(dict.fromkeys(gaps[level].astype(str)))
    outcomes = sorted(gaps["outcome"].unique())
    groups = sorted(gaps["group"].astype(str).unique())
    cols = min(2, len(outcomes))
    nrow = math.ceil(len(outcomes) / cols)
    fig = Figure(figsize=(max(4.0, 0.9 * len(groups) + 2.2) * cols, nrow * (0.45 * len(levels) + 1.8)))
    axes = np.atleast_1d(fig.subplots(nrow, cols, squeeze=False)).ravel()
    for ax, o in zip(axes, outcomes):
        sub = gaps[gaps["outcome"] == o].copy()
        sub[level], sub["group"] = sub[level].astype(str), sub["group"].astype(str)

        def cells(col: str) -> pd.DataFrame:
            return sub.pivot_table(index=level, columns="group", values=col, aggfunc="first").reindex(
                index=levels, columns=groups)

        mat, sig = cells("estimate"), cells("significant")
        m = mat.to_numpy(float)
        lim = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
        lim = lim or 1.0
        # pcolormesh and text by hand, not seaborn.heatmap: seaborn.heatmap on this canvas-less Figure took
        # 1.1 GB of memory for 9 panels (measured; its tick-label overlap checks draw the figure), this a few MB
        mesh = ax.pcolormesh(np.ma.masked_invalid(m), cmap="PuOr_r", vmin=-lim, vmax=lim, edgecolors="white",
                             linewidth=0.5)
        for i, (mr, sr) in enumerate(zip(m, sig.to_numpy())):
            for j, (v, sg) in enumerate(zip(mr, sr)):
                label = "n/a" if not np.isfinite(v) else f"{v:+.2f}" + ("*" if sg is True or sg == 1 else "")
                ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=7,
                        color="white" if np.isfinite(v) and abs(v) > 0.6 * lim else "0.1")
        fig.colorbar(mesh, ax=ax, shrink=0.8, label="gap")
        ax.set_xlim(0, len(groups))
        ax.set_ylim(len(levels), 0)
        ax.grid(False)
        ax.set_xticks(np.arange(len(groups)) + 0.5)
        ax.set_xticklabels([mpl_text(g) for g in groups], rotation=30, ha="right", fontsize=7)
        ax.set_yticks(np.arange(len(levels)) + 0.5)
        ax.set_yticklabels([mpl_text(lv) for lv in levels], fontsize=7)
        ax.set_title(mpl_text(outcome_label(o, catalog)), fontsize=9)
    return _finish(fo, fig, spare=axes[len(outcomes):])


def _pooled_gaps(res: pd.DataFrame, reference: str) -> pd.DataFrame:
    d = res[(res["style"].astype(str) == "pooled") & (res["cue_type"].astype(str) == "pooled")
            & (res["reference"].astype(str) == reference) & res["estimate"].notna()].copy()
    d["significant"] = d["significant_holm"].fillna(False).astype(bool)
    return d[["outcome", "model_label", "group", "estimate", "ci_low", "ci_high", "significant"]]


def models_context(data, figures: bool = True) -> dict[str, Any]:
    """``models_section`` for the report templates (None without ``results_models``)."""
    models = data.tables.get("results_models")
    res = data.results
    if models is None or models.empty or res is None:
        return {"models_section": None}
    reference = data.spec.analysis.reference if data.spec is not None else "control"
    ref_model = str(models["reference_model"].iloc[0])
    order = [ref_model] + sorted(set(models["model_label"].astype(str)))
    gaps = _pooled_gaps(res, reference)
    figs = []
    if figures:
        for fn, fid, title in ((forest_by_level, "fig-models-forest", "Gaps by model, with 95% confidence intervals"),
                               (gap_heatmap, "fig-models-heatmap", "Model x group heat map of the gaps")):
            try:
                figs.append(fn(gaps, "model_label", fig_id=fid, title=title, what="model", catalog=data.measures,
                               levels=order))
            except Exception as exc:  # noqa: BLE001 - a figure that fails must not take the report with it
                fo = FigureOut(fid, title, "", "")
                fo.missing = f"the figure could not be drawn ({type(exc).__name__}: {exc})"
                figs.append(fo)
    rows = []
    for r in models.sort_values(["outcome", "group", "model_label"]).to_dict("records"):
        rows.append(dict(outcome=data.measures.label(r["outcome"]), outcome_id=r["outcome"], group=r["group"],
                         model=r["model_label"], gap_ref=_num(r["gap_reference_model"]), gap=_num(r["gap"]),
                         gap_ci=fmt_ci(r["gap_ci_low"], r["gap_ci_high"]), diff=_num(r["estimate"]),
                         diff_ci=fmt_ci(r["ci_low"], r["ci_high"]), p=_p(r["p_value"]), p_holm=_p(r["p_holm"]),
                         significant=bool(r["significant_holm"]), family=r.get("family", "") or ""))
    n_sig = sum(r["significant"] for r in rows)
    lead = (f"Every model's gaps are compared with those of the reference model {ref_model} in one mixed model on the "
            f"same posts and variants: {len(rows)} differences of gaps, {n_sig} significant after Holm correction "
            "(in the audit's one correction family).")
    return {"models_section": dict(reference_model=ref_model, models=order, rows=rows, lead=lead, figures=figs,
                                   formula=_meta(data, "models_formula"), n_significant=n_sig)}


def _meta(data, key: str) -> str:
    m = data.tables.get("analysis_meta")
    if m is None or m.empty:
        return ""
    hit = m.loc[m["key"] == key, "value"]
    return str(hit.iloc[0]) if len(hit) else ""


def models_json(ctx: dict[str, Any], data) -> dict[str, Any]:
    """results.json keys of the section (none for a one-model run)."""
    sec = ctx.get("models_section")
    if not sec:
        return {}
    m = data.tables.get("results_models")
    return {"models_compared": dict(reference_model=sec["reference_model"], formula=sec["formula"], lead=sec["lead"],
                                    results_models=m.to_dict("records"))}
