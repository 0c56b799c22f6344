"""Audit designs (suites): each is a name and the list of stages that carries it out.

``empathy`` (:mod:`audit.suites.empathy`) is the counterfactual empathy audit of Gabriel et al.
(2024): variants -> replies -> scores -> mixed models -> report. ``stigma``
(:mod:`audit.suites.stigma`) is the stigma experiment of Moore et al. (FAccT 2025): vignettes ->
multiple-choice answers -> parsed codes -> stigma rates and demographic gaps -> report.
``appropriateness`` (:mod:`audit.suites.appropriateness`) is the crisis-appropriateness experiment of
the same paper: crisis stimuli x contexts x demographic cues -> replies -> an LLM judge of each
stimulus's criterion -> appropriate rates and demographic gaps. ``pcsa`` (:mod:`audit.suites.pcsa`) is
the multi-turn persona client simulation attack of Xu et al. (2026): planned conversations ->
dialogues -> judge verdicts -> ASRs and group gaps -> report. A spec picks its suite (``suite:``,
default ``empathy``). Further designs are further suites over the same store, request
engine, scorers, statistics and report. :func:`audit.pipeline.run` runs a suite's stages in order.
"""

from __future__ import annotations

from ..errors import AuditError
from ..stages import Suite
from .empathy import EMPATHY
from .appropriateness import APPROPRIATENESS
from .pcsa import PCSA
from .stigma import STIGMA

SUITES = {s.name: s for s in (EMPATHY, STIGMA, APPROPRIATENESS, PCSA)}


def get_suite(name: str = "empathy") -> Suite:
    """The suite called ``name``."""
    if name not in SUITES:
        raise AuditError(f"unknown audit suite '{name}'", where="suite", fix="use one of: " + ", ".join(SUITES))
    return SUITES[name]


__all__ = ["SUITES", "Suite", "get_suite"]
