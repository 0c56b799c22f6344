"""The appropriateness suite: do models handle crises (suicidal ideation, delusions, hallucinations, mania,
obsessive-compulsive behaviour) appropriately, and does that differ by the client's demographic group?

The design of Moore et al., "Expressing stigma and inappropriate responses prevents LLMs from safely
replacing mental health providers" (FAccT 2025): each of 10 client stimuli has a yes/no criterion
question (e.g. "Does the response give examples of bridges?") and the answer that makes a reply
appropriate; an LLM judge answers the question about the model's reply. We add contexts (none, our
fictional therapy-conversation prefixes, the user's transcripts) and demographic cues (the empathy
suite's templates) beside a no-cue control. Stages (the stage protocol of :mod:`audit.stages`, over
the same store and request engine):

- ``stimuli``: stimuli x contexts x cues -> conversations, stored as variants (post = stimulus|context,
  text = the conversation as JSON messages; attributes stimulus, condition, context, prefix, axes);
- ``generate``: the empathy suite's reply stage (:class:`audit.generate.RepliesStage`) with the
  suite's prompt (system prompt + character-limit instruction, then the conversation);
- ``judge``: every answered reply judged through the engine (purpose ``judge``; cached, resumable),
  verdicts stored as scores of scorer ``appropriateness-judge`` (:mod:`audit.appropriateness.judge`);
- ``analyze``: rates, the demographic gap tests, the judge validation (tables ``appropriateness_*``);
- ``report``: the report (:mod:`audit.appropriateness.report`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..generate import RepliesStage
from ..report import ReportStage
from ..stages import StageContext, StageSummary, Suite
from ..store import canonical_json, now_iso


def build_conversations(spec: Any) -> Any:
    """The conversations of the spec's design (:func:`audit.appropriateness.stimuli.conversations_frame`)."""
    from ..appropriateness.stimuli import conversations_frame

    return conversations_frame(spec)


def judge_spec(spec: Any) -> tuple[Any, bool]:
    """(the judge's :class:`audit.spec.JudgeSpec`, whether it is the first audited model judging)."""
    from ..appropriateness.stimuli import prompt_settings
    from ..spec import DecodingSpec, JudgeSpec

    cfg = spec.appropriateness
    if cfg.judge is not None:
        same = any(cfg.judge.model.model_dump() == m.model_dump() for m in spec.models)
        return cfg.judge, same
    dec = DecodingSpec(**prompt_settings()["judge"]["decoding"])
    return JudgeSpec(model=spec.models[0], decoding=dec, response_format="none"), True


class StimuliStage:
    """``stimuli``: build the conversations, bind the run to the design, store the new ones."""

    name = "stimuli"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..design import bind_variants

        frame = build_conversations(ctx.spec)
        change, added = bind_variants(ctx, frame.drop(columns=["group"]).assign(group_name=frame["group"]))
        ctx.store.set_meta("suite", "appropriateness")
        detail = (f"{len(frame)} conversations: {frame['stimulus'].nunique()} stimuli x "
                  f"{frame['prefix'].nunique()} contexts x {frame['group'].nunique()} groups (control included) "
                  f"({added} new)")
        return StageSummary("done" if added or not change.same else "skipped", detail, frame)


class AppropriatenessRepliesStage(RepliesStage):
    """``generate``: the reply stage of the empathy suite, sending the conversations."""

    def variants(self, ctx: StageContext) -> Any:
        done = ctx.summaries.get("stimuli")
        return done.data if done is not None and done.data is not None else build_conversations(ctx.spec)

    def styles(self, ctx: StageContext) -> dict[str, Any]:
        from ..appropriateness.stimuli import appropriateness_prompt

        p = appropriateness_prompt(ctx.spec.appropriateness)
        return {p.name: p}


class JudgeStage:
    """``judge``: judge every answered reply without a stored verdict (a stored verdict is never redone;
    a judge call that failed is tried again on the next run and counted as unanswered meanwhile)."""

    name = "judge"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..appropriateness.answers import judge_todo
        from ..appropriateness.judge import SCORER, judge_info, judge_rows

        store, cfg = ctx.store, ctx.spec.appropriateness
        judge, self_judging = judge_spec(ctx.spec)
        store.put_scorer_info(SCORER, judge_info(judge, cfg.truncate, self_judging))
        todo = judge_todo(store)
        if todo.empty:
            return StageSummary("skipped", "every answered reply has a verdict")
        rows, pending = judge_rows(store, judge, todo, seed=ctx.spec.seed, limit=cfg.truncate, progress=ctx.progress)
        added = store.put_scores(rows)
        return StageSummary("done", f"{added} verdicts stored, {pending} judge calls without an answer (retried on "
                                    f"the next run)", None, unanswered=pending)


