"""The report: one self-contained HTML file, Markdown, results.json and CSV tables, from the store alone.

``render(run_dir)`` reads the run store (nothing else: no spec file, no model, no network) and writes

- ``report.html``: figures embedded as PNG data URIs, CSS inline, no script, a Content-Security-Policy
  that forbids every external load; opens offline in any browser;
- ``report.md``: the same sections in Markdown (figures as files under ``figures/``);
- ``results.json``: every estimate, CI and p-value, with the summary sentences and provenance;
- ``tables/*.csv``: the analysis tables, per-group score summaries, reply status counts, replies;
- ``report.pdf`` when asked (``pdf=True``): the HTML printed by headless Chromium (:mod:`audit.report.pdf`).

Model replies and posts are untrusted text: the HTML template autoescapes everything, Markdown output
escapes every interpolated value, figure labels are rendered literally (no mathtext).

Example::

    from audit.report import render
    paths = render("reports/demo")       # {'html': ..., 'markdown': ..., 'json': ..., 'tables': ...}
"""

from __future__ import annotations

from pathlib import Path

from ..stages import StageContext, StageSummary
from ..store import now_iso

__all__ = ["ReportStage", "render"]


def render(run_dir: str | Path, *, quiet: bool = True, figures: bool = True, pdf: bool = False,
           paper: str = "a4", replies_table: bool | None = None) -> dict[str, Path]:
    """Render the report of the run in ``run_dir`` from its store; return the paths written.

    ``figures=False`` leaves the figures out (each says so in the report): a quick re-render of the
    text and tables. ``pdf=True`` also prints ``report.pdf`` (``paper``: ``"a4"`` or ``"letter"``) with
    headless Chromium (:mod:`audit.report.pdf`); without it, a ``report.pdf`` left by an earlier
    rendering is removed, so that a PDF beside the report always matches it. ``replies_table``: write
    ``tables/replies.csv`` (every reply with its post, text and scores: ~2.4 GB at a million replies);
    by default only for a run of at most :data:`audit.report.build.REPLIES_TABLE_MAX` replies.
    """
    from .build import render_run

    suite = _suite_of(Path(run_dir))
    if suite in ("stigma", "appropriateness", "pcsa"):  # another suite renders its own report
        if suite == "stigma":
            from ..stigma.report import render_stigma as render_suite
        elif suite == "appropriateness":
            from ..appropriateness.report import render_appropriateness as render_suite
        else:
            from ..pcsa.report import render_pcsa as render_suite
        from .pdf import pdf_step, require_pdf_printer

        if pdf:  # fail before any work when the PDF cannot be printed
            require_pdf_printer(paper)
        paths = pdf_step(run_dir, render_suite(run_dir), pdf=pdf, paper=paper)
        if not quiet:
            print(f"report: {paths['html']} ({paths['html'].stat().st_size / 1024:.0f} KiB)")
            if "pdf" in paths:
                print(f"        {paths['pdf']} ({paths['pdf'].stat().st_size / 1024:.0f} KiB, {paper})")
        return paths
    return render_run(Path(run_dir), quiet=quiet, figures=figures, pdf=pdf, paper=paper,
                      replies_table=replies_table)


def _suite_of(run_dir: Path) -> str:
    """The suite that wrote the run in ``run_dir`` (meta ``suite``; ``empathy`` when not recorded)."""
    from ..store import RunStore

    if not (run_dir / "store.sqlite").is_file():
        return "empathy"
    with RunStore(run_dir, create=False) as store:
        return store.get_meta("suite") or "empathy"


class ReportStage:
    """The ``report`` stage: stamp the run's end and render the report from the store (always: a
    re-render costs seconds and picks up anything that changed)."""

    name = "report"

    def run(self, ctx: StageContext) -> StageSummary:
        ctx.store.set_meta("run_finished_at", now_iso())
        paths = render(ctx.run_dir)
        size = paths["html"].stat().st_size
        return StageSummary("done", f"{paths['html']} ({size / 1024:.0f} KiB), report.md, results.json, tables/",
                            paths)
