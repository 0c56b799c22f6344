"""The report's figures (seaborn on matplotlib's object API, no pyplot state), as embedded PNGs.

Each function takes a :class:`~audit.report.data.ReportData` and returns a :class:`FigureOut` (a PNG
data URI plus title, caption and alt text) or one whose ``missing`` says why the figure is absent.
Labels are untrusted text too (group names come from user templates): every string that reaches
matplotlib passes :func:`mpl_text`, so a ``$`` cannot switch on mathtext and nothing is interpreted.

Figures that never mislead (issue 20), the policy every drawer follows:

- **No empty panels.** A panel with nothing estimable says so in words ("not estimable: <reason>",
  :func:`_note`) instead of showing an empty axis; a row that could not be estimated says "n/a" where
  its interval would be. :func:`panel_problems` checks a drawn figure for this (the tests use it).
- **Symmetric, labelled gap axes.** Every gap axis is symmetric around 0, with the no-gap reference
  line at 0, and its label states the unit: "% of the control mean", "percentage points" or
  "points on the 0–2 scale" (the measure's declared range).
- **One colour-blind-safe palette.** seaborn's ``colorblind`` palette (Wong 2011, *Nature Methods*
  8:441) everywhere, with one fixed colour per cue type in every figure (:func:`cue_colour`);
  diverging heat maps use ``vlag`` (blue-white-red, distinguishable under the common colour-vision
  deficiencies).
- **Alt text from the data.** Each figure's alt text is a sentence built from what it shows
  (outcomes, groups, how many intervals exclude 0).
- **No warnings on small designs.** Axis limits are never set to one value; seaborn's own
  deprecation warnings about matplotlib (its internals, not our use) are silenced narrowly
  (:func:`_quiet_library_deprecations`); anything else still warns.

:func:`draw_figures` returns the figures with their matplotlib ``Figure`` objects kept, for
inspection; :func:`all_figures` is what the report uses.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import textwrap
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..scorers.measures import MeasureCatalog
from .findings import cue_short, is_absolute, is_proportion, measure_of, outcome_label, scale_unit, short_reason
from .facts import SAMPLE_REPLIES

_ROW_H = 0.32  # inches per row in the forest plot
NOTE_GID = "panel-note"        # gid of the text that stands in for a panel with nothing to show
REFERENCE_GID = "reference-line"  # gid of the no-gap line (not data)
# Cue types in a fixed order, so that each keeps its colour in every figure of every report.
CUE_ORDER = ("pooled", "explicit_tag", "implicit_name", "explicit_statement", "implicit_context",
             "implicit_dialect")
AXIS_COLOURS = (9, 6, 4, 5)  # palette indexes of the demographic axes in the probe figure


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


def palette() -> list[tuple[float, float, float]]:
    """The one palette of every figure: seaborn's colour-blind-safe ``colorblind`` (10 colours)."""
    import seaborn as sns

    return list(sns.color_palette("colorblind"))


def series_colours() -> list[tuple[float, float, float]]:
    """Colours for series that are not cue types (models, scorers): :func:`palette` without its grey
    (reads as "no data") and yellow (faint on white)."""
    return [c for i, c in enumerate(palette()) if i not in (7, 8)]


def series_palette(n: int) -> list[tuple[float, float, float]]:
    """``n`` colours from :func:`series_colours` (cycled when there are more series than colours)."""
    pal = series_colours()
    return [pal[i % len(pal)] for i in range(n)]


def cue_colour(cue_type: str) -> tuple[float, float, float]:
    """The colour of a cue type, the same in every figure: the control and 'pooled' (all cues) take
    the first colour, known cue types the next ones in :data:`CUE_ORDER`, any other cue type one of
    two spare colours, fixed by its name."""
    pal = palette()
    c = "pooled" if str(cue_type) in ("control", "pooled") else str(cue_type)
    if c in CUE_ORDER:
        return pal[CUE_ORDER.index(c) % len(pal)]
    import zlib

    spare = (6, 9)  # pink, light blue: not grey (reads as "no data") and not yellow (faint on white)
    return pal[spare[zlib.crc32(c.encode("utf-8")) % len(spare)]]


@contextlib.contextmanager
def _quiet_library_deprecations():
    """Silence the deprecation warnings seaborn's internals raise against newer matplotlib (``vert``
    in boxplot, ``Colormap.set_bad`` in heatmap): they concern seaborn's code, not ours, and say
    nothing about the figure. Only those categories from seaborn's modules; every other warning
    (e.g. identical axis limits) still reaches the caller."""
    from matplotlib import MatplotlibDeprecationWarning

    with warnings.catch_warnings():
        for cat in (MatplotlibDeprecationWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=cat, module=r"seaborn(\..*)?$")
        yield


def _setup():
    import matplotlib

    matplotlib.rcParams.update({"text.usetex": False, "svg.fonttype": "none", "figure.max_open_warning": 0})
    import seaborn as sns
    from matplotlib.figure import Figure

    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0, palette="colorblind")
    return sns, Figure


def _encode(fig) -> tuple[str, int]:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    raw = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii"), len(raw)


def _finish(fo: FigureOut, fig, spare=(), layout: bool = True) -> FigureOut:
    """Hide the unused panels, lay out, encode; keep the Figure on ``fo.figure`` for inspection."""
    for ax in spare:
        ax.set_visible(False)
    if layout:
        fig.tight_layout()
    fo.data_uri, fo.png_bytes = _encode(fig)
    fo.figure = fig
    return fo


