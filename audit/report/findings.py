"""Plain-language names for outcomes and cue types, and the findings written as sentences.

An outcome's label, kind and gap unit come from its scorer's measure declaration
(:class:`audit.scorers.measures.MeasureCatalog`, read from the run's ``scorer_info``); functions take
``catalog=`` and default to the built-in scorers' declarations.

A finding sentence carries its numbers: the gap (relative where a relative gap means something,
absolute otherwise), its 95% CI and the Holm-adjusted p-value, e.g.

    Replies to posts that signalled "Black woman" through an explicit tag scored 11.0% lower on
    Emotional Reactions than replies to the unmodified posts (95% CI -15.2% to -6.8%; Holm-adjusted
    p = 0.003).
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

from ..scorers.measures import MeasureCatalog, builtin_catalog

CUE_LABELS = {
    "pooled": "any cue type (pooled)",
    "control": "no cue (control)",
    "explicit_tag": "an explicit tag",
    "explicit_statement": "an explicit self-identification",
    "implicit_name": "a first name",
    "implicit_context": "a cultural or community detail",
    "implicit_dialect": "dialect",
}
CUE_SHORT = {
    "pooled": "pooled",
    "control": "control",
    "explicit_tag": "explicit tag",
    "explicit_statement": "explicit statement",
    "implicit_name": "name",
    "implicit_context": "context",
    "implicit_dialect": "dialect",
}


def _cat(catalog: MeasureCatalog | None) -> MeasureCatalog:
    return catalog if catalog is not None else builtin_catalog()


def is_proportion(outcome: str, catalog: MeasureCatalog | None = None) -> bool:
    """A 0/1 outcome whose gap is a difference in proportions: a binary measure (refusal) or a derived
    level outcome 'X>0'. ``catalog``: the run's measure declarations (default: the built-in scorers')."""
    return _cat(catalog).is_binary(outcome)


def scale_unit(outcome: str, catalog: MeasureCatalog | None = None) -> tuple[float, str]:
    """How an absolute gap is shown: proportions in percentage points, other scores in points."""
    return _cat(catalog).scale_unit(outcome)


def measure_of(outcome: str) -> str:
    """'epitome.ER' -> 'ER'; 'ER' -> 'ER'."""
    return str(outcome).split(".")[-1]


def outcome_label(outcome: str, catalog: MeasureCatalog | None = None) -> str:
    """The declared label of an outcome ('epitome.ER' -> 'Emotional Reactions')."""
    return _cat(catalog).label(outcome)


def cue_label(cue_type: str) -> str:
    return CUE_LABELS.get(str(cue_type), str(cue_type).replace("_", " "))


def cue_short(cue_type: str) -> str:
    return CUE_SHORT.get(str(cue_type), str(cue_type).replace("_", " "))


def is_absolute(outcome: str, ref_mean: float | None = None, catalog: MeasureCatalog | None = None) -> bool:
    """Whether a gap is stated absolutely (declared so, or the control mean is 0 or missing)."""
    return _cat(catalog).is_absolute(outcome, ref_mean)


def outcome_sort_key(outcome: str, catalog: MeasureCatalog | None = None) -> tuple[int, bool, str]:
    return _cat(catalog).sort_key(outcome)


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


#: Library messages that can reach a report, rewritten as findings a reader can use (pattern, text).
_READER_REASONS = [
    (re.compile(r"outcome '[^']*' is constant \(([^)]*)\).*", re.S),
     r"every reply had the same value (\1), so there is no difference between groups to test"),
    (re.compile(r"only (\d+) cluster\(s\) in '[^']*'; a random-intercept model needs at least (\d+).*", re.S),
     r"only \1 posts had scores; a gap needs at least \2"),
    (re.compile(r"outcome column '[^']*' has no values.*", re.S), "no reply has this score"),
    (re.compile(r"no variation in group\(s\) ([^;]*)", re.S),
     r"every reply of \1 had the same value, so the logistic model was replaced by a linear one"),
    (re.compile(r"GEE (failed|did not converge).*", re.S),
     "the logistic model could not be fitted, so a linear model on the 0/1 outcome was used"),
    (re.compile(r"relative gap not reported: .*", re.S),
     "stated in points only: the comparison mean is too close to 0 for a percentage"),
]


def reader_reason(text: Any) -> str:
    """A library message as a finding: the context the report already shows and any advice addressed
    to the analyst ("Choose an outcome that varies") dropped, known messages in plain words.

    >>> reader_reason("outcome refusal, model m, style pooled, reference control: outcome 'value' is constant (0) "
    ...               "in every row: there is no gap to test. Choose an outcome that varies.")
    'every reply had the same value (0), so there is no difference between groups to test'
    """
    t = re.sub(r"^outcome [^:]*?reference [^:]*:\s*", "", str(text or "").strip()).strip()
    for pattern, repl in _READER_REASONS:
        if pattern.match(t):
            return pattern.sub(repl, t, count=1).strip()
    t = re.split(r"(?<=[a-z0-9)])\. (?=[A-Z])", t)[0]  # the first sentence: the fact, not the advice
    return t.split(";")[0].strip().rstrip(".")


def short_reason(warning: Any) -> str:
    """A fit warning without the context the report already shows, as a reader-facing finding
    (:func:`reader_reason`).

    >>> short_reason("outcome refusal, model m, style pooled, reference control: outcome 'value' is constant (0)")
    'every reply had the same value (0), so there is no difference between groups to test'
    """
    return reader_reason(warning)


def fmt_p(p: Any) -> str:
    if not _finite(p):
        return "n/a"
    p = float(p)
    if p < 0.001:
        return "< 0.001"
    if p < 0.1:  # three significant digits, so a p-value is never rounded across alpha (0.0496, not 0.050)
        return f"{p:.3g}"
    return f"{p:.3f}"


def fmt_num(x: Any, digits: int = 3) -> str:
    if not _finite(x):
        return "n/a"
    return f"{float(x):.{digits}g}" if abs(float(x)) >= 1000 else f"{float(x):.{digits}f}"


def fmt_pct(x: Any, digits: int = 1, sign: bool = True) -> str:
    if not _finite(x):
        return "n/a"
    v = 100 * float(x)
    return f"{v:+.{digits}f}%" if sign else f"{v:.{digits}f}%"


def scale_phrase(outcome: str, catalog: MeasureCatalog | None = None) -> str:
    """The scale an outcome is measured on, for its first number: '0-2 scale', 'share, 0-100%',
    'words, 0 or more'; '' when the scorer declares no range.

    >>> scale_phrase("epitome.ER")
    '0–2 scale'
    """
    m = _cat(catalog).measure(outcome)
    if m.kind == "binary":
        return "share, 0–100%"
    if m.range is None:
        return ""
    lo, hi = m.range
    if math.isinf(hi):
        return f"{_short(lo)} or more"
    return f"{_short(lo)}–{_short(hi)} scale"


def _short(x: float) -> str:
    return f"{x:g}".replace("-", "−")


def label_with_scale(outcome: str, catalog: MeasureCatalog | None = None) -> str:
    """'Emotional Reactions (0-2 scale)': the label with its scale, for an outcome's first number."""
    sc, label = scale_phrase(outcome, catalog), outcome_label(outcome, catalog)
    if not sc:
        return label
    return f"{label[:-1]}; {sc})" if label.endswith(")") else f"{label} ({sc})"


