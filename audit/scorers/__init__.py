"""Empathy scorers: a registry over a small common protocol (see :mod:`audit.scorers.base`).

>>> from audit.scorers import get_scorer
>>> get_scorer("length").score(["I feel alone."], ["You are not alone."])["words"].tolist()
[4.0]

Built-in scorers (``available_scorers()`` lists them with their measures), in the order reports
show their measures:

============== ============================ ==========================================================
name           measures                     what
============== ============================ ==========================================================
epitome        ER, IP, EX, empathy          embedded EPITOME classifiers (default; shipped artifact)
llm-judge      ER, IP, EX, empathy          EPITOME rubric scored by an OpenAI-compatible judge model
hf-classifier  ER, IP, EX, empathy          your own local transformers checkpoints (extra ``hf``)
epitome-plus   ER, IP, EX, empathy          epitome + fine-tuned MiniLM cross-encoder, gated (extra ``plus``)
sentiment      compound                     VADER compound sentiment, -1..1
length         words                        reply length in words
refusal        refusal                      1 when the reply declines to engage (documented patterns)
============== ============================ ==========================================================

Each scorer declares what its measures mean (:class:`audit.scorers.measures.Measure`: label, kind,
range, direction, gap unit) where it is defined, as ``declared_measures``.

Third-party scorers plug in through the entry-point group ``empathy_audit.scorers`` (see
:mod:`audit.scorers.plugins` and docs/scorers.md); :func:`get_scorer` and :func:`available_scorers`
find them. The demographic inference probe (:mod:`audit.scorers.probe`) and the scorer invariance
check (:mod:`audit.scorers.invariance`) are not per-reply scorers; they have their own functions.
Nothing here loads a model at import time.
"""

from __future__ import annotations

from typing import Any

from ..errors import AuditError
from .base import Scorer
from .measures import measure_dicts
from .registry import _SCORERS, _builtin_class, builtin_measures, builtin_names
from .plugins import ENTRY_POINT_GROUP, distribution_of, load_plugin, plugin_entry_points

def available_scorers() -> list[dict[str, Any]]:
    """The registered scorers: ``[{name, measures, description, declared, source}]``, built-ins first,
    then installed plugins by name. ``declared`` holds each measure's declaration (as stored);
    ``source`` is ``built-in`` or the plugin's distribution. A plugin that cannot be loaded gets a row
    with ``error`` (the message of its AuditError) instead of measures."""
    rows = []
    for name, (_, _, description) in _SCORERS.items():
        declared = builtin_measures(name)
        rows.append({"name": name, "measures": [m.name for m in declared], "description": description,
                     "declared": measure_dicts(declared), "source": "built-in"})
    for name, eps in sorted(plugin_entry_points().items()):
        if name in _SCORERS:
            rows.append({"name": name, "measures": [], "description": "", "declared": [],
                         "source": distribution_of(eps[0]),
                         "error": f"{distribution_of(eps[0])} registers the built-in name {name!r}; it is ignored"})
            continue
        try:
            sc = load_plugin(eps, None)
        except AuditError as exc:
            rows.append({"name": name, "measures": [], "description": "", "declared": [],
                         "source": distribution_of(eps[0]), "error": exc.message})
            continue
        rows.append({"name": name, "measures": list(sc.measures), "description": sc.description,
                     "declared": measure_dicts(sc.declared_measures), "source": sc.distribution})
    return rows


def get_scorer(name: str, spec: Any = None) -> Scorer:
    """Build the scorer called ``name``, configured from ``spec`` (an AuditSpec) where it needs it.

    A built-in name always means the built-in scorer; any other name is looked up in the entry-point
    group ``empathy_audit.scorers`` (third-party scorers; see :mod:`audit.scorers.plugins`).
    """
    if name not in _SCORERS:
        eps = plugin_entry_points()
        if name in eps:
            return load_plugin(eps[name], spec)
        raise AuditError(
            f"unknown scorer {name!r}", where="scorers",
            fix=f"use one of {', '.join([*_SCORERS, *sorted(eps)])} (empathy-audit scorers list), or install "
                f"the package that provides it (entry-point group {ENTRY_POINT_GROUP})",
        )
    scoring = getattr(spec, "scoring", None)
    if name == "llm-judge":
        return _builtin_class(name)(scoring.judge if scoring is not None else None)
    if name == "hf-classifier":
        cfg = scoring.hf_classifier if scoring is not None else None
        if cfg is None:
            raise AuditError(
                "the hf-classifier scorer needs checkpoints", where="scoring.hf_classifier",
                fix="add scoring.hf_classifier.checkpoints: {ER: DIR, IP: DIR, EX: DIR} to the spec",
            )
        return _builtin_class(name)(
            {m: spec.resolve(p) for m, p in cfg.checkpoints.items()}, input=cfg.input,
            max_length=cfg.max_length, batch_size=cfg.batch_size, device=cfg.device,
        )
    return _builtin_class(name)()


__all__ = ["ENTRY_POINT_GROUP", "Measure", "Scorer", "available_scorers", "builtin_measures", "builtin_names",
           "get_scorer"]