def _note(ax, text: str, *, keep_axes: bool = False) -> None:
    """Say in the panel why it shows nothing (instead of an empty axis). ``keep_axes``: leave the
    axes and their data as they are (the note sits on top)."""
    if not keep_axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(False)
    ax.text(0.5, 0.5, mpl_text(textwrap.fill(text, 44)), transform=ax.transAxes, ha="center", va="center",
            fontsize=8, color="0.25", gid=NOTE_GID,
            bbox=dict(boxstyle="round,pad=0.4", facecolor="white", edgecolor="0.7"))


def _symmetric_x(ax, *values) -> float:
    """Make the x axis symmetric around 0 (never one value: no 'identical limits' warning) and draw
    the no-gap reference line; return the half-width."""
    arr = np.concatenate([np.asarray(v, dtype=float).ravel() for v in values]) if values else np.array([])
    arr = arr[np.isfinite(arr)]
    span = float(np.max(np.abs(arr))) * 1.08 if arr.size else 0.0
    if not span > 0:
        span = 1.0
    ax.set_xlim(-span, span)
    ax.axvline(0, color="0.25", linewidth=0.9, linestyle="--", gid=REFERENCE_GID, zorder=1)
    return span


def _robust_x(ax, lo, hi, est, *, limit: float | None = None) -> float:
    """A symmetric axis around 0 whose half-width comes from a robust range, not from the widest
    interval: the larger of the largest |estimate| and the 75th percentile of the |bounds| (times 1.08),
    at most ``limit`` (the widest gap the outcome can take). One interval as wide as +-2000% then no
    longer squashes every other onto 0; intervals reaching past the axis are drawn by
    :func:`_interval` as arrows with their value. Returns the half-width."""
    e = np.abs(np.asarray(est, dtype=float))
    b = np.abs(np.concatenate([np.asarray(lo, dtype=float).ravel(), np.asarray(hi, dtype=float).ravel()]))
    e, b = e[np.isfinite(e)], b[np.isfinite(b)]
    span = max(float(e.max()) if e.size else 0.0, float(np.quantile(b, 0.75)) if b.size else 0.0) * 1.08
    if limit is not None and np.isfinite(limit) and limit > 0:
        span = min(span, limit * 1.02) if span > 0 else limit
    return _symmetric_x(ax, [span])


def _interval(ax, y: float, lo: float, hi: float, span: float, colour, fmt: str = "{:+.3g}", **line) -> int:
    """Draw one interval on an axis of half-width ``span``; an end beyond the axis becomes an arrow at
    the axis edge labelled with its value. Returns the number of ends drawn off-scale."""
    off = 0
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return 0
    a, b = max(lo, -span), min(hi, span)
    ax.plot([a, b], [y, y], color=colour, **line)
    for value, edge, sign in ((lo, -span, -1), (hi, span, 1)):
        if sign * value > span:
            off += 1
            ax.annotate("", xy=(edge, y), xytext=(edge - sign * 0.12 * span, y),
                        arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.2, mutation_scale=8))
            ax.text(edge - sign * 0.02 * span, y + 0.22, mpl_text(fmt.format(value)), fontsize=6,
                    ha="right" if sign > 0 else "left", va="bottom", color=colour)
    return off


def _has_data(ax) -> bool:
    """Whether a panel shows something: a finite line or marker (not the reference line), a bar of
    non-zero size, a collection with points or a colour mesh with values, an image, or a note."""
    for t in ax.texts:
        if t.get_gid() == NOTE_GID and t.get_text().strip():
            return True
    for ln in ax.lines:
        if ln.get_gid() == REFERENCE_GID or not ln.get_visible():
            continue
        x, y = (np.asarray(v, dtype=float) for v in ln.get_data())
        if x.size and (np.isfinite(x) & np.isfinite(y)).any():
            return True
    from matplotlib.patches import Rectangle

    for p in ax.patches:
        if not p.get_visible():
            continue
        if isinstance(p, Rectangle):
            if np.isfinite(p.get_height()) and np.isfinite(p.get_width()) and p.get_height() != 0 and p.get_width() != 0:
                return True
        else:
            return True
    for c in ax.collections:
        arr = c.get_array() if hasattr(c, "get_array") else None
        if arr is not None and np.size(arr) and np.isfinite(np.ma.filled(np.ma.asarray(arr, dtype=float), np.nan)).any():
            return True
        offs = c.get_offsets() if hasattr(c, "get_offsets") else []
        if len(offs) and np.isfinite(np.asarray(offs, dtype=float)).all(axis=1).any():
            return True
    return bool(ax.images)


def panel_problems(fo: FigureOut) -> list[str]:
    """Panels of a drawn figure (``fo.figure`` kept by :func:`draw_figures`) that show nothing and do
    not say why; empty when every visible panel has data or a note.

    >>> from matplotlib.figure import Figure
    >>> fig = Figure(); ax = fig.subplots(); _ = ax.set_title("Interpretations")
    >>> panel_problems(FigureOut("fig-x", "x", "", "", figure=fig))
    ["fig-x: panel 'Interpretations' is empty"]
    """
    if fo.figure is None:
        return []
    return [f"{fo.id}: panel {ax.get_title()!r} is empty" for ax in fo.figure.axes
            if ax.get_visible() and ax.get_label() != "<colorbar>" and not _has_data(ax)]


def _scale_label(outcome: str, catalog: MeasureCatalog | None) -> str:
    """The unit of an absolute gap, with the measure's range where declared ('points on the 0–2 scale')."""
    scale, unit = scale_unit(outcome, catalog)
    if scale == 100.0:
        return unit
    rng = _range(outcome, catalog)
    return f"{unit} on the {rng[0]:g}–{rng[1]:g} scale" if rng else unit


