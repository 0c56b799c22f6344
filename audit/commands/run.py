"""``empathy-audit run SPEC [--out RUN_DIR] [--pdf]`` and ``empathy-audit report RUN_DIR [--check] [--pdf]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliargs import bounded_int, output_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="the whole audit: variants, replies, scores, models, report (resumes from the run store)",
        description="Run the whole audit of SPEC: build the counterfactual variants, generate the replies, score "
                    "them, fit the models and write the report. Every stage resumes from the run store, so running "
                    "the same command again after an interruption costs nothing that is already done. Exit status: "
                    "0 complete (or batches submitted: run again to collect); 1 report written but some requests failed "
                    "or the analysis could not be fitted (run again to retry); 2 an error to fix.",
    )
    p.add_argument("spec", metavar="SPEC", help="audit spec (YAML file), or the name of a built-in audit (demo)")
    p.add_argument("--out", metavar="RUN_DIR", type=output_dir(),
                   help="run directory (default: the spec's 'output', or reports/<name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--reuse", action="store_true",
                   help="RUN_DIR holds another design: keep the stored replies the new design also asks for, and "
                        "analyse and report only the new design's rows")
    p.add_argument("--reanalyze", action="store_true",
                   help="refit the models even when the scores and settings are unchanged")
    _pdf_options(p)
    p.add_argument("--wait", action="store_true",
                   help="models with execution: batch: poll their batches (a progress line) until every reply is "
                        "in, then continue; without it the run submits and exits 0, and the next run collects")
    workers_option(p)
    gate_option(p)
    from .costs import price_options

    price_options(p)
    p.set_defaults(func=_run)

    r = sub.add_parser(
        "report", help="re-render the report of a run from its store alone",
        description="Re-render report.html, report.md, results.json and tables/*.csv of RUN_DIR from its run "
                    "store alone: no model is called, nothing is re-scored or re-fitted.",
    )
    r.add_argument("run_dir", metavar="RUN_DIR", help="run directory (contains store.sqlite)")
    r.add_argument("--check", action="store_true",
                   help="also open the report in headless Chromium and fail on console errors, failed requests or "
                        "figures that do not render")
    _pdf_options(r)
    r.add_argument("--replies-table", action=argparse.BooleanOptionalAction, default=None,
                   help="write tables/replies.csv (every reply with its post, text and scores); default: only for a "
                        "run of at most 100,000 replies (a million replies make ~2.4 GB of text the store already "
                        "holds)")
    gate_option(r)
    r.set_defaults(func=_report)


def gate_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gate", action="store_true",
                   help="deployment gate: the exit status reflects the equivalence verdicts (analysis.margins) of "
                        "the confirmatory comparisons: 0 every one within its margin; 3 some exceeds its margin; "
                        "4 none exceeds but some is undecided (inconclusive or of undetermined size); 5 no verdicts "
                        "(no margins in the spec, or no analysis); 1 and 2 keep their meaning (see docs/statistics.md)")


def gate_exit(run_dir: Path, status: int) -> int:
    """The ``--gate`` exit status of a run whose report was written: ``status`` when it is already an
    error (1, 2), else the verdicts' (:func:`audit.report.verdicts.gate_status`), printed as one line."""
    from ..report.verdicts import GATE_CODES, gate_status
    from ..store import RunStore

    if status != 0:
        return status
    with RunStore(run_dir, create=False) as store:
        g = gate_status(store.table_df("results"), store.table_df("results_disparity"),
                        store.table_df("stigma_tests"), store.table_df("appropriateness_tests"),
                        store.table_df("pcsa_tests"))
    print(g.line + f" (exit {g.code})")
    assert g.code in GATE_CODES.values()
    return g.code


def workers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=bounded_int(0, cap=256), metavar="N",
                   help="processes for the scorers that can score in parallel (0 = one per core; default: one per "
                        "core when at least 20,000 pairs wait, else 1; or EMPATHY_AUDIT_WORKERS); the scores are "
                        "the same for any N")


def _pdf_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pdf", action="store_true",
                   help="also print report.pdf beside report.html with headless Chromium (every collapsed "
                        "section opened, page footer with the store hash and page numbers)")
    p.add_argument("--paper", choices=("a4", "letter"), default="a4", help="paper size of report.pdf (default: a4)")


def _run(args: argparse.Namespace) -> int:
    from ..pipeline import run
    from ..resources import resolve_spec_path
    from ..spec import load_spec

    from ..budget import check_price_pair

    check_price_pair(args.price_in, args.price_out)  # before anything is written
    path = resolve_spec_path(args.spec)
    spec = load_spec(path)
    if args.pdf:
        from ..report.pdf import require_pdf_printer

        require_pdf_printer(args.paper)
    result = run(spec, args.out, progress=not args.no_progress,
                 spec_argument=str(args.spec) if Path(args.spec).exists() else str(path),
                 force_analysis=args.reanalyze, reuse=args.reuse, wait=args.wait,
                 workers=args.workers, max_usd=args.max_usd, price_in=args.price_in, price_out=args.price_out)
    if result.waiting:  # batches submitted or still out: nothing is wrong, run again later
        if args.gate:  # but nothing is decided yet: a release gate must not pass
            print("gate: replies are still out at the batch service, so there are no verdicts yet (exit 5)")
            return 5
        return 0
    if args.pdf:
        if (result.run_dir / "report.html").is_file():
            from ..report.pdf import report_pdf

            print(f"report: {report_pdf(result.run_dir, paper=args.paper)} ({args.paper})")
        else:
            print("report: no PDF printed, because no report was written (see the stages above)")
            return 1
    status = 0 if result.ok else 1
    return gate_exit(result.run_dir, status) if args.gate else status


def _report(args: argparse.Namespace) -> int:
    from ..report import render

    paths = render(args.run_dir, quiet=False, pdf=args.pdf, paper=args.paper, replies_table=args.replies_table)
    print(f"        {paths['markdown']}, {paths['json']}, {paths['tables']}/")
    if args.check:
        from ..report.browser import check_report

        verdict = check_report(paths["html"])
        print("\n".join(verdict.lines()))
        if not verdict.ok:
            return 1
    return gate_exit(Path(args.run_dir), 0) if args.gate else 0
