"""The first screen of a report: the headline box and the compact group table of the primary outcome.

The question a reader brings is whether the model treats one group worse than another. One function,
:func:`headline_result`, picks the stored result the first screen leads with, and every sentence,
table cell and results.json key of the first screen is written from what it returns:

- with human ratings of the primary outcome (``results_ppi``): the **corrected** gap, the
  prediction-powered (PPI++) estimate on the human scale, of the group furthest from the reference,
  with the automated gap of the same comparison beside it, labelled;
- without: the **automated** largest disparity between groups (``results_disparity``), whether it is
  significant after the family's Holm correction, and the smallest disparity the audit could have
  detected (``results_power``).

At most five sentences. The group table has one row per group: the corrected gap (when rated) and
the automated pooled gap against the reference (the control, or the reference group of a release
without one) and against the group's matched reference group (``analysis.reference_group``), each
with its CI and a marker when significant after correction. Where the run has no control, no
sentence or column mentions one.

How sure, without contradiction (issue 29): every interval of the group table and of the
reference-group sentence is at the family's Holm-consistent level (:mod:`audit.stats.intervals`), so
it excludes 0 exactly when the Holm p beside it is below alpha, and lies within what the outcome can
take. The max - min disparity is never below 0, so its (unadjusted, bootstrap) interval says how large
the spread is, not whether there is one: that is the permutation test's Holm p. The outcome's scale is
stated with its first number.

The primary outcome (:func:`primary_outcome`) is the pre-registered one, else the spec's first
outcome, else the scored measure with the strongest declared validity evidence
(:class:`audit.scorers.measures.Evidence`; never a composite such as ``empathy``, which averages
measures of unequal validity).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..scorers.measures import MeasureCatalog, builtin_catalog
from .findings import _finite, fmt_p, gap_text, label_with_scale, outcome_label, outcome_sort_key, scale_unit

__all__ = ["primary_outcome", "primary_reason", "chosen_by", "headline_result", "headline_sentences",
           "corrected_sentences", "group_table", "reference_phrase", "MAX_SENTENCES"]

MAX_SENTENCES = 5
CONTROL = "control"


def _evidence(outcome: str, catalog: MeasureCatalog | None):
    m = (catalog or builtin_catalog()).declared(outcome)
    return m.evidence if m is not None else None


def primary_outcome(results: pd.DataFrame | None, wanted: list[str] | None = None,
                    catalog: MeasureCatalog | None = None, primary: list[str] | None = None) -> str | None:
    """The outcome the first screen is about: the first pre-registered primary outcome
    (``analysis.primary``), else the first of ``analysis.outcomes`` when the spec names them, else
    the scored measure with the strongest declared validity evidence (highest agreement with human
    labels, evidence on LLM replies before evidence on human peer replies; a composite has no
    agreement of its own and is never chosen), else the first outcome in catalog order."""
    if results is None or results.empty:
        return None
    have = list(dict.fromkeys(results["outcome"].astype(str)))
    for w in [*(primary or []), *(wanted or [])]:
        hits = [o for o in have if o == w or o.split(".")[-1] == w]
        if hits:
            return hits[0]
    ordered = sorted(have, key=lambda o: outcome_sort_key(o, catalog))
    strength = {o: (_evidence(o, catalog).strength if _evidence(o, catalog) is not None else -math.inf)
                for o in ordered}
    best = max(ordered, key=lambda o: strength[o])  # max keeps the first of equals: catalog order
    return best if math.isfinite(strength[best]) else ordered[0]


def primary_reason(outcome: str | None, catalog: MeasureCatalog | None, *, chosen_by: str,
                   n_rated: int = 0) -> str:
    """Why the first screen is about ``outcome`` and what its validity rests on, in one or two
    sentences. ``chosen_by``: ``analysis.primary``, ``analysis.outcomes`` or ``evidence``."""
    if outcome is None:
        return ""
    label = outcome_label(outcome, catalog)
    ev = _evidence(outcome, catalog)
    if chosen_by == "evidence" and ev is not None and ev.agreement is not None:
        why = (f"{label} is the default primary outcome because it has the strongest validity evidence of the "
               f"measures scored: {ev.sentence()}. A composite such as overall empathy is never the default: it "
               "averages measures of unequal validity. Name another in analysis.primary to change it.")
    elif chosen_by == "evidence":
        why = (f"{label} is the primary outcome by catalog order: no scored measure declares validity evidence. "
               "Name another in analysis.primary to change it.")
    else:
        why = f"{label} is the primary outcome named in {chosen_by}" + (
            f" ({ev.sentence()})." if ev is not None else " (its scorer declares no validity evidence).")
    if n_rated:
        return why + f" Its agreement on this run's replies is measured by {n_rated} human ratings (section " \
                     "\u201cDoes the scorer treat groups alike?\u201d)."
    return why + (" Its agreement on LLM replies like these is unvalidated: no human ratings are stored for this "
                  "run (see the limitations for how many would validate it).")


def chosen_by(results: pd.DataFrame | None, outcome: str | None, wanted: list[str] | None,
              primary: list[str] | None) -> str:
    """Which rule of :func:`primary_outcome` picked ``outcome``."""
    for name, lst in (("analysis.primary", primary), ("analysis.outcomes", wanted)):
        if lst and outcome is not None and any(outcome == w or outcome.split(".")[-1] == w for w in lst):
            return name
    return "evidence"


def reference_phrase(reference: str) -> str:
    """How text names the reference of a gap: the unmodified posts, or the reference group."""
    return "the unmodified posts (control)" if str(reference) == CONTROL else \
        f"the reference group \u201c{reference}\u201d"


def _amount(outcome: str, value: float, catalog: MeasureCatalog | None) -> str:
    scale, unit = scale_unit(outcome, catalog)
    return f"{value * scale:.{1 if scale == 100.0 else 3}f} {unit}"


def _width(outcome: str, catalog: MeasureCatalog | None) -> float:
    """max - min of the outcome's declared range (inf when unbounded)."""
    from .findings import _cat
    r = _cat(catalog).measure(outcome).range
    return float(r[1]) - float(r[0]) if r is not None else float("inf")


