"""The stigma suite's report: HTML (Jinja, autoescaped, self-contained), Markdown, JSON and CSV, from
the run store alone (tables ``stigma_*`` of the analyze stage, the stored answers and codes).

House style as the empathy report (:mod:`audit.report.build`): the same Jinja environments (HTML
autoescaped, invisible characters shown; Markdown escaped), the same CSS, figures as embedded PNGs
(:mod:`audit.report.figures` helpers; every label through ``mpl_text``), CSV tables through
``csv_safe``, files staged and published atomically. Model answers are untrusted text and are only
ever printed escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..jsonable import jsonable
from ..report.suite_report import models_meta as _models, pct as _pct, pp as _pp, pval as _p, rate_axis, rate_dots, \
    gap_dots, records as _records, stored_meta, write_report
from ..report.figures import FigureOut, _finish, _setup
from ..store import RunStore, now_iso
from .analysis import ALL_CONDITIONS
from .stimuli import CONDITIONS, CONTROL_CONDITION, items_by_id, prompt_format, system_prompt_text

LIMITATIONS = [
    "The stigma questions measure stated attitudes in a survey format, not behaviour in conversation: a model "
    "that answers the survey without stigma may still respond to a client with stigma, and the reverse.",
    "Answers are one letter at temperature 0: one answer per prompt and model, so the rates describe the model's "
    "most likely answer, not the spread of its answers.",
    "The published vignettes (stimuli: moore) are public since 2025 and may be in a model's training data; our own "
    "vignettes (stimuli: own) are not, but they are a new instrument and have not been validated against human "
    "survey answers.",
    "\"Do not know\" answers are dropped from the rates (counted below); if a model says \"do not know\" more often "
    "for some groups, the rates of those groups rest on fewer answers.",
    "The human reference is the 2018 US General Social Survey (Pescosolido et al. 2021), a population survey of "
    "adults, not of clinicians; it is a reference line, not a target.",
    "The demographic gaps compare vignettes that differ in the stated race, gender and education of the person "
    "described; with few vignettes per cell their CIs are wide, and a non-significant gap is not evidence of no gap.",
]


def _meta(store: RunStore) -> dict[str, Any]:
    return stored_meta(store, "stigma_meta")


# ---------------------------------------------------------------------------- figures


def rates_figure(rates: pd.DataFrame | None) -> FigureOut:
    fo = FigureOut("fig-stigma-rates", "Stigma by condition and model",
                   "Share of stigmatizing answers to the six counted questions, per condition and model, with "
                   "95% cluster-bootstrap CIs (clusters: vignettes). Black bars: the 2018 human survey.",
                   "Dot plot of stigma rates by condition, one colour per model, with the human survey rate.")
    if rates is None or rates.empty:
        fo.missing = "no stigma rate was computed (the analysis did not run)"
        return fo
    _, Figure = _setup()
    conds = [c for c in [*CONDITIONS, ALL_CONDITIONS] if c in set(rates["condition"])]
    models = sorted(rates["model_label"].unique())
    fig = Figure(figsize=(7.5, 0.9 + 0.55 * len(conds) * max(1, len(models)) ** 0.5))
    ax = fig.subplots()
    rate_dots(ax, rates, row="condition", rows=conds, est="rate", lo="ci_low", hi="ci_high")
    human = rates.drop_duplicates("condition").set_index("condition").reindex(conds)["human_rate"]
    for i, h in enumerate(human):
        if np.isfinite(h):
            ax.plot([h, h], [i - 0.38, i + 0.38], color="black", lw=2.5,
                    label="human survey 2018" if i == int(np.argmax(np.isfinite(human.to_numpy()))) else None)
    rate_axis(ax, conds, "share of stigmatizing answers")
    ax.legend(loc="lower right", fontsize=7, frameon=True)
    return _finish(fo, fig)


def forest_figure(tests: pd.DataFrame | None) -> FigureOut:
    fo = FigureOut("fig-stigma-forest", "Demographic gaps in stigma, within condition",
                   "Difference in the probability of a stigmatizing answer between each group and its reference "
                   "(percentage points) within each condition, from the GEE logistic model (95% CI). Filled: "
                   "significant after Holm correction over the whole family.",
                   "Forest plot of demographic gaps in stigma by condition and model.")
    if tests is None or tests.empty:
        fo.missing = "no demographic gap was tested (the analysis did not run)"
        return fo
    d = tests[(tests["term"] != "condition") & (tests["condition"] != "pooled") & tests["estimate"].notna()]
    if d.empty:
        fo.missing = "no demographic gap could be fitted within a condition (see the test table)"
        return fo
    _, Figure = _setup()
    d = d.assign(_o=d["condition"].map({c: i for i, c in enumerate(CONDITIONS)})).sort_values(
        ["_o", "term", "group", "model_label"])
    labels = [f"{c} | {g} vs {r}" for c, g, r in zip(d["condition"], d["group"], d["reference"])]
    rows = list(dict.fromkeys(labels))
    models = sorted(d["model_label"].unique())
    fig = Figure(figsize=(7.5, 1.0 + 0.26 * len(rows) * max(1, len(models)) ** 0.5))
    ax = fig.subplots()
    gap_dots(ax, d, labels=labels, rows=rows, xlabel="gap in stigma (percentage points)")
    ax.invert_yaxis()
    return _finish(fo, fig)


# ---------------------------------------------------------------------------- context


def _summary(rates: pd.DataFrame | None, tests: pd.DataFrame | None, meta: dict[str, Any]) -> list[str]:
    out = []
    if rates is None or rates.empty:
        return ["The analysis did not run, so there are no stigma rates (see the analysis status below)."]
    for m, d in rates.groupby("model_label", sort=True):
        d = d.set_index("condition")
        if ALL_CONDITIONS in d.index:
            r = d.loc[ALL_CONDITIONS]
            s = (f"{m} gave a stigmatizing answer to {_pct(r['rate'])} (95% CI {_pct(r['ci_low'])} to "
                 f"{_pct(r['ci_high'])}) of the counted questions about the clinical vignettes "
                 f"(n = {int(r['n'])} answers)")
            if np.isfinite(r["human_rate"]):
                s += f"; the 2018 human survey: {_pct(r['human_rate'])}"
        else:
            first = d.iloc[0]
            s = f"{m}: stigma rate {_pct(first['rate'])} for {d.index[0]} (n = {int(first['n'])})"
        if CONTROL_CONDITION in d.index:
            s += f". For the daily-troubles control: {_pct(d.loc[CONTROL_CONDITION, 'rate'])}"
        out.append(s + ".")
    if tests is not None and len(tests):
        demo = tests[tests["term"] != "condition"]
        n, sig = int(demo["p_value"].notna().sum()), demo[demo["significant_holm"].astype(bool)]
        if n:
            if len(sig):
                top = sig.sort_values("p_holm").iloc[0]
                out.append(f"{len(sig)} of {n} demographic gap tests are significant after Holm correction; the "
                           f"strongest: {top['model_label']}, {top['condition']}, {top['group']} vs {top['reference']} "
                           f"{_pp(top['estimate'])} (95% CI {_pp(top['ci_low'])} to {_pp(top['ci_high'])}).")
            else:
                out.append(f"None of the {n} demographic gap tests (race, gender, education, pooled and within each "
                           f"condition) is significant after Holm correction.")
    return out


def _tests_rows(tests: pd.DataFrame | None) -> list[dict[str, Any]]:
    if tests is None:
        return []
    rows = []
    for r in tests.to_dict("records"):
        rows.append({"model": r["model_label"], "term": r["term"], "condition": r["condition"], "group": r["group"],
                     "reference": r["reference"], "gap": _pp(r["estimate"]),
                     "ci": f"{_pp(r['ci_low'])} to {_pp(r['ci_high'])}", "p": _p(r["p_value"]),
                     "p_holm": _p(r["p_holm"]), "p_bh": _p(r["p_bh"]), "sig": bool(r["significant_holm"]),
                     "n": "" if r["n"] is None or not np.isfinite(r["n"]) else int(r["n"]),
                     "method": r["method"] or "", "warning": r["warning"] or ""})
    return rows


def _examples(coded: pd.DataFrame, k: int = 8) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A few answers (first counted question of a few vignettes) and every unparseable one (up to 50)."""
    if coded.empty:
        return [], []
    items = items_by_id()
    ok = coded[coded["counted"]].drop_duplicates(["model_label", "post_id"]).head(k)
    ex = [{"model": r["model_label"], "vignette": r["post_id"], "question": items[r["question"]].label,
           "answer": r["reply"] if isinstance(r["reply"], str) else "", "parsed": r["letter"] or "",
           "status": r["parse_status"], "stigma": "" if pd.isna(r["stigma"]) else int(r["stigma"])}
          for r in ok.to_dict("records")]
    bad = coded[coded["parse_status"] == "unparseable"].head(50)
    un = [{"model": r["model_label"], "vignette": r["post_id"], "question": r["question"], "reason": r["reason"],
           "answer": r["reply"] if isinstance(r["reply"], str) else ""} for r in bad.to_dict("records")]
    return ex, un


