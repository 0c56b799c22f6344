"""Build the report context from :class:`ReportData` and write HTML, Markdown, JSON and CSV."""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from .. import __version__
from ..scorers.measures import Measure, MeasureCatalog
from ..jsonable import jsonable
from ..ratings.summary import report_section
from ..untrusted import csv_safe, visible_controls
from ..store import now_iso
from . import findings as F
from .data import EMBEDDED_NAME, ReportData, collect
from .figures import all_figures, skipped_figures
from .findings import _finite
from .headline import (chosen_by, group_table, headline_result, headline_sentences, primary_outcome,
                       primary_reason)
from .verdicts import verdicts_context
from .provenance import import_provenance, software_versions
from .models_section import models_context, models_json
from .scorer_comparison import comparison_section, ppi_section

TEMPLATES = Path(__file__).resolve().parent / "templates"
CSV_TABLES = ("results", "results_paired", "results_intersectional", "results_power", "analysis_meta",
              "results_disparity", "results_ppi", "results_models",
              "results_variability", "results_axes")
EMBEDDED_WARNING = (
    f"This audit used the embedded default model ({EMBEDDED_NAME}, 135 M parameters, run locally by llama.cpp). "
    "It exists so that the pipeline runs anywhere, offline and without an API key; it is not a model worth "
    "auditing. Its replies are poor, and gaps found in them say nothing about any model you would deploy."
)
FOLD_ROWS = 10  # a list or table longer than this goes one click down, in <details>


@dataclass(frozen=True)
class Section:
    """One numbered section of the report after the first screen.

    ``template``: the base name of its two templates, ``templates/sections/<template>.html.j2`` and
    ``.md.j2`` (both rendered with the whole report context). ``context``: optional function of the
    :class:`ReportData` returning extra context keys the section needs (merged before rendering).
    A new section is one entry here (or :func:`add_section`) plus its two templates; the contents list
    and the numbering follow.
    """

    id: str
    title: str
    template: str
    context: Callable[[ReportData], dict[str, Any]] | None = None


SECTIONS: list[Section] = [
    Section("summary", "Summary", "summary"),
    Section("figures", "Figures and results", "figures"),
    Section("methods", "Methods", "methods"),
    Section("scorer-validity", "Does the scorer treat groups alike?", "scorer_validity"),
    Section("limitations", "Limitations", "limitations"),
    Section("examples", "Example replies", "examples"),
    Section("provenance", "Provenance", "provenance"),
]


def add_section(section: Section, *, before: str | None = None) -> None:
    """Insert ``section`` before the section with id ``before`` (default: before the provenance
    appendix, which stays last). Adding a section whose id is already there replaces it."""
    SECTIONS[:] = [s for s in SECTIONS if s.id != section.id]
    ids = [s.id for s in SECTIONS]
    target = before or "provenance"
    SECTIONS.insert(ids.index(target) if target in ids else len(SECTIONS), section)


# ----------------------------------------------------------------------------- formatting helpers


def fnum(x: Any, digits: int = 4) -> str:
    """Numbers in tables: fixed decimals, or scientific when tiny; 'n/a' when missing."""
    if not _finite(x):
        return "n/a"
    v = float(x)
    if v != 0 and abs(v) < 10 ** -(digits - 1):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}f}"


def fp(x: Any) -> str:
    if not _finite(x):
        return "n/a"
    v = float(x)
    return f"{v:.3e}" if v < 1e-3 else f"{v:.4f}"


def md_escape(value: Any) -> str:
    """Escape a value for Markdown: HTML entities, Markdown punctuation and table pipes; one line."""
    if value is None:
        return ""
    if isinstance(value, _Raw):
        return str(value)
    s = html.escape(visible_controls(str(value)), quote=False)
    s = re.sub(r"([\\`*_\[\]|~])", r"\\\1", s)
    return s.replace("\r", " ").replace("\n", " ")


def _fenced(text: Any, lang: str = "") -> "_Raw":
    """A Markdown code block whose fence is longer than any run of backticks inside (no breaking out)."""
    text = visible_controls(str(text or ""))
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return _Raw(f"{fence}{lang}\n{text.rstrip()}\n{fence}")


class _Raw(str):
    """Markdown the template builds itself (not user text)."""


def _records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    if df is None:
        return []
    return [jsonable(r) for r in df.to_dict("records")]


# ----------------------------------------------------------------------------- sections


def _style_prompts(data: ReportData) -> list[dict[str, Any]]:
    """Each prompt style's full messages, shown for one control post (the stored request, verbatim)."""
    if not data.has_replies:
        return []
    # the first request of each style, a control one if there is one
    firsts = data.facts.first_rows("q.style", "v.group_name = 'control'",
                                   values=list(data.summary["style"].dropna().unique())).drop_duplicates("style")
    rows = [(style, row) for style, row in zip(firsts["style"], firsts.to_dict("records"))
            if style in set(data.design["styles"])]
    rows.sort(key=lambda sr: sr[0])
    texts = data.texts([row["request_key"] for _, row in rows])
    out = []
    for style, row in rows:
        try:
            messages = json.loads(texts.loc[row["request_key"], "messages_json"])
        except (TypeError, ValueError, KeyError):
            messages = []
        out.append(dict(style=style, style_hash=row.get("style_hash"), messages=messages,
                        post_id=row.get("post_id")))
    return out


def _cues(data: ReportData) -> list[dict[str, Any]]:
    """Cue texts per cue type and group, with their sources where the run recorded them."""
    v = data.variants
    if v.empty:
        return []
    sources = {}
    raw = data.meta.get("cue_sources")
    if raw:
        try:
            sources = json.loads(raw)
        except ValueError:
            sources = {}
    has_source_col = "source" in v.columns
    rows = []
    for (cue_type, group), d in v[v["cue_type"] != "control"].groupby(["cue_type", "group"], sort=True):
        texts = list(dict.fromkeys(str(x) for x in d["cue_text"].fillna("") if str(x)))
        src = []
        if has_source_col:
            src = sorted({str(s) for s in d["source"].dropna() if str(s)})
        entry = sources.get(cue_type) if isinstance(sources, dict) else None
        if not src and isinstance(entry, dict):
            alts = entry.get("alternatives") or {}
            item_src = sorted({str(alts[a]) for a in d["alternative"].dropna() if a in alts})
            src = ([str(entry["source"])] if entry.get("source") else []) + item_src
        rows.append(dict(cue_type=cue_type, cue_label=F.cue_short(cue_type), group=group, texts=texts,
                         n_variants=len(d), sources=src))
    return rows