#: The label of an unadjusted interval (beside a Holm-adjusted p-value it must say so).
CI_UNADJUSTED = "95% CI, unadjusted"


def ci_adjusted_label(level: Any) -> str:
    """'Holm-consistent 99.987% CI': the label of an interval at the family's Holm-consistent level."""
    lv = 100 * float(level)
    digits = 0
    while digits < 6 and round(lv, digits) >= 100:
        digits += 1
    return f"Holm-consistent {lv:.{max(digits, 0)}f}% CI"


def gap_text(row: dict[str, Any], catalog: MeasureCatalog | None = None, *, adjusted: bool = False,
             absolute: bool = False) -> tuple[str, str]:
    """(gap phrase, CI phrase) for a results row, e.g. ('11.0% lower', '95% CI, unadjusted -15.2% to -6.8%').

    ``adjusted``: the interval at the family's Holm-consistent level (``ci_low_adj`` ...,
    :mod:`audit.stats.intervals`), which excludes 0 exactly when the Holm p-value is below alpha; a
    relative gap whose adjusted interval is not reported (reference mean too close to 0 at that level)
    is stated absolutely. ``absolute``: state the gap absolutely whatever the outcome declares (a table
    whose rows must share one unit)."""
    outcome = row["outcome"]
    adjusted = adjusted and _finite(row.get("ci_level_adj"))  # results analysed before issue 29 have none
    suffix = "_adj" if adjusted else ""
    label = ci_adjusted_label(row["ci_level_adj"]) if adjusted and _finite(row.get("ci_level_adj")) else CI_UNADJUSTED
    rel_ok = _finite(row.get("relative_gap")) and _finite(row.get(f"rel_ci_low{suffix}")) \
        and _finite(row.get(f"rel_ci_high{suffix}"))
    if absolute or is_absolute(outcome, row.get("ref_mean"), catalog) or not rel_ok:
        scale, unit = scale_unit(outcome, catalog)
        est = float(row["estimate"]) * scale if _finite(row.get("estimate")) else float("nan")
        lo = float(row.get(f"ci_low{suffix}")) * scale if _finite(row.get(f"ci_low{suffix}")) else float("nan")
        hi = float(row.get(f"ci_high{suffix}")) * scale if _finite(row.get(f"ci_high{suffix}")) else float("nan")
        digits = 1 if scale == 100.0 else 3
        shown = round(est, digits)
        word = "higher" if shown > 0 else "lower" if shown < 0 else "different (no gap)"
        gap = f"{abs(est):.{digits}f} {unit} {word}"
        ci = f"{label} {lo:+.{digits}f} to {hi:+.{digits}f} {unit}" if _finite(lo) and _finite(hi) else "no CI"
        return gap, ci
    rel = row.get("relative_gap")
    shown = round(100 * float(rel), 1) if _finite(rel) else 0.0
    word = "higher" if shown > 0 else "lower" if shown < 0 else "different (no gap)"
    gap = f"{abs(100 * float(rel)):.1f}% {word}" if _finite(rel) else "n/a"
    lo, hi = row.get(f"rel_ci_low{suffix}"), row.get(f"rel_ci_high{suffix}")
    ci = f"{label} {fmt_pct(lo)} to {fmt_pct(hi)}" if _finite(lo) and _finite(hi) else "no CI"
    return gap, ci