def _interval(row: dict[str, Any], catalog: MeasureCatalog | None, absolute: bool = False) -> dict[str, Any]:
    """The first screen's interval of a gap as numbers: what is shown (relative or absolute), in the
    shown unit, with its level and the Holm p (results.json ``headline.groups[].vs_*_interval``)."""
    gap, _ = gap_text(row, catalog, adjusted=True, absolute=absolute)
    relative = "%" in gap.split(" ")[0]
    if relative:
        lo, hi, est, unit = row.get("rel_ci_low_adj"), row.get("rel_ci_high_adj"), row.get("relative_gap"), "relative"
        f = 100.0
    else:
        f, unit = scale_unit(str(row["outcome"]), catalog)
        lo, hi, est = row.get("ci_low_adj"), row.get("ci_high_adj"), row.get("estimate")
    num = (lambda x: round(f * float(x), 6) if _finite(x) else None)
    digits = 1 if relative or f == 100.0 else 3
    text = (f"{num(lo):+.{digits}f}{'%' if relative else ''} to {num(hi):+.{digits}f}{'%' if relative else ''}"
            if num(lo) is not None and num(hi) is not None else "no CI")
    return dict(kind="relative %" if relative else unit, estimate=num(est), low=num(lo), high=num(hi), text=text,
                level=float(row["ci_level_adj"]) if _finite(row.get("ci_level_adj")) else None,
                p_holm=float(row["p_holm"]) if _finite(row.get("p_holm")) else None,
                significant_holm=bool(row.get("significant_holm")))


def _absolute(pooled: pd.DataFrame) -> bool:
    """One unit for the first screen (table, sentence and figure alike): absolute where any row's
    Holm-consistent relative interval is missing."""
    num = lambda c: pd.to_numeric(pooled[c], errors="coerce") if c in pooled else pd.Series(float("nan"), index=pooled.index)  # noqa: E731
    return bool((num("estimate").notna() & (num("rel_ci_low_adj").isna() | num("rel_ci_high_adj").isna())).any())


