"""The stigma suite: do models express stigma toward people with mental-health conditions, and does it
differ by the person's race, gender or education?

The design of Moore et al., "Expressing stigma and inappropriate responses prevents LLMs from safely
replacing mental health providers" (FAccT 2025): clinical vignettes (daily troubles as the control,
depression, alcohol dependence, schizophrenia) varied by race, gender and education, each followed
by multiple-choice questions from the US General Social Survey; one-letter answers at temperature 0.
Stages (the stage protocol of :mod:`audit.stages`, over the same store and request engine):

- ``stimuli``: vignettes x questions -> prompts, stored as variants (post = vignette, alternative =
  question id, cue type ``vignette``; attributes condition, race, gender, education, question);
- ``generate``: the empathy suite's reply stage (:class:`audit.generate.RepliesStage`) with the
  stigma prompt (system prompt, format instruction, one-shot example): cached, resumable;
- ``parse``: each answer parsed and coded (:mod:`audit.stigma.parse`), stored as scores of scorer
  ``stigma-parser`` (measures ``answer``: option index 0-4, ``stigma``: 0/1 for the six counted
  items; ``detail`` of ``answer``: the parse status, and the raw text when unparseable);
- ``analyze``: rates, the GEE model and the demographic gaps (:mod:`audit.stigma.analysis`), stored
  as tables ``stigma_rates``, ``stigma_items``, ``stigma_tests``, ``stigma_parse``, ``stigma_meta``;
- ``report``: the report (:mod:`audit.stigma.report`).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ..generate import RepliesStage
from ..report import ReportStage
from ..stages import StageContext, StageSummary, Suite
from ..stigma.answers import SCORER, SCORER_INFO, coded_from_store, parse_rows
from ..store import canonical_json, now_iso

def _templates(spec: Any) -> Any:
    return spec.resolve(spec.demographics.templates) if spec.demographics.templates else None


def build_stimuli(spec: Any) -> pd.DataFrame:
    """The prompts of the spec's stigma design (:func:`audit.stigma.stimuli.stimuli_frame`)."""
    from ..stigma.stimuli import stimuli_frame

    return stimuli_frame(spec.stigma, _templates(spec))


class StimuliStage:
    """``stimuli``: build the prompts, bind the run to the design, store the new ones."""

    name = "stimuli"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..design import bind_variants

        frame = build_stimuli(ctx.spec)
        change, added = bind_variants(ctx, frame.drop(columns=["group"]).assign(group_name=frame["group"]))
        ctx.store.set_meta("suite", "stigma")
        detail = (f"{len(frame)} prompts: {frame['post_id'].nunique()} vignettes x {frame['question'].nunique()} "
                  f"questions ({added} new)")
        return StageSummary("done" if added or not change.same else "skipped", detail, frame)


class StigmaRepliesStage(RepliesStage):
    """``generate``: the reply stage of the empathy suite, sending the stigma prompts."""

    def variants(self, ctx: StageContext) -> Any:
        done = ctx.summaries.get("stimuli")
        return done.data if done is not None and done.data is not None else build_stimuli(ctx.spec)

    def styles(self, ctx: StageContext) -> dict[str, Any]:
        from ..stigma.stimuli import stigma_prompt

        p = stigma_prompt(ctx.spec.stigma)
        return {p.name: p}


class ParseStage:
    """``parse``: parse and code every answered reply not parsed yet (a stored code is never redone)."""

    name = "parse"

    def run(self, ctx: StageContext) -> StageSummary:
        store = ctx.store
        store.put_scorer_info(SCORER, SCORER_INFO)
        reps = store.replies_df("reply")
        done = store.scored_keys(SCORER)
        todo = reps[reps["status"].isin(["ok", "content_filter"]) & ~reps["request_key"].isin(done)]
        added = store.put_scores(parse_rows(todo))
        sc = store.scores_df()
        sc = sc[(sc["scorer"] == SCORER) & (sc["measure"] == "answer")]
        status = [json.loads(d).get("status") for d in sc["detail"].dropna()]
        counts = {s: status.count(s) for s in ("answered", "dont_know", "unparseable")}
        detail = (f"{len(sc)} answers: {counts['answered']} parsed, {counts['dont_know']} 'do not know' (dropped), "
                  f"{counts['unparseable']} unparseable ({added // 2} new)")
        return StageSummary("done" if added else "skipped", detail, counts)


