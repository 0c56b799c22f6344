"""Does a conclusion depend on the instrument? Gaps of several scorers of one mechanism side by side,
and gaps corrected with human ratings.

**Same mechanism.** Outcomes are ``scorer.measure``; every scorer of the EPITOME levels (``epitome``,
``llm-judge``, ``hf-classifier``, an imported ``published`` scorer, ``epitome-plus``) declares the
same measure names (``ER``, ``IP``, ``EX``, ``empathy``; :data:`audit.scorers.epitome.EPITOME_MEASURES`),
so the measure name *is* the mechanism: ``epitome.ER`` and ``llm-judge.ER`` measure one construct,
and ``ER>0`` (any emotional reaction) is a mechanism of its own. Human ratings enter as two more
"scorers" of a mechanism from ``results_ppi`` (:mod:`audit.stats.ppi`): the PPI-corrected gap and
the human-only gap (significant where the 95% CI excludes 0, uncorrected: they are not in the
family).

**Flags.** For each mechanism, model, group and reference with two or more scorers, the conclusion
*depends on the scorer* when (a) one scorer calls the gap significant after correction and another
does not, or (b) a scorer calls it significant and another's estimate has the opposite sign.

:func:`comparison_table` and :func:`scorer_flags` are pandas in, pandas out; :func:`comparison_section`
and :func:`ppi_section` build what the report templates show; :func:`comparison_figure` draws the
forest plot (one colour per scorer).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..scorers.measures import MeasureCatalog
from .figures import FigureOut, _finish, _setup, _symmetric_x, mpl_text, series_colours
from .findings import _finite, outcome_label

__all__ = ["comparison_table", "scorer_flags", "comparison_section", "comparison_figure", "ppi_section",
           "HUMAN_SOURCES", "LEAD"]

#: How the two human-rating estimates are named as scorers of a mechanism.
HUMAN_SOURCES = {"ppi": "humans (PPI-corrected)", "human": "humans (rated replies only)"}
#: Which of the three estimates the summary leads with, and why (shown in the report).
LEAD = ("The PPI-corrected gap leads: it is on the human scale (unbiased whatever the scorer's error, also an "
        "error that differs by group, when the rated replies are a random sample) and its CI is narrower than the "
        "human-only one because the scorer's values on every reply carry the information the ratings calibrate. "
        "The automated gap is shown for comparison: where its CI misses the PPI estimate, the scorer's error "
        "changes the gap.")


def _mechanism(outcome: str) -> str:
    return str(outcome).rpartition(".")[2]


def _scorer(outcome: str) -> str:
    return str(outcome).rpartition(".")[0] or str(outcome)


def comparison_table(results: pd.DataFrame | None, ppi: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pooled gaps (style and cue type pooled) of every mechanism scored by two or more sources.

    Columns: ``mechanism, model_label, group, reference, scorer, outcome, estimate, ci_low, ci_high,
    significant, p_holm``; ``scorer`` is the scorer's name, or a :data:`HUMAN_SOURCES` name for the
    gaps from human ratings (``results_ppi``).
    """
    cols = ["mechanism", "model_label", "group", "reference", "scorer", "outcome", "estimate", "ci_low", "ci_high",
            "significant", "p_holm"]
    parts = []
    if results is not None and not results.empty:
        r = results
        for c in ("style", "cue_type"):
            if c in r.columns:
                r = r[r[c].astype(str) == "pooled"]
        r = r[pd.to_numeric(r["estimate"], errors="coerce").notna()]
        parts.append(pd.DataFrame(dict(
            mechanism=r["outcome"].map(_mechanism), model_label=r.get("model_label", "model"), group=r["group"],
            reference=r["reference"], scorer=r["outcome"].map(_scorer), outcome=r["outcome"], estimate=r["estimate"],
            ci_low=r["ci_low"], ci_high=r["ci_high"], significant=r["significant_holm"].fillna(False).astype(bool),
            p_holm=r["p_holm"])))
    if ppi is not None and not ppi.empty:
        p = ppi[ppi["kind"].isin(list(HUMAN_SOURCES)) & pd.to_numeric(ppi["estimate"], errors="coerce").notna()]
        # one human estimate per mechanism (the ratings are the same whichever scorer PPI corrected):
        # the first scorer in name order stands for it, its PPI estimate being that scorer's correction
        p = p.assign(mechanism=p["outcome"].map(_mechanism)).sort_values("outcome")
        p = p.drop_duplicates(["mechanism", "model_label", "group", "reference", "kind"])
        parts.append(pd.DataFrame(dict(
            mechanism=p["mechanism"], model_label=p["model_label"], group=p["group"], reference=p["reference"],
            scorer=p["kind"].map(HUMAN_SOURCES), outcome=p["outcome"], estimate=p["estimate"], ci_low=p["ci_low"],
            ci_high=p["ci_high"], significant=(p["ci_low"] > 0) | (p["ci_high"] < 0), p_holm=np.nan)))
    if not parts:
        return pd.DataFrame(columns=cols)
    t = pd.concat(parts, ignore_index=True)[cols]
    n = t.groupby(["mechanism", "model_label"])["scorer"].transform("nunique")
    return t[n >= 2].sort_values(["mechanism", "model_label", "group", "reference", "scorer"]).reset_index(drop=True)


