"""The whole audit in one call: a suite's stages, in order, over one run store.

:func:`run` records the spec and the run's provenance (hashes of the spec file, templates and
corpus, cue sources, software versions, the command line, times) in the store, then runs the
suite's stages (:mod:`audit.stages`; the empathy suite: variants -> generate -> score -> analyze ->
report). Each stage resumes from the store: variants are content-addressed (stored once), a request
whose reply is stored is never sent again, a stored score is never recomputed, the analysis is
skipped when its inputs (the scores and the spec's analysis settings) are unchanged since it last
ran, and the report is re-rendered from the store. So re-running a finished audit costs seconds,
and re-running an interrupted one picks up where it stopped.

>>> import audit                                                     # doctest: +SKIP
>>> result = audit.run(audit.load_spec("analyses/demo.yaml"))        # doctest: +SKIP
>>> result.paths["html"]                                             # doctest: +SKIP
PosixPath('reports/demo/report.html')
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import AuditError
from .report.provenance import record_provenance
from .stages import StageContext, StageRecord, run_stages
from .store import RunStore
from .suites import get_suite


@dataclass
class PipelineResult:
    run_dir: Path
    stages: list[StageRecord] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    unanswered: int = 0    # requests failed or not answered at the end (left out; retried by the next run)
    waiting: str | None = None  # the run stopped to wait for batches (what to do next); no report yet

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def ok(self) -> bool:
        """Every stage done or up to date, and every request answered."""
        return all(s.status in ("done", "skipped") for s in self.stages) and self.unanswered == 0


def run(spec: Any, run_dir: str | Path | None = None, *, progress: bool = True,
        echo: Callable[[str], None] | None = print, spec_argument: str | None = None,
        force_analysis: bool = False, reuse: bool = False, suite: str | None = None,
        wait: bool = False, workers: int | None = None, max_usd: float | None = None,
        price_in: float | None = None, price_out: float | None = None) -> PipelineResult:
    """Run (or resume) the audit of ``spec`` in ``run_dir`` (default: ``spec.run_dir()``).

    Prints one line per stage through ``echo`` (``None``: silent) and returns the stage records and
    the report's paths. Raises :class:`~audit.errors.AuditError` for anything the user can fix;
    everything finished before the error stays stored, so the same call resumes. A run directory
    holds one design (:mod:`audit.design`): another design is refused unless ``reuse``. ``suite``: the
    audit design to run (default: the spec's ``suite``, itself ``empathy`` by default).

    Models with ``execution: batch`` (:mod:`audit.batch`): the first call submits their requests and
    returns with ``waiting`` set (no scoring, no report yet); a later call collects what is finished
    and continues once every batch is in. ``wait`` polls until then instead. ``workers``: scoring
    processes (:func:`audit.scoring.resolve_workers`; default one per core for large runs).

    Before the stages an empathy audit prints its cost plan (:func:`audit.costs.plan_costs`), and the
    run's budget (``max_usd``, else the spec's ``budget``) is recorded with every model's price
    (``price_in``/``price_out`` override them) for the request engine's guard
    (:func:`audit.costs.store_budget`).
    """
    stages = get_suite(suite or getattr(spec, "suite", "empathy")).stages
    rd = Path(spec.run_dir(run_dir))
    t0 = time.perf_counter()
    from .preflight import preflight

    warnings = preflight(spec)  # scorer extras, judge settings: before the first (paid) request
    with RunStore(rd) as store:
        store.put_spec(spec)
        record_provenance(store, spec, rd, spec_argument)
        if echo is not None:
            echo(f"empathy-audit {__version__}: audit '{spec.name}' in {rd}")
            for w in warnings:
                echo(f"warning: {w}")
        _costs(store, spec, rd, echo, max_usd, price_in, price_out, suite or getattr(spec, "suite", "empathy"))
        ctx = StageContext(spec, rd, store, progress=progress, echo=echo,
                           options={"force_analysis": force_analysis, "reuse": reuse, "wait_batches": wait,
                                    "workers": workers})
        records = run_stages(stages, ctx)
    result = PipelineResult(rd, records, paths=dict(ctx.summaries["report"].data) if "report" in ctx.summaries else {},
                            unanswered=sum(s.unanswered for s in ctx.summaries.values()),
                            waiting=next((s.stop for s in ctx.summaries.values() if s.stop), None))
    if result.waiting:
        if echo is not None:
            echo(result.waiting)
        return result
    if echo is not None:
        missing = [s.name for s in records if s.status == "failed"]
        echo(f"finished in {time.perf_counter() - t0:.1f} s"
             + (f"; stages not done: {', '.join(missing)} (the report says so)" if missing else ""))
        if result.unanswered:
            echo(f"note: {result.unanswered} requests failed or are unanswered; they are left out of the "
                 f"analysis. Run the same command again to retry them.")
        for line in closing_lines(result, spec):
            echo(line)
    return result


def _costs(store: RunStore, spec: Any, rd: Path, echo: Callable[[str], None] | None, max_usd: float | None,
           price_in: float | None, price_out: float | None, suite: str) -> None:
    """Record the budget (and the prices it is counted with) and print the cost plan (empathy suite)."""
    from .costs import plan_costs, store_budget

    store_budget(store, spec, max_usd, price_in=price_in, price_out=price_out)
    if echo is None or suite != "empathy":
        return
    try:
        plan = plan_costs(spec, rd, price_in=price_in, price_out=price_out, max_usd=max_usd, store=store)
    except AuditError:
        return  # the stages report what is wrong with the design
    except Exception as exc:  # noqa: BLE001 - the plan informs; it must not stop a run that can go on
        echo(f"plan: not available ({type(exc).__name__}: {exc}); `empathy-audit plan` shows it")
        return
    for line in plan.lines():
        echo(line)


def closing_lines(result: PipelineResult, spec: Any) -> list[str]:
    """The three lines a finished run ends with: where the report is, its headline, and (when the
    embedded model was audited) the warning that it is not a model worth auditing."""
    import json

    html = result.paths.get("html", result.run_dir / "report.html")
    lines = [f"report: {html}"]
    path = result.paths.get("json")
    doc = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    summary = doc.get("summary", {})
    n, sig = summary.get("n_tests", 0), summary.get("n_significant", 0)
    primary = summary.get("primary_outcome") or (doc.get("headline") or {}).get("primary_outcome")
    m = summary.get("family_size") or n
    lead = (f"headline: primary outcome {primary}; " if primary else "headline: ")
    if not n:
        lines.append("headline: no gap test could be fitted (the report says why)")
    elif summary.get("significant"):
        lines.append(f"{lead}{sig} of the family's {m} tests significant after Holm correction; the first: "
                     f"{summary['significant'][0]}")
    else:
        sentences = (doc.get("headline") or {}).get("sentences") or []
        detect = next((s for s in sentences if "detect" in s), "")
        lines.append(f"{lead}none of the family's {m} tests is significant after Holm correction"
                     + (f". {detect}" if detect else ""))
    if any(m.is_embedded for m in spec.models):
        from .generate import embedded_note

        lines.append(f"warning: {embedded_note()}")
    return lines


__all__ = ["PipelineResult", "run"]
