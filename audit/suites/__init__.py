"""Audit designs (suites): each is a name and the list of stages that carries it out.

``empathy`` (:mod:`audit.suites.empathy`) is the counterfactual empathy audit of Gabriel et al.
(2024): variants -> replies -> scores -> mixed models -> report. Later designs (stigma and crisis
appropriateness, multi-turn client simulations) are further suites over the same store, request
engine, scorers, statistics and report. :func:`audit.pipeline.run` runs a suite's stages in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import AuditError
from ..stages import Stage


@dataclass(frozen=True)
class Suite:
    """An audit design: its ``name``, a one-line ``description`` and its ``stages`` in order."""

    name: str
    description: str
    stages: Sequence[Stage]

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def get_suite(name: str = "empathy") -> Suite:
    """The suite called ``name``."""
    if name == "empathy":
        from .empathy import EMPATHY

        return EMPATHY
    raise AuditError(f"unknown audit suite '{name}'", where="suite", fix="use one of: empathy")


__all__ = ["Suite", "get_suite"]
