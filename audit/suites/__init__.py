"""Audit designs (suites): each is a name and the list of stages that carries it out.

``empathy`` (:mod:`audit.suites.empathy`) is the counterfactual empathy audit of Gabriel et al.
(2024): variants -> replies -> scores -> mixed models -> report. Later designs (stigma and crisis
appropriateness, multi-turn client simulations) are further suites over the same store, request
engine, scorers, statistics and report. :func:`audit.pipeline.run` runs a suite's stages in order.
"""

from __future__ import annotations

from ..errors import AuditError
from ..stages import Suite
from .empathy import EMPATHY

SUITES = {s.name: s for s in (EMPATHY,)}


def get_suite(name: str = "empathy") -> Suite:
    """The suite called ``name``."""
    if name not in SUITES:
        raise AuditError(f"unknown audit suite '{name}'", where="suite", fix="use one of: " + ", ".join(SUITES))
    return SUITES[name]


__all__ = ["SUITES", "Suite", "get_suite"]