def analysis_axes(spec: Any) -> list[str]:
    cfg = spec.stigma
    return ["race", "gender", "education"] if cfg.stimuli == "moore" else [*cfg.axes, "education"]


STIGMA_TABLES = ("stigma_rates", "stigma_items", "stigma_tests", "stigma_parse", "stigma_meta")


def analysis_fingerprint(store: Any, spec: Any) -> str:
    """SHA-256 over the stored codes of the current design and the settings the analysis reads
    (the stigma section, seed, alpha): unchanged inputs need no refit."""
    import hashlib

    sc = store.scores_df()
    sc = sc[sc["scorer"] == SCORER].sort_values(["request_key", "measure"])
    h = hashlib.sha256()
    h.update(sc[["request_key", "measure", "value", "detail"]].to_csv(index=False).encode())
    h.update(canonical_json({"stigma": spec.stigma.model_dump(mode="json"), "seed": spec.seed,
                             "alpha": spec.analysis.alpha}).encode())
    return h.hexdigest()


class StigmaAnalyzeStage:
    """``analyze``: rates, the model and the demographic gaps, stored as ``stigma_*`` tables; skipped
    when the stored codes and settings are unchanged (meta ``stigma_analysis_inputs_sha256``) unless
    ``force_analysis``. A failure drops the earlier tables (they are not this run's), is stored in meta
    ``analysis_error``, and the report says why (the stage is ``failed``)."""

    name = "analyze"

    def run(self, ctx: StageContext) -> StageSummary:
        from ..errors import AuditError
        from ..stigma.analysis import analyze_stigma

        store = ctx.store
        fp = analysis_fingerprint(store, ctx.spec)
        if (store.get_meta("stigma_analysis_inputs_sha256") == fp and "stigma_tests" in store.table_names()
                and not ctx.options.get("force_analysis")):
            return StageSummary("skipped", f"inputs unchanged; {store.count_rows('stigma_tests')} stored tests")
        coded = coded_from_store(store)
        try:
            res = analyze_stigma(coded, axes=analysis_axes(ctx.spec), reference=ctx.spec.stigma.reference,
                                 n_boot=ctx.spec.stigma.n_boot, seed=ctx.spec.seed, alpha=ctx.spec.analysis.alpha,
                                 margins=ctx.spec.analysis.margins)
        except AuditError as exc:
            store.drop_tables(STIGMA_TABLES)
            store.delete_meta("stigma_analysis_inputs_sha256")
            store.set_meta("analysis_error", exc.message)
            return StageSummary("failed", f"the analysis could not be fitted: {exc.message}", exc)
        store.delete_meta("analysis_error")
        res.meta["analyzed_at"] = now_iso()
        store.replace_tables(res.tables())
        store.set_meta("stigma_analysis_inputs_sha256", fp)
        return StageSummary("done", f"{len(res.rates)} rates, {res.meta['family_size']} tests "
                                    f"({res.meta['n_significant_holm']} significant after Holm)", res)


STIGMA = Suite(
    name="stigma",
    description="clinical vignettes x multiple-choice stigma questions (Moore et al. 2025) -> parsed, coded "
                "answers -> stigma rates, GEE model, demographic gaps",
    stages=(StimuliStage(), StigmaRepliesStage(), ParseStage(), StigmaAnalyzeStage(), ReportStage()),
)

__all__ = ["SCORER", "STIGMA", "ParseStage", "StigmaAnalyzeStage", "StigmaRepliesStage",
           "StimuliStage", "build_stimuli", "coded_from_store", "parse_rows"]