def _examples(data: ReportData, n_posts: int = 3) -> list[dict[str, Any]]:
    """For a few posts: the control reply and one reply per group, side by side (first model and style).
    A post without a control (an observational or mixed release) shows the replies it has, under their
    group; the posts are then taken from every group in turn, so each group has an example."""
    summ = data.summary
    answered = summ[summ["status"].notna()] if not summ.empty else summ
    if answered.empty:
        return []
    model = sorted(answered["model_label"].unique())[0]
    style = sorted(answered["style"].dropna().unique())[0] if answered["style"].notna().any() else None
    # only the rows of the posts shown are read (a million replies are never held)
    cond = "r.status IS NOT NULL AND q.model_label = ?" + (" AND q.style = ?" if style is not None else "")
    params = (model, style) if style is not None else (model,)
    facts = data.facts
    posts = facts.example_posts(cond, params, n_posts, n_groups=max(len(data.design["groups"]) + 1, n_posts))
    d = facts.rows(cond + (f" AND v.post_id IN ({','.join('?' * len(posts))})" if posts else " AND 0"),
                   (*params, *posts), by_post=True)
    wide = data.scores_wide(list(d["request_key"]))
    columns = sorted(f"{sc}.{m}" for sc, m, has in data.score_outcomes if has)  # the run's, as before
    wide = wide.reindex(columns=columns)
    wide = wide.rename(columns=lambda c: str(c).split(".", 1)[-1])
    wide = wide.loc[:, ~wide.columns.duplicated()]  # the first scorer's value of a measure, as before
    cue_pref = [c for c in ("explicit_statement", "explicit_tag", "implicit_name", "implicit_context",
                            "implicit_dialect") if c in set(d["cue_type"])]
    cue_pref += sorted(c for c in set(d["cue_type"]) if c not in cue_pref and c != "control")
    show_measures = [m for m in ("empathy", "ER", "IP", "EX", "words", "refusal") if m in wide.columns][:4]
    out = []
    texts = data.texts(list(d["request_key"]))
    for pid in posts:
        dp = d[d["post_id"] == pid].sort_values(["sample_index", "request_key"])
        ctrl = dp[dp["cue_type"] == "control"]
        cue = next((c for c in cue_pref if (dp["cue_type"] == c).any()), None)
        cells = [ctrl.iloc[0]] if not ctrl.empty else []
        if ctrl.empty:  # the post as written, under its group(s): one reply per group
            cells = [dp[dp["group"] == g].iloc[0] for g in sorted(dp["group"].astype(str).unique())]
        elif cue:
            dc = dp[dp["cue_type"] == cue]
            for g in sorted(dc["group"].unique()):
                cells.append(dc[dc["group"] == g].iloc[0])
        items = []
        for c in cells:
            k = c["request_key"]
            c = {**c.to_dict(), **(texts.loc[k].to_dict() if k in texts.index else {})}
            scores = [(data.measures.measure(m).short_label,
                       _example_value(data.measures.measure(m), wide.loc[k, m]) if k in wide.index else "n/a")
                      for m in show_measures]
            items.append(dict(group=c["group"], cue_type=c["cue_type"], cue_label=F.cue_short(c["cue_type"]),
                              cue_text=c.get("cue_text") or "", post_text=c.get("post_text") or "",
                              reply=c.get("reply") if c.get("status") == "ok" else None,
                              status=c.get("status"), error=c.get("error"), scores=scores))
        first = ctrl.iloc[0] if not ctrl.empty else cells[0]
        out.append(dict(post_id=pid, topic=first.get("topic"), cue_type=cue,
                        cue_label=(F.cue_label(cue) if cue else "") if not ctrl.empty else
                        "no control: the post as written, " + ", ".join(f"\u201c{it['group']}\u201d" for it in items),
                        model=model, style=style, post_text=items[0]["post_text"], cells=items))
    return out


def _example_value(m: Measure, v: Any) -> str:
    """One score as an example card shows it: yes/no for a binary measure, else its declared decimals."""
    if not _finite(v):
        return "n/a"
    if m.kind == "binary":
        return "yes" if float(v) >= 0.5 else "no"
    return f"{float(v):.0f}" if m.decimals == 0 else fnum(v, m.decimals)


def _scorers(data: ReportData) -> list[dict[str, Any]]:
    out = []
    for name, info in sorted(data.scorer_info.items()):
        flat = {k: v for k, v in info.items() if not isinstance(v, (dict, list)) and k != "name"}
        validation = _validation_of(info) or {}
        vrows = []
        vtable = _validation_table(validation)
        if isinstance(validation, dict) and vtable is None:
            for k, v in validation.items():
                if isinstance(v, dict):
                    vrows.append(dict(measure=k, figures=", ".join(f"{_plain_key(a)} {_short(b)}" for a, b in v.items()
                                                                  if not isinstance(b, (dict, list)))))
                else:
                    vrows.append(dict(measure="", figures=f"{_plain_key(k)} {_short(v)}"))
        extra = {k: v for k, v in info.items() if isinstance(v, (dict, list)) and k not in
                 VALIDATION_KEYS}
        out.append(dict(name=name, fields=flat, validation=vrows, validation_table=vtable,
                        extra=json.dumps(jsonable(extra), indent=1, sort_keys=True) if extra else ""))
    return out


def _plain_key(k: Any) -> str:
    """'accuracy_sd' -> 'accuracy (sd over folds)'; 'macro_f1' -> 'macro-F1'; as a reader reads them."""
    k = str(k)
    base, sd = (k[:-3], True) if k.endswith("_sd") else (k, False)
    names = {"macro_f1": "macro-F1", "weighted_kappa": "weighted \u03ba", "kappa": "\u03ba", "n": "n"}
    text = names.get(base, base.replace("_", " "))
    return f"{text} (sd over folds)" if sd else text


def _validation_table(validation: Any) -> dict[str, Any] | None:
    """A validation dict of per-measure figures (``{measure: {accuracy, accuracy_sd, ..., n}}``) as a
    table like every other table: one row per measure, one column per figure, ``mean ± sd`` where
    the figure has an ``_sd``. None when the figures are not of that shape."""
    if not isinstance(validation, dict) or not validation or \
            not all(isinstance(v, dict) for v in validation.values()):
        return None
    keys: list[str] = []
    for v in validation.values():
        keys += [k for k in v if not str(k).endswith("_sd") and not isinstance(v[k], (dict, list)) and k not in keys]
    if not keys:
        return None
    rows = []
    for m, v in validation.items():
        cells = []
        for k in keys:
            x = v.get(k)
            sd = v.get(f"{k}_sd")
            cells.append("" if x is None else f"{_short(x)} \u00b1 {_short(sd)}" if sd is not None else _short(x))
        rows.append(dict(measure=str(m), cells=cells))
    return dict(columns=[_plain_key(k) + (" (mean \u00b1 sd over folds)" if any(f"{k}_sd" in v for v in validation.values())
                                          else "") for k in keys], rows=rows)


VALIDATION_KEYS = ("validation", "validation_figures", "cv", "cross_validation")


