"""The stage protocol: every step of an audit has the same shape, ``stage.run(ctx) -> StageSummary``.

A *stage* is an object with a ``name`` and a ``run(ctx)`` method. It reads what it needs from the
run store and the spec in the :class:`StageContext`, writes its results into the store, and returns a
:class:`StageSummary`: ``done`` (it did work), ``skipped`` (everything was already up to date) or
``failed`` (it could not do its work, but the stages after it can still run; e.g. an analysis that
could not be fitted still gets a report that says why). An error the user must fix is raised as an
:class:`~audit.errors.AuditError`, which stops the run; everything stored before it stays stored.

A *suite* (``audit.suites``) is an audit design: a name and its list of stages. :func:`run_stages`
runs a list of stages in order over one open store, times each, records ``stage.<name>`` in the
store's ``meta``, and prints one line per stage. Resumption is each stage's own business: a stage
is a pure function of the store and the spec, so running it again does only what is missing.

A new audit design plugs in by writing its stages and listing them in a suite::

    class CountReplies:
        name = "count"

        def run(self, ctx: StageContext) -> StageSummary:
            n = len(ctx.store.replies_df())
            return StageSummary("done", f"{n} replies")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from .store import RunStore, now_iso

STATUSES = ("done", "skipped", "failed")


@dataclass
class StageSummary:
    """What one stage did: ``status`` (done | skipped | failed), a one-line ``detail`` for the log,
    the stage's own result object ``data`` (e.g. a GenerationSummary, the report's paths), and the
    number of requests still unanswered after it (``unanswered``; the run is incomplete while > 0)."""

    status: str
    detail: str = ""
    data: Any = None
    unanswered: int = 0
    stop: str | None = None   # the run waits for something outside it (replies out at a batch service):
                              # the stages after this one do not run, and this says what to do next

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"stage status must be one of {STATUSES}, not {self.status!r}")


@dataclass
class StageContext:
    """What every stage gets: the spec, the run directory, the run's one open store, and how to talk.

    ``options`` carries run-wide switches a stage may honour (e.g. ``force_analysis``); ``summaries``
    holds the summaries of the stages that already ran in this call, by name.
    """

    spec: Any
    run_dir: Path
    store: RunStore
    progress: bool = True
    echo: Callable[[str], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    summaries: dict[str, StageSummary] = field(default_factory=dict)

    def say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(text)


@runtime_checkable
class Stage(Protocol):
    name: str

    def run(self, ctx: StageContext) -> StageSummary: ...


@dataclass(frozen=True)
class Suite:
    """An audit design: its ``name``, a one-line ``description`` and its ``stages`` in order."""

    name: str
    description: str
    stages: Sequence[Stage]

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


@dataclass
class StageRecord:
    """A stage's summary with its name and duration, as the pipeline reports it."""

    name: str
    status: str
    seconds: float
    detail: str = ""
    summary: Any = None   # the stage's ``data``


_MARK = {"done": "done", "skipped": "up to date", "failed": "FAILED"}


def run_stages(stages: Sequence[Stage], ctx: StageContext) -> list[StageRecord]:
    """Run ``stages`` in order; return one record per stage that ran.

    Each stage's status and duration go into ``meta`` as ``stage.<name>`` and one line goes to
    ``ctx.echo``. A stage whose summary has ``stop`` ends the loop after it (the run waits for batches).
    A stage that raises stops the loop: its ``stage.<name>`` says ``error`` and the
    exception propagates (nothing stored before it is lost).
    """
    records: list[StageRecord] = []
    for stage in stages:
        t0 = time.perf_counter()
        try:
            s = stage.run(ctx)
        except BaseException:
            ctx.store.set_meta(f"stage.{stage.name}", f"error at {now_iso()} ({time.perf_counter() - t0:.1f} s)")
            raise
        rec = StageRecord(stage.name, s.status, time.perf_counter() - t0, s.detail, s.data)
        records.append(rec)
        ctx.summaries[stage.name] = s
        ctx.store.set_meta(f"stage.{stage.name}", f"{s.status} at {now_iso()} ({rec.seconds:.1f} s)")
        ctx.say(f"  {stage.name:<9} {_MARK[s.status]:<13} {rec.seconds:7.1f} s  {s.detail}".rstrip())
        if s.stop:
            break
    return records


__all__ = ["Stage", "StageContext", "StageRecord", "StageSummary", "Suite", "run_stages"]
