"""The report's figures (seaborn on matplotlib's object API, no pyplot state), as embedded PNGs.

Each function takes a :class:`~audit.report.data.ReportData` and returns a :class:`FigureOut` (a PNG
data URI plus title, caption and alt text) or ``None`` with the reason the figure is absent. Labels
are untrusted text too (group names come from user templates): every string that reaches matplotlib
passes :func:`mpl_text`, so a ``$`` cannot switch on mathtext and nothing is interpreted.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..scorers.measures import MeasureCatalog
from .findings import cue_short, is_absolute, is_proportion, measure_of, outcome_label, scale_unit

_ROW_H = 0.32  # inches per row in the forest plot


@dataclass
class FigureOut:
    id: str
    title: str
    caption: str
    alt: str
    data_uri: str | None = None
    missing: str | None = None  # why the figure could not be drawn
    png_bytes: int = 0
    # Shown one click down (<details>) under a heading of its own, when set: a long figure a reader of
    # the first pages does not need (every gap by cue type, every intersectional cell).
    fold_summary: str | None = None
    section_title: str = ""
    figure: Any = field(default=None, repr=False, compare=False)  # the matplotlib Figure, when kept


def mpl_text(s: object) -> str:
    """A label matplotlib shows literally (no mathtext)."""
    return str(s).replace("\\", "\\\\").replace("$", r"\$")


def _setup():
    import matplotlib

    matplotlib.rcParams.update({"text.usetex": False, "svg.fonttype": "none", "figure.max_open_warning": 0})
    import seaborn as sns
    from matplotlib.figure import Figure

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    return sns, Figure


def _encode(fig) -> tuple[str, int]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    raw = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii"), len(raw)


def _finish(fo: FigureOut, fig, spare=()) -> FigureOut:
    """Hide the unused panels, lay out, encode."""
    for ax in spare:
        ax.set_visible(False)
    fig.tight_layout()
    fo.data_uri, fo.png_bytes = _encode(fig)
    return fo


def _group_order(groups) -> list[str]:
    g = sorted({str(x) for x in groups if str(x) != "control"})
    return (["control"] if "control" in {str(x) for x in groups} else []) + g


def _key_outcomes(outcomes: list[str], k: int = 4) -> list[str]:
    return outcomes[:k]


def distributions(data) -> FigureOut:
    fo = FigureOut("fig-distributions", "Score distributions by group and cue type",
                   "Boxes: quartiles of the reply scores per group; colours: cue type (the control has no cue); "
                   "diamonds: means. Unanswered and unscored replies are left out.",
                   "Box plots of reply scores per demographic group, coloured by cue type.")
    df = data.analysis_frame
    outcomes = [o for o in data.outcomes if o in set(df["outcome"]) or f"x.{o}" in set(df["outcome"])]
    if df.empty:
        fo.missing = "no scored replies are stored"
        return fo
    present = list(dict.fromkeys(df["outcome"]))
    want = []
    for o in outcomes or present:
        match = [p for p in present if p == o or measure_of(p) == measure_of(o)]
        if match and match[0] not in want:
            want.append(match[0])
    # Binary outcomes (refusal) have their own figure; boxes of 0/1 say nothing.
    want = [o for o in want if not is_proportion(o, data.measures)] or want
    want = _key_outcomes(want or present)
    sns, Figure = _setup()
    n = len(want)
    cols = min(2, n)
    rows = math.ceil(n / cols)
    groups = _group_order(df["group"].unique())
    fig = Figure(figsize=(6.4 * cols, 3.4 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    plot = df.copy()
    plot["group"] = plot["group"].map(mpl_text)
    plot["cue"] = plot["cue_type"].map(lambda c: mpl_text(cue_short(c)))
    order = [mpl_text(g) for g in groups]
    hue_order = list(dict.fromkeys(["control", *sorted(plot["cue"].unique())]))
    hue_order = [h for h in hue_order if h in set(plot["cue"])]
    for ax, outcome in zip(axes, want):
        d = plot[plot["outcome"] == outcome]
        sns.boxplot(data=d, x="group", y="value", hue="cue", order=order, hue_order=hue_order, ax=ax,
                    showmeans=True, meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                                               "markersize": 4}, fliersize=2, linewidth=0.8)
        ax.set_title(mpl_text(outcome_label(outcome, data.measures)))
        ax.set_xlabel("")
        ax.set_ylabel("score")
        _group_axis(ax)
    return _finish(fo, fig, axes[n:])


def _group_axis(ax) -> None:
    """Groups on the x axis (labels slanted to fit) and the cue type as the legend."""
    ax.tick_params(axis="x", labelrotation=30)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    leg = ax.get_legend()
    if leg is not None:
        leg.set_title("cue type")


def _gap_values(d: pd.DataFrame, outcome: str, catalog: MeasureCatalog | None = None) -> tuple[pd.Series, pd.Series, pd.Series, str]:
    ref = float(d["ref_mean"].median()) if "ref_mean" in d and d["ref_mean"].notna().any() else None
    if is_absolute(outcome, ref, catalog) or "relative_gap" not in d:
        scale, unit = scale_unit(outcome, catalog)
        return d["estimate"] * scale, d["ci_low"] * scale, d["ci_high"] * scale, f"gap vs control ({unit})"
    return d["relative_gap"] * 100, d["rel_ci_low"] * 100, d["rel_ci_high"] * 100, "gap vs control (% of control mean)"


def forest(data) -> FigureOut:
    fo = FigureOut("fig-forest", "Every gap versus the control, with 95% confidence intervals",
                   "One row per group and cue type (pooled over prompt styles where the analysis pooled them). "
                   "Filled markers: significant after Holm correction across the whole family of tests; hollow: "
                   "not significant. The vertical line is no gap.",
                   "Forest plot of the estimated gap of each group versus the control with 95% confidence intervals.")
    res = data.results
    if res is None or res.empty:
        fo.missing = "no analysis results are stored (the analysis stage has not run)"
        return fo
    d = res.copy()
    if "reference" in d:  # this figure is about the control; the reference-group gaps have their own
        d = d[d["reference"].astype(str) == _control(data)]
    if "style" in d and (d["style"] == "pooled").any():
        d = d[d["style"] == "pooled"]
    sns, Figure = _setup()
    models = sorted(d["model_label"].unique()) if "model_label" in d else [None]
    outcomes = data.outcomes
    panels = [(m, o) for m in models for o in outcomes if not d[(d["outcome"] == o) & (
        (d["model_label"] == m) if m is not None else True)].empty]
    if not panels:
        fo.missing = "the results table has no rows"
        return fo
    cols = min(3, len(panels))
    nrows_panel = math.ceil(len(panels) / cols)
    rows_per = max(len(d[(d["outcome"] == o) & ((d["model_label"] == m) if m is not None else True)])
                   for m, o in panels)
    # Large designs (many groups x cue types) get thinner rows, so a panel stays under ~12 inches.
    row_h = min(_ROW_H, 12.0 / max(rows_per, 1))
    tick_fs = 7 if row_h >= 0.2 else 5.5
    fig = Figure(figsize=(4.2 * cols + 1.6, nrows_panel * (rows_per * row_h + 1.1) + 0.3))
    axes = np.atleast_1d(fig.subplots(nrows_panel, cols, squeeze=False)).ravel()
    palette = sns.color_palette("deep")
    cue_types = list(dict.fromkeys(["pooled", *sorted(d["cue_type"].unique())]))
    colour = {c: palette[i % len(palette)] for i, c in enumerate(cue_types)}
    for idx, (ax, (m, o)) in enumerate(zip(axes, panels)):
        sub = d[(d["outcome"] == o) & ((d["model_label"] == m) if m is not None else True)].copy()
        sub["_c"] = sub["cue_type"].map(lambda c: cue_types.index(c))
        sub = sub.sort_values(["group", "_c"], ascending=[False, False]).reset_index(drop=True)
        est, lo, hi, xlabel = _gap_values(sub, o, data.measures)
        y = np.arange(len(sub))
        sig = sub["significant_holm"].fillna(False).astype(bool) if "significant_holm" in sub else \
            pd.Series(False, index=sub.index)
        for i in range(len(sub)):
            c = colour[sub["cue_type"].iloc[i]]
            ax.plot([lo.iloc[i], hi.iloc[i]], [y[i], y[i]], color=c, linewidth=1.4)
            ax.plot([est.iloc[i]], [y[i]], marker="o", markersize=5.5, color=c,
                    markerfacecolor=c if sig.iloc[i] else "white", markeredgewidth=1.4)
        ax.axvline(0, color="0.3", linewidth=0.8, linestyle="--")
        show_labels = idx % cols == 0 or True
        ax.set_yticks(y)
        ax.set_yticklabels([mpl_text(f"{g} · {cue_short(c)}") for g, c in zip(sub["group"], sub["cue_type"])]
                           if show_labels else [], fontsize=tick_fs)
        ax.set_ylim(-0.7, len(sub) - 0.3)
        title = outcome_label(o, data.measures) + (f" — {m}" if m is not None and len(models) > 1 else "")
        ax.set_title(mpl_text(title), fontsize=9)
        ax.set_xlabel(mpl_text(xlabel), fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[c], marker="o", linestyle="-", label=mpl_text(cue_short(c)))
               for c in cue_types if c in set(d["cue_type"])]
    handles += [Line2D([], [], color="0.2", marker="o", linestyle="", label="significant (Holm)"),
                Line2D([], [], color="0.2", marker="o", markerfacecolor="white", linestyle="",
                       label="not significant")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fo.data_uri, fo.png_bytes = _encode(fig)
    return fo


OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _control(data) -> str:
    return str(data.spec.analysis.reference) if getattr(data, "spec", None) is not None else "control"


def forest_primary(data, outcome: str | None) -> FigureOut:
    """The first screen's figure: the primary outcome's pooled gap of each group against the control
    and against its reference group, 95% CIs, on a symmetric axis around the no-gap line (Okabe-Ito
    colours, safe for colour-blind readers; filled = significant after Holm)."""
    label = outcome_label(outcome, data.measures) if outcome else "the primary outcome"
    fo = FigureOut("fig-forest-primary", f"{label}: each group against the control and its reference group",
                   "Pooled over prompt styles and cue types; 95% confidence intervals. Filled markers: significant "
                   "after Holm correction across the whole family; hollow: not significant. The dashed line is no gap.",
                   f"Forest plot of {label}: for each group, the gap versus the control and versus its reference "
                   "group, with 95% confidence intervals, on an axis symmetric around zero.")
    res = data.results
    if res is None or res.empty or outcome is None:
        fo.missing = "no analysis results are stored (the analysis stage has not run)"
        return fo
    d = res[(res["outcome"] == outcome) & (res.get("style", "pooled") == "pooled")]
    if "cue_type" in d and (d["cue_type"] == "pooled").any():
        d = d[d["cue_type"] == "pooled"]
    d = d[pd.to_numeric(d["estimate"], errors="coerce").notna()]
    if d.empty:
        fo.missing = f"no gap of {label} could be estimated (see the results table for the reasons)"
        return fo
    _, Figure = _setup()
    groups = sorted(set(d["group"].astype(str)), reverse=True)
    ctrl = _control(data)
    kinds = [("control", d["reference"].astype(str) == ctrl), ("reference group", d["reference"].astype(str) != ctrl)]
    est, lo, hi, xlabel = _gap_values(d, outcome, data.measures)
    xlabel = xlabel.replace("gap vs control", "gap")
    fig = Figure(figsize=(5.6, 0.34 * len(groups) + 1.3))
    ax = fig.subplots()
    for k, (name, mask) in enumerate(kinds):
        c = OKABE_ITO[k]
        for i, g in enumerate(groups):
            rows = np.flatnonzero((mask & (d["group"].astype(str) == g)).to_numpy())
            if not len(rows):
                continue
            j = rows[0]
            y = i + (0.16 if k == 0 else -0.16)
            sig = bool(d["significant_holm"].iloc[j]) if "significant_holm" in d else False
            ax.plot([lo.iloc[j], hi.iloc[j]], [y, y], color=c, linewidth=1.6)
            ax.plot([est.iloc[j]], [y], marker="o" if k == 0 else "s", markersize=6, color=c,
                    markerfacecolor=c if sig else "white", markeredgewidth=1.4)
    span = np.nanmax(np.abs(np.r_[lo.to_numpy(float), hi.to_numpy(float), est.to_numpy(float)]))
    span = float(span) * 1.1 if np.isfinite(span) and span > 0 else 1.0
    ax.set_xlim(-span, span)
    ax.axvline(0, color="0.2", linewidth=0.9, linestyle="--")
    ax.set_yticks(np.arange(len(groups)))
    ax.set_yticklabels([mpl_text(g) for g in groups], fontsize=8)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    ax.set_xlabel(mpl_text(xlabel), fontsize=8)
    from matplotlib.lines import Line2D

    refs = sorted(set(d.loc[kinds[1][1], "reference"].astype(str)))
    handles = [Line2D([], [], color=OKABE_ITO[0], marker="o", label="vs control")]
    if refs:
        handles.append(Line2D([], [], color=OKABE_ITO[1], marker="s",
                              label=mpl_text("vs reference group (" + ", ".join(refs) + ")")))
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    fig.tight_layout()
    fo.data_uri, fo.png_bytes = _encode(fig)
    return fo


def _intersection_table(data) -> tuple[pd.DataFrame | None, list[str]]:
    """Rows: outcome, model_label, group, <axes...>, value (relative gap %, or absolute)."""
    axes = [a for a in data.axes]
    inter = data.tables.get("results_intersectional")
    if inter is not None and not inter.empty and "group" in inter:
        df = inter.copy()
        if not all(a in df.columns for a in axes):
            df = df.drop(columns=[a for a in axes if a in df.columns]).merge(data.group_attributes, on="group",
                                                                              how="left")
        src = "results_intersectional"
    else:
        res = data.results
        if res is None or res.empty:
            return None, []
        df = res[(res.get("cue_type", "pooled") == "pooled") & (res.get("style", "pooled") == "pooled")].copy()
        if df.empty:
            return None, []
        df = df.merge(data.group_attributes, on="group", how="left")
        src = "results"
    if "model_label" not in df:
        df["model_label"] = ""
    vals = []
    for row in df.to_dict("records"):
        o = row.get("outcome", "")
        ref = row.get("ref_mean", 1.0)
        if "relative_gap" in row and row.get("relative_gap") is not None and not is_absolute(o, ref, data.measures) \
                and not (isinstance(row["relative_gap"], float) and math.isnan(row["relative_gap"])):
            vals.append(100 * float(row["relative_gap"]))
        else:
            est = row.get("estimate")
            vals.append(float(est) * (scale_unit(o, data.measures)[0]) if est is not None else np.nan)
    df["value"] = vals
    return df, [src]


def intersectional(data) -> FigureOut:
    fo = FigureOut("fig-intersectional", "Intersectional heat map of gaps versus the control",
                   "", "Heat map of the gap versus control for each intersection of the demographic axes.")
    df, src = _intersection_table(data)
    axes = [a for a in data.axes if df is not None and a in df.columns and df[a].notna().any()]
    if df is None or df.empty or not axes:
        fo.missing = "no intersectional estimates are stored (the analysis stage has not run, or no axes)"
        return fo
    fo.caption = (("Partially pooled cell estimates" if src == ["results_intersectional"] else
                   "Gaps pooled over cue types") + " for each intersection; relative gaps in % of the control "
                  "mean (refusal: percentage points; sentiment: points). Blue: below the control; red: above.")
    sns, Figure = _setup()
    row_ax = axes[0]
    col_ax = axes[1] if len(axes) > 1 else None
    panels = [(m, o) for m in sorted(df["model_label"].astype(str).unique())
              for o in sorted(df["outcome"].unique(), key=lambda x: data.outcomes.index(x)
                              if x in data.outcomes else 99)]
    panels = panels[:6]
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.0 * cols, 2.9 * nrows))
    axs = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    multi = df["model_label"].nunique() > 1
    for ax, (m, o) in zip(axs, panels):
        sub = df[(df["model_label"].astype(str) == m) & (df["outcome"] == o)].copy()
        sub[row_ax] = sub[row_ax].map(mpl_text)
        if col_ax:
            sub[col_ax] = sub[col_ax].map(mpl_text)
            grid = sub.pivot_table(index=row_ax, columns=col_ax, values="value", aggfunc="mean")
        else:
            grid = sub.pivot_table(index=row_ax, values="value", aggfunc="mean")
        lim = float(np.nanmax(np.abs(grid.to_numpy()))) if grid.size and np.isfinite(grid.to_numpy()).any() else 1
        sns.heatmap(grid, ax=ax, annot=True, fmt=".1f", cmap="vlag", center=0, vmin=-lim or -1, vmax=lim or 1,
                    cbar=True, linewidths=0.5, annot_kws={"fontsize": 8})
        ref = sub["ref_mean"].median() if "ref_mean" in sub else 1.0
        unit = ("pp" if is_proportion(o, data.measures) else "points") if is_absolute(o, ref, data.measures) \
            else "% of control"
        ax.set_title(mpl_text(f"{outcome_label(o, data.measures)}, gap in {unit}" + (f" — {m}" if multi else "")), fontsize=9)
        ax.set_ylabel(mpl_text(row_ax))
        ax.set_xlabel(mpl_text(col_ax) if col_ax else "")
        if not col_ax:
            ax.set_xticks([])
    return _finish(fo, fig, axs[len(panels):])


def probe_rates(data) -> FigureOut:
    fo = FigureOut("fig-probe", "Demographic inference (cue leak) rate per cue type",
                   "Share of variants for which the inference probe named the demographic the cue was meant to "
                   "signal, per cue type and axis, with 95% Wilson intervals; black ticks: how often the model "
                   "named the same group for the unmodified post (a guess from no cue). A cue that is rarely "
                   "inferred may not carry the signal the audit assumes (cue validity).",
                   "Bar chart of the rate at which a model inferred the intended demographic, per cue type.")
    ps = data.probe_summary
    if ps is None or ps.empty:
        fo.missing = "no inference probe was run"
        return fo
    sns, Figure = _setup()
    d = ps.copy()
    rate_col = next((c for c in ("leak_rate", "rate", "accuracy", "inferred_rate") if c in d.columns), None)
    if rate_col is None:
        fo.missing = "the probe summary has no rate column"
        return fo
    d["cue"] = d["cue_type"].map(lambda c: mpl_text(cue_short(c)))
    d["axis"] = d["axis"].map(mpl_text) if "axis" in d.columns else "all"
    models = sorted(d["model_label"].astype(str).unique()) if "model_label" in d.columns else [""]
    fig = Figure(figsize=(6.6 * min(len(models), 2), 3.3 * math.ceil(len(models) / 2)))
    axs = np.atleast_1d(fig.subplots(math.ceil(len(models) / 2), min(len(models), 2), squeeze=False)).ravel()
    cues = sorted(d["cue"].unique())
    axes_names = sorted(d["axis"].unique())
    palette = sns.color_palette("deep")
    width = 0.8 / max(1, len(axes_names))
    for ax, m in zip(axs, models):
        sub = d[d["model_label"].astype(str) == m] if "model_label" in d.columns else d
        for j, a in enumerate(axes_names):
            s = sub[sub["axis"] == a].set_index("cue").reindex(cues)
            x = np.arange(len(cues)) - 0.4 + width * (j + 0.5)
            ax.bar(x, s[rate_col], width=width * 0.95, color=palette[j % len(palette)], label=a)
            if "ci_low" in s and "ci_high" in s:
                lo = (s[rate_col] - s["ci_low"]).clip(lower=0)
                hi = (s["ci_high"] - s[rate_col]).clip(lower=0)
                ax.errorbar(x, s[rate_col], yerr=[lo, hi], fmt="none", ecolor="0.2", elinewidth=1, capsize=2)
            if "base_rate" in s and s["base_rate"].notna().any():
                ax.scatter(x, s["base_rate"], marker="_", s=260, color="black", zorder=3,
                           label="same guess for the control" if j == 0 else None)
        ax.set_xticks(np.arange(len(cues)))
        ax.set_xticklabels(cues)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share of variants inferred")
        if len(models) > 1:
            ax.set_title(mpl_text(m), fontsize=9)
        ax.legend(title="axis", fontsize=7, title_fontsize=8, frameon=False)
    return _finish(fo, fig, axs[len(models):])


def refusals(data) -> FigureOut:
    fo = FigureOut("fig-refusals", "Refusal rates by group",
                   "Share of answered replies the refusal scorer flagged as a refusal, per group and cue type, with "
                   "95% bootstrap confidence intervals. Replies blocked by a content filter are counted as "
                   "refusals here.",
                   "Bar chart of refusal rates per demographic group and cue type.")
    r = data.replies
    sc = data.scores
    if r.empty or sc.empty or not (sc["measure"] == "refusal").any():
        fo.missing = "no refusal scores are stored (the refusal scorer was not run)"
        return fo
    ref = sc[sc["measure"] == "refusal"][["request_key", "value"]]
    d = r[r["status"].isin(["ok", "content_filter"])][["request_key", "group", "cue_type", "status"]]
    d = d.merge(ref, on="request_key", how="left")
    d.loc[d["status"] == "content_filter", "value"] = 1.0
    d = d.dropna(subset=["value"])
    if d.empty:
        fo.missing = "no refusal scores are stored"
        return fo
    sns, Figure = _setup()
    d["group"] = d["group"].map(mpl_text)
    d["cue"] = d["cue_type"].map(lambda c: mpl_text(cue_short(c)))
    order = [mpl_text(g) for g in _group_order(r["group"].dropna().unique())]
    order = [g for g in order if g in set(d["group"])]
    fig = Figure(figsize=(7.0, 3.3))
    ax = fig.subplots()
    hue_order = [h for h in dict.fromkeys(["control", *sorted(d["cue"].unique())]) if h in set(d["cue"])]
    sns.barplot(data=d, x="group", y="value", hue="cue", order=order, hue_order=hue_order, ax=ax,
                errorbar=("ci", 95), n_boot=500, seed=0, err_kws={"linewidth": 1})
    ax.set_ylim(0, min(1.0, max(0.05, ax.get_ylim()[1])))  # error bars included by autoscaling
    ax.set_ylabel("refusal rate")
    ax.set_xlabel("")
    _group_axis(ax)
    return _finish(fo, fig)


def all_figures(data) -> list[FigureOut]:
    from .headline import primary_outcome

    spec = getattr(data, "spec", None)
    primary = primary_outcome(data.results, spec.analysis.outcomes if spec is not None else None, data.measures)
    out = []
    drawers = [("forest-primary", lambda d: forest_primary(d, primary))] + [
        (fn.__name__, fn) for fn in (distributions, forest, intersectional, probe_rates, refusals)]
    for name, fn in drawers:
        try:
            out.append(fn(data))
        except Exception as exc:  # noqa: BLE001 - a figure that fails must not take the report with it
            fo = FigureOut(f"fig-{name}", name.replace("_", " ").replace("-", " "), "", "")
            fo.missing = f"the figure could not be drawn ({type(exc).__name__}: {exc})"
            out.append(fo)
    return out


def skipped_figures() -> list[FigureOut]:
    """Placeholders when figures were not asked for (``render(..., figures=False)``)."""
    out = []
    for fn in (distributions, forest, intersectional, probe_rates, refusals):
        fo = FigureOut(f"fig-{fn.__name__}", fn.__name__.replace("_", " ").capitalize(), "", "")
        fo.missing = "figures were not drawn for this rendering (render with figures)"
        out.append(fo)
    return out