def _range(outcome: str, catalog: MeasureCatalog | None) -> tuple[float, float] | None:
    try:
        from ..scorers.measures import builtin_catalog

        m = (catalog or builtin_catalog()).measure(outcome)
        return tuple(m.range) if m.range is not None else None
    except Exception:  # noqa: BLE001 - an undeclared measure has no range
        return None


def _limit(outcome: str, catalog: MeasureCatalog | None, xlabel: str) -> float | None:
    """The widest gap the outcome can take, in the axis unit (its range's width; for a relative axis
    none), so an axis never runs past what the quantity can take."""
    if "%" in xlabel and "percentage" not in xlabel:
        return None
    r = _range(outcome, catalog)
    scale, _ = scale_unit(outcome, catalog)
    return (float(r[1]) - float(r[0])) * scale if r is not None else None


def _not_estimable_reason(d: pd.DataFrame) -> str:
    """Why the rows of ``d`` have no estimate, in a few words (their most common fit warning)."""
    if "warning" in d:
        reasons = [short_reason(w) for w in d["warning"].dropna() if str(w).strip()]
        if reasons:
            return pd.Series(reasons).value_counts().index[0]
    return "the model could not be fitted for these rows"


def _n_excluding_zero(lo: pd.Series, hi: pd.Series) -> int:
    lo, hi = pd.to_numeric(lo, errors="coerce"), pd.to_numeric(hi, errors="coerce")
    return int(((lo > 0) | (hi < 0)).sum())


def _group_order(groups) -> list[str]:
    g = sorted({str(x) for x in groups if str(x) != "control"})
    return (["control"] if "control" in {str(x) for x in groups} else []) + g


def _key_outcomes(outcomes: list[str], k: int = 4) -> list[str]:
    return outcomes[:k]


