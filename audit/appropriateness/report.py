"""The appropriateness suite's report: HTML (Jinja, autoescaped, self-contained), Markdown, JSON and CSV,
from the run store alone (tables ``appropriateness_*`` of the analyze stage, the stored replies and
verdicts), in the house style of the stigma report (:mod:`audit.stigma.report`,
:mod:`audit.report.suite_report`). Replies, stimuli and transcripts are untrusted text: only ever
printed escaped; example replies sit inside ``<details>`` under a content warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..jsonable import jsonable
from ..report.figures import FigureOut, _finish, _setup, mpl_text
from ..report.suite_report import (gap_dots, models_meta, pct, pp, pval, rate_axis, rate_dots, records, stored_meta,
                                   write_report)
from ..store import RunStore, now_iso
from .analysis import ALL_CONDITIONS
from .stimuli import CONDITIONS, CONTROL, final_client_message, prompt_settings

CONTENT_WARNING = ("Content warning: this report quotes messages about suicidal ideation, self-harm, delusions, "
                   "hallucinations, mania and compulsions, and model replies to them.")
SELF_JUDGE_WARNING = ("The judge is an audited model judging replies (by default the first audited model): "
                      "self-judging is weak evidence, since a model may share the blind spots it is judging. Name "
                      "an independent, validated judge in appropriateness.judge.")
PUBLISHED_VALIDATION = ("The published judge (GPT-4o, Moore et al. 2025) reached Fleiss' kappa 0.959 over the judge "
                        "and two human annotators; that validation is of that judge and those stimuli, not of this "
                        "run's.")
LIMITATIONS = [
    "The published study placed its stimuli in licensed therapy transcripts, which cannot be shipped; this run uses "
    "no context, our own short fictional prefixes, and/or your transcripts, so its rates are not those of the "
    "published design.",
    "Appropriateness is judged by an LLM answering one yes/no criterion per stimulus: a judge error is a "
    "measurement error, and if the judge errs more for some groups' replies, the gaps are biased. See the judge "
    "validation below.",
    "An unparseable or unanswered judgement counts as inappropriate (as upstream); the counts are shown, so the "
    "rates can be read with them set aside.",
    "Replies are cut to the stated number of characters before judging (upstream: 1,024): advice after the cut is "
    "not seen by the judge.",
    "There are only 10 stimuli (2 per condition): the rates' CIs resample stimuli and are wide; a per-condition CI "
    "rests on 2 clusters. A non-significant gap is not evidence of no gap.",
    "The demographic cue is placed in the client's first stimulus message (the empathy suite's templates); the "
    "gaps compare cued conversations with the same conversation without a cue.",
    "Replies are at temperature 0: one reply per conversation, the model's most likely answer, not the spread of "
    "its answers.",
]


def rates_figure(rates: pd.DataFrame | None, refs: pd.DataFrame | None) -> FigureOut:
    fo = FigureOut("fig-appropriateness-rates", "Appropriateness by condition and model",
                   "Share of replies judged appropriate per condition and model, with 95% cluster-bootstrap CIs "
                   "(clusters: stimuli). Grey lines: the reference rates given in the spec.",
                   "Dot plot of appropriate rates by condition, one colour per model.")
    d = None if rates is None else rates[rates["by"] == "condition"]
    if d is None or d.empty:
        fo.missing = "no rate was computed (the analysis did not run)"
        return fo
    _, Figure = _setup()
    conds = [c for c in [*CONDITIONS, ALL_CONDITIONS] if c in set(d["level"])]
    models = sorted(d["model_label"].unique())
    fig = Figure(figsize=(7.5, 1.0 + 0.5 * len(conds) * max(1, len(models)) ** 0.5))
    ax = fig.subplots()
    rate_dots(ax, d, row="level", rows=conds, est="rate", lo="ci_low", hi="ci_high")
    if refs is not None:
        for i, r in enumerate(refs.to_dict("records")):
            ax.axvline(r["rate"], color="grey", lw=1.2, ls=["--", ":", "-."][i % 3], label=mpl_text(r["label"]))
    rate_axis(ax, conds, "share of replies judged appropriate")
    ax.legend(loc="lower right", fontsize=7, frameon=True)
    return _finish(fo, fig)


def forest_figure(tests: pd.DataFrame | None) -> FigureOut:
    fo = FigureOut("fig-appropriateness-forest", "Demographic gaps in appropriateness",
                   "Difference in the probability of an appropriate reply between conversations with each group's "
                   "cue and the same conversations without a cue (percentage points), from the GEE logistic model "
                   "(95% CI). Filled: significant after Holm correction over the whole family.",
                   "Forest plot of demographic gaps in appropriateness by model.")
    d = None if tests is None else tests[tests["estimate"].notna()]
    if d is None or d.empty:
        fo.missing = ("no demographic gap could be fitted (see the test table)" if tests is not None and len(tests)
                      else "no demographic gap was tested (no cue, or the analysis did not run)")
        return fo
    _, Figure = _setup()
    d = d.sort_values(["scope", "group", "model_label"])
    labels = [f"{s} | {g}" for s, g in zip(d["scope"], d["group"])]
    rows = list(dict.fromkeys(labels))
    models = sorted(d["model_label"].unique())
    fig = Figure(figsize=(7.5, 1.4 + 0.3 * len(rows) * max(1, len(models)) ** 0.5))
    ax = fig.subplots()
    gap_dots(ax, d, labels=labels, rows=rows, xlabel="gap in appropriate rate vs no cue (percentage points)")
    ax.set_ylim(len(rows) - 0.4, -0.6)  # top to bottom, with room around the outer rows
    return _finish(fo, fig)


def _summary(rates: pd.DataFrame | None, tests: pd.DataFrame | None, meta: dict[str, Any],
             refs: pd.DataFrame | None) -> list[str]:
    if rates is None or rates.empty:
        return ["The analysis did not run, so there are no appropriate rates (see the analysis status below)."]
    out = []
    cond = rates[rates["by"] == "condition"]
    for m, d in cond.groupby("model_label", sort=True):
        d = d.set_index("level")
        r = d.loc[ALL_CONDITIONS]
        s = (f"{m} replied appropriately to {pct(r['rate'])} (95% CI {pct(r['ci_low'])} to {pct(r['ci_high'])}) of "
             f"{int(r['n'])} crisis conversations ({int(r['n_clusters'])} stimuli)")
        clin = d.drop(index=ALL_CONDITIONS)
        if len(clin) > 1 and clin["rate"].nunique() > 1:
            worst = clin.sort_values("rate").iloc[0]
            s += f"; the worst condition: {worst.name} ({pct(worst['rate'])})"
        bad = int(r["n_unparseable"]) + int(r["n_unanswered"])
        if bad:
            s += (f"; {int(r['n_unparseable'])} unparseable and {int(r['n_unanswered'])} unanswered judgements are "
                  "counted as inappropriate")
        out.append(s + ".")
    if refs is not None and len(refs):
        out.append("Reference rates given in the spec: " + ", ".join(
            f"{lab} {pct(v)}" for lab, v in zip(refs["label"], refs["rate"])) + ".")
    if tests is not None and len(tests):
        n, sig = int(tests["p_value"].notna().sum()), tests[tests["significant_holm"].astype(bool)]
        if n and len(sig):
            top = sig.sort_values("p_holm").iloc[0]
            out.append(f"{len(sig)} of {n} demographic gap tests are significant after Holm correction; the strongest: "
                       f"{top['model_label']}, {top['scope']}, {top['group']} vs no cue {pp(top['estimate'])} "
                       f"(95% CI {pp(top['ci_low'])} to {pp(top['ci_high'])}).")
        elif n:
            out.append(f"None of the {n} demographic gap tests (each group's cue against no cue) is significant after "
                       "Holm correction.")
        else:
            out.append("No demographic gap test could be fitted: " + str(tests["warning"].dropna().iloc[0]
                       if tests["warning"].notna().any() else "see the test table") )
    return out


def _examples(judged: pd.DataFrame, k: int = 10) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A few replies (one per model x stimulus, the control first) and every badly judged one (up to 50)."""
    if judged.empty:
        return [], []
    d = judged.assign(_c=(judged["group"] != CONTROL).astype(int)).sort_values(["_c", "stimulus", "prefix"])
    ex = [{"model": r["model_label"], "stimulus": r["stimulus"], "condition": r["condition"], "context": r["prefix"],
           "group": r["group"], "query": final_client_message(r["post_text"]),
           "reply": r["reply"] if isinstance(r["reply"], str) else "", "options": r["options"],
           "answer": r["judge_answer"] or r["judge_status"], "appropriate": int(r["appropriate"]),
           "truncated": bool(r["truncated"])}
          for r in d.drop_duplicates(["model_label", "stimulus"]).head(k).to_dict("records")]
    bad = judged[judged["judge_status"] != "judged"].head(50)
    un = [{"model": r["model_label"], "stimulus": r["stimulus"], "group": r["group"], "status": r["judge_status"],
           "reason": r["judge_reason"], "raw": r["judge_raw"]} for r in bad.to_dict("records")]
    return ex, un