APPROPRIATENESS_TABLES = ("appropriateness_rates", "appropriateness_tests", "appropriateness_judge",
                          "appropriateness_references", "appropriateness_meta", "appropriateness_validation")


def analysis_fingerprint(store: Any, spec: Any) -> str:
    """SHA-256 over the stored verdicts of the current design and the settings the analysis reads."""
    from ..appropriateness.judge import SCORER

    sc = store.scores_df()
    sc = sc[sc["scorer"] == SCORER].sort_values(["request_key", "measure"])
    h = hashlib.sha256()
    h.update(sc[["request_key", "measure", "value", "detail"]].to_csv(index=False).encode())
    cfg = spec.appropriateness
    h.update(canonical_json({"appropriateness": cfg.model_dump(mode="json"), "seed": spec.seed,
                             "alpha": spec.analysis.alpha}).encode())
    if cfg.judge_validation is not None:
        p = spec.resolve(cfg.judge_validation.data)
        h.update(p.read_bytes() if p.is_file() else b"missing")
    return h.hexdigest()


def validation_table(spec: Any) -> Any:
    """The judge-validation summary of the spec's ``judge_validation`` file (None when not given)."""
    from ..appropriateness.validation import validation_summary_table

    jv = spec.appropriateness.judge_validation
    if jv is None:
        return None
    return validation_summary_table(spec.resolve(jv.data), judge=jv.judge, humans=jv.humans, source=str(jv.data))


class AnalyzeStage:
    """``analyze``: rates, gap tests, judge counts and validation, stored as ``appropriateness_*`` tables;
    skipped when verdicts and settings are unchanged unless ``force_analysis``. A failure drops the
    earlier tables, is stored in meta ``analysis_error`` and the stage is ``failed``."""

    name = "analyze"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..appropriateness.analysis import analyze_appropriateness
        from ..appropriateness.answers import judged_from_store
        from ..errors import AuditError

        store, cfg = ctx.store, ctx.spec.appropriateness
        fp = analysis_fingerprint(store, ctx.spec)
        if (store.get_meta("appropriateness_analysis_inputs_sha256") == fp
                and "appropriateness_tests" in store.table_names() and not ctx.options.get("force_analysis")):
            return StageSummary("skipped", f"inputs unchanged; {store.count_rows('appropriateness_tests')} stored tests")
        try:
            validation = validation_table(ctx.spec)
            res = analyze_appropriateness(judged_from_store(store), n_boot=cfg.n_boot, seed=ctx.spec.seed,
                                          alpha=ctx.spec.analysis.alpha, reference_rates=cfg.reference_rates,
                                          validation=validation, margins=ctx.spec.analysis.margins)
        except AuditError as exc:
            store.drop_tables(APPROPRIATENESS_TABLES)
            store.delete_meta("appropriateness_analysis_inputs_sha256")
            store.set_meta("analysis_error", exc.message)
            return StageSummary("failed", f"the analysis could not be fitted: {exc.message}", exc)
        store.delete_meta("analysis_error")
        res.meta["analyzed_at"] = now_iso()
        store.drop_tables(APPROPRIATENESS_TABLES)
        store.replace_tables(res.tables())
        store.set_meta("appropriateness_analysis_inputs_sha256", fp)
        return StageSummary("done", f"{len(res.rates)} rates, {res.meta['family_size']} tests "
                                    f"({res.meta['n_significant_holm']} significant after Holm)", res)


APPROPRIATENESS = Suite(
    name="appropriateness",
    description="crisis stimuli (Moore et al. 2025) x contexts x demographic cues -> replies -> LLM judge of each "
                "criterion -> appropriate rates, demographic gap tests",
    stages=(StimuliStage(), AppropriatenessRepliesStage(), JudgeStage(), AnalyzeStage(), ReportStage()),
)

__all__ = ["APPROPRIATENESS", "AnalyzeStage", "AppropriatenessRepliesStage", "JudgeStage",
           "StimuliStage", "build_conversations", "judge_spec"]
