"""Checks before the first paid request of a run (issue 28, item 9).

What would otherwise fail or mislead only after requests were paid for is checked when the run starts:

* every scorer of the spec that can check itself (a ``preflight()`` method, e.g. ``epitome-plus``,
  whose ``plus`` extra may be missing) is built and checked: an :class:`~audit.errors.AuditError`
  before any request;
* ``llm-judge`` with no judge endpoint runs on the embedded 135M model (20-50 s a call, and labels
  from a model that small are not evidence): a warning before the first request.

Levels (``analysis.alpha``, ``--alpha``) are range-checked where they are read (the spec's model and
:mod:`audit.cliargs`), also before any request.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_scorers", "preflight"]

EMBEDDED_JUDGE_WARNING = (
    "the llm-judge scorer has no judge endpoint (scoring.judge.model.base_url), so it runs on the embedded "
    "135M model: 20-50 s a call, and labels from a model that small are not evidence; set scoring.judge.model "
    "to a capable endpoint")


def preflight(spec: Any) -> list[str]:
    """Check ``spec``'s scorers before any request; return the warnings to print.

    Raises :class:`~audit.errors.AuditError` when a scorer cannot run (e.g. a missing extra)."""
    if getattr(spec, "suite", "empathy") != "empathy":
        return []
    return check_scorers(spec, list(getattr(getattr(spec, "scoring", None), "scorers", None) or []))


def check_scorers(spec: Any, names: list[str]) -> list[str]:
    """:func:`preflight` for the scorers ``names`` configured by ``spec`` (``score --scorers``)."""
    from .scorers import get_scorer
    from .scorers.registry import _builtin_class, builtin_names

    scoring = getattr(spec, "scoring", None)
    for name in names:
        if name in builtin_names() and callable(getattr(_builtin_class(name), "preflight", None)):
            get_scorer(name, spec).preflight()
    warnings = []
    if "llm-judge" in names:
        judge = getattr(scoring, "judge", None)
        model = getattr(judge, "model", None)
        if model is None or getattr(model, "is_embedded", False):
            warnings.append(EMBEDDED_JUDGE_WARNING)
    return warnings