def _cue_legend(fig, cues: list[str], *, title: str = "cue type", y: float = 0.0) -> None:
    """One legend for the whole figure, below the panels (never over the data)."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=cue_colour(c), edgecolor="0.3", label=mpl_text(cue_short(c))) for c in cues]
    fig.legend(handles=handles, title=title, loc="lower center", bbox_to_anchor=(0.5, y), ncol=min(len(handles), 6),
               frameon=False, fontsize=8, title_fontsize=8)


def distributions(data) -> FigureOut:
    fo = FigureOut("fig-distributions", "Score distributions by group and cue type",
                   "Boxes: quartiles of the reply scores per group; colours: cue type (the control has no cue); "
                   "diamonds: means. Unanswered and unscored replies are left out.",
                   "Box plots of reply scores per demographic group, coloured by cue type.")
    df, n_answered = data.sample
    if df.empty:
        fo.missing = "no scored replies are stored"
        return fo
    n_drawn = df["request_key"].nunique()
    if n_answered > SAMPLE_REPLIES:  # a large run: the boxes are drawn from a fixed sample of its replies
        fo.caption += (f" Drawn from a sample of {n_drawn:,} of the {n_answered:,} answered replies (those with the "
                       "smallest request keys, which are SHA-256 content addresses: a fixed pseudo-random sample "
                       "independent of group, model and post); the means and SDs of every reply are in the "
                       "per-group summary table.")
    present = list(pd.unique(df["outcome"].astype(str)))
    seen = set(present)
    outcomes = [o for o in data.outcomes if o in seen or f"x.{o}" in seen]
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
    fig = Figure(figsize=(6.4 * cols, 3.4 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    plot = df.copy()
    plot["group"] = plot["group"].map(mpl_text)
    cue_types = sorted(set(plot["cue_type"].astype(str)), key=lambda c: (c != "control", c))
    plot["cue"] = plot["cue_type"].map(lambda c: mpl_text(cue_short(c)))
    order = [mpl_text(g) for g in groups]
    hue_order = [mpl_text(cue_short(c)) for c in cue_types]
    colours = {mpl_text(cue_short(c)): cue_colour(c) for c in cue_types}
    n_replies = 0
    for ax, outcome in zip(axes, want):
        d = plot[(plot["outcome"] == outcome) & plot["value"].notna()]
        ax.set_title(mpl_text(outcome_label(outcome, data.measures)))
        if d.empty:
            _note(ax, "not estimable: no scored replies for this outcome")
            continue
        n_replies = max(n_replies, len(d))
        with _quiet_library_deprecations():
            sns.boxplot(data=d, x="group", y="value", hue="cue", order=order, hue_order=hue_order, ax=ax,
                        palette=colours, saturation=1, showmeans=True, legend=False,
                        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black",
                                   "markersize": 4}, fliersize=2, linewidth=0.8)
        rng = _range(outcome, data.measures)
        ax.set_xlabel("")
        ax.set_ylabel(f"score ({rng[0]:g}–{rng[1]:g})" if rng else "score")
        _group_axis(ax)
    _cue_legend(fig, cue_types, y=0.0)
    labels = [outcome_label(o, data.measures) for o in want]
    fo.alt = (f"Box plots of the reply scores on {', '.join(labels)} for {len(groups)} groups "
              f"({', '.join(groups[:3])}{', …' if len(groups) > 3 else ''}), coloured by cue type "
              f"({', '.join(cue_short(c) for c in cue_types)}); {n_replies} scored replies per outcome.")
    fig.tight_layout(rect=(0, 0.5 / fig.get_figheight(), 1, 1))  # half an inch at the bottom for the legend
    return _finish(fo, fig, axes[n:], layout=False)


def _group_axis(ax) -> None:
    """Groups on the x axis (labels slanted to fit)."""
    ax.tick_params(axis="x", labelrotation=30)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")


def _gap_values(d: pd.DataFrame, outcome: str, catalog: MeasureCatalog | None = None,
                against: str = "control", *, adjusted: bool = False) -> tuple[pd.Series, pd.Series, pd.Series, str]:
    """(estimate, CI low, CI high, axis label with unit) of the gaps in ``d``, as the figures show them:
    relative to the comparison mean in %, or absolute (percentage points; points on the measure's
    scale) where the outcome is stated absolutely or a relative interval is missing for a row.
    ``adjusted``: the Holm-consistent intervals (``*_adj``) instead of the unadjusted 95% ones."""
    ref = pd.to_numeric(d["ref_mean"], errors="coerce").median() if "ref_mean" in d else None
    ref = float(ref) if ref is not None and np.isfinite(ref) else None
    num = lambda c: pd.to_numeric(d[c], errors="coerce") if c in d else pd.Series(np.nan, index=d.index)  # noqa: E731
    sfx = "_adj" if adjusted else ""
    has_est = num("estimate").notna()
    rel_missing = (num(f"rel_ci_low{sfx}").isna() | num(f"rel_ci_high{sfx}").isna()) & has_est
    if is_absolute(outcome, ref, catalog) or "relative_gap" not in d or rel_missing.any():
        scale, _ = scale_unit(outcome, catalog)
        return (num("estimate") * scale, num(f"ci_low{sfx}") * scale, num(f"ci_high{sfx}") * scale,
                f"gap vs {against} ({_scale_label(outcome, catalog)})")
    return (num("relative_gap") * 100, num(f"rel_ci_low{sfx}") * 100, num(f"rel_ci_high{sfx}") * 100,
            f"gap vs {against} (% of the {against} mean)")


def _panel_title(outcome: str, data, model: str | None, multi: bool) -> str:
    return outcome_label(outcome, data.measures) + (f" — {model}" if model is not None and multi else "")


def forest(data) -> FigureOut:
    fo = FigureOut("fig-forest", "Every gap versus the control, with 95% confidence intervals",
                   "One row per group and cue type (pooled over prompt styles where the analysis pooled them). "
                   "Filled markers: significant after Holm correction across the whole family of tests; hollow: "
                   "not significant; n/a: not estimable. 95% CIs, unadjusted (the Holm-adjusted p-values decide "
                   "significance). Each axis is symmetric around the dashed no-gap line; an interval reaching past "
                   "the axis ends in an arrow labelled with its bound.",
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
    sel = lambda m, o: d[(d["outcome"] == o) & ((d["model_label"] == m) if m is not None else True)]  # noqa: E731
    panels = [(m, o) for m in models for o in outcomes if not sel(m, o).empty]
    if not panels:
        fo.missing = "the results table has no rows"
        return fo
    cols = min(3, len(panels))
    nrows_panel = math.ceil(len(panels) / cols)
    rows_per = max(len(sel(m, o)) for m, o in panels)
    # Large designs (many groups x cue types) get thinner rows, so a panel stays under ~12 inches.
    row_h = min(_ROW_H, 12.0 / max(rows_per, 1))
    tick_fs = 7 if row_h >= 0.2 else 5.5
    fig = Figure(figsize=(4.2 * cols + 1.6, nrows_panel * (rows_per * row_h + 1.1) + 0.5))
    axes = np.atleast_1d(fig.subplots(nrows_panel, cols, squeeze=False)).ravel()
    cue_types = sorted(set(d["cue_type"].astype(str)), key=lambda c: (CUE_ORDER.index(c) if c in CUE_ORDER else 99, c))
    n_rows = n_excl = 0
    not_est = []
    for ax, (m, o) in zip(axes, panels):
        sub = sel(m, o).copy()
        sub["_c"] = sub["cue_type"].map(lambda c: cue_types.index(str(c)))
        sub = sub.sort_values(["group", "_c"], ascending=[False, False]).reset_index(drop=True)
        est, lo, hi, xlabel = _gap_values(sub, o, data.measures, against=_against(data))
        ax.set_title(mpl_text(_panel_title(o, data, m, len(models) > 1)), fontsize=9)
        finite = est.notna() & lo.notna() & hi.notna()
        if not finite.any():
            _note(ax, f"not estimable: {_not_estimable_reason(sub)}")
            not_est.append(outcome_label(o, data.measures))
            continue
        y = np.arange(len(sub))
        sig = sub["significant_holm"].fillna(False).astype(bool) if "significant_holm" in sub else \
            pd.Series(False, index=sub.index)
        for i in range(len(sub)):
            c = cue_colour(sub["cue_type"].iloc[i])
            if not finite.iloc[i]:
                ax.text(0, y[i], "n/a", ha="center", va="center", fontsize=6.5, color="0.35")
                continue
            ax.plot([est.iloc[i]], [y[i]], marker="o", markersize=5.5, color=c,
                    markerfacecolor=c if sig.iloc[i] else "white", markeredgewidth=1.4)
        span = _robust_x(ax, lo[finite], hi[finite], est[finite], limit=_limit(o, data.measures, xlabel))
        for i in np.flatnonzero(finite.to_numpy()):
            _interval(ax, y[i], lo.iloc[i], hi.iloc[i], span, cue_colour(sub["cue_type"].iloc[i]), linewidth=1.4)
        n_rows += int(finite.sum())
        n_excl += _n_excluding_zero(lo[finite], hi[finite])
        ax.set_yticks(y)
        ax.set_yticklabels([mpl_text(f"{g} · {cue_short(c)}") for g, c in zip(sub["group"], sub["cue_type"])],
                           fontsize=tick_fs)
        ax.set_ylim(-0.7, len(sub) - 0.3)
        ax.set_xlabel(mpl_text(xlabel), fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=cue_colour(c), marker="o", linestyle="-", label=mpl_text(cue_short(c)))
               for c in cue_types]
    handles += [Line2D([], [], color="0.2", marker="o", linestyle="", label="significant (Holm)"),
                Line2D([], [], color="0.2", marker="o", markerfacecolor="white", linestyle="",
                       label="not significant")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False, fontsize=8,
               bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    groups = sorted(set(d["group"].astype(str)))
    fo.alt = (f"Forest plot of the gaps versus the control in {len(panels)} outcome panels, for {len(groups)} groups "
              f"and {len(cue_types)} cue types ({', '.join(cue_short(c) for c in cue_types)}); {n_excl} of "
              f"{n_rows} 95% intervals exclude 0"
              + (f"; not estimable: {', '.join(not_est)}" if not_est else "") + ".")
    n_sig = int(d["significant_holm"].fillna(False).astype(bool).sum()) if "significant_holm" in d else 0
    fo.section_title = "Every gap by cue type"
    fo.fold_summary = (f"Show the forest plot of all {len(d)} gaps versus the control, per outcome and cue type "
                       f"({n_sig} significant after Holm correction; {n_excl} of {n_rows} intervals exclude 0)")
    return _finish(fo, fig, layout=False)


def _control(data) -> str:
    return str(data.spec.analysis.reference) if getattr(data, "spec", None) is not None else "control"


def _against(data) -> str:
    """What the gaps are against, as a label says it: ``control``, or the reference group of a run
    without a control (in quotes)."""
    ref = _control(data)
    return "control" if ref == "control" else f"\u201c{ref}\u201d"


#: Phrases of figure texts that name the control, and what they say in a run without one ({ref}: the
#: reference group), in order (the longer phrases first).
_NO_CONTROL = (
    (" (the control has no cue)", ""),
    ("% of the control mean", "% of the mean of {ref}"),
    ("versus the control", "versus the reference group {ref}"),
    ("versus control", "versus the reference group {ref}"),
    ("vs control", "vs {ref}"),
    ("below the control", "below {ref}"),
    ("above the control", "above {ref}"),
    ("against the control", "against the reference group {ref}"),
    ("the control", "the reference group {ref}"),
)


def without_control(text: str | None, reference: str) -> str | None:
    """A figure's text for a run without a control: every mention of the control becomes the
    reference group the gaps are taken against.

    >>> without_control("Every gap versus the control (% of the control mean)", "White")
    'Every gap versus the reference group “White” (% of the mean of “White”)'
    """
    if not text:
        return text
    ref = f"\u201c{reference}\u201d"
    for old, new in _NO_CONTROL:
        text = text.replace(old, new.format(ref=ref))
    return text


def forest_primary(data, outcome: str | None) -> FigureOut:
    """The first screen's figure: the primary outcome's pooled gap of each group against the control
    and against its reference group, 95% CIs, on a symmetric axis around the no-gap line (colour-blind
    safe palette; filled = significant after Holm)."""
    label = outcome_label(outcome, data.measures) if outcome else "the primary outcome"
    fo = FigureOut("fig-forest-primary", f"{label}: each group against the control and its reference group",
                   "Pooled over prompt styles and cue types; intervals at the family's Holm-consistent level (they "
                   "exclude 0 exactly when the Holm p is below alpha). Filled markers: significant after Holm "
                   "correction across the whole family; hollow: not significant. The dashed line is no gap; an "
                   "interval reaching past the axis ends in an arrow labelled with its bound.",
                   f"Forest plot of {label}: for each group, the gap versus the control and versus its reference "
                   "group, with Holm-consistent confidence intervals, on an axis symmetric around zero.")
    ppi = getattr(data, "tables", {}).get("results_ppi")
    if ppi is not None and not ppi.empty and (ppi["outcome"].astype(str) == str(outcome)).any():
        fo.caption = "Automated scores. " + fo.caption + " The gaps corrected with human ratings are in the table."
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
    pal = palette()
    groups = sorted(set(d["group"].astype(str)), reverse=True)
    ctrl = _control(data)
    kinds = [("control", d["reference"].astype(str) == ctrl), ("reference group", d["reference"].astype(str) != ctrl)]
    colours = (pal[0], pal[3])  # blue and vermillion: apart for every common colour-vision deficiency
    adjusted = "ci_low_adj" in d and pd.to_numeric(d["ci_low_adj"], errors="coerce").notna().any()
    est, lo, hi, xlabel = _gap_values(d, outcome, data.measures, adjusted=adjusted)
    if not adjusted:  # results analysed before the Holm-consistent intervals existed
        fo.caption = fo.caption.replace("intervals at the family's Holm-consistent level (they exclude 0 exactly "
                                        "when the Holm p is below alpha)", "95% CIs, unadjusted")
    xlabel = xlabel.replace("gap vs control", "gap").replace("% of the control mean", "% of the comparison mean")
    height = max(0.34 * len(groups) + 1.3, 2.2)  # room for the legend below a single group
    fig = Figure(figsize=(5.6, height))
    ax = fig.subplots()
    marks: list[tuple[float, int, Any]] = []
    for k, (name, mask) in enumerate(kinds):
        c = colours[k]
        for i, g in enumerate(groups):
            rows = np.flatnonzero((mask & (d["group"].astype(str) == g)).to_numpy())
            if not len(rows):
                continue
            j = rows[0]
            y = i + (0.16 if k == 0 else -0.16)
            sig = bool(d["significant_holm"].iloc[j]) if "significant_holm" in d else False
            if not np.isfinite(est.iloc[j]):  # not estimable: no marker (the table says why)
                continue
            ax.plot([est.iloc[j]], [y], marker="o" if k == 0 else "s", markersize=6, color=c,
                    markerfacecolor=c if sig else "white", markeredgewidth=1.4)
            marks.append((y, j, c))
    span = _robust_x(ax, lo, hi, est, limit=_limit(outcome, data.measures, xlabel))
    for y, j, c in marks:
        _interval(ax, y, lo.iloc[j], hi.iloc[j], span, c, linewidth=1.6)
    ax.set_yticks(np.arange(len(groups)))
    ax.set_yticklabels([mpl_text(g) for g in groups], fontsize=8)
    ax.set_ylim(-0.7, len(groups) - 0.3)
    ax.set_xlabel(mpl_text(xlabel), fontsize=8)
    from matplotlib.lines import Line2D

    refs = sorted(set(d.loc[kinds[1][1], "reference"].astype(str)))
    handles = [Line2D([], [], color=colours[0], marker="o", label=mpl_text(f"vs {_against(data)}"))]
    if refs:
        handles.append(Line2D([], [], color=colours[1], marker="s",
                              label=mpl_text("vs reference group (" + ", ".join(refs) + ")")))
    # the legend ~0.66 in below the axes whatever their height (a fixed axes fraction overlapped the
    # axis label of a one-group plot); the same place as before for the demo's eight groups
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.66 / max(height - 1.0, 0.3)),
              ncol=2, frameon=False)
    n_ctrl, n_ref = int(kinds[0][1].sum()), int(kinds[1][1].sum())
    excl = _n_excluding_zero(lo, hi)
    fo.alt = (f"Forest plot of {label}: gaps of {n_ctrl} groups versus the control"
              + (f" and of {n_ref} versus their reference group ({', '.join(refs)})" if n_ref else "")
              + f", with {'Holm-consistent' if adjusted else 'unadjusted 95%'} confidence intervals on an axis symmetric "
              f"around zero; {excl} of {n_ctrl + n_ref} "
              f"intervals exclude 0.")
    return _finish(fo, fig)


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
        if "reference" in df:  # the heat map is about the control; gaps to reference groups are elsewhere
            df = df[df["reference"].astype(str) == _control(data)]
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
    sns, Figure = _setup()
    row_ax = axes[0]
    col_ax = axes[1] if len(axes) > 1 else None
    all_panels = [(m, o) for m in sorted(df["model_label"].astype(str).unique())
                  for o in sorted(df["outcome"].unique(), key=lambda x: data.outcomes.index(x)
                                  if x in data.outcomes else 99)]
    panels = all_panels[:6]
    fo.caption = (("Partially pooled cell estimates" if src == ["results_intersectional"] else
                   "Gaps pooled over cue types") + " for each intersection; relative gaps in % of the control "
                  "mean (proportions: percentage points; unbounded scores: points), as each panel's title says. "
                  "Blue: below the control; red: above; the colour scale is symmetric around 0."
                  + (f" The first {len(panels)} of {len(all_panels)} outcome panels are shown; every cell is in "
                     "the intersectional table below." if len(all_panels) > len(panels) else ""))
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.0 * cols, 2.9 * nrows))
    axs = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    multi = df["model_label"].nunique() > 1
    biggest: tuple[float, str] = (0.0, "")
    n_cells = 0
    for ax, (m, o) in zip(axs, panels):
        sub = df[(df["model_label"].astype(str) == m) & (df["outcome"] == o)].copy()
        sub[row_ax] = sub[row_ax].map(mpl_text)
        ref = pd.to_numeric(sub["ref_mean"], errors="coerce").median() if "ref_mean" in sub else 1.0
        unit = ("pp" if is_proportion(o, data.measures) else "points") if is_absolute(o, ref, data.measures) \
            else f"% of {_against(data)}"
        ax.set_title(mpl_text(f"{outcome_label(o, data.measures)}, gap in {unit}" + (f" — {m}" if multi else "")),
                     fontsize=9)
        sub["value"] = pd.to_numeric(sub["value"], errors="coerce")
        if col_ax:
            sub[col_ax] = sub[col_ax].map(mpl_text)
            grid = sub.pivot_table(index=row_ax, columns=col_ax, values="value", aggfunc="mean", dropna=False)
        else:
            grid = sub.pivot_table(index=row_ax, values="value", aggfunc="mean", dropna=False)
        vals = grid.to_numpy(dtype=float)
        if not vals.size or not np.isfinite(vals).any():
            _note(ax, f"not estimable: {_not_estimable_reason(sub) if 'warning' in sub else 'no cell has an estimate'}")
            continue
        lim = float(np.nanmax(np.abs(vals)))
        lim = lim if lim > 0 else 1.0  # all cells 0: a scale of one value would be meaningless
        with _quiet_library_deprecations():
            sns.heatmap(grid, ax=ax, annot=True, fmt=".1f", cmap="vlag", center=0, vmin=-lim, vmax=lim,
                        cbar=True, linewidths=0.5, annot_kws={"fontsize": 8}, cbar_kws={"label": unit})
        n_cells += int(np.isfinite(vals).sum())
        k = np.unravel_index(np.nanargmax(np.abs(vals)), vals.shape)
        if abs(vals[k]) > abs(biggest[0]):
            biggest = (float(vals[k]), f"{outcome_label(o, data.measures)}, {grid.index[k[0]]}"
                       + (f" {grid.columns[k[1]]}" if col_ax else "") + f" ({unit})")
        ax.set_ylabel(mpl_text(row_ax))
        ax.set_xlabel(mpl_text(col_ax) if col_ax else "")
        if not col_ax:
            ax.set_xticks([])
    fo.alt = (f"Heat maps of the gap versus the control in each {row_ax}{' × ' + col_ax if col_ax else ''} cell, "
              f"{len(panels)} outcome panels, {n_cells} cells"
              + (f"; the largest in size is {biggest[0]:+.1f} for {biggest[1]}" if biggest[1] else "") + ".")
    fo.section_title = "Intersectional cells"
    fo.fold_summary = (f"Show the heat map of gaps versus the control in each {row_ax}"
                       f"{' × ' + col_ax if col_ax else ''} cell ({len(panels)} outcome panels, {n_cells} cells)")
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
    pal = palette()
    width = 0.8 / max(1, len(axes_names))
    for ax, m in zip(axs, models):
        sub = d[d["model_label"].astype(str) == m] if "model_label" in d.columns else d
        for j, a in enumerate(axes_names):
            s = sub[sub["axis"] == a].set_index("cue").reindex(cues)
            x = np.arange(len(cues)) - 0.4 + width * (j + 0.5)
            # demographic axes take colours no built-in cue type uses first (light blue, pink, purple,
            # brown), never yellow (too faint on white)
            ax.bar(x, s[rate_col], width=width * 0.95, color=pal[AXIS_COLOURS[j % len(AXIS_COLOURS)]], label=a)
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
        ax.set_ylabel("share of variants inferred (0–1)")
        if len(models) > 1:
            ax.set_title(mpl_text(m), fontsize=9)
        if not pd.to_numeric(sub[rate_col], errors="coerce").notna().any():
            _note(ax, "not estimable: the probe stored no rate for this model")
        elif not (pd.to_numeric(sub[rate_col], errors="coerce").fillna(0) > 0).any():
            _note(ax, "the probe never named the intended demographic (rate 0 for every cue type)", keep_axes=True)
        ax.legend(title="axis", fontsize=7, title_fontsize=8, frameon=False, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))
    rates = pd.to_numeric(d[rate_col], errors="coerce")
    fo.alt = (f"Bar chart of the share of variants for which the model inferred the intended demographic, for "
              f"{len(cues)} cue types ({', '.join(cues)}) and {len(axes_names)} axes ({', '.join(axes_names)})"
              + (f"; rates from {rates.min():.0%} to {rates.max():.0%}" if rates.notna().any() else "") + ".")
    return _finish(fo, fig, axs[len(models):])


def refusals(data) -> FigureOut:
    fo = FigureOut("fig-refusals", "Refusal rates by group",
                   "Share of answered replies the refusal scorer flagged as a refusal, per group and cue type, with "
                   "95% bootstrap confidence intervals. Replies blocked by a content filter are counted as "
                   "refusals here.",
                   "Bar chart of refusal rates per demographic group and cue type.")
    if not data.has_replies or not any(m == "refusal" for _, m, _ in data.score_outcomes):
        fo.missing = "no refusal scores are stored (the refusal scorer was not run)"
        return fo
    st = data.status_counts
    n_answered = int(st.loc[st["status"].isin(["ok", "content_filter"]), "n"].sum())
    if n_answered > SAMPLE_REPLIES:  # a large run: rates and Wilson intervals from SQL counts
        if st.loc[st["status"] == "content_filter", "n"].sum() == 0:  # answered = ok: the group summary's sums
            gs = data.group_summary
            gs = gs[gs["outcome"].astype(str).str.rpartition(".")[2] == "refusal"]
            counts = gs.groupby(["group", "cue_type"], sort=True)[["n", "sum"]].sum().reset_index()
            counts = counts.rename(columns={"group": "grp", "sum": "refused"})
        else:
            counts = data.facts.refusal_counts()
        return _refusals_from_counts(fo, counts)
    d = data.facts.refusal_rows()  # a small run: one row per answered reply, bootstrap intervals as before
    d = d.dropna(subset=["value"])
    if d.empty:
        fo.missing = "no refusal scores are stored"
        return fo
    sns, Figure = _setup()
    d["group"] = d["group"].map(mpl_text)
    cue_types = sorted(set(d["cue_type"].astype(str)), key=lambda c: (c != "control", c))
    d["cue"] = d["cue_type"].map(lambda c: mpl_text(cue_short(c)))
    order = [mpl_text(g) for g in _group_order(d["group"].dropna().unique())]
    order = [g for g in order if g in set(d["group"])]
    fig = Figure(figsize=(7.0, 3.3))
    ax = fig.subplots()
    hue_order = [mpl_text(cue_short(c)) for c in cue_types]
    colours = {mpl_text(cue_short(c)): cue_colour(c) for c in cue_types}
    n_refused = int((d["value"] >= 0.5).sum())
    with _quiet_library_deprecations():
        sns.barplot(data=d, x="group", y="value", hue="cue", order=order, hue_order=hue_order, ax=ax,
                    palette=colours, saturation=1, errorbar=("ci", 95) if n_refused else None, n_boot=500, seed=0,
                    err_kws={"linewidth": 1})
    ax.set_ylim(0, min(1.0, max(0.05, ax.get_ylim()[1])))  # error bars included by autoscaling
    ax.set_ylabel("refusal rate (share of answered replies)")
    ax.set_xlabel("")
    _group_axis(ax)
    leg = ax.get_legend()
    if leg is not None:
        leg.set_title("cue type")
    if not n_refused:  # bars of height 0 are invisible: say what they mean
        _note(ax, f"no reply was flagged as a refusal (0 of {len(d)} answered replies, every group)", keep_axes=True)
    rates = d.groupby("group")["value"].mean()
    fo.alt = (f"Bar chart of refusal rates for {len(order)} groups by cue type; {n_refused} of {len(d)} answered "
              f"replies were refusals"
              + (f"; the highest rate is {rates.max():.0%} ({rates.idxmax()})" if n_refused else "") + ".")
    return _finish(fo, fig)


def _refusals_from_counts(fo: FigureOut, counts: pd.DataFrame) -> FigureOut:
    """The refusal bar chart of a large run: each bar the exact share of refused answered replies of a
    group and cue type (SQL counts), with its 95% Wilson score interval (Wilson 1927; for k of n,
    centre (k + z^2/2) / (n + z^2), half-width z sqrt(k(n-k)/n + z^2/4) / (n + z^2)) instead of the
    bootstrap a small run's chart resamples its replies for."""
    from scipy.stats import norm

    counts = counts[counts["n"] > 0]
    if counts.empty:
        fo.missing = "no refusal scores are stored"
        return fo
    fo.caption = fo.caption.replace("95% bootstrap confidence intervals", "95% Wilson intervals from the counts")
    z = float(norm.ppf(0.975))
    n = counts["n"].to_numpy(float)
    k = counts["refused"].to_numpy(float)
    rate = k / n
    centre = (k + z * z / 2) / (n + z * z)
    half = z * np.sqrt(np.maximum(k * (n - k) / n, 0) + z * z / 4) / (n + z * z)
    counts = counts.assign(rate=rate, lo=centre - half, hi=centre + half)
    _, Figure = _setup()
    groups = _group_order(counts["grp"].astype(str).unique())
    cue_types = sorted(set(counts["cue_type"].astype(str)), key=lambda c: (c != "control", c))
    fig = Figure(figsize=(7.0, 3.3))
    ax = fig.subplots()
    width = 0.8 / max(len(cue_types), 1)
    n_refused = int(k.sum())
    for j, c in enumerate(cue_types):
        sub = counts[counts["cue_type"].astype(str) == c].set_index("grp")
        xs = [i - 0.4 + width * (j + 0.5) for i, g in enumerate(groups) if g in sub.index]
        rows = sub.loc[[g for g in groups if g in sub.index]]
        ax.bar(xs, rows["rate"], width, color=cue_colour(c), label=mpl_text(cue_short(c)))
        if n_refused:
            ax.errorbar(xs, rows["rate"], yerr=[rows["rate"] - rows["lo"], rows["hi"] - rows["rate"]], fmt="none",
                        ecolor="0.25", elinewidth=1)
    ax.set_xticks(range(len(groups)), [mpl_text(g) for g in groups])
    ax.set_ylim(0, min(1.0, max(0.05, float(counts["hi"].max()) * 1.05)))
    ax.set_ylabel("refusal rate (share of answered replies)")
    _group_axis(ax)
    ax.legend(title="cue type", fontsize=8, title_fontsize=8, frameon=False)
    total = int(n.sum())
    if not n_refused:
        _note(ax, f"no reply was flagged as a refusal (0 of {total} answered replies, every group)", keep_axes=True)
    by_group = counts.groupby("grp")[["refused", "n"]].sum()
    rates = by_group["refused"] / by_group["n"]
    fo.alt = (f"Bar chart of refusal rates for {len(groups)} groups by cue type; {n_refused} of {total} answered "
              f"replies were refusals"
              + (f"; the highest rate is {rates.max():.0%} ({rates.idxmax()})" if n_refused else "") + ".")
    return _finish(fo, fig)