def _validation_of(info: dict[str, Any]) -> Any:
    """A scorer's validation figures, under whichever key its info() uses (epitome: 'cv')."""
    for k in VALIDATION_KEYS:
        if info.get(k):
            return info[k]
    return None


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _analysis_meta(data: ReportData) -> list[dict[str, str]]:
    m = data.tables.get("analysis_meta")
    if m is None or m.empty:
        return []
    kcol = "key" if "key" in m.columns else m.columns[0]
    vcol = "value" if "value" in m.columns else m.columns[-1]
    out = []
    for k, v in zip(m[kcol], m[vcol]):
        text = str(v)
        try:
            parsed = json.loads(text)
            if isinstance(parsed, (dict, list)):
                text = json.dumps(parsed, indent=1, sort_keys=True)
        except (TypeError, ValueError):
            pass
        out.append(dict(key=str(k), value=text, multiline="\n" in text or len(text) > 90))
    return out


def _results_rows(df: pd.DataFrame | None, catalog: MeasureCatalog | None = None) -> list[dict[str, Any]]:
    if df is None or df.empty:
        return []
    rows = []
    order = df.assign(_o=df["outcome"].map(lambda o: F.outcome_sort_key(o, catalog)))
    sort_cols = [c for c in ("model_label", "_o", "style", "cue_type", "group") if c in order.columns]
    order = order.sort_values(sort_cols, key=lambda s: s.map(lambda x: (x != "pooled", x)) if s.name in (
        "style", "cue_type") else s)
    for r in order.to_dict("records"):
        sig = bool(r.get("significant_holm")) if r.get("significant_holm") is not None and not (
            isinstance(r.get("significant_holm"), float) and math.isnan(r["significant_holm"])) else False
        rows.append(dict(
            family_id=r.get("family_id"),
            model=r.get("model_label"), outcome=r.get("outcome"), outcome_label=F.outcome_label(r.get("outcome"), catalog),
            style=r.get("style"), cue_type=r.get("cue_type"), group=r.get("group"), reference=r.get("reference"),
            estimate=fnum(r.get("estimate")), ci=f"[{fnum(r.get('ci_low'))}, {fnum(r.get('ci_high'))}]",
            ci_low=fnum(r.get("ci_low")), ci_high=fnum(r.get("ci_high")),
            relative_gap=fnum(r.get("relative_gap")), rel_ci_low=fnum(r.get("rel_ci_low")),
            rel_ci_high=fnum(r.get("rel_ci_high")),
            p_value=fp(r.get("p_value")), p_holm=fp(r.get("p_holm")), p_bh=fp(r.get("p_bh")),
            significant=sig, n=_count(r.get("n")), n_posts=_count(r.get("n_posts")), method=r.get("method"),
            family=r.get("family") if isinstance(r.get("family"), str) else "",
            missing=_missing_cell(r.get("n_missing"), r.get("ref_n_missing")),
            converged=r.get("converged"), warning=_reader_warning(r.get("warning")),
        ))
    return rows


def _count(v: Any) -> str:
    """A count as a reader reads it: '12', or 'n/a' (never 'nan' or '12.0')."""
    return str(int(float(v))) if _finite(v) else "n/a"


def _reader_warning(w: Any) -> str:
    """A fit warning as reader-facing text (:func:`audit.report.findings.reader_reason` per clause), '' if none."""
    if w is None or (isinstance(w, float) and math.isnan(w)) or not str(w).strip() or str(w) == "nan":
        return ""
    return "; ".join(dict.fromkeys(F.reader_reason(part) for part in str(w).split("; ") if part.strip()))


def _disparity_rows(df: pd.DataFrame | None, catalog: MeasureCatalog | None = None) -> list[dict[str, Any]]:
    """The largest between-group disparity (max - min, min / max) per outcome, as the report shows it:
    on the outcome's absolute scale (points, or percentage points for proportions)."""
    if df is None or df.empty:
        return []
    order = df.assign(_o=df["outcome"].map(lambda o: F.outcome_sort_key(o, catalog)),
                      _c=df.get("cue_type", "pooled").map(lambda c: (c != "pooled", c)))
    order = order.sort_values([c for c in ("model_label", "_o", "_c") if c in order.columns])
    rows = []
    for r in order.to_dict("records"):
        scale, unit = F.scale_unit(r["outcome"], catalog)
        digits = 1 if scale == 100.0 else 3

        def num(x: Any, sc: float = scale, d: int = digits) -> str:
            return f"{float(x) * sc:.{d}f}" if _finite(x) else "n/a"

        sig = r.get("significant_holm")
        ratio = (f"{float(r['ratio']):.3f} [{fnum(r.get('ratio_ci_low'), 3)}, {fnum(r.get('ratio_ci_high'), 3)}]"
                 if _finite(r.get("ratio")) else "n/a")
        rows.append(dict(model=r.get("model_label"), outcome=r["outcome"],
                         outcome_label=F.outcome_label(r["outcome"], catalog), cue_type=r.get("cue_type", "pooled"),
                         max_group=r.get("max_group"), min_group=r.get("min_group"),
                         difference=f"{num(r.get('estimate'))} {unit}",
                         difference_ci=f"[{num(r.get('ci_low'))}, {num(r.get('ci_high'))}]", ratio=ratio,
                         p_holm=fp(r.get("p_holm")), significant=bool(sig) if _finite(sig) else False))
    return rows


def _missing_cell(n_missing: Any, ref_n_missing: Any) -> str:
    """'3 (ref. 0)': missing outcomes of the group and of its reference, beside the estimate."""
    def count(x: Any) -> str:
        return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else str(int(x))
    return f"{count(n_missing)} (ref. {count(ref_n_missing)})"


