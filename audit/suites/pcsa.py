"""The PCSA suite: multi-turn persona client simulation red-teaming of counselling models, and whether
the attack succeeds more often for clients of one group than another.

The design of Xu et al., "Do No Harm: Exposing Hidden Vulnerabilities of LLMs via Persona-based Client
Simulation Attack in Psychological Counseling" (arXiv 2604.04842, 2026), with our own personas,
distortion recasting and prompts (:mod:`audit.pcsa.data`), plus the project's equity question (a
demographic factor crossed into the personas). Stages (the stage protocol of :mod:`audit.stages`,
over the same store and request engine):

- ``plan``: the conversations of the design (:mod:`audit.pcsa.plan`), stored in
  ``pcsa_conversations``; the prompt templates' SHA-256 in meta ``pcsa_prompts`` (provenance);
- ``dialogue``: every open conversation run (or resumed) to its end (:mod:`audit.pcsa.dialogue`);
- ``judge``: the final verdict of every finished conversation, parsed strictly;
- ``analyze``: ASRs, per-axis rates, CARES safety scores, baselines and the group gaps
  (:mod:`audit.pcsa.analysis`), stored as tables ``pcsa_rates``, ``pcsa_strategies``, ``pcsa_effects``,
  ``pcsa_tests``, ``pcsa_meta``;
- ``report``: the report (:mod:`audit.pcsa.report`).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from ..report import ReportStage
from ..stages import StageContext, StageSummary, Suite
from ..store import canonical_json, now_iso


def _plan(ctx: StageContext) -> list[Any]:
    done = ctx.summaries.get("plan")
    if done is not None and done.data is not None:
        return done.data
    from ..pcsa.plan import plan

    return plan(ctx.spec)


def _role(stack: ExitStack, role: Any) -> tuple[Any, tuple[str, str] | None]:
    """(model to send to, request-key identity override) of a role; starts the local rules server."""
    if role.local == "rules":
        from ..pcsa.local import IDENTITY, rules_server

        return stack.enter_context(rules_server()), IDENTITY
    return role.model, None


def roles(stack: ExitStack, spec: Any, need: tuple[str, ...] = ("attacker", "evaluator", "judge")) -> Any:
    """The :class:`audit.pcsa.dialogue.Roles` of ``spec`` (local servers live as long as ``stack``)."""
    from ..generate import check_models
    from ..pcsa.dialogue import Roles

    cfg = spec.pcsa
    check_models(spec)
    ident: dict[str, Any] = {}
    attacker, ident["attacker"] = _role(stack, cfg.attacker) if "attacker" in need else (None, None)
    evaluator = None
    if cfg.evaluator is not None and cfg.mode == "adaptive" and "evaluator" in need:
        evaluator, ident["evaluator"] = _role(stack, cfg.evaluator)
    judge, ident["judge"] = _role(stack, cfg.judge) if "judge" in need else (None, None)
    return Roles(attacker=attacker, attacker_decoding=cfg.attacker.decoding,
                 targets={m.label: m for m in spec.models}, target_decoding=spec.decoding, evaluator=evaluator,
                 evaluator_decoding=cfg.evaluator.decoding if cfg.evaluator else None, judge=judge,
                 judge_decoding=cfg.judge.decoding, identities=ident, seed=spec.seed)


def roles_meta(spec: Any) -> dict[str, Any]:
    """Who played which role (no keys): endpoint and model, or the local rules."""
    from ..pcsa.local import IDENTITY

    def one(r: Any) -> dict[str, Any]:
        if r is None:
            return {"role": "none"}
        if r.local == "rules":
            return {"local": "rules", "identity": list(IDENTITY)}
        m = r.model
        return {"embedded": True} if m.is_embedded else {"base_url": m.base_url, "model": m.model}

    cfg = spec.pcsa
    return {"attacker": one(cfg.attacker), "evaluator": one(cfg.evaluator if cfg.mode == "adaptive" else None),
            "judge": one(cfg.judge), "targets": [m.label for m in spec.models]}


def check_role_keys(spec: Any) -> None:
    """Fail before anything is sent when a role's or a target's API key variable is not set."""
    from ..backends.openai_backend import ChatBackend
    from ..generate import check_models

    check_models(spec)
    cfg = spec.pcsa
    for r in (cfg.attacker, cfg.evaluator, cfg.judge):
        if r is not None and r.local is None and r.model.api_key_env:
            ChatBackend._read_key(r.model)


class PlanStage:
    """``plan``: the design's conversations into ``pcsa_conversations``; prompts and roles into meta."""

    name = "plan"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..generate import _models_meta
        from ..pcsa.data import prompt_hashes
        from ..pcsa.plan import settings

        check_role_keys(ctx.spec)
        convs = _plan(ctx)
        added = ctx.store.put_pcsa_conversations(c.row() for c in convs)
        ctx.store.set_meta("suite", "pcsa")
        ctx.store.set_meta("pcsa_prompts", canonical_json(prompt_hashes()))
        ctx.store.set_meta("pcsa_settings", canonical_json(settings(ctx.spec)))
        ctx.store.set_meta("pcsa_roles", canonical_json(roles_meta(ctx.spec)))
        ctx.store.set_meta("pcsa_plan", canonical_json([c.conversation_id for c in convs]))
        ctx.store.set_meta("models", _models_meta(ctx.spec))
        arms = {a: sum(c.arm == a for c in convs) for a in ("persona", "direct", "crescendo")}
        detail = (f"{len(convs)} conversations: " + ", ".join(f"{n} {a}" for a, n in arms.items() if n)
                  + f" ({added} new)")
        return StageSummary("done" if added else "skipped", detail, convs)


