"""Empathy scorers: a registry over a small common protocol (see :mod:`audit.scorers.base`).

>>> from audit.scorers import get_scorer
>>> get_scorer("length").score(["I feel alone."], ["You are not alone."])["words"].tolist()
[4.0]

Built-in scorers (``available_scorers()`` lists them with their measures):

============== ============================ ==========================================================
name           measures                     what
============== ============================ ==========================================================
epitome        ER, IP, EX, empathy          embedded EPITOME classifiers (default; shipped artifact)
llm-judge      ER, IP, EX, empathy          EPITOME rubric scored by an OpenAI-compatible judge model
hf-classifier  ER, IP, EX, empathy          your own local transformers checkpoints (extra ``hf``)
length         words                        reply length in words
refusal        refusal                      1 when the reply declines to engage (documented patterns)
sentiment      compound                     VADER compound sentiment, -1..1
============== ============================ ==========================================================

The demographic inference probe (:mod:`audit.scorers.probe`) and the scorer invariance check
(:mod:`audit.scorers.invariance`) are not per-reply scorers; they have their own functions.
Nothing here loads a model at import time.
"""

from __future__ import annotations

from typing import Any

from ..errors import AuditError
from .base import Scorer

_SCORERS: dict[str, dict[str, Any]] = {
    "epitome": {"measures": ("ER", "IP", "EX", "empathy"),
                "description": "embedded EPITOME classifiers (Sharma et al. 2020 mechanisms), the default"},
    "llm-judge": {"measures": ("ER", "IP", "EX", "empathy"),
                  "description": "EPITOME rubric scored by an OpenAI-compatible judge model (scoring.judge)"},
    "hf-classifier": {"measures": ("ER", "IP", "EX", "empathy"),
                      "description": "your local transformers checkpoints (scoring.hf_classifier; extra 'hf')"},
    "length": {"measures": ("words",), "description": "reply length in words"},
    "refusal": {"measures": ("refusal",),
                "description": "1 when the reply declines to engage (templates/refusal/patterns.yaml)"},
    "sentiment": {"measures": ("compound",), "description": "VADER compound sentiment of the reply, -1..1"},
}


def available_scorers() -> list[dict[str, Any]]:
    """The registered scorers: ``[{name, measures, description}]``."""
    return [{"name": n, "measures": list(v["measures"]), "description": v["description"]} for n, v in _SCORERS.items()]


def get_scorer(name: str, spec: Any = None) -> Scorer:
    """Build the scorer called ``name``, configured from ``spec`` (an AuditSpec) where it needs it."""
    if name not in _SCORERS:
        raise AuditError(
            f"unknown scorer {name!r}", where="scorers",
            fix=f"use one of {', '.join(_SCORERS)} (empathy-audit scorers list)",
        )
    scoring = getattr(spec, "scoring", None)
    if name == "epitome":
        from .epitome import EpitomeScorer

        return EpitomeScorer()
    if name == "llm-judge":
        from .judge import JudgeScorer

        return JudgeScorer(scoring.judge if scoring is not None else None)
    if name == "hf-classifier":
        from .hf import HFClassifierScorer

        cfg = scoring.hf_classifier if scoring is not None else None
        if cfg is None:
            raise AuditError(
                "the hf-classifier scorer needs checkpoints", where="scoring.hf_classifier",
                fix="add scoring.hf_classifier.checkpoints: {ER: DIR, IP: DIR, EX: DIR} to the spec",
            )
        return HFClassifierScorer(
            {m: spec.resolve(p) for m, p in cfg.checkpoints.items()}, input=cfg.input,
            max_length=cfg.max_length, batch_size=cfg.batch_size, device=cfg.device,
        )
    from .auxiliary import LengthScorer, RefusalScorer, SentimentScorer

    return {"length": LengthScorer, "refusal": RefusalScorer, "sentiment": SentimentScorer}[name]()


__all__ = ["Scorer", "available_scorers", "get_scorer"]