def _pooled(results: pd.DataFrame, outcome: str) -> pd.DataFrame:
    r = results[(results["outcome"] == outcome) & (results.get("style", "pooled") == "pooled")]
    if "cue_type" in r and (r["cue_type"] == "pooled").any():
        r = r[r["cue_type"] == "pooled"]
    return r


def _num(x: Any) -> float | None:
    return float(x) if _finite(x) else None


def headline_result(results: pd.DataFrame | None, disparity: pd.DataFrame | None, ppi: pd.DataFrame | None,
                    outcome: str | None, *, catalog: MeasureCatalog | None = None) -> dict[str, Any] | None:
    """The one stored result the first screen leads with (module docstring), as plain numbers.

    ``kind`` ``corrected`` (from ``results_ppi``: the rated group whose prediction-powered gap to the
    reference is largest in size): ``outcome, model_label, group, reference, estimate, ci_low,
    ci_high, n_rated, n_all`` and ``automated`` / ``human`` (``estimate, ci_low, ci_high``) of the
    same comparison. ``kind`` ``automated`` (from ``results_disparity``): ``estimate, ci_low,
    ci_high, max_group, min_group, ratio, p_holm, significant_holm, family``. Both: ``source`` (the
    stored table), ``unit`` and ``scale`` (a shown number is the value times ``scale``, in ``unit``).
    None when nothing is stored for ``outcome``.
    """
    if outcome is None:
        return None
    scale, unit = scale_unit(outcome, catalog)
    base = dict(outcome=outcome, label=outcome_label(outcome, catalog), scale=scale, unit=unit)
    if ppi is not None and not ppi.empty:
        p = ppi[(ppi["outcome"].astype(str) == outcome)]
        if "model_label" in p and p["model_label"].nunique() > 1:  # one model, as the group table (the first)
            p = p[p["model_label"].astype(str) == sorted(p["model_label"].astype(str))[0]]
        corr = p[(p["kind"] == "ppi") & pd.to_numeric(p["estimate"], errors="coerce").notna()]
        if len(corr):
            row = corr.loc[pd.to_numeric(corr["estimate"]).abs().idxmax()]
            same = p[(p["model_label"] == row["model_label"]) & (p["group"] == row["group"])
                     & (p["reference"] == row["reference"])].set_index("kind")

            def three(kind: str) -> dict[str, float | None]:
                r = same.loc[kind] if kind in same.index else {}
                return {k: _num(r.get(k)) for k in ("estimate", "ci_low", "ci_high")}

            return dict(base, kind="corrected", source="results_ppi", model_label=str(row["model_label"]),
                        group=str(row["group"]), reference=str(row["reference"]), **three("ppi"),
                        n_rated=int(row["n_rated"]), n_all=int(row["n_all"]), automated=three("automated"),
                        human=three("human"), method="prediction-powered (PPI++) gap on the human scale")
    if disparity is not None and not disparity.empty:
        d = disparity[disparity["outcome"].astype(str) == outcome]
        if len(d):
            row = d.iloc[0].to_dict()
            return dict(base, kind="automated", source="results_disparity", model_label=str(row.get("model_label")),
                        estimate=_num(row.get("estimate")), ci_low=_num(row.get("ci_low")),
                        ci_high=_num(row.get("ci_high")), max_group=row.get("max_group"),
                        min_group=row.get("min_group"), ratio=_num(row.get("ratio")), p_holm=_num(row.get("p_holm")),
                        significant_holm=bool(row.get("significant_holm")) if _finite(row.get("p_holm")) else False,
                        family=str(row.get("family")) if isinstance(row.get("family"), str) else None,
                        warning=row.get("warning") if isinstance(row.get("warning"), str) else None,
                        method="max - min of the automated scores' group means")
    return None


def _signed(value: float | None, digits: int, unit: str) -> str:
    return "n/a" if value is None else f"{value:+.{digits}f} {unit}"