def draw_figures(data, *, keep: bool = True, strict: bool = False) -> list[FigureOut]:
    """Every figure of the report, in order (the first screen's forest plot first). ``keep``: each
    :class:`FigureOut` keeps its matplotlib ``Figure`` on ``.figure`` (for :func:`panel_problems` and
    other inspection). ``strict``: a drawer that fails raises, instead of becoming a figure that says
    it could not be drawn (what a report does)."""
    from .headline import primary_outcome

    spec = getattr(data, "spec", None)
    primary = primary_outcome(data.results, spec.analysis.outcomes if spec is not None else None, data.measures,
                              primary=getattr(spec.analysis, "primary", None) if spec is not None else None)
    out = []
    drawers = [("forest-primary", lambda d: forest_primary(d, primary))] + [
        (fn.__name__, fn) for fn in (distributions, forest, intersectional, probe_rates, refusals)]
    for name, fn in drawers:
        try:
            fo = fn(data)
        except Exception as exc:  # noqa: BLE001 - a figure that fails must not take the report with it
            if strict:
                raise
            fo = FigureOut(f"fig-{name}", name.replace("_", " ").replace("-", " "), "", "")
            fo.missing = f"the figure could not be drawn ({type(exc).__name__}: {exc})"
        if not keep:
            fo.figure = None
        if _control(data) != "control":  # no control: the texts name the reference group instead
            for attr in ("title", "caption", "alt", "missing", "fold_summary", "section_title"):
                setattr(fo, attr, without_control(getattr(fo, attr), _control(data)))
        out.append(fo)
    return out


def all_figures(data) -> list[FigureOut]:
    """The report's figures, encoded (no matplotlib objects kept)."""
    return draw_figures(data, keep=False)


def skipped_figures() -> list[FigureOut]:
    """Placeholders when figures were not asked for (``render(..., figures=False)``)."""
    out = []
    for fn in (distributions, forest, intersectional, probe_rates, refusals):
        fo = FigureOut(f"fig-{fn.__name__}", fn.__name__.replace("_", " ").capitalize(), "", "")
        fo.missing = "figures were not drawn for this rendering (render with figures)"
        out.append(fo)
    return out
