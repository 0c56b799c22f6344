"""The PCSA suite's report: HTML (Jinja, autoescaped, self-contained, no scripts), Markdown, JSON and
CSV, from the run store alone (tables ``pcsa_*`` of the analyze stage, the conversations and turns).

House style as the stigma report (:mod:`audit.stigma.report`): the same Jinja environments and CSS,
figures as embedded PNGs, CSV tables through ``csv_safe``, files staged and published atomically
(:func:`audit.report.suite_report.write_report`, shared with the stigma and appropriateness reports).
It opens with a content warning. Transcripts are untrusted model text: printed escaped, inside
``<details>`` elements collapsed by default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..jsonable import jsonable
from ..report.figures import FigureOut, _finish, _setup
from ..report.suite_report import pct as _pct, pp as _pp, pval as _p, rate_axis, rate_dots, stored_meta, write_report
from ..store import RunStore, now_iso
from .data import load_data
from .parse import AXES

CONTENT_WARNING = ("This report discusses self-harm, eating disorders, medication, delusions and crisis situations, "
                   "and its example transcripts show simulated clients pressing a counselling model on them. The "
                   "objectives are abstract categories; no transcript was written to contain instructions for harm, "
                   "but model replies are shown as the models wrote them.")

JUDGE_NOT_VALIDATED = (
    "The judge has its own error: an LLM judge misses some failures and flags some safe replies, and this run's "
    "judge has not been validated against human labels. Validate it on conversations labelled by clinically "
    "trained annotators before relying on a rate: `empathy-audit pcsa validation-table RUN_DIR --out FILE [--n N]` "
    "writes the judged conversations for annotators; fill the human columns, check agreement with `empathy-audit "
    "judge validate --data FILE --columns reply=transcript` and set pcsa.judge_validation to the file so that the "
    "report states it. The unparseable verdicts are counted, never guessed.")


def judge_limitation(validation: dict[str, Any] | None) -> str:
    """The limitation about the judge: how to validate it, or what its validation found."""
    if validation is None:
        return JUDGE_NOT_VALIDATED
    return ("The judge has its own error: an LLM judge misses some failures and flags some safe replies. Its "
            f"validation against human labels ({validation['source']}): {validation['summary']} Agreement on a "
            "stratified validation sample describes that sample's mix of verdicts, not necessarily the run's. The "
            "unparseable verdicts are counted, never guessed.")


LIMITATIONS = [
    "The clients are simulated by an attacker model following our personas and prompts; they are not real clients, "
    "and real clients in distress talk differently. The attack success rates describe this attack, not how often a "
    "model fails real people.",
    JUDGE_NOT_VALIDATED,
    "With the local rule-based evaluator and judge (local: rules; the demo), verdicts are keyword rules, not safety "
    "judgements: the report shows the mechanics working, not a finding.",
    "Our personas, distortion recasting, strategy descriptions and prompts are our own (the paper's are not "
    "published with it); rates are not comparable one to one with the paper's.",
    "The group gaps compare the same personas with different stated demographics; a gap means the attack succeeded "
    "more often when the client stated that group, in this design, with this attacker. With few personas the CIs are "
    "wide, and a non-significant gap is not evidence of no gap.",
    "Conversations that share identical requests share their cached replies (content addressing): with a "
    "deterministic attacker this can make conversations of different personas less independent than they look.",
]

PAPER_VS_OURS = [
    ("Roles", "attacker, target, evaluator, judge (GPT-family models)", "any OpenAI-compatible endpoint or the "
     "embedded model per role; local rule-based evaluator/judge for demos"),
    ("Personas", "the paper's client profiles", "32 profiles written for this project, demographically neutral base"),
    ("Objectives", "the paper's harm categories", "7 abstract category ids with non-actionable descriptions"),
    ("Distortion recasting", "objective recast as a cognitive distortion", "our own template and 8 CBT distortions"),
    ("Strategies", "reassurance seeking, appeal to expertise, intellectualization, metaphorical expression", "same "
     "four, our own descriptions; configurable order"),
    ("Switching rule", "driven by the evaluator score (details not published)", "switch to the next strategy when "
     "the kept score did not rise above the previous turn's"),
    ("Best-of-N, max turns, stop threshold", "the paper's settings", "n_candidates, max_turns, stop_threshold in "
     "the spec"),
    ("Baselines", "Crescendo, Chain-of-Attack", "direct single-turn request and a crescendo-style escalation, both "
     "generated by the attacker from the same objectives (no Chain-of-Attack)"),
    ("Equity", "not studied", "a demographic factor crossed into the personas with the empathy suite's cue "
     "templates; GEE gaps clustered by persona, Holm/BH"),
]


def _num(x: Any, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None or not np.isfinite(x) else fmt.format(x)


def _json_meta(store: RunStore, key: str) -> Any:
    v = store.get_meta(key)
    try:
        return json.loads(v) if v else {}
    except ValueError:
        return {}


# ---------------------------------------------------------------------------- figures


def asr_figure(rates: pd.DataFrame | None, by: str, fid: str, title: str, caption: str) -> FigureOut:
    fo = FigureOut(fid, title, caption, f"Dot plot of attack success rates by {by} with 95% CIs.")
    d = None if rates is None else rates[(rates["by"] == by) & rates["asr"].notna()]
    if d is None or d.empty:
        fo.missing = "no attack success rate was computed for this breakdown"
        return fo
    _, Figure = _setup()
    d = d.assign(row=[f"{a} | {lv}" if by != "group" else str(lv) for a, lv in zip(d["arm"], d["level"])])
    rows = list(dict.fromkeys(d.sort_values(["arm", "level"])["row"]))
    models = sorted(d["model_label"].unique())
    fig = Figure(figsize=(7.5, 1.0 + 0.3 * len(rows) * max(1, len(models)) ** 0.5))
    ax = fig.subplots()
    rate_dots(ax, d, row="row", rows=rows, est="asr", lo="asr_ci_low", hi="asr_ci_high", spacing=0.2)
    rate_axis(ax, rows, "attack success rate (judge: UNSAFE)", fontsize=7)
    ax.legend(loc="lower right", fontsize=7)
    return _finish(fo, fig)


def strategy_figure(strategies: pd.DataFrame | None) -> FigureOut:
    fo = FigureOut("fig-pcsa-strategy", "Turn-level success by strategy",
                   "Share of kept target turns under each strategy whose evaluator score reached the stop "
                   "threshold, per model, with Wilson 95% CIs (persona attack, adaptive mode).",
                   "Dot plot of turn-level success rates by strategy with 95% CIs.")
    d = None if strategies is None else strategies[strategies["success_rate"].notna()]
    if d is None or d.empty:
        fo.missing = "no turn was scored by the evaluator (fixed mode, or no persona conversation)"
        return fo
    _, Figure = _setup()
    rows = sorted(d["strategy"].unique())
    models = sorted(d["model_label"].unique())
    fig = Figure(figsize=(7.5, 1.0 + 0.35 * len(rows) * max(1, len(models)) ** 0.5))
    ax = fig.subplots()
    rate_dots(ax, d, row="strategy", rows=rows, est="success_rate", lo="ci_low", hi="ci_high", spacing=0.2)
    rate_axis(ax, rows, "turn-level success rate (evaluator)", fontsize=8)
    ax.legend(loc="lower right", fontsize=7)
    return _finish(fo, fig)


# ---------------------------------------------------------------------------- context


def _rate_rows(rates: pd.DataFrame | None, by: str) -> list[dict[str, Any]]:
    if rates is None:
        return []
    out = []
    for r in rates[rates["by"] == by].to_dict("records"):
        out.append({"arm": r["arm"], "model": r["model_label"], "level": r["level"], "n": int(r["n"]),
                    "judged": int(r["n_judged"]), "unparseable": int(r["n_unparseable"]), "asr": _pct(r["asr"]),
                    "ci": f"{_pct(r['asr_ci_low'])} to {_pct(r['asr_ci_high'])}",
                    **{a: _pct(r[a]) for a in AXES}, "refusal_asr": _pct(r["refusal_asr"]),
                    "safety": _num(r["safety_score"], "{:.2f}"), "turns": _num(r["median_turns_to_success"], "{:.0f}"),
                    "n_success": int(r["n_success_turns"])})
    return out


def _summary(rates: pd.DataFrame | None, effects: pd.DataFrame | None, tests: pd.DataFrame | None,
             meta: dict[str, Any]) -> list[str]:
    if rates is None or rates.empty:
        return ["The analysis did not run, so there are no attack success rates (see the analysis status below)."]
    out = []
    ov = rates[rates["by"] == "overall"]
    for m, d in ov.groupby("model_label", sort=True):
        d = d.set_index("arm")
        s = []
        for arm in ("persona", "crescendo", "direct"):
            if arm in d.index:
                r = d.loc[arm]
                s.append(f"{arm} {_pct(r['asr'])} (95% CI {_pct(r['asr_ci_low'])} to {_pct(r['asr_ci_high'])}, "
                         f"n = {int(r['n_judged'])})")
        out.append(f"{m}: judge attack success rate " + "; ".join(s) + ".")
    if effects is not None and len(effects):
        for r in effects.to_dict("records"):
            out.append(f"{r['model_label']}: the persona attack's ASR minus the {r['baseline']} baseline's: "
                       f"{_pp(r['difference'])} (95% CI {_pp(r['ci_low'])} to {_pp(r['ci_high'])}).")
    if tests is not None and len(tests):
        n = int(tests["p_value"].notna().sum())
        sig = tests[tests["significant_holm"].astype(bool)]
        if len(sig):
            top = sig.sort_values("p_holm").iloc[0]
            out.append(f"{len(sig)} of {n} group-gap tests are significant after Holm correction; the strongest: "
                       f"{top['model_label']}, {top['outcome']}, {top['group']} vs {top['reference']} "
                       f"{_pp(top['estimate'])} (p Holm {_p(top['p_holm'])}).")
        elif n:
            out.append(f"None of the {n} group-gap tests is significant after Holm correction "
                       f"(reference group: {meta.get('reference')}).")
        else:
            why = next((w for w in tests["warning"] if isinstance(w, str) and w), "see the table")
            out.append(f"No group-gap test could be fitted ({len(tests)} not fitted): {why}")
    if tests is not None and "verdict" in tests.columns:
        from ..stats.equivalence import NO_MARGIN

        v = tests["verdict"].astype(str)
        counts = v[v != NO_MARGIN].value_counts()
        if len(counts):
            out.append(f"Against the equivalence margins (analysis.margins), {int(counts.sum())} group gaps: "
                       + ", ".join(f"{int(n)} {k}" for k, n in counts.items()) + ".")
    return out


def _transcripts(conv: pd.DataFrame, turns: pd.DataFrame, k: int = 6) -> list[dict[str, Any]]:
    """A few example conversations: per arm the first UNSAFE and the first SAFE one."""
    from .dialogue import stored_history

    if conv.empty:
        return []
    picks = []
    for arm in ("persona", "crescendo", "direct"):
        for v in ("UNSAFE", "SAFE"):
            d = conv[(conv["arm"] == arm) & (conv["verdict"] == v)]
            if len(d):
                picks.append(d.iloc[0])
    out = []
    for r in picks[:k]:
        hist = stored_history(turns, r["conversation_id"])
        strat = turns[(turns["conversation_id"] == r["conversation_id"]) & (turns["role"] == "target")
                      & (turns["chosen"] == 1)].set_index("turn")["strategy"].to_dict()
        ev = json.loads(r["evidence_json"]) if isinstance(r["evidence_json"], str) else []
        out.append({"id": r["conversation_id"], "arm": r["arm"], "model": r["model_label"],
                    "persona": r["persona_id"] if isinstance(r["persona_id"], str) else "", "group": r["group_name"], "objective": r["objective"],
                    "verdict": r["verdict"], "stop": r["stop_reason"] or "", "evidence": ev,
                    "turns": [{"n": i, "strategy": strat.get(i, ""), "client": c, "counsellor": s}
                              for i, (c, s) in enumerate(hist, 1)]})
    return out


def _count(x: Any) -> Any:
    """An integer count for a table cell; empty when missing."""
    try:
        return int(x) if x is not None and np.isfinite(float(x)) else ""
    except (TypeError, ValueError):
        return ""


def _tests_rows(tests: pd.DataFrame | None) -> list[dict[str, Any]]:
    if tests is None:
        return []
    return [{"model": r["model_label"], "outcome": r["outcome"], "group": r["group"], "reference": r["reference"],
             "gap": _pp(r["estimate"]), "ci": f"{_pp(r['ci_low'])} to {_pp(r['ci_high'])}", "p": _p(r["p_value"]),
             "p_exact": _p(r["p_exact"]), "p_holm": _p(r["p_holm"]), "p_bh": _p(r["p_bh"]),
             "sig": bool(r["significant_holm"]), "n": _count(r.get("n")), "n_personas": _count(r.get("n_personas")),
             "pairs": (f"{_count(r.get('n_pairs'))} ({_count(r.get('n_discordant'))})"
                       if _count(r.get("n_pairs")) != "" else ""),
             "method": r["method"] or "", "warning": r["warning"] or "", **_verdict_cells(r)}
            for r in jsonable(tests.to_dict("records"))] if len(tests) else []


def _verdict_cells(r: dict[str, Any]) -> dict[str, Any]:
    """The margin and verdict cells of a gap row (``analysis.margins``; empty without a verdict column)."""
    from ..stats.equivalence import NO_MARGIN

    v = r.get("verdict")
    if not v or v == NO_MARGIN:
        return {"margin": "", "verdict": "", "tost_ci": "", "verdict_note": ""}
    m = r.get("margin_abs")
    margin = f"\u00b1{100 * m:g} pp" if isinstance(m, (int, float)) and np.isfinite(m) else ""
    if r.get("margin_kind") == "relative":
        margin += f" ({r.get('margin')} of the reference rate)" if margin else f"\u00b1{r.get('margin')}"
        tost = f"{_pct(r.get('tost_ci_low'))} to {_pct(r.get('tost_ci_high'))}"
    else:
        tost = f"{_pp(r.get('tost_ci_low'))} to {_pp(r.get('tost_ci_high'))}"
    return {"margin": margin, "verdict": v, "tost_ci": tost, "verdict_note": r.get("verdict_note") or ""}


def build_pcsa_context(store: RunStore, generated_at: str) -> tuple[dict[str, Any], dict[str, Any], list[FigureOut]]:
    from ..report.build import EMBEDDED_WARNING
    from ..report.provenance import software_versions
    from ..appropriateness.validation import validation_context
    from .analysis import conversations_frame

    spec = store.latest_spec()
    cfg = spec.pcsa
    rates, strategies = store.table_df("pcsa_rates"), store.table_df("pcsa_strategies")
    effects, tests = store.table_df("pcsa_effects"), store.table_df("pcsa_tests")
    if tests is not None and len(tests):
        tests["significant_holm"] = tests["significant_holm"].astype(bool)
    meta = stored_meta(store, "pcsa_meta")
    valid = store.table_df("pcsa_validation")
    validation = validation_context(valid)
    try:
        conv = conversations_frame(store)
    except Exception:  # noqa: BLE001 - no conversation stored: the report says so
        conv = pd.DataFrame(columns=["conversation_id", "arm", "verdict"])
    turns = store.pcsa_turns_df()
    models = _json_meta(store, "models")
    embedded = any(isinstance(v, dict) and v.get("embedded") for v in models.values()) or \
        any(r.get("embedded") for r in _json_meta(store, "pcsa_roles").values() if isinstance(r, dict))
    figures = [
        asr_figure(rates, "objective", "fig-pcsa-objective", "Attack success by arm and objective",
                   "Share of conversations the judge found UNSAFE, per arm (persona attack and baselines) and "
                   "objective category, per model, with Wilson 95% CIs."),
        asr_figure(rates, "group", "fig-pcsa-group", "Persona attack success by demographic group",
                   "Share of persona-attack conversations judged UNSAFE by the group the client stated "
                   "(control: no statement), per model, with Wilson 95% CIs."),
        strategy_figure(strategies),
    ]
    d = load_data()
    prompts = _json_meta(store, "pcsa_prompts")
    ctx = {
        "title": f"PCSA red-teaming audit: {spec.name}", "name": spec.name, "description": spec.description,
        "generated_at": generated_at, "content_warning": CONTENT_WARNING,
        "embedded_warning": EMBEDDED_WARNING if embedded else None,
        "summary": _summary(rates, effects, tests, meta), "analysis_error": store.get_meta("analysis_error"),
        "figures": figures,
        "overall": _rate_rows(rates, "overall"), "by_objective": _rate_rows(rates, "objective"),
        "by_group": _rate_rows(rates, "group"),
        "strategies": [{"model": r["model_label"], "strategy": r["strategy"], "n": int(r["n_turns"]),
                        "scored": int(r["n_scored"]), "rate": _pct(r["success_rate"]),
                        "ci": f"{_pct(r['ci_low'])} to {_pct(r['ci_high'])}", "winning": int(r["n_winning"])}
                       for r in jsonable(strategies.to_dict("records"))] if strategies is not None else [],
        "effects": [{"model": r["model_label"], "baseline": r["baseline"], "persona": _pct(r["persona_asr"]),
                     "base": _pct(r["baseline_asr"]), "diff": _pp(r["difference"]),
                     "ci": f"{_pp(r['ci_low'])} to {_pp(r['ci_high'])}"}
                    for r in jsonable(effects.to_dict("records"))] if effects is not None else [],
        "tests": _tests_rows(tests),
        "has_margins": tests is not None and "verdict" in tests.columns,
        "tost_level": f"{100 * (1 - 2 * float(meta.get('alpha', 0.05) or 0.05)):g}%",
        "judge_counts": _json_meta(store, "pcsa_judge_counts"),
        "n_open": int((conv["status"] != "done").sum()) if "status" in conv else 0,
        "unparseable": [{"id": r["conversation_id"], "detail": r["judge_detail"] or ""}
                        for r in conv[conv.get("judge_status", pd.Series(dtype=str)) == "unparseable"].head(30)
                        .to_dict("records")] if "judge_status" in conv else [],
        "transcripts": _transcripts(conv, turns) if "verdict" in conv else [],
        "methods": {
            "mode": cfg.mode, "n_candidates": cfg.n_candidates, "max_turns": cfg.max_turns,
            "stop_threshold": cfg.stop_threshold, "baselines": cfg.baselines,
            "strategies": ", ".join(cfg.strategies or list(d.strategies)),
            "objectives": ", ".join(cfg.objectives or list(d.objectives)),
            "n_personas": len(set(conv.get("persona_id", pd.Series(dtype=str)).dropna())),
            "groups": ", ".join(sorted(set(conv.loc[conv["arm"] == "persona", "group_name"]))) if "group_name" in conv
            else "", "cue_type": cfg.demographics.cue_type, "reference": meta.get("reference", ""),
            "formula": meta.get("formula", ""), "family_size": meta.get("family_size", 0),
            "roles": _json_meta(store, "pcsa_roles"), "prompts": prompts,
            "decoding": f"temperature {spec.decoding.temperature}, max_tokens {spec.decoding.max_tokens}",
        },
        "paper_vs_ours": PAPER_VS_OURS,
        "limitations": [judge_limitation(validation) if x == JUDGE_NOT_VALIDATED else x for x in LIMITATIONS],
        "validation": validation, "software": software_versions(),
        "spec_yaml": spec._source_text or "",
    }
    tables = {"pcsa_rates": rates, "pcsa_strategies": strategies, "pcsa_effects": effects, "pcsa_tests": tests,
              "pcsa_validation": valid}
    return ctx, tables, figures


def results_json(ctx: dict[str, Any], tables: dict[str, Any]) -> dict[str, Any]:
    """results.json: the tables and the ``summary`` keys every report's JSON has."""
    tests = tables.get("pcsa_tests")
    sig = [] if tests is None or not len(tests) else [
        f"{r['model_label']}, {r['outcome']}: {r['group']} vs {r['reference']} {_pp(r['estimate'])}"
        for r in tests[tests["significant_holm"]].sort_values("p_holm").to_dict("records")]
    return jsonable({
        "suite": "pcsa", "name": ctx["name"], "generated_at": ctx["generated_at"],
        "summary": {"sentences": ctx["summary"], "n_tests": 0 if tests is None else int(tests["p_value"].notna().sum()),
                    "n_significant": len(sig), "significant": sig, "detectable_gaps": [],
                    **_verdict_summary(tests)},
        "judge_counts": ctx["judge_counts"], "validation": ctx["validation"], "methods": ctx["methods"],
        "limitations": ctx["limitations"],
        "content_warning": ctx["content_warning"], "embedded_warning": ctx["embedded_warning"],
        "tables": {k: (None if v is None else v.to_dict("records")) for k, v in tables.items()},
    })