def _gap_words(h: dict[str, Any], value: float | None) -> str:
    """'0.52 points lower' for a corrected or automated gap of ``h`` (value in outcome units)."""
    if value is None:
        return "not estimable"
    digits = 1 if h["scale"] == 100.0 else 2
    v = value * h["scale"]
    word = "higher" if round(v, digits) > 0 else "lower" if round(v, digits) < 0 else "different (no gap)"
    return f"{abs(v):.{digits}f} {h['unit']} {word}"


def _ci_words(h: dict[str, Any], est: dict[str, float | None]) -> str:
    digits = 1 if h["scale"] == 100.0 else 2
    lo, hi = est.get("ci_low"), est.get("ci_high")
    if lo is None or hi is None:
        return "no CI"
    return f"95% CI {lo * h['scale']:+.{digits}f} to {hi * h['scale']:+.{digits}f} {h['unit']}"


def corrected_sentences(h: dict[str, Any]) -> list[str]:
    """The lead of a run with ratings: the corrected gap, the automated one beside it, both labelled."""
    auto = h["automated"]
    lead = (f"Corrected with {h['n_rated']} human ratings, replies to \u201c{h['group']}\u201d posts score "
            f"{_gap_words(h, h['estimate'])} on {h['label']} than replies to {_ref_words(h['reference'])} "
            f"({_ci_words(h, h)}; prediction-powered, on the human scale); the automated scores alone say "
            f"{_gap_words(h, auto['estimate'])} ({_ci_words(h, auto)}).")
    out = [lead]
    lo, hi, est, a = h.get("ci_low"), h.get("ci_high"), h.get("estimate"), auto.get("estimate")
    if lo is not None and hi is not None and est is not None:
        text = ("The corrected 95% CI includes 0, so the ratings show no gap on the human scale" if lo <= 0 <= hi
                else "The corrected 95% CI excludes 0")
        if a is not None and not lo <= a <= hi:
            share = (a - est) / a if abs(a) > 1e-12 else float("nan")
            text += ("; the automated estimate lies outside it: the scorer's error"
                     + (f" is about {100 * share:.0f}% of the automated gap" if math.isfinite(share) and 0 < share <= 1
                        else " changes the automated gap"))
        out.append(text + ".")
    return out


def _ref_words(reference: str) -> str:
    return "the unmodified posts (control)" if str(reference) == CONTROL else f"\u201c{reference}\u201d posts"


