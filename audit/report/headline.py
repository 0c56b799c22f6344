"""The first screen of a report: the headline box and the compact group table of the primary outcome.

The question a reader brings is whether the model treats one group worse than another, so the
headline leads with the largest disparity between groups (``results_disparity``), says whether it
is significant after the family's Holm correction, and states the smallest disparity the audit could
have detected (``results_power``). At most five sentences. The group table has one row per group:
the primary outcome's pooled gap against the control and against the group's reference group
(``analysis.reference_group``), each with its CI and a marker when significant after correction.

How sure, without contradiction: every interval on the first screen is at the family's
Holm-consistent level (:mod:`audit.stats.intervals`), so it excludes 0 exactly when the Holm p beside
it is below alpha, and it lies within what the outcome can take. The max - min disparity is never
below 0, so its (unadjusted, bootstrap) interval says how large the spread is, not whether there is
one: that is the permutation test's Holm p. The outcome's scale is stated with its first number.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..scorers.measures import MeasureCatalog
from .findings import (_finite, ci_adjusted_label, fmt_p, gap_text, label_with_scale, outcome_label,
                       outcome_sort_key, scale_unit)

__all__ = ["primary_outcome", "headline_sentences", "group_table", "MAX_SENTENCES"]

MAX_SENTENCES = 5
PREFERRED_PRIMARY = "epitome.empathy"


def primary_outcome(results: pd.DataFrame | None, wanted: list[str] | None = None,
                    catalog: MeasureCatalog | None = None, primary: list[str] | None = None) -> str | None:
    """The outcome the first screen is about: the first pre-registered primary outcome
    (``analysis.primary``), else the first of ``analysis.outcomes`` when the spec names them, else
    overall EPITOME empathy when scored, else the first outcome in catalog order."""
    if results is None or results.empty:
        return None
    have = list(dict.fromkeys(results["outcome"].astype(str)))
    for w in [*(primary or []), *(wanted or [])]:
        hits = [o for o in have if o == w or o.split(".")[-1] == w]
        if hits:
            return hits[0]
    if PREFERRED_PRIMARY in have:
        return PREFERRED_PRIMARY
    return sorted(have, key=lambda o: outcome_sort_key(o, catalog))[0]


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


def headline_sentences(results: pd.DataFrame | None, disparity: pd.DataFrame | None, power: pd.DataFrame | None,
                       outcome: str | None, *, reference: str = "control", alpha: float = 0.05,
                       catalog: MeasureCatalog | None = None) -> list[str]:
    """At most :data:`MAX_SENTENCES` sentences: the largest disparity between groups of ``outcome``
    (first), whether it survives the Holm correction, the largest gap to the reference group, the
    number of significant control gaps, and the smallest disparity the audit could have detected."""
    if outcome is None or results is None or results.empty:
        return []
    label = outcome_label(outcome, catalog)
    out: list[str] = []
    d = None if disparity is None or disparity.empty else disparity[disparity["outcome"] == outcome]
    if d is not None and len(d):
        row = d.iloc[0].to_dict()
        if _finite(row.get("estimate")) and float(row["estimate"]) > 0:
            lo, hi = row.get("ci_low"), row.get("ci_high")
            ci = (f"bootstrap 95% CI, unadjusted, {_amount(outcome, max(float(lo), 0.0), catalog)} to "
                  f"{_amount(outcome, float(hi), catalog)}" if _finite(lo) and _finite(hi) else "no CI")
            ratio = (f"; lowest/highest mean ratio {float(row['ratio']):.2f}" if _finite(row.get("ratio")) else "")
            out.append(f"The largest disparity in {label_with_scale(outcome, catalog)} between two groups is "
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
    between = pooled[(pooled["reference"].astype(str) != str(reference)) & (pooled["group"].astype(str) != str(reference))]
    between = between[pd.to_numeric(between["estimate"], errors="coerce").notna()]
    if len(between):
        worst = between.loc[pd.to_numeric(between["estimate"], errors="coerce").abs().idxmax()].to_dict()
        gap, ci = gap_text(worst, catalog, adjusted=True, absolute=_absolute(pooled))
        out.append(f"Against its reference group, \u201c{worst['group']}\u201d differs most: {gap} than "
                   f"\u201c{worst['reference']}\u201d ({ci}; Holm p = {fmt_p(worst.get('p_holm'))}).")
    ctrl = pooled[pooled["reference"].astype(str) == str(reference)]
    n_sig = int(ctrl["significant_holm"].fillna(False).astype(bool).sum()) if "significant_holm" in ctrl else 0
    out.append(f"{n_sig} of {len(ctrl)} groups differ significantly from the unmodified posts (control) on {label}.")
    if power is not None and not power.empty and "detectable_gap" in power:
        pw = power[power["outcome"] == outcome]
        if len(pw) and _finite(pw["detectable_gap"].iloc[0]):
            mde = float(pw["detectable_gap"].iloc[0])
            rel = pw["detectable_relative_gap"].iloc[0] if "detectable_relative_gap" in pw else None
            rel_t = f" ({100 * float(rel):.1f}% of the control mean)" if _finite(rel) and abs(float(rel)) <= 1 else ""
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
                catalog: MeasureCatalog | None = None, extra_references: Any = ()) -> list[dict[str, Any]]:
    """One row per group: ``group, vs_control, vs_control_ci, vs_control_sig, vs_control_p,
    vs_control_interval, reference_group, vs_reference, ...`` (pooled style and cue type; the intervals
    at the Holm-consistent level, as text and as numbers; ``*_sig`` True when significant after Holm)."""
    if outcome is None or results is None or results.empty:
        return []
    pooled = _pooled(results, outcome)
    absolute = _absolute(pooled)
    rows: dict[str, dict[str, Any]] = {}
    # the control is not a group (with extra references it is compared with them too); a group's
    # reference group is its matched one (analysis.reference_group), not an extra reference
    pooled = pooled[pooled["group"].astype(str) != str(reference)]
    extra = {str(x) for x in (extra_references or ())}
    pooled = pooled.assign(_extra=pooled["reference"].astype(str).isin(extra)).sort_values("_extra", kind="stable")
    for r in pooled.to_dict("records"):
        g = str(r["group"])
        row = rows.setdefault(g, dict(group=g, vs_control="n/a", vs_control_ci="", vs_control_sig=False,
                                      vs_control_p="n/a", vs_control_interval=None, reference_group="",
                                      vs_reference="", vs_reference_ci="", vs_reference_sig=False, vs_reference_p="",
                                      vs_reference_interval=None))
        has = _finite(r.get("estimate"))
        gap, ci = gap_text(r, catalog, adjusted=True, absolute=absolute) if has else ("not estimable", "")
        gap = gap.replace(" percentage points ", " ").replace(" points ", " ")  # the unit is in the caption
        sig = bool(r.get("significant_holm")) if has else False
        iv = _interval(r, catalog, absolute) if has else None
        if str(r["reference"]) == str(reference):
            row.update(vs_control=gap, vs_control_ci=ci, vs_control_sig=sig, vs_control_p=fmt_p(r.get("p_holm")),
                       vs_control_interval=iv)
        elif not row["reference_group"]:
            row.update(reference_group=str(r["reference"]), vs_reference=gap, vs_reference_ci=ci,
                       vs_reference_sig=sig, vs_reference_p=fmt_p(r.get("p_holm")), vs_reference_interval=iv)
    return [rows[g] for g in sorted(rows)]