def finding_sentence(row: dict[str, Any], reference_label: str = "the unmodified posts (control)",
                     model_note: str = "", catalog: MeasureCatalog | None = None) -> str:
    gap, ci = gap_text(row, catalog)
    cue = row.get("cue_type", "pooled")
    cue_part = "through any cue type (pooled)" if cue == "pooled" else f"through {cue_label(cue)}"
    style = row.get("style")
    style_part = f" in the '{style}' prompt style" if style and style != "pooled" else ""
    ref = row.get("reference") or "control"
    ref_part = reference_label if ref == "control" else f"posts that signalled \u201c{ref}\u201d"
    what = outcome_label(row["outcome"], catalog)
    if is_proportion(row["outcome"], catalog):
        body = f"had a {what} {gap}"
    else:
        body = f"scored {gap} on {what}"
    p_holm = fmt_p(row.get("p_holm"))
    p_part = f"Holm-adjusted p = {p_holm}" if not p_holm.startswith("<") else f"Holm-adjusted p {p_holm}"
    return (f"Replies{model_note} to posts that signalled \u201c{row['group']}\u201d {cue_part}{style_part} "
            f"{body} than replies to {ref_part} ({ci}; {p_part}).")


def summarize(results: pd.DataFrame | None, alpha: float = 0.05, max_sentences: int = 12,
              catalog: MeasureCatalog | None = None) -> dict[str, Any]:
    """Significant and non-significant findings as sentences (pooled style rows first)."""
    out: dict[str, Any] = {"significant": [], "significant_more": 0, "not_significant": [], "not_estimable": [],
                           "n_tests": 0, "n_significant": 0}
    if results is None or results.empty:
        return out
    df = results.copy()
    out["n_tests"] = int(len(df))
    full_sig = df["significant_holm"] if "significant_holm" in df else df["p_holm"] < alpha
    out["n_significant"] = int(full_sig.fillna(False).astype(bool).sum())
    if "cue_type" in df:
        # With one cue type, its 'pooled' rows repeat it: state each gap once (the cue type's row).
        real = set(df["cue_type"].dropna()) - {"pooled"}
        if len(real) == 1:
            df = df[df["cue_type"] != "pooled"]
    sig_col = df["significant_holm"] if "significant_holm" in df else df["p_holm"] < alpha
    df["_sig"] = sig_col.fillna(False).astype(bool)
    multi_model = df["model_label"].nunique() > 1 if "model_label" in df else False
    # to_numeric: a column whose every value is NULL comes back from SQLite as objects (None)
    df["_mag"] = pd.to_numeric(df["relative_gap"], errors="coerce").abs().fillna(
        pd.to_numeric(df["estimate"], errors="coerce").abs())
    df["_pooled_style"] = (df.get("style", "pooled") == "pooled")
    sig = df[df["_sig"]].sort_values(["_pooled_style", "p_holm", "_mag"], ascending=[False, True, False])
    for i, row in enumerate(sig.to_dict("records")):
        if i >= max_sentences:
            out["significant_more"] = len(sig) - max_sentences
            break
        note = f" from {row['model_label']}" if multi_model else ""
        out["significant"].append(finding_sentence(row, model_note=note, catalog=catalog))
    # Non-significant gaps: one line per (model, outcome) over the pooled rows, each gap with its CI.
    ns = df[~df["_sig"] & df["_pooled_style"]]
    if "cue_type" in ns and (ns["cue_type"] == "pooled").any():
        ns = ns[ns["cue_type"] == "pooled"]
    # astype(bool): on an empty frame map() gives an object Series, which pandas reads as column labels
    finite = ns["estimate"].map(_finite).astype(bool) if "estimate" in ns else None
    not_est = ns[~finite] if finite is not None else ns.iloc[0:0]
    ns = ns[finite] if finite is not None else ns
    for (model, outcome), d in sorted(not_est.groupby(["model_label", "outcome"]),
                                      key=lambda kv: (kv[0][0], outcome_sort_key(kv[0][1], catalog))):
        who = f"{model}, " if multi_model else ""
        reasons = sorted({short_reason(w) for w in d.get("warning", pd.Series(dtype=object)).dropna() if str(w)})
        out["not_estimable"].append(f"{who}{outcome_label(outcome, catalog)}: no gap could be estimated for "
                                    f"{', '.join(chr(8220) + str(g) + chr(8221) for g in sorted(set(d['group'])))}"
                                    + (f" ({'; '.join(reasons)})" if reasons else "") + ".")
    for (model, outcome), d in sorted(ns.groupby(["model_label", "outcome"]),
                                      key=lambda kv: (kv[0][0], outcome_sort_key(kv[0][1], catalog))):
        parts = []
        for row in d.to_dict("records"):
            gap, ci = gap_text(row, catalog)
            cue = "" if row.get("cue_type") == "pooled" else f", {cue_short(row['cue_type'])}"
            # a gap against a reference group names it (the same group is also compared with the control)
            ref = row.get("reference")
            vs = f" vs \u201c{ref}\u201d" if ref and ref != "control" and _finite(row.get("estimate")) else ""
            parts.append(f"\u201c{row['group']}\u201d{vs}{cue}: {gap} ({ci}; Holm p = {fmt_p(row.get('p_holm'))})")
        who = f"{model}, " if multi_model else ""
        out["not_significant"].append(f"{who}{outcome_label(outcome, catalog)}: " + "; ".join(parts) + ".")
    return out