def build_stigma_context(store: RunStore, generated_at: str
                         ) -> tuple[dict[str, Any], dict[str, pd.DataFrame | None], list[FigureOut], pd.DataFrame]:
    """(template context, tables, figures, coded answers) of the stigma run in ``store``."""
    from ..report.build import EMBEDDED_WARNING
    from ..report.provenance import software_versions
    from .answers import coded_from_store

    spec = store.latest_spec()
    cfg = spec.stigma
    rates, tests = store.table_df("stigma_rates"), store.table_df("stigma_tests")
    items_t, parse_t = store.table_df("stigma_items"), store.table_df("stigma_parse")
    meta = _meta(store)
    coded = coded_from_store(store)
    if tests is not None:
        tests["significant_holm"] = tests["significant_holm"].astype(bool)
    models = _models(store)
    embedded = any(v.get("embedded") for v in models.values())
    figures = [rates_figure(rates), forest_figure(tests)]
    examples, unparseable = _examples(coded)
    fmt = prompt_format()
    status = store.replies_df("reply")["status"].fillna("pending").value_counts().to_dict()
    parse_total = {s: int(parse_t.loc[parse_t["parse_status"] == s, "n"].sum()) if parse_t is not None else 0
                   for s in ("answered", "dont_know", "unparseable")}
    ctx = {
        "title": f"Stigma audit: {spec.name}",
        "name": spec.name, "description": spec.description, "generated_at": generated_at,
        "embedded_warning": EMBEDDED_WARNING if embedded else None,
        "summary": _summary(rates, tests, meta),
        "analysis_error": store.get_meta("analysis_error"),
        "figures": figures,
        "rates": [{"model": r["model_label"], "condition": r["condition"], "rate": _pct(r["rate"]),
                   "ci": f"{_pct(r['ci_low'])} to {_pct(r['ci_high'])}", "n": r["n"], "n_vignettes": r["n_vignettes"],
                   "dont_know": r["n_dont_know"], "unparseable": r["n_unparseable"], "human": _pct(r["human_rate"])}
                  for r in _records(rates)] if rates is not None else [],
        "tests": _tests_rows(tests),
        "items": [{"model": r["model_label"], "condition": r["condition"], "item": r["label"],
                   "counted": "yes" if r["counted"] else "", "n": r["n"], "share_cd": _pct(r["share_cd"]),
                   "stigma": _pct(r["stigma_rate"]), "dont_know": _pct(r["dont_know"]), "human": _pct(r["human"])}
                  for r in _records(items_t)] if items_t is not None else [],
        "parse": _records(parse_t), "parse_total": parse_total, "reply_status": status,
        "examples": examples, "unparseable": unparseable,
        "methods": {
            "stimuli": cfg.stimuli, "n_prompts": int(store.count_rows("variants")),
            "conditions": ", ".join(cfg.conditions or CONDITIONS),
            "questions": ", ".join(cfg.questions or [i for i in items_by_id()]),
            "system_prompt": cfg.system_prompt, "system_prompt_text": system_prompt_text(cfg) or "(none)",
            "instruction": " ".join(fmt["instruction"].split()),
            "example": " / ".join(f"{m['role']}: {m['content']}" for m in fmt["example"]),
            "decoding": f"temperature {spec.decoding.temperature}, max_tokens {spec.decoding.max_tokens}",
            "formula": meta.get("formula", ""), "reference": meta.get("reference", {}),
            "n_boot": meta.get("n_boot", cfg.n_boot), "family_size": meta.get("family_size", 0),
            "models": ", ".join(f"{k} ({v.get('model', '')})" for k, v in models.items()),
        },
        "limitations": LIMITATIONS,
        "software": software_versions(),
        "spec_yaml": spec._source_text or "",
    }
    tables = {"stigma_rates": rates, "stigma_tests": tests, "stigma_items": items_t, "stigma_parse": parse_t}
    return ctx, tables, figures, coded


