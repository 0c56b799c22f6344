"""The verdict table of the first screen: is each gap within its equivalence margin?

Reads the TOST columns the analysis stored (``analysis.margins``; :mod:`audit.stats.equivalence`):
one row per confirmatory comparison (with ``analysis.primary`` the confirmatory family; otherwise
every gap with styles and cue types pooled, against each reference, and every max - min disparity, of
an outcome with a margin), in plain words, e.g. "Black woman vs White woman, Empathy: -3.1% (90% CI
-5.0 to -1.2%); margin +-5%: within margin". An undecided row says how many more posts (or human
ratings, for a gap corrected with them) would decide it. Without margins the table is replaced by
the statement that no fairness claim can be made without one.

:func:`gate_status` turns the same rows into the exit status of ``--gate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..scorers.measures import MeasureCatalog
from ..stats.equivalence import EXCEEDS, NO_MARGIN, WITHIN, plain_verdict
from .findings import outcome_label, scale_unit

__all__ = ["verdict_rows", "verdicts_context", "gate_status", "GateStatus", "GATE_CODES", "NO_MARGIN_TEXT",
           "MAX_FIRST_SCREEN_ROWS"]

#: Exit statuses of ``run --gate`` / ``report --gate`` (documented in docs/statistics.md).
GATE_CODES = {"within": 0, "exceeds": 3, "undecided": 4, "no_verdicts": 5}
NO_MARGIN_TEXT = ("No fairness claim can be made: the spec states no equivalence margin (analysis.margins), "
                  "so the tests below only say whether gaps are distinguishable from zero, and \u201cnot "
                  "significant\u201d does not mean \u201cfair\u201d.")
MAX_FIRST_SCREEN_ROWS = 8
#: Order of the rows: what blocks a release first.
_SEVERITY = {EXCEEDS: 0, "gap, size undetermined": 1, "inconclusive": 2, "not estimable": 3, WITHIN: 4}


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _confirmatory(df: pd.DataFrame) -> pd.DataFrame:
    """The comparisons the gate decides on: rows with a margin, of the confirmatory family when there
    is one, else with styles and cue types pooled."""
    if df is None or df.empty or "verdict" not in df.columns:
        return pd.DataFrame()
    d = df[df["verdict"].astype(str) != NO_MARGIN]
    if "family" in d.columns:
        return d[d["family"].astype(str) == "confirmatory"]
    for col in ("style", "cue_type", "condition", "scope"):  # condition, scope: the stigma, appropriateness suites
        if col in d.columns:
            d = d[d[col].astype(str) == "pooled"]
    if "term" in d.columns:  # the stigma suite: a condition against daily troubles is no fairness comparison
        d = d[d["term"].astype(str) != "condition"]
    return d


def _amounts(rec: dict[str, Any], catalog: MeasureCatalog | None) -> tuple[str, str, str]:
    """(gap, CI, margin) texts on the margin's scale."""
    kind = str(rec.get("margin_kind"))
    est, lo, hi = _f(rec.get("verdict_estimate", rec.get("estimate"))), _f(rec.get("tost_ci_low")), \
        _f(rec.get("tost_ci_high"))
    if kind == "relative":
        ref = _f(rec.get("ref_mean"))
        rel = est / ref if ref and np.isfinite(ref) else _f(rec.get("relative_gap"))
        if rec.get("statistic") == "max - min":  # a disparity: on the absolute scale, the margin converted
            m = _f(rec.get("margin_abs"))
            scale, unit = scale_unit(str(rec["outcome"]), catalog)
            return (_num(est * scale, unit), f"{_num(lo * scale, unit)} to {_num(hi * scale, unit)}",
                    f"\u00b1{_num(m * scale, unit)} ({rec.get('margin')} of the control mean)")
        def pct(v: float) -> str:
            return f"{100 * v:+.1f}%" if np.isfinite(v) else "n/a"

        return (pct(rel), f"{pct(lo)} to {pct(hi)}", f"\u00b1{rec.get('margin')}")
    if kind == "points":
        def pp(v: float) -> str:
            return f"{100 * v:+.1f}" if np.isfinite(v) else "n/a"

        return (f"{pp(est)} pp", f"{pp(lo)} to {pp(hi)} pp", f"\u00b1{100 * _f(rec.get('margin_abs')):g} pp")
    scale, unit = scale_unit(str(rec["outcome"]), catalog)
    m = _f(rec.get("margin_abs"))
    return (_num(est * scale, unit, sign=True), f"{_num(lo * scale, unit, sign=True)} to {_num(hi * scale, unit, sign=True)}",
            f"\u00b1{_num(m * scale, unit)}")


def _num(v: float, unit: str, sign: bool = False) -> str:
    if not np.isfinite(v):
        return "n/a"
    digits = 1 if unit in ("pp", "percentage points") else 3
    return f"{v:{'+' if sign else ''}.{digits}f} {unit}".strip()