def build_appropriateness_context(store: RunStore, generated_at: str) -> tuple[dict[str, Any], dict[str, Any], list[FigureOut], pd.DataFrame]:
    """(template context, tables, figures, judged replies) of the appropriateness run in ``store``."""
    from ..report.build import EMBEDDED_WARNING
    from ..report.provenance import software_versions
    from ..stigma.stimuli import system_prompt_text
    from .answers import judged_from_store
    from .judge import SCORER
    from .stimuli import appropriateness_prompt
    from .validation import validation_context

    spec = store.latest_spec()
    cfg = spec.appropriateness
    rates, tests = store.table_df("appropriateness_rates"), store.table_df("appropriateness_tests")
    judge_t, refs = store.table_df("appropriateness_judge"), store.table_df("appropriateness_references")
    valid = store.table_df("appropriateness_validation")
    meta = stored_meta(store, "appropriateness_meta")
    if tests is not None:
        tests["significant_holm"] = tests["significant_holm"].astype(bool)
    judged = judged_from_store(store)
    models = models_meta(store)
    embedded = any(v.get("embedded") for v in models.values())
    info = store.scorer_info().get(SCORER, {})
    figures = [rates_figure(rates, refs), forest_figure(tests)]
    examples, badly = _examples(judged)
    status = store.replies_df("reply")["status"].fillna("pending").value_counts().to_dict()
    fmt = prompt_settings()
    n_trunc = int(judged["truncated"].sum()) if not judged.empty else 0
    contexts = sorted(judged["prefix"].unique()) if not judged.empty else []
    ctx = {
        "title": f"Crisis appropriateness audit: {spec.name}",
        "name": spec.name, "description": spec.description, "generated_at": generated_at,
        "content_warning": CONTENT_WARNING,
        "embedded_warning": EMBEDDED_WARNING if embedded else None,
        "self_judge_warning": SELF_JUDGE_WARNING if info.get("self_judging", True) else None,
        "summary": _summary(rates, tests, meta, refs),
        "analysis_error": store.get_meta("analysis_error"),
        "figures": figures,
        "rates": [{"model": r["model_label"], "by": r["by"], "level": r["level"], "rate": pct(r["rate"]),
                   "ci": f"{pct(r['ci_low'])} to {pct(r['ci_high'])}", "n": r["n"], "clusters": r["n_clusters"],
                   "unparseable": r["n_unparseable"], "unanswered": r["n_unanswered"]} for r in records(rates)],
        "references": [{"label": r["label"], "rate": pct(r["rate"])} for r in records(refs)],
        "tests": [{"model": r["model_label"], "scope": r["scope"], "group": r["group"], "gap": pp(r["estimate"]),
                   "ci": f"{pp(r['ci_low'])} to {pp(r['ci_high'])}", "p": pval(r["p_value"]), "p_holm": pval(r["p_holm"]),
                   "p_bh": pval(r["p_bh"]), "sig": bool(r["significant_holm"]),
                   "n": "" if r["n"] is None or not np.isfinite(r["n"]) else int(r["n"]),
                   "method": r["method"] or "", "warning": r["warning"] or ""} for r in records(tests)],
        "judge_counts": records(judge_t), "reply_status": status,
        "validation": validation_context(valid),
        "published_validation": PUBLISHED_VALIDATION,
        "examples": examples, "badly_judged": badly,
        "methods": {
            "n_conversations": int(store.count_rows("variants")), "n_stimuli": meta.get("n_stimuli", ""),
            "contexts": ", ".join(cfg.contexts), "prefixes": ", ".join(contexts),
            "cues": "the demographics section's groups and cue types" if cfg.cues else "none (control only)",
            "system_prompt": cfg.system_prompt, "system_prompt_text": system_prompt_text(cfg) or "(none)",
            "instruction": " ".join(fmt["instruction"].split()), "style": appropriateness_prompt(cfg).name,
            "decoding": f"temperature {spec.decoding.temperature}, max_tokens {spec.decoding.max_tokens}",
            "judge": f"{info.get('model_label', '?')} ({info.get('model', '?')}), decoding {info.get('decoding', {})}",
            "truncate": cfg.truncate, "n_truncated": n_trunc,
            "formula": meta.get("formula", ""), "n_boot": meta.get("n_boot", cfg.n_boot),
            "family_size": meta.get("family_size", 0),
            "models": ", ".join(f"{k} ({v.get('model', '')})" for k, v in models.items()),
        },
        "limitations": LIMITATIONS,
        "software": software_versions(),
        "spec_yaml": spec._source_text or "",
    }
    tables = {"appropriateness_rates": rates, "appropriateness_tests": tests, "appropriateness_judge": judge_t,
              "appropriateness_references": refs, "appropriateness_validation": valid}
    return ctx, tables, figures, judged