def _generic_table(df: pd.DataFrame | None, max_rows: int = 400) -> dict[str, Any] | None:
    if df is None or df.empty:
        return None
    cols = [str(c) for c in df.columns]
    rows = []
    for r in df.head(max_rows).itertuples(index=False):
        rows.append([fnum(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in r])
    # Columns holding long text get room (and a smaller font) instead of wrapping every row tall.
    long = [any(len(row[i]) > 40 for row in rows) for i in range(len(cols))]
    return dict(columns=cols, rows=rows, long=long, truncated=max(0, len(df) - max_rows))


def _axis_rows(df: pd.DataFrame | None, measures: Any) -> list[dict[str, str]]:
    """Rows of the pooled axis contrasts (``results_axes``, :mod:`audit.stats.axes`), shown beside the
    cell-level gaps."""
    if df is None or df.empty:
        return []
    return [dict(outcome=measures.label(r["outcome"]), model=str(r["model_label"]), axis=str(r["axis"]),
                 contrast=f"{r['level']} vs {r['reference']}", estimate=fnum(r["estimate"]),
                 ci=f"{fnum(r['ci_low'])} to {fnum(r['ci_high'])}", p=fnum(r["p_value"]), p_holm=fnum(r["p_holm"]),
                 pairs=str(r["pairs"]), n_pairs=str(int(r["n_pairs"])))
            for r in df.to_dict("records")]


def _variability_rows(df: pd.DataFrame | None, measures: Any) -> list[dict[str, str]]:
    """Rows of the run-to-run variability table (``results_variability``; samples > 1 only)."""
    if df is None or df.empty:
        return []
    return [dict(outcome=measures.label(r["outcome"]), model=str(r["model_label"]), samples=str(int(r["samples"])),
                 var_variant=fnum(float(r["var_variant"])), var_sample=fnum(float(r["var_sample"])),
                 share=f"{100 * float(r['share_sampling']):.0f}%", advice=str(r["advice"]))
            for r in df.to_dict("records")]


def _group_summary(data: ReportData) -> pd.DataFrame:
    """fairlearn-style: mean, SD and n of every score per model, group and cue type (a SQL aggregate,
    :meth:`audit.report.facts.ReplyFacts.group_summary`)."""
    return data.group_summary.drop(columns=["sum"], errors="ignore")


def _limitations(data: ReportData, status: pd.DataFrame, design: dict[str, Any]) -> dict[str, Any]:
    lim: dict[str, Any] = {}
    lim["embedded"] = EMBEDDED_WARNING if data.embedded_used else None
    # Scorer validity
    sv = []
    for name, info in sorted(data.scorer_info.items()):
        val = _validation_of(info)
        if val:  # figures from the scorer's own labelled data: not a validation on this run's replies
            sv.append(f"{name}: agreement with human labels on its own labelled data, not on this run's replies "
                      + (f"({_flatten(val)})" if _validation_table(val) is None else "(figures in the validation table under Methods)"))
        else:
            sv.append(f"{name}: no validation figures recorded")
        sv.extend(f"{name}: {c}" for c in info.get("caveats") or [])
    lim["scorer_validity"] = sv
    inv = data.invariance
    lim["invariance"] = None
    lim["invariance_verdicts"] = []
    if inv is not None and not inv.empty and "scorer" in inv.columns:
        try:
            from ..scorers.invariance import InvarianceResult

            heads = InvarianceResult(inv, 0, 0.05).headline()
        except Exception:  # noqa: BLE001 - fall back to our own reading of the table
            heads = {}
            for sc_name, g in inv.groupby("scorer"):
                n_flag = int((g.get("flagged", pd.Series(dtype=float)) == 1).sum())
                heads[sc_name] = "invariant" if n_flag == 0 else f"NOT invariant ({n_flag} cells flagged)"
        lim["invariance_verdicts"] = [f"{k}: {v}" for k, v in heads.items()]
        if "flagged" in inv.columns:
            flagged = inv[inv["flagged"] == 1]
            cols = [c for c in ("scorer", "measure", "cue_type", "group", "n_pairs", "mean_shift", "ci_low",
                                "ci_high", "relative_shift", "p_holm") if c in flagged.columns]
            lim["invariance"] = _generic_table(flagged[cols], 60) if not flagged.empty else None
    # Cue validity
    ps = data.probe_summary
    if ps is None or ps.empty:
        lim["cue_validity"] = None
    else:
        rate_col = next((c for c in ("leak_rate", "rate", "accuracy", "inferred_rate") if c in ps.columns), None)
        items = []
        if rate_col:
            for r in ps.to_dict("records"):
                axis = f", {r['axis']}" if r.get("axis") else ""
                model = f"{r['model_label']}: " if "model_label" in r and ps["model_label"].nunique() > 1 else ""
                n = f" (n = {int(r['n'])})" if _finite(r.get("n")) else ""
                items.append(f"{model}{F.cue_short(r.get('cue_type'))}{axis}: "
                             f"{100 * float(r[rate_col]):.0f}% inferred{n}")
        lim["cue_validity"] = items
    # Missing or failed replies
    total = int(status["n"].sum()) if not status.empty else 0
    by = status.groupby("status")["n"].sum().to_dict() if not status.empty else {}
    lim["status"] = dict(total=total, ok=int(by.get("ok", 0)), content_filter=int(by.get("content_filter", 0)),
                         failed=int(by.get("failed", 0)), pending=int(by.get("not answered", 0)))
    lim["unscored"] = data.unscored
    lim["errors"] = data.errors  # SQL GROUP BY error, at most facts.MAX_ERRORS of them
    lim["errors_left_out"] = data.errors_left_out
    lim["changed"] = data.answers_changed
    # Non-converged fits
    res = data.results
    if res is not None and not res.empty and "converged" in res:
        conv = res["converged"].map(lambda x: bool(x) if x is not None and not (
            isinstance(x, float) and math.isnan(x)) else True)
        lim["not_converged"] = int((~conv).sum())
        warns = res["warning"].dropna().map(_reader_warning) if "warning" in res else pd.Series([], dtype=str)
        warns = warns[warns.str.len() > 0]
        lim["warnings"] = sorted(warns.value_counts().head(8).items())
    else:
        lim["not_converged"] = None
        lim["warnings"] = []
    lim["few_posts"] = design["posts"] < 20
    kind = _design_kind(data)
    lim["design"] = _analysis_meta_value(data, "design_statement") if kind != "counterfactual" else None
    return lim


#: The corrected-gap CI half-width (levels) the report sizes a rating sample for.
RATINGS_HALFWIDTH = 0.1


def _evidence_lines(data: ReportData, primary: str | None, ratings_json: dict[str, Any] | None) -> list[str]:
    """For the headline measure: what its validity rests on (the scorer's declared evidence), whether
    it is validated on this run's replies (human ratings: the agreement measured on them), and how many
    ratings would give a corrected gap CI of +-:data:`RATINGS_HALFWIDTH` (:func:`audit.stats.power.ratings_plan`,
    its default assumptions; ``empathy-audit power RUN_DIR --ratings-ci``)."""
    if primary is None:
        return []
    m = data.measures.declared(primary)
    label = data.measures.label(primary)
    ev = m.evidence if m is not None else None
    out = [f"{label} ({primary}): " + (ev.sentence() + "." if ev is not None else "its scorer declares no validity "
                                       "evidence.")]
    scorer, _, measure = primary.rpartition(".")
    rows = [r for r in (ratings_json or {}).get("validity", []) if r.get("scorer") == scorer
            and r.get("measure") == measure and r.get("group") == "all"]
    if rows:
        r = rows[0]
        kappa = f"quadratic-weighted kappa {r['weighted_kappa']:.2f}" if _finite(r.get("weighted_kappa")) else \
            "no kappa (not a 0/1/2 measure)"
        out.append(f"On this run's replies, against {r['n_items']} human-rated replies: {kappa}, mean error "
                   f"{r['bias']:+.2f} (see \u201cDoes the scorer treat groups alike?\u201d).")
        return out
    n_replies = data.n_answered
    out.append("On LLM replies like this run's its agreement is unvalidated: no human ratings are stored.")
    if n_replies >= 4:
        from ..errors import AuditError
        from ..stats.power import RATINGS_DEFAULTS, ratings_plan

        try:
            plan = ratings_plan(RATINGS_HALFWIDTH, **{**RATINGS_DEFAULTS, "replies": n_replies})
            out.append(f"About {plan['needed']} human ratings would validate it and give a corrected gap CI of "
                       f"\u00b1{RATINGS_HALFWIDTH:g} level (default assumptions; empathy-audit power "
                       f"{_shell(str(data.run_dir))} --ratings-ci {RATINGS_HALFWIDTH:g}, then empathy-audit ratings "
                       "packet).")
        except AuditError as exc:
            out.append(f"Even rating every reply would not give a corrected gap CI of \u00b1{RATINGS_HALFWIDTH:g} "
                       f"level ({exc.message}).")
    return out


def _flatten(v: Any) -> str:
    if isinstance(v, dict):
        parts = []
        for k, x in v.items():
            parts.append(f"{k}: {_flatten(x)}" if isinstance(x, dict) else f"{_plain_key(k)} {_short(x)}")
        return "; ".join(parts)
    return _short(v)


def _provenance(data: ReportData, generated_at: str) -> dict[str, Any]:
    meta = data.meta
    scorer_hashes = {}
    for name, info in data.scorer_info.items():
        for k, v in info.items():
            if "sha256" in k and isinstance(v, str):
                scorer_hashes[f"{name} ({k})"] = v
            elif isinstance(v, dict):
                for k2, v2 in v.items():
                    if "sha256" in k2 and isinstance(v2, str):
                        scorer_hashes[f"{name} {k} ({k2})"] = v2
    order = ["variants", "generate", "score", "analyze", "report"]
    stage_times = {f"stage {k.split('.', 1)[1]} (last run)": v for k, v in sorted(
        ((k, v) for k, v in meta.items() if k.startswith("stage.")),
        key=lambda kv: order.index(kv[0].split(".", 1)[1]) if kv[0].split(".", 1)[1] in order else 99)}
    spec_path = None
    if data.spec is not None and data.spec.source_path:
        spec_path = str(data.spec.source_path)
    run_dir = meta.get("run_dir") or str(data.run_dir)
    spec_arg = meta.get("spec_argument") or spec_path
    spec_note = None
    if not spec_arg:
        spec_arg = "spec.yaml"
        spec_note = ("The run was started from a spec object, not a file: save the spec shown below (JSON is "
                     "valid YAML) as spec.yaml, then run this command.")
    reproduce = f"empathy-audit run {_shell(spec_arg)} --out {_shell(run_dir)}"
    imported = import_provenance(meta, run_dir)
    n_imported, n_generated = data.reply_origins
    if imported is not None and n_imported == 0 and n_generated > 0:
        imported = None  # the current design's replies were all generated: the import is not what is analysed
    if imported is not None and n_generated > 0:
        # a mixed design (`run SPEC --reuse` into an imported run): both sources, both steps to reproduce
        imported["mixed"] = {"imported": n_imported, "generated": n_generated}
        imported["reproduce"] = (f"{imported['reproduce']} && empathy-audit run {_shell(spec_arg)} --out "
                                 f"{_shell(run_dir)} --reuse")
    if imported is not None:  # the replies came from a release: reproducing the run is re-importing it
        reproduce, spec_note = imported["reproduce"], None
        imported["design_statement"] = None  # until the run is analysed
        am = data.tables.get("analysis_meta")
        if am is not None and not am.empty and "key" in am.columns:
            hit = am.loc[am["key"] == "design_statement", "value"]
            imported["design_statement"] = str(hit.iloc[0]) if len(hit) else None
    software_run = {}
    if meta.get("software_versions"):
        try:
            software_run = json.loads(meta["software_versions"])
        except ValueError:
            software_run = {}
    return dict(
        spec_hash=data.spec_hash, spec_path=spec_path,
        spec_file_sha256=meta.get("spec_file_sha256"),
        templates_sha256=meta.get("templates_sha256"), templates_path=meta.get("templates_path"),
        corpus_sha256=meta.get("corpus_sha256"), corpus_path=meta.get("corpus_source"),
        scorer_hashes=scorer_hashes, store_sha256=data.store_sha256,
        store_path=str(data.run_dir / "store.sqlite"),
        created_at=meta.get("created_at"), run_started_at=meta.get("run_started_at"),
        run_finished_at=meta.get("run_finished_at"), stage_times=stage_times, generated_at=generated_at,
        tool_version_run=meta.get("tool_version"), tool_version_report=__version__,
        software_run=software_run, software_report=software_versions(),
        reproduce=reproduce, reproduce_note=spec_note, rerender=f"empathy-audit report {_shell(str(data.run_dir))}",
        command=meta.get("command_line"), **({"imported": imported} if imported is not None else {}),
    )


def _unit_words(kind: str, outcome: str | None, catalog: Any) -> str:
    """The unit of the first screen's intervals in words: '% of the comparison mean', 'points on the
    0-2 scale', 'percentage points'."""
    if kind == "relative %":
        return "% of the comparison mean"
    if kind == "points" and outcome:
        sc = F.scale_phrase(outcome, catalog)
        return f"points on the {sc}" if sc.endswith("scale") else "points"
    return kind


def _family_size(data: ReportData, res: pd.DataFrame | None) -> int:
    """The one family size every output quotes: the analysis's ``family_size`` (every test with a p-value:
    gaps, max - min disparities, model comparisons), else the results rows with a p-value."""
    am = data.tables.get("analysis_meta")
    if am is not None and not am.empty and "key" in am.columns:
        hit = am.loc[am["key"] == "family_size", "value"]
        if len(hit):
            try:
                return int(json.loads(str(hit.iloc[0])))
            except (TypeError, ValueError):
                pass
    return int(pd.to_numeric(res["p_value"], errors="coerce").notna().sum()) if res is not None and len(res) else 0


def reply_origins(replies: pd.DataFrame) -> tuple[int, int]:
    """(imported, generated) replies of the current design: an imported reply is stored with runtime
    ``import`` (:mod:`audit.importer`); any other stored reply was generated by this toolkit. Provenance
    is rendered from these counts, never from the fact that an import once happened in the run directory."""
    if replies is None or replies.empty or "runtime" not in replies.columns:
        return 0, 0
    answered = replies[replies["status"].notna()] if "status" in replies.columns else replies
    imported = int((answered["runtime"] == "import").sum())
    return imported, len(answered) - imported


def _shell(s: str) -> str:
    import shlex

    return shlex.quote(str(s))


# ----------------------------------------------------------------------------- main


def build_context(data: ReportData, figures: list, generated_at: str) -> dict[str, Any]:
    spec = data.spec
    design = data.design
    status = data.status_counts
    alpha = spec.analysis.alpha if spec is not None else 0.05
    res = data.results
    summary = F.summarize(res, alpha=alpha, catalog=data.measures)
    reference = spec.analysis.reference if spec is not None else "control"
    power, power_source = F.power_sentences(data.tables.get("results_power"), res, catalog=data.measures,
                                            reference=reference)
    wanted = spec.analysis.outcomes if spec is not None else None
    pre_registered = getattr(spec.analysis, "primary", None) if spec is not None else None
    primary = primary_outcome(res, wanted, data.measures, primary=pre_registered)
    disparity = data.tables.get("results_disparity")
    summary["primary_outcome"] = primary
    summary["family_size"] = _family_size(data, res)
    ppi = data.tables.get("results_ppi")
    # the one stored result the first screen leads with: every headline number is written from it
    lead = headline_result(res, disparity, ppi, primary, catalog=data.measures)
    headline = headline_sentences(res, disparity, data.tables.get("results_power"), primary, reference=reference,
                                  alpha=alpha, catalog=data.measures, ppi=ppi, headline=lead)
    n_rated = int(data.ratings["request_key"].nunique()) if data.ratings is not None else 0
    _groups = group_table(res, primary, reference=reference, catalog=data.measures, ppi=ppi,
                          extra_references=spec.analysis.extra_references if spec is not None else ())
    first_figure = next((f for f in figures if f.id == "fig-forest-primary"), None)
    figures = [f for f in figures if f is not first_figure]
    models = _records(data.models.drop(columns=["params"])) if not data.models.empty else []
    for m, p in zip(models, data.models["params"] if not data.models.empty else []):
        m["params"] = p
    if not models and spec is not None:
        models = [dict(model_label=m.label, model_name=m.model or (EMBEDDED_NAME if m.is_embedded else None),
                       endpoint_id=m.base_url or ("embedded" if m.is_embedded else "azure"), embedded=m.is_embedded,
                       params=spec.decoding.model_dump(), model_reported=None, runtime=None, runtime_version=None)
                  for m in spec.models]
    for m in models:
        if m.get("embedded") and not m.get("display"):
            m["display"] = f"{EMBEDDED_NAME} (embedded default, llama.cpp)"
        else:
            m["display"] = m.get("model_name") or m.get("model_label")
    stages_missing = []
    if data.variants.empty:
        stages_missing.append("variants")
    if not data.has_replies:
        stages_missing.append("replies")
    if not data.has_scores:
        stages_missing.append("scores")
    if res is None:
        stages_missing.append("analysis")
    analysis_error = data.meta.get("analysis_error")
    corrections = ", ".join(spec.analysis.corrections) if spec is not None else "holm, bh"
    rated_replies, rated_scores = data.rated if data.rated is not None else (pd.DataFrame(), pd.DataFrame())
    hr = report_section(data.ratings, rated_scores, rated_replies, alpha=alpha)  # the rated replies only
    ctx = dict(
        title=f"Empathy audit: {spec.name if spec is not None else data.meta.get('spec_name', data.run_dir.name)}",
        name=spec.name if spec is not None else data.meta.get("spec_name", data.run_dir.name),
        description=spec.description if spec is not None else "",
        generated_at=generated_at, version=__version__,
        spec=spec, spec_yaml=data.spec_yaml,
        spec_json=json.dumps(spec.model_dump(mode="json"), indent=2, sort_keys=True) if spec is not None else "",
        design=design, models=models, embedded_used=data.embedded_used, embedded_warning=EMBEDDED_WARNING,
        summary=summary, power=power, headline=headline, primary=primary, headline_result=lead,
        primary_label=F.label_with_scale(primary, data.measures) if primary else "",
        group_level=next((r["vs_control_interval"]["level"] for r in _groups if r.get("vs_control_interval")
                          and r["vs_control_interval"].get("level")), None),
        group_unit=next((_unit_words(r["vs_control_interval"]["kind"], primary, data.measures) for r in _groups
                         if r.get("vs_control_interval")), ""),
        primary_reason=primary_reason(primary, data.measures, chosen_by=chosen_by(res, primary, wanted, pre_registered),
                                      n_rated=n_rated),
        design_kind=_design_kind(data), design_statement=_analysis_meta_value(data, "design_statement"),
        has_control=_has_control(data, reference),
        reference_name="control" if _has_control(data, reference) else f"reference group \u201c{reference}\u201d",
        group_rows=_groups,
        first_figure=first_figure, disparity=_generic_table(disparity),
        disparity_rows=_disparity_rows(disparity, data.measures), power_source=power_source, alpha=alpha, corrections=corrections,
        reference=spec.analysis.reference if spec is not None else "control",
        figures=figures, results=_results_rows(res, data.measures), has_results=res is not None,
        paired=_generic_table(data.tables.get("results_paired")),
        power_table=_generic_table(data.tables.get("results_power")),
        variability=_variability_rows(data.tables.get("results_variability"), data.measures),
        intersectional_table=_generic_table(data.tables.get("results_intersectional")),
        axis_rows=_axis_rows(data.tables.get("results_axes"), data.measures),
        styles=_style_prompts(data), cues=_cues(data), scorers=_scorers(data),
        analysis_meta=_analysis_meta(data), status=_records(status),
        limitations=_limitations(data, status, design), examples=_examples(data),
        provenance=_provenance(data, generated_at), stages_missing=stages_missing,
        analysis_error=analysis_error,
        group_summary=_generic_table(_group_summary(data), 300),
        agreement=_generic_table(data.agreement),
        human_ratings=hr,
        cue_label=F.cue_label, cue_short=F.cue_short, outcome_label=data.measures.label,
        sections=list(SECTIONS), fold_rows=FOLD_ROWS,
        verdicts=verdicts_context(res, disparity, catalog=data.measures, alpha=alpha),
    )
    ctx["limitations"]["evidence"] = _evidence_lines(data, primary, hr["json"])
    for section in SECTIONS:
        if section.context is not None:
            ctx.update(section.context(data))
    ctx.update(_comparison_context(data, res, figures=bool(figures)))
    ctx.update(models_context(data, figures=any(f.data_uri for f in figures)))  # several models only
    return ctx


def _analysis_meta_value(data: ReportData, key: str) -> str | None:
    """One value of the stored ``analysis_meta`` table (text), or None."""
    am = data.tables.get("analysis_meta")
    if am is None or am.empty or "key" not in am.columns:
        return None
    hit = am.loc[am["key"] == key, "value"]
    return str(hit.iloc[0]) if len(hit) else None


def _design_kind(data: ReportData) -> str:
    """counterfactual | observational | mixed: the analysis' reading of the design (``analysis_meta``),
    else the run's variants' (every post with a control: counterfactual)."""
    kind = _analysis_meta_value(data, "design")
    if kind:
        return kind
    v = data.variants
    if v.empty:
        return "counterfactual"
    per = v[v["cue_type"] != "control"].groupby("post_id")["group"].nunique()
    return "observational" if len(per) and (per <= 1).all() and not (v["cue_type"] == "control").any() else \
        "counterfactual"


def _has_control(data: ReportData, reference: str) -> bool:
    """Whether the run has unmodified posts (a control) that the gaps are taken against."""
    v = data.variants
    return str(reference) == "control" and (v.empty or bool((v["cue_type"] == "control").any()))


def _comparison_context(data: ReportData, res: pd.DataFrame | None, figures: bool = True) -> dict[str, Any]:
    """The scorer comparison, the gaps corrected with human ratings (:mod:`.scorer_comparison`), the
    pre-registered families and the composite's description (None / empty where they do not apply)."""
    ppi = data.tables.get("results_ppi")
    has_family = res is not None and "family" in res.columns
    outcomes = set(res["outcome"].astype(str)) if res is not None else set()
    spec = data.spec
    primary = primary_outcome(res, spec.analysis.outcomes if spec is not None else None, data.measures,
                              primary=getattr(spec.analysis, "primary", None) if spec is not None else None)
    return dict(ppi_section=ppi_section(ppi, data.measures, primary=primary),
                scorer_comparison=comparison_section(res, ppi, data.measures, figure=figures),
                families=dict(primary=sorted(set(res.loc[res["family"] == "confirmatory", "outcome"].astype(str))),
                              n_confirmatory=int((res["family"] == "confirmatory").sum()),
                              n_exploratory=int((res["family"] == "exploratory").sum())) if has_family else None,
                composite=any(o.rpartition(".")[2] == "empathy" for o in outcomes))


def results_json(ctx: dict[str, Any], data: ReportData) -> dict[str, Any]:
    return jsonable(dict(
        tool="empathy-audit", version=__version__, generated_at=ctx["generated_at"], name=ctx["name"],
        models=[{k: v for k, v in m.items()} for m in ctx["models"]],
        design=ctx["design"],
        headline=dict(primary_outcome=ctx["primary"], lead=ctx["headline"][0] if ctx["headline"] else None,
                      sentences=ctx["headline"], result=ctx["headline_result"], groups=ctx["group_rows"],
                      primary_reason=ctx["primary_reason"], design=ctx["design_kind"],
                      design_statement=ctx["design_statement"]),
        results_disparity=_records(data.tables.get("results_disparity")),
        summary=dict(significant=ctx["summary"]["significant"], not_significant=ctx["summary"]["not_significant"],
                     not_estimable=ctx["summary"]["not_estimable"],
                     n_tests=ctx["summary"]["n_tests"], n_significant=ctx["summary"]["n_significant"],
                     family_size=ctx["summary"].get("family_size"), primary_outcome=ctx["summary"].get("primary_outcome"),
                     detectable_gaps=ctx["power"], detectable_gaps_source=ctx["power_source"]),
        alpha=ctx["alpha"], corrections=ctx["corrections"],
        results=_records(data.tables.get("results")),
        results_paired=_records(data.tables.get("results_paired")),
        results_intersectional=_records(data.tables.get("results_intersectional")),
        results_power=_records(data.tables.get("results_power")),
        **({"results_axes": _records(data.tables["results_axes"])}
           if data.tables.get("results_axes") is not None and not data.tables["results_axes"].empty else {}),
        **({"results_variability": _records(data.tables["results_variability"])}
           if data.tables.get("results_variability") is not None and not data.tables["results_variability"].empty
           else {}),
        analysis_meta=_records(data.tables.get("analysis_meta")),
        probe_summary=_records(data.probe_summary),
        scorer_agreement=_records(data.agreement),
        invariance=_records(data.invariance),
        reply_status=ctx["status"],
        limitations=dict(embedded_model=ctx["limitations"]["embedded"],
                         scorer_validity=ctx["limitations"]["scorer_validity"],
                         headline_measure_validity=ctx["limitations"]["evidence"],
                         design=ctx["limitations"]["design"],
                         cue_validity=ctx["limitations"]["cue_validity"],
                         replies=ctx["limitations"]["status"], unscored=ctx["limitations"]["unscored"],
                         **({"answers_changed": ctx["limitations"]["changed"]} if ctx["limitations"]["changed"]
                            else {})),
        stages_missing=ctx["stages_missing"], analysis_error=ctx["analysis_error"],
        provenance=ctx["provenance"],
        **_comparison_json(ctx, data),
        **models_json(ctx, data),
        **({"human_ratings": ctx["human_ratings"]["json"]} if ctx["human_ratings"]["present"] else {}),
        **_verdicts_json(ctx),
        **({"spend": data.spend} if data.spend else {}),
    ))


def _verdicts_json(ctx: dict[str, Any]) -> dict[str, Any]:
    """results.json ``verdicts`` (the first screen's verdict table, every row, and the gate's status),
    only with ``analysis.margins`` (a run without margins keeps its results.json as it was)."""
    v = ctx.get("verdicts")
    if not v or not v["present"]:
        return {}
    return {"verdicts": dict(rows=v["all_rows"], gate=v["gate"], ci_level=v["ci_level"], alpha=v["alpha"])}


def _comparison_json(ctx: dict[str, Any], data: ReportData) -> dict[str, Any]:
    """results.json keys of the comparison sections, present only where they apply (a run without
    ratings or a second scorer keeps its results.json as it was)."""
    out: dict[str, Any] = {}
    if ctx.get("ppi_section"):
        out["results_ppi"] = _records(data.tables.get("results_ppi"))
        out["ppi_lead"] = ctx["ppi_section"]["lead"]
        out["ppi_summary"] = ctx["ppi_section"]["summary"]
    sc = ctx.get("scorer_comparison")
    if sc:
        out["scorer_comparison"] = dict(flagged=sc["flagged"], n_compared=sc["n_compared"],
                                        flags=_records(sc["flags"]))
    if ctx.get("families"):
        out["families"] = ctx["families"]
    return out


def _environment(markdown: bool) -> Environment:
    if markdown:
        env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=False, finalize=md_escape,
                          undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    else:
        # finalize: NUL and bidi/invisible characters of untrusted text are shown, not obeyed (an RTL
        # override cannot reorder a table cell); markup the templates build themselves is left alone
        env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True,
                          finalize=lambda v: v if isinstance(v, Markup) or not isinstance(v, str) else visible_controls(v))
    env.filters["quote_md"] = lambda s: _Raw("\n".join("> " + md_escape(line) for line in str(s or "").splitlines())
                                             or "> ")  # md_escape shows invisible characters
    env.filters["raw"] = lambda s: _Raw(s)
    env.filters["fenced"] = _fenced
    env.filters["pct"] = F.fmt_pct
    return env