def headline_sentences(results: pd.DataFrame | None, disparity: pd.DataFrame | None, power: pd.DataFrame | None,
                       outcome: str | None, *, reference: str = "control", alpha: float = 0.05,
                       catalog: MeasureCatalog | None = None, ppi: pd.DataFrame | None = None,
                       headline: dict[str, Any] | None = None) -> list[str]:
    """At most :data:`MAX_SENTENCES` sentences, written from :func:`headline_result` (``headline``;
    computed here when not given): with ratings the corrected gap first (:func:`corrected_sentences`),
    then the automated findings, each labelled automated; without, the largest disparity between
    groups of ``outcome`` (first), whether it survives the Holm correction, the largest gap to a
    matched reference group, the number of significant gaps to the reference (the control, or the
    reference group of a run without one), and the smallest disparity the audit could have detected."""
    if outcome is None or results is None or results.empty:
        return []
    if headline is None:
        headline = headline_result(results, disparity, ppi, outcome, catalog=catalog)
    corrected = headline is not None and headline["kind"] == "corrected"
    label = outcome_label(outcome, catalog)
    auto = "On the automated scores, the" if corrected else "The"
    out: list[str] = corrected_sentences(headline) if corrected else []
    d = None if disparity is None or disparity.empty else disparity[disparity["outcome"] == outcome]
    if d is not None and len(d):
        row = d.iloc[0].to_dict()
        if _finite(row.get("estimate")) and float(row["estimate"]) > 0:
            lo, hi = row.get("ci_low"), row.get("ci_high")
            ci = (f"bootstrap 95% CI, unadjusted, {_amount(outcome, max(float(lo), 0.0), catalog)} to "
                  f"{_amount(outcome, float(hi), catalog)}" if _finite(lo) and _finite(hi) else "no CI")
            ratio = (f"; lowest/highest mean ratio {float(row['ratio']):.2f}" if _finite(row.get("ratio")) else "")
            out.append(f"{auto} largest disparity in {label_with_scale(outcome, catalog)} between two groups is "
                       f"{_amount(outcome, float(row['estimate']), catalog)} (\u201c{row['max_group']}\u201d highest, "
                       f"\u201c{row['min_group']}\u201d lowest; {ci}{ratio}).")
            sig = bool(row.get("significant_holm"))
            fam = ("the confirmatory family" if str(row.get("family")) == "confirmatory" else "the whole family")
            out.append("A highest-minus-lowest gap is never below 0, so its interval shows its size, not whether "
                       "it exists; a permutation test "
                       + ("finds it larger" if sig else "does not find it larger")
                       + f" than chance spread (Holm p = {fmt_p(row.get('p_holm'))} over {fam}).")
        else:
            out.append(f"No disparity in {label} between groups could be estimated ({row.get('warning') or 'no data'}).")
    pooled = _pooled(results, outcome)
    between = pooled[(pooled["reference"].astype(str) != str(reference)) & (pooled["group"].astype(str) != CONTROL)]
    between = between[pd.to_numeric(between["estimate"], errors="coerce").notna()]
    if len(between):
        worst = between.loc[pd.to_numeric(between["estimate"], errors="coerce").abs().idxmax()].to_dict()
        gap, ci = gap_text(worst, catalog, adjusted=True, absolute=_absolute(pooled))
        out.append(f"Against its reference group, \u201c{worst['group']}\u201d differs most: {gap} than "
                   f"\u201c{worst['reference']}\u201d ({ci}; Holm p = {fmt_p(worst.get('p_holm'))})"
                   + (" on the automated scores." if corrected else "."))
    ctrl = pooled[pooled["reference"].astype(str) == str(reference)]
    n_sig = int(ctrl["significant_holm"].fillna(False).astype(bool).sum()) if "significant_holm" in ctrl else 0
    n_groups = len(ctrl)
    out.append(f"{n_sig} of {n_groups} group{'s' if n_groups != 1 else ''} differ{'s' if n_groups == 1 else ''} "
               f"significantly from {reference_phrase(reference)} on {label}"
               + (" (automated scores)." if corrected else "."))
    if power is not None and not power.empty and "detectable_gap" in power:
        pw = power[power["outcome"] == outcome]
        if len(pw) and _finite(pw["detectable_gap"].iloc[0]):
            mde = float(pw["detectable_gap"].iloc[0])
            rel = pw["detectable_relative_gap"].iloc[0] if "detectable_relative_gap" in pw else None
            of = "the control mean" if str(reference) == CONTROL else f"the mean of \u201c{reference}\u201d"
            rel_t = f" ({100 * float(rel):.1f}% of {of})" if _finite(rel) and abs(float(rel)) <= 1 else ""
            width = _width(outcome, catalog)
            if mde >= width:
                out.append(f"No gap between two groups could have been detected reliably (80% power, family-wise "
                           f"level {alpha:g}): the smallest detectable one, about {_amount(outcome, mde, catalog)}, "
                           f"is at least the whole range of the scale ({_amount(outcome, width, catalog)}).")
            else:
                out.append(f"The smallest disparity between two groups this audit could have detected (80% power, "
                           f"family-wise level {alpha:g}) is about {_amount(outcome, mde, catalog)}{rel_t}.")
    return out[:MAX_SENTENCES]