def verdict_rows(results: pd.DataFrame | None, disparity: pd.DataFrame | None, *,
                 catalog: MeasureCatalog | None = None, alpha: float = 0.05) -> list[dict[str, Any]]:
    """One dict per confirmatory comparison: ``comparison, outcome, outcome_label, gap, ci, margin,
    verdict, verdict_text, decide, source, kind`` (``kind``: gap | disparity) and ``sentence``, the
    row in one line."""
    rows: list[dict[str, Any]] = []
    ci_level = f"{100 * (1 - 2 * alpha):g}% CI"
    for kind, df in (("gap", results), ("disparity", disparity)):
        conf = _confirmatory(df) if df is not None else pd.DataFrame()
        for rec in conf.to_dict("records"):
            if kind == "gap":
                comp = f"{rec['group']} vs {rec['reference']}"
            else:
                comp = f"largest disparity ({rec.get('max_group')} vs {rec.get('min_group')})"
            if "model_label" in rec and results is not None and results["model_label"].nunique() > 1:
                comp += f" [{rec['model_label']}]"
            gap, ci, margin = _amounts(rec, catalog)
            v = str(rec["verdict"])
            decide = ""
            if np.isfinite(_f(rec.get("ratings_more"))):
                decide = f"about {int(_f(rec['ratings_more']))} more human ratings would decide it"
            elif np.isfinite(_f(rec.get("posts_more"))):
                decide = f"about {int(_f(rec['posts_more']))} more posts would decide it"
            elif v in ("inconclusive", "gap, size undetermined"):
                decide = "the estimate is too close to the margin for more posts to decide it"
            label = outcome_label(str(rec["outcome"]), catalog)
            src = " (corrected with human ratings)" if rec.get("verdict_source") == "ppi" else ""
            sentence = (f"{comp}, {label}: {gap} ({ci_level} {ci}){src}; margin {margin}: {plain_verdict(v)}"
                        + (f"; {decide}" if decide else ""))
            rows.append(dict(comparison=comp, outcome=str(rec["outcome"]), outcome_label=label, gap=gap, ci=ci,
                             margin=margin, verdict=v, verdict_text=plain_verdict(v), decide=decide,
                             source=rec.get("verdict_source") or "model", kind=kind, sentence=sentence,
                             css={WITHIN: "within", EXCEEDS: "exceeds"}.get(v, "undecided")))
    return sorted(rows, key=lambda r: _SEVERITY.get(r["verdict"], 3))


@dataclass
class GateStatus:
    """What ``--gate`` decides: ``code`` (:data:`GATE_CODES`), ``line`` (one sentence) and the counts."""

    code: int
    line: str
    counts: dict[str, int] = field(default_factory=dict)


def gate_status(results: pd.DataFrame | None, disparity: pd.DataFrame | None,
                *others: pd.DataFrame | None) -> GateStatus:
    """0 when every confirmatory comparison is within its margin; 3 when any exceeds it; 4 when none
    exceeds but some is undecided (inconclusive, a gap of undetermined size or not estimable); 5 when
    there is nothing to decide on (no margins, or no analysis). ``others``: the stigma,
    appropriateness and PCSA suites' test tables (their pooled comparisons of groups)."""
    verdicts = []
    for df in (results, disparity, *others):
        conf = _confirmatory(df) if df is not None else pd.DataFrame()
        verdicts += conf["verdict"].astype(str).tolist() if not conf.empty else []
    counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
    if not verdicts:
        return GateStatus(GATE_CODES["no_verdicts"], "gate: no verdicts to decide on (no analysis.margins, or no "
                          "analysis results): " + NO_MARGIN_TEXT, counts)
    n = len(verdicts)
    if counts.get(EXCEEDS):
        return GateStatus(GATE_CODES["exceeds"], f"gate: {counts[EXCEEDS]} of {n} confirmatory comparisons exceed "
                          "their margin", counts)
    if counts.get(WITHIN, 0) == n:
        return GateStatus(GATE_CODES["within"], f"gate: all {n} confirmatory comparisons are within their margin",
                          counts)
    return GateStatus(GATE_CODES["undecided"], f"gate: {n - counts.get(WITHIN, 0)} of {n} confirmatory comparisons "
                      "are not decided (inconclusive or of undetermined size); none exceeds its margin", counts)


def verdicts_context(results: pd.DataFrame | None, disparity: pd.DataFrame | None, *,
                     catalog: MeasureCatalog | None = None, alpha: float = 0.05) -> dict[str, Any]:
    """The template context of the verdict table (``verdicts``): ``present`` (margins were given),
    ``rows`` (at most :data:`MAX_FIRST_SCREEN_ROWS` on the first screen), ``more`` (rows left out),
    ``all_rows``, ``gate`` (:func:`gate_status` as a dict), ``no_margin`` (the statement without margins)."""
    has = results is not None and "verdict" in results.columns
    rows = verdict_rows(results, disparity, catalog=catalog, alpha=alpha) if has else []
    g = gate_status(results, disparity)
    return dict(present=has, rows=rows[:MAX_FIRST_SCREEN_ROWS], more=max(len(rows) - MAX_FIRST_SCREEN_ROWS, 0),
                all_rows=rows, ci_level=f"{100 * (1 - 2 * alpha):g}%", alpha=alpha,
                gate=dict(code=g.code, line=g.line, counts=g.counts), no_margin=NO_MARGIN_TEXT)