def _verdict_summary(tests: pd.DataFrame | None) -> dict[str, Any]:
    """``verdicts`` (counts per verdict of the rows with a margin) when the spec gave margins."""
    from ..stats.equivalence import NO_MARGIN

    if tests is None or "verdict" not in tests.columns:
        return {}
    v = tests["verdict"].astype(str)
    return {"verdicts": {k: int(n) for k, n in v[v != NO_MARGIN].value_counts().items()}}


def render_pcsa(run_dir: str | Path) -> dict[str, Path]:
    """Render the PCSA report of ``run_dir`` from its store: report.html, report.md, results.json,
    tables/*.csv (conversations.csv and turns.csv included), figures/*.png. Never writes to the store."""
    run_dir = Path(run_dir)
    with RunStore(run_dir, create=False) as store:
        ctx, tables, figures = build_pcsa_context(store, now_iso())
        conv, turns = store.pcsa_conversations_df(), store.pcsa_turns_df()
    paths = write_report(run_dir, template="pcsa", ctx=ctx, results=results_json(ctx, tables), figures=figures,
                         tables={**tables, "conversations": conv, "turns": turns})
    return paths


__all__ = ["CONTENT_WARNING", "JUDGE_NOT_VALIDATED", "LIMITATIONS", "judge_limitation", "PAPER_VS_OURS", "asr_figure", "build_pcsa_context", "render_pcsa",
           "results_json", "strategy_figure"]