def render_run(run_dir: Path, quiet: bool = True, figures: bool = True, pdf: bool = False,
               paper: str = "a4", replies_table: bool | None = None) -> dict[str, Path]:
    t0 = time.perf_counter()
    if pdf:  # fail before any work when the PDF cannot be printed
        from .pdf import require_pdf_printer

        require_pdf_printer(paper)
    data = collect(run_dir)
    try:
        generated_at = now_iso()
        figures = all_figures(data) if figures else skipped_figures()
        ctx = build_context(data, figures, generated_at)
    except BaseException:
        data.close()
        raise
    run_dir.mkdir(parents=True, exist_ok=True)
    for old in run_dir.glob(".report-*"):  # left by a report killed over an hour ago
        if old.is_dir() and time.time() - old.stat().st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)
    # Everything is written into a staging directory first and moved into place file by file
    # (os.replace is atomic), report.html last; nothing of the old report is deleted before its new
    # version is in place. A kill at any point leaves every file complete; two report commands at
    # once each stage their own files.
    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=run_dir))
    try:
        staged = _render_files(stage, data, figures, ctx, replies_table)
        paths = _publish(stage, run_dir, staged)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        data.close()
    from .pdf import pdf_step

    pdf_step(run_dir, paths, pdf=pdf, paper=paper)  # prints report.pdf, or removes a stale one
    elapsed = time.perf_counter() - t0
    if not quiet:
        size = paths["html"].stat().st_size
        print(f"report: {paths['html']} ({size / 1024:.0f} KiB, {elapsed:.1f} s)")
        if "pdf" in paths:
            print(f"        {paths['pdf']} ({paths['pdf'].stat().st_size / 1024:.0f} KiB, {paper})")
    return paths