def scorer_flags(table: pd.DataFrame) -> pd.DataFrame:
    """One row per mechanism, model, group and reference with two or more scorers: ``depends``
    (True when the conclusion depends on the scorer) and ``reason`` (module docstring's rules)."""
    rows = []
    for key, d in table.groupby(["mechanism", "model_label", "group", "reference"], sort=True):
        if d["scorer"].nunique() < 2:
            continue
        sig = d[d["significant"]]
        reasons = []
        if 0 < len(sig) < len(d):
            reasons.append("significant with " + ", ".join(sig["scorer"]) + "; not with "
                           + ", ".join(d.loc[~d["significant"], "scorer"]))
        signs = np.sign(pd.to_numeric(d["estimate"], errors="coerce"))
        if len(sig) and (signs > 0).any() and (signs < 0).any():
            up = d.loc[signs > 0, "scorer"]
            down = d.loc[signs < 0, "scorer"]
            reasons.append("the sign differs: higher with " + ", ".join(up) + "; lower with " + ", ".join(down))
        rows.append(dict(zip(["mechanism", "model_label", "group", "reference"], key), n_scorers=int(d["scorer"].nunique()),
                         depends=bool(reasons), reason="; ".join(reasons)))
    return pd.DataFrame(rows, columns=["mechanism", "model_label", "group", "reference", "n_scorers", "depends", "reason"])


def _fmt(x: Any) -> str:
    return f"{float(x):+.3f}" if _finite(x) else "n/a"


