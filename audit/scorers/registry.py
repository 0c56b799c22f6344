"""The built-in scorers by name: where each is defined and what it is, in the order reports show
their measures. Kept apart from :mod:`audit.scorers` so that :mod:`audit.scorers.measures` can read
the built-in declarations without importing the whole scorer package (and the package imports
the measures)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: measures reads this registry at run time
    from .measures import Measure

# name -> (module, class, description); the order is the order reports show the measures in.
_SCORERS: dict[str, tuple[str, str, str]] = {
    "epitome": (".epitome", "EpitomeScorer",
                "embedded EPITOME classifiers (Sharma et al. 2020 mechanisms), the default"),
    "llm-judge": (".judge", "JudgeScorer",
                  "EPITOME rubric scored by an OpenAI-compatible judge model (scoring.judge)"),
    "hf-classifier": (".hf", "HFClassifierScorer",
                      "your local transformers checkpoints (scoring.hf_classifier; extra 'hf')"),
    "epitome-plus": (".epitome_plus", "EpitomePlusScorer",
                     "epitome gated into a fine-tuned MiniLM cross-encoder for its least confident pairs "
                     "(optional, slower; extra 'plus')"),
    "sentiment": (".auxiliary", "SentimentScorer", "VADER compound sentiment of the reply, -1..1"),
    "length": (".auxiliary", "LengthScorer", "reply length in words"),
    "refusal": (".auxiliary", "RefusalScorer",
                "1 when the reply declines to engage (templates/refusal/patterns.yaml)"),
}


def builtin_names() -> tuple[str, ...]:
    """The built-in scorer names, in the order reports show their measures."""
    return tuple(_SCORERS)


def _builtin_class(name: str) -> Any:
    module, cls, _ = _SCORERS[name]
    return getattr(import_module(module, __package__), cls)


def builtin_measures(name: str) -> tuple[Measure, ...]:
    """The measures a built-in scorer declares (its class attribute ``declared_measures``)."""
    return tuple(_builtin_class(name).declared_measures)



__all__ = ["builtin_measures", "builtin_names"]