def power_sentences(power: pd.DataFrame | None, results: pd.DataFrame | None,
                    catalog: MeasureCatalog | None = None, reference: str = "control") -> tuple[list[str], str]:
    """The smallest gap the audit could have detected, per outcome; and where the numbers come from.
    ``reference``: what the gaps are against (a relative gap is a share of its mean)."""
    mean_of = "the control mean" if str(reference) == "control" else f"the mean of \u201c{reference}\u201d"
    sentences: list[str] = []
    if power is not None and not power.empty:
        rel_col = next((c for c in power.columns if "detectable" in c and "rel" in c), None)
        abs_col = next((c for c in power.columns if "detectable" in c and "rel" not in c), None)
        power = power.iloc[sorted(range(len(power)), key=lambda i: outcome_sort_key(str(power["outcome"].iloc[i]),
                                                                                    catalog))] \
            if "outcome" in power else power
        pw = power.get("power", pd.Series([0.8] * len(power))).fillna(0.8)
        for row, p in zip(power.to_dict("records"), pw):
            outcome = row.get("outcome", "?")
            label = outcome_label(outcome, catalog)
            model = f" ({row['model_label']})" if "model_label" in row and power.get("model_label") is not None \
                and power["model_label"].nunique() > 1 else ""
            at_gap = ""
            if _finite(row.get("power_at_gap")) and _finite(row.get("gap")) \
                    and not is_absolute(outcome, row.get("ref_mean", 1.0), catalog):
                at_gap = (f"; power to detect a {100 * float(row['gap']):.0f}% gap: "
                          f"{100 * float(row['power_at_gap']):.0f}%")
            rng = _cat(catalog).measure(outcome).range
            width = float(rng[1]) - float(rng[0]) if rng is not None else math.inf
            if abs_col and _finite(row.get(abs_col)) and float(row[abs_col]) >= width:
                scale, unit = scale_unit(outcome, catalog)
                sentences.append(f"{label}{model}: none; the smallest detectable gap ({scale * float(row[abs_col]):.3g} "
                                 f"{unit}) is at least the whole {scale_phrase(outcome, catalog) or 'range'} "
                                 f"(at {int(round(100 * float(p)))}% power).")
                continue
            # A detectable gap above 100% of the control mean says the mean is near 0: state it absolutely.
            if rel_col and _finite(row.get(rel_col)) and not is_absolute(outcome, row.get("ref_mean", 1.0), catalog) \
                    and abs(float(row[rel_col])) <= 1.0:
                sentences.append(f"{label}{model}: {100 * float(row[rel_col]):.1f}% of {mean_of} "
                                 f"(at {int(round(100 * float(p)))}% power{at_gap}).")
            elif abs_col and _finite(row.get(abs_col)):
                scale, unit = scale_unit(outcome, catalog)
                sentences.append(f"{label}{model}: {scale * float(row[abs_col]):.3g} {unit} "
                                 f"(at {int(round(100 * float(p)))}% power).")
        if sentences:
            return sentences, "the analysis stage's power calculation"
    if results is None or results.empty:
        return [], ""
    # Approximation: a two-sided test at alpha 0.05 has 80% power for a true gap of (1.96 + 0.84) SE.
    df = results[(results.get("cue_type", "pooled") == "pooled") & (results.get("style", "pooled") == "pooled")]
    if df.empty:
        df = results
    for outcome, d in sorted(df.groupby("outcome"), key=lambda kv: outcome_sort_key(kv[0], catalog)):
        se = float(d["se"].median())
        ref = float(d["ref_mean"].median()) if "ref_mean" in d else float("nan")
        mdg = 2.8 * se
        if is_absolute(outcome, ref, catalog):
            scale, unit = scale_unit(outcome, catalog)
            sentences.append(f"{outcome_label(outcome, catalog)}: {scale * mdg:.3g} {unit} (at 80% power).")
        else:
            sentences.append(f"{outcome_label(outcome, catalog)}: {100 * mdg / ref:.1f}% of {mean_of} (at 80% power).")
    return sentences, "2.8 standard errors of the pooled gap estimates (two-sided alpha 0.05, 80% power; before multiple-comparison correction)"