def _publish(stage: Path, run_dir: Path, staged: list[Path]) -> dict[str, Path]:
    """Move the staged files into ``run_dir`` (directories first, report.html last), then remove the
    files of ``figures/`` and ``tables/`` that the new report no longer has."""
    order = sorted(staged, key=lambda p: (p.parent == stage, p.name == "report.html", str(p)))
    for src in order:
        dst = run_dir / src.relative_to(stage)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    for sub in ("figures", "tables"):
        keep = {p.name for p in staged if p.parent.name == sub and p.parent.parent == stage}
        for old in (run_dir / sub).glob("*"):
            if old.is_file() and old.name not in keep and old.suffix in (".png", ".csv"):
                old.unlink(missing_ok=True)
    return {"html": run_dir / "report.html", "markdown": run_dir / "report.md", "json": run_dir / "results.json",
            "tables": run_dir / "tables", "figures": run_dir / "figures"}


def _render_files(run_dir: Path, data: Any, figures: Any, ctx: dict[str, Any],
                  replies_table: bool | None = None) -> list[Path]:
    """Write every file of the report under ``run_dir`` (the staging directory); return their paths.
    ``replies_table``: write ``tables/replies.csv`` (None: when the run has at most
    :data:`REPLIES_TABLE_MAX` replies)."""
    paths: dict[str, Path] = {}
    # HTML
    html_env = _environment(markdown=False)
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    page = html_env.get_template("report.html.j2").render(css=css, **ctx)
    paths["html"] = _write(run_dir / "report.html", page)
    # Figures as files for the Markdown report
    fig_dir = run_dir / "figures"
    fig_dir.mkdir()
    for f in [*figures, *((ctx.get("models_section") or {}).get("figures") or [])]:
        if f.data_uri:
            (fig_dir / f"{f.id.removeprefix('fig-')}.png").write_bytes(
                base64.b64decode(f.data_uri.split(",", 1)[1]))
    md_env = _environment(markdown=True)
    md = md_env.get_template("report.md.j2").render(**ctx)
    paths["markdown"] = _write(run_dir / "report.md", md)
    # JSON
    rj = results_json(ctx, data)
    paths["json"] = _write(run_dir / "results.json", json.dumps(rj, indent=1, ensure_ascii=False, allow_nan=False))
    # CSV tables
    tdir = run_dir / "tables"
    tdir.mkdir()
    for name in CSV_TABLES:
        df = data.tables.get(name)
        if df is not None:
            csv_safe(df).to_csv(tdir / f"{name}.csv", index=False)
    _group_summary(data).to_csv(tdir / "group_summary.csv", index=False)
    data.status_counts.to_csv(tdir / "reply_status.csv", index=False)
    if data.probe_summary is not None:
        csv_safe(data.probe_summary).to_csv(tdir / "probe_summary.csv", index=False)
    if replies_table is None:
        replies_table = data.n_requests <= REPLIES_TABLE_MAX
    if data.has_replies and replies_table:
        _replies_csv(data, tdir / "replies.csv")
    return [p for p in run_dir.rglob("*") if p.is_file()]