def comparison_figure(table: pd.DataFrame, catalog: MeasureCatalog | None = None) -> FigureOut:
    """Forest plot: each mechanism's gaps per group, one colour per scorer, 95% CIs; filled markers
    are significant (after correction for scorers; CI excluding 0 for human ratings)."""
    fo = FigureOut("fig-scorer-comparison", "The same gaps measured by different scorers",
                   "Pooled gaps with 95% CIs, one colour per scorer (human ratings included where stored). Filled: "
                   "significant (scorers: after the family's correction; human ratings: CI excludes 0).",
                   "Forest plot comparing the gaps of each group as measured by each scorer of the same mechanism.")
    if table.empty:
        fo.missing = "no mechanism is scored by two or more scorers"
        return fo
    _, Figure = _setup()
    scorers = sorted(table["scorer"].unique())
    # the report's one palette (figures.palette), less grey (reads as "no data") and yellow (faint on white)
    pal = series_colours()
    colour = {s: pal[i % len(pal)] for i, s in enumerate(scorers)}
    panels = list(table.groupby(["mechanism", "model_label"], sort=True))
    heights = [max(1, d[["group", "reference"]].drop_duplicates().shape[0]) for _, d in panels]
    fig = Figure(figsize=(6.2, sum(0.22 * len(scorers) * h + 0.9 for h in heights) + 0.4))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, gridspec_kw=dict(height_ratios=heights)))
    step = 0.8 / max(len(scorers), 1)
    for ax, ((mech, model), d) in zip(axes, panels):
        rows = list(d[["group", "reference"]].drop_duplicates().itertuples(index=False, name=None))
        for i, (g, ref) in enumerate(rows):
            for k, s in enumerate(scorers):
                e = d[(d["group"] == g) & (d["reference"] == ref) & (d["scorer"] == s)]
                if e.empty:
                    continue
                e = e.iloc[0]
                y = i + 0.4 - (k + 0.5) * step
                ax.plot([e["ci_low"], e["ci_high"]], [y, y], color=colour[s], linewidth=1.4)
                ax.plot([e["estimate"]], [y], marker="o", markersize=5, color=colour[s],
                        markerfacecolor=colour[s] if e["significant"] else "white", markeredgewidth=1.2)
        _symmetric_x(ax, d["ci_low"], d["ci_high"], d["estimate"])  # like every gap axis of the report
        ax.set_yticks(np.arange(len(rows)))
        ax.set_yticklabels([mpl_text(f"{g} vs {r}") for g, r in rows], fontsize=7)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_title(mpl_text(f"{outcome_label(mech, catalog)} - model {model}"), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1].set_xlabel("gap (group - reference), in the measure's units", fontsize=7)
    from matplotlib.lines import Line2D

    fig.legend(handles=[Line2D([], [], color=colour[s], marker="o", label=mpl_text(s)) for s in scorers],
               fontsize=7, loc="lower center", ncol=min(len(scorers), 3), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _finish(fo, fig, layout=False)


def comparison_section(results: pd.DataFrame | None, ppi: pd.DataFrame | None,
                       catalog: MeasureCatalog | None = None, figure: bool = True) -> dict[str, Any] | None:
    """What the report shows when two or more scorers score one mechanism: ``rows`` (one per
    mechanism, model, group, reference and scorer, with the flag of its comparison), ``flagged``
    (sentences, one per conclusion that depends on the scorer), ``figure``; None otherwise."""
    table = comparison_table(results, ppi)
    if table.empty:
        return None
    flags = scorer_flags(table)
    key = ["mechanism", "model_label", "group", "reference"]
    merged = table.merge(flags[key + ["depends", "reason"]], on=key, how="left")
    rows = [dict(mechanism=outcome_label(r["mechanism"], catalog), model=r["model_label"], group=r["group"],
                 reference=r["reference"], scorer=r["scorer"], estimate=_fmt(r["estimate"]),
                 ci=f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", significant=bool(r["significant"]),
                 depends=bool(r["depends"])) for r in merged.to_dict("records")]
    flagged = [f"{outcome_label(f['mechanism'], catalog)}, model {f['model_label']}, \u201c{f['group']}\u201d vs "
               f"\u201c{f['reference']}\u201d: the conclusion depends on the scorer ({f['reason']})."
               for f in flags[flags["depends"]].to_dict("records")]
    return dict(rows=rows, flagged=flagged, n_compared=int(len(flags)), n_flagged=len(flagged),
                figure=comparison_figure(table, catalog) if figure else None, table=table, flags=flags)


def ppi_section(ppi: pd.DataFrame | None, catalog: MeasureCatalog | None = None,
                primary: str | None = None) -> dict[str, Any] | None:
    """The "Gaps corrected with human ratings" section: one row per outcome, model and group with
    the automated, PPI-corrected and human-only gaps side by side (estimate and 95% CI each), the
    ``lambda`` used, the number of rated and of all replies; which estimate leads (:data:`LEAD`); and
    ``summary``: sentences for the summary, on ``primary`` when it was rated (else the first rated
    outcome), leading with the PPI-corrected gap."""
    if ppi is None or ppi.empty:
        return None
    rows = []
    for (outcome, model, group, ref), d in ppi.groupby(["outcome", "model_label", "group", "reference"], sort=True):
        k = d.set_index("kind")
        cell = {}
        for kind in ("automated", "ppi", "human"):
            if kind in k.index and _finite(k.loc[kind, "estimate"]):
                e = k.loc[kind]
                cell[kind] = f"{_fmt(e['estimate'])} [{_fmt(e['ci_low'])}, {_fmt(e['ci_high'])}]"
            else:
                cell[kind] = "n/a"
        p = k.loc["ppi"] if "ppi" in k.index else None
        shift = ""
        if p is not None and _finite(p["estimate"]) and "automated" in k.index:
            a = k.loc["automated"]
            if _finite(a["ci_low"]) and not (float(a["ci_low"]) <= float(p["estimate"]) <= float(a["ci_high"])):
                shift = "the scorer's error changes this gap"
        rows.append(dict(outcome=outcome_label(outcome, catalog), outcome_id=outcome, model=model, group=group,
                         reference=ref, automated=cell["automated"], ppi=cell["ppi"], human=cell["human"],
                         lam=(f"{float(p['lambda_group']):.2f} / {float(p['lambda_reference']):.2f}"
                              if p is not None and _finite(p["lambda_group"]) else "n/a"),
                         n_rated=int(d["n_rated"].max()), n_all=int(d["n_all"].max()),
                         human_measure=str(d["human_measure"].iloc[0]),
                         note=shift or str(p["warning"] if p is not None and isinstance(p["warning"], str) else "")))
    return dict(rows=rows, lead=LEAD, n_shifted=sum(1 for r in rows if r["note"].startswith("the scorer")),
                summary=_ppi_summary(ppi, rows, primary, catalog))


def _ppi_summary(ppi: pd.DataFrame, rows: list[dict[str, Any]], primary: str | None,
                 catalog: MeasureCatalog | None, max_groups: int = 6) -> list[str]:
    rated = [o for o in dict.fromkeys(ppi["outcome"].astype(str))]
    outcome = primary if primary in rated else (rated[0] if rated else None)
    out = []
    for r in [r for r in rows if r["outcome_id"] == outcome][:max_groups]:
        if r["ppi"] == "n/a":
            out.append(f"\u201c{r['group']}\u201d vs \u201c{r['reference']}\u201d on {r['outcome']}: no corrected gap "
                       f"({r['note'] or 'too few ratings'}); automated {r['automated']}.")
            continue
        tail = "; the scorer's error changes this gap" if r["note"].startswith("the scorer") else ""
        out.append(f"\u201c{r['group']}\u201d vs \u201c{r['reference']}\u201d on {r['outcome']} (model {r['model']}), "
                   f"corrected with {r['n_rated']} human ratings: {r['ppi']} (automated {r['automated']}, human-only "
                   f"{r['human']}){tail}.")
    return out