def results_json(ctx: dict[str, Any], tables: dict[str, pd.DataFrame | None]) -> dict[str, Any]:
    """results.json: the tables, and the ``summary`` keys every report's JSON has (``n_tests``,
    ``n_significant``, ``significant``: the significant demographic gaps, as sentences)."""
    tests = tables.get("stigma_tests")
    demo = tests[tests["term"] != "condition"] if tests is not None else None
    sig = [] if demo is None else [
        f"{r['model_label']}, {r['condition']}: {r['group']} vs {r['reference']} {_pp(r['estimate'])}"
        for r in demo[demo["significant_holm"]].sort_values("p_holm").to_dict("records")]
    return jsonable({
        "suite": "stigma", "name": ctx["name"], "generated_at": ctx["generated_at"],
        "summary": {"sentences": ctx["summary"], "n_tests": 0 if demo is None else int(demo["p_value"].notna().sum()),
                    "n_significant": len(sig), "significant": sig, "detectable_gaps": []},
        "parse": ctx["parse_total"], "methods": ctx["methods"], "limitations": ctx["limitations"],
        "embedded_warning": ctx["embedded_warning"],
        "tables": {k: (None if v is None else v.to_dict("records")) for k, v in tables.items()},
    })


def render_stigma(run_dir: str | Path) -> dict[str, Path]:
    """Render the stigma report of ``run_dir`` from its store: report.html, report.md, results.json,
    tables/*.csv, figures/*.png. Never writes to the store."""
    run_dir = Path(run_dir)
    with RunStore(run_dir, create=False) as store:
        ctx, tables, figures, coded = build_stigma_context(store, now_iso())
    out = dict(tables)
    if not coded.empty:
        cols = ["request_key", "model_label", "post_id", "condition", "race", "gender", "education", "question",
                "status", "reply", "parse_status", "reason", "letter", "stigma"]
        out["answers"] = coded[[c for c in cols if c in coded.columns]]
    return write_report(run_dir, template="stigma", ctx=ctx, results=results_json(ctx, tables), figures=figures,
                        tables=out)


__all__ = ["LIMITATIONS", "build_stigma_context", "forest_figure", "rates_figure", "render_stigma", "results_json"]