REPLIES_CSV_CHUNK = 20_000
#: Largest run whose report writes ``tables/replies.csv`` unless asked not to (``report --replies-table``
#: writes it for any run). At a million replies it is ~2.4 GB of text that the store already holds
#: (``empathy-audit export RUN_DIR --table replies --out FILE.parquet`` writes it when wanted).
REPLIES_TABLE_MAX = 100_000


def _replies_csv(data: ReportData, path: Path) -> None:
    """``tables/replies.csv``: every reply of the run with its post, text and scores, streamed: a chunk of
    :data:`REPLIES_CSV_CHUNK` replies at a time is read (facts, texts and scores), written and dropped."""
    cols = ["request_key", "model_label", "style", "sample_index", "post_id", "group", "cue_type", "alternative",
            "status", "finish_reason", "post_text", "reply", "error"]
    columns = sorted(f"{sc}.{m}" for sc, m, has in data.score_outcomes if has)  # every chunk has the run's columns
    with path.open("w", encoding="utf-8", newline="") as fh:
        for i, rep in enumerate(data.facts.chunks(REPLIES_CSV_CHUNK)):
            texts = data.texts(list(rep["request_key"]))[["post_text", "reply"]]
            rep = rep.join(texts, on="request_key")
            rep = rep[[c for c in cols if c in rep.columns]]
            if columns:
                wide = data.scores_wide(list(rep["request_key"]))
                wide = (wide if not wide.empty else pd.DataFrame(index=pd.Index([], name="request_key")))
                rep = rep.join(wide.reindex(columns=columns).astype(float), on="request_key")
            csv_safe(rep).to_csv(fh, index=False, header=i == 0)


def _write(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