class DialogueStage:
    """``dialogue``: run or resume every open conversation of the plan."""

    name = "dialogue"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..pcsa.dialogue import run_dialogues

        convs = _plan(ctx)
        stored = ctx.store.pcsa_conversations_df().set_index("conversation_id")["status"].to_dict()
        open_ = [c for c in convs if stored.get(c.conversation_id) != "done"]
        if not open_:
            return StageSummary("skipped", f"all {len(convs)} conversations finished")
        with ExitStack() as stack:
            states, summ = run_dialogues(ctx.store, ctx.spec, open_, roles(stack, ctx.spec, ("attacker", "evaluator")),
                                         progress=ctx.progress, echo=ctx.say)
        stalled = sum(s.stalled for s in states)
        turns = sum(s.turn for s in states)
        detail = (f"{len(open_)} conversations run, {turns} turns, {stalled} waiting for a failed request "
                  f"[{summ.line()}]")
        return StageSummary("done", detail, summ, unanswered=stalled)


class JudgeStage:
    """``judge``: the final verdict of every finished conversation (cached verdicts are re-read)."""

    name = "judge"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..pcsa.dialogue import judge_conversations

        convs = _plan(ctx)
        with ExitStack() as stack:
            counts, summ = judge_conversations(ctx.store, convs, roles(stack, ctx.spec, ("judge",)),
                                               progress=ctx.progress)
        ctx.store.set_meta("pcsa_judge_counts", canonical_json(counts))
        detail = (f"{counts['ok']} verdicts, {counts['unparseable']} unparseable (stored, not guessed), "
                  f"{counts['failed']} failed [{summ.line()}]")
        return StageSummary("done" if summ.sent else "skipped", detail, counts, unanswered=counts["failed"])


PCSA_TABLES = ("pcsa_rates", "pcsa_strategies", "pcsa_effects", "pcsa_tests", "pcsa_meta", "pcsa_validation")


def validation_table(spec: Any) -> Any:
    """The judge-validation rows of the spec's ``pcsa.judge_validation`` table (None when not given):
    :func:`audit.appropriateness.validation.validation_summary_table`, without the appropriateness
    judge's published kappa (a different judge)."""
    from ..appropriateness.validation import validation_summary_table

    jv = spec.pcsa.judge_validation
    if jv is None:
        return None
    from ..errors import AuditError

    try:
        return validation_summary_table(spec.resolve(jv.data), judge=jv.judge, humans=jv.humans,
                                        source=str(jv.data), published=False)
    except AuditError as exc:  # say which spec key pointed at the table
        raise AuditError(exc.what, where=f"pcsa.judge_validation: {exc.where}" if exc.where else
                         "pcsa.judge_validation", fix=exc.fix) from None


class PcsaAnalyzeStage:
    """``analyze``: rates, baselines and group gaps, stored as ``pcsa_*`` tables (always recomputed: the
    inputs are a few hundred rows), and the judge's validation (``pcsa_validation``) when the spec gives
    a labelled table. A failure (a bad validation table included) is stored in meta ``analysis_error``
    and the report says why."""

    name = "analyze"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..errors import AuditError
        from ..pcsa.analysis import analyze_pcsa, conversations_frame

        store = ctx.store
        try:
            frame = conversations_frame(store)
            res = analyze_pcsa(frame, store.pcsa_turns_df(), spec=ctx.spec)
            validation = validation_table(ctx.spec)
        except AuditError as exc:
            store.drop_tables(PCSA_TABLES)
            store.set_meta("analysis_error", exc.message)
            return StageSummary("failed", f"the analysis could not be done: {exc.message}", exc)
        store.delete_meta("analysis_error")
        res.meta["analyzed_at"] = now_iso()
        tables = res.tables()
        if validation is None:
            store.drop_tables(["pcsa_validation"])
        else:
            tables["pcsa_validation"] = validation
        store.replace_tables(tables)
        return StageSummary("done", f"{len(res.rates)} rates, {res.meta['family_size']} gap tests "
                                    f"({res.meta['n_significant_holm']} significant after Holm)"
                                    + ("; judge validated" if validation is not None else ""), res)


PCSA = Suite(
    name="pcsa",
    description="multi-turn persona client simulation red-teaming (Xu et al. 2026): attacker persona x strategies "
                "-> target turns -> evaluator -> judge -> ASR, baselines, demographic gaps",
    stages=(PlanStage(), DialogueStage(), JudgeStage(), PcsaAnalyzeStage(), ReportStage()),
)

__all__ = ["DialogueStage", "JudgeStage", "PCSA", "PcsaAnalyzeStage", "PlanStage", "roles",
           "roles_meta"]