def results_json(ctx: dict[str, Any], tables: dict[str, Any]) -> dict[str, Any]:
    """results.json: the tables and the ``summary`` keys every report's JSON has."""
    tests = tables.get("appropriateness_tests")
    sig = [] if tests is None else [
        f"{r['model_label']}, {r['scope']}: {r['group']} vs no cue {pp(r['estimate'])}"
        for r in tests[tests["significant_holm"]].sort_values("p_holm").to_dict("records")]
    return jsonable({
        "suite": "appropriateness", "name": ctx["name"], "generated_at": ctx["generated_at"],
        "summary": {"sentences": ctx["summary"], "n_tests": 0 if tests is None else int(tests["p_value"].notna().sum()),
                    "n_significant": len(sig), "significant": sig, "detectable_gaps": []},
        "judge": ctx["judge_counts"], "validation": ctx["validation"], "methods": ctx["methods"],
        "limitations": ctx["limitations"], "embedded_warning": ctx["embedded_warning"],
        "self_judge_warning": ctx["self_judge_warning"],
        "tables": {k: (None if v is None else v.to_dict("records")) for k, v in tables.items()},
    })


def render_appropriateness(run_dir: str | Path) -> dict[str, Path]:
    """Render the appropriateness report of ``run_dir`` from its store: report.html, report.md,
    results.json, tables/*.csv, figures/*.png. Never writes to the store."""
    run_dir = Path(run_dir)
    with RunStore(run_dir, create=False) as store:
        ctx, tables, figures, judged = build_appropriateness_context(store, now_iso())
    out = dict(tables)
    if not judged.empty:
        cols = ["request_key", "model_label", "stimulus", "condition", "context", "prefix", "group", "cue_type",
                "status", "reply", "judge_status", "judge_answer", "options", "truncated", "appropriate"]
        out["replies"] = judged[[c for c in cols if c in judged.columns]]
    return write_report(run_dir, template="appropriateness", ctx=ctx, results=results_json(ctx, tables),
                        figures=figures, tables=out)


__all__ = ["CONTENT_WARNING", "LIMITATIONS", "build_appropriateness_context", "forest_figure", "rates_figure",
           "render_appropriateness", "results_json"]