def group_table(results: pd.DataFrame | None, outcome: str | None, *, reference: str = "control",
                catalog: MeasureCatalog | None = None, ppi: pd.DataFrame | None = None,
                extra_references: Any = ()) -> list[dict[str, Any]]:
    """One row per group: ``group, vs_control, vs_control_ci, vs_control_sig, reference_group,
    vs_reference, vs_reference_ci, vs_reference_sig`` (pooled style and cue type, texts as in the
    findings; ``*_sig`` True when significant after Holm; ``vs_control*`` hold the gap to the
    analysis reference, the control or, without one, the reference group), ``is_reference`` (the
    reference group's own row of a run without a control), and with ratings of ``outcome``
    ``corrected`` / ``corrected_ci`` (the prediction-powered gap to the same reference, from
    ``results_ppi``; "" where the group was not rated)."""
    if outcome is None or results is None or results.empty:
        return []
    pooled = _pooled(results, outcome)
    absolute = _absolute(pooled)
    # the control is not a group (with extra references it is compared with them too); a group's
    # reference group is its matched one (analysis.reference_group), before any extra reference
    pooled = pooled[pooled["group"].astype(str) != CONTROL]
    extra = {str(x) for x in (extra_references or ())}
    pooled = pooled.assign(_extra=pooled["reference"].astype(str).isin(extra)).sort_values("_extra", kind="stable")
    rated = automated = None
    if ppi is not None and not ppi.empty:
        mine = ppi[(ppi["outcome"].astype(str) == outcome) & (ppi["reference"].astype(str) == str(reference))]
        if "model_label" in mine and mine["model_label"].nunique() > 1:  # one model's comparison per row
            mine = mine[mine["model_label"] == sorted(mine["model_label"].astype(str))[0]]
        rated = mine[(mine["kind"] == "ppi") & pd.to_numeric(mine["estimate"], errors="coerce").notna()]
        automated = mine[mine["kind"] == "automated"]
    rows: dict[str, dict[str, Any]] = {}

    def empty(g: str) -> dict[str, Any]:
        return dict(group=g, vs_control="n/a", vs_control_ci="", vs_control_sig=False, vs_control_p="n/a",
                    vs_control_interval=None, reference_group="", vs_reference="", vs_reference_ci="",
                    vs_reference_sig=False, vs_reference_p="", vs_reference_interval=None, is_reference=False,
                    corrected="", corrected_ci="")

    h = dict(scale=scale_unit(outcome, catalog)[0], unit=scale_unit(outcome, catalog)[1])
    for r in pooled.to_dict("records"):
        g = str(r["group"])
        row = rows.setdefault(g, empty(g))
        has = _finite(r.get("estimate"))
        gap, ci = gap_text(r, catalog, adjusted=True, absolute=absolute) if has else ("not estimable", "")
        gap = gap.replace(" percentage points ", " ").replace(" points ", " ")  # the unit is in the caption
        iv = _interval(r, catalog, absolute) if has else None
        auto = None if rated is None or not len(rated) or str(r["reference"]) != str(reference) else \
            automated[automated["group"].astype(str) == g]
        if auto is not None and len(auto) and _finite(auto["estimate"].iloc[0]):
            # beside a corrected gap: the automated gap of the same comparison and estimator (results_ppi),
            # in the same units; its significance is the family's, so no marker
            a = auto.iloc[0]
            gap, ci = _gap_words(h, float(a["estimate"])), _ci_words(h, dict(ci_low=_num(a["ci_low"]),
                                                                              ci_high=_num(a["ci_high"])))
            rows[g].update(vs_control=gap, vs_control_ci=ci, vs_control_sig=False, vs_control_p="n/a")
            continue
        sig = bool(r.get("significant_holm")) if has else False
        if str(r["reference"]) == str(reference):
            row.update(vs_control=gap, vs_control_ci=ci, vs_control_sig=sig, vs_control_p=fmt_p(r.get("p_holm")),
                       vs_control_interval=iv)
        elif not row["reference_group"]:
            row.update(reference_group=str(r["reference"]), vs_reference=gap, vs_reference_ci=ci,
                       vs_reference_sig=sig, vs_reference_p=fmt_p(r.get("p_holm")), vs_reference_interval=iv)
    if str(reference) != CONTROL and len(pooled) and str(reference) not in rows:
        rows[str(reference)] = dict(empty(str(reference)), vs_control="reference group", is_reference=True)
    if rated is not None and len(rated):
        for r in rated.to_dict("records"):
            g = str(r["group"])
            if g in rows and _finite(r.get("estimate")):
                rows[g].update(corrected=_gap_words(h, float(r["estimate"])),
                               corrected_ci=_ci_words(h, dict(ci_low=_num(r.get("ci_low")),
                                                              ci_high=_num(r.get("ci_high")))))
    return [rows[g] for g in sorted(rows)]
