"""``empathy-audit compare RUN_A RUN_B [...] --out DIR``: closed, opened and unchanged gaps between runs."""

from __future__ import annotations

import argparse

from ..cliargs import output_dir, probability


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="compare finished runs (e.g. two model versions): closed, opened and unchanged gaps",
        description="Compare finished runs on the variants they share: check that the designs are comparable "
                    "(same variants by content hash, same scorers and versions, same decoding and prompt styles; "
                    "every difference is named, no shared variant or outcome is refused, a partial overlap is "
                    "analysed and its size stated), fit the run x group interaction (the first run is the "
                    "reference) and write compare.html, compare.md, compare.json and tables/*.csv into DIR. "
                    "Exit status: 0 written (notes, such as an outcome that does not vary or runs not pooled as "
                    "replicates, are information); 1 written, with warnings about what differs between the runs, "
                    "which you must judge; 2 refused (e.g. the same run given twice).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="two or more run directories; the first is the reference")
    p.add_argument("--out", required=True, metavar="DIR", type=output_dir(), help="directory for the comparison report")
    p.add_argument("--labels", nargs="+", metavar="LABEL",
                   help="names of the runs in the report (default: directory names)")
    p.add_argument("--outcome", action="append", metavar="NAME", help="compare only this outcome (repeatable)")
    p.add_argument("--alpha", type=probability("alpha"), default=0.05,
                   help="level for CIs and Holm significance, between 0 and 1 (default 0.05)")
    p.add_argument("--check", action="store_true", help="also open compare.html in headless Chromium and judge it")
    p.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    from ..compare import compare_runs, write_comparison

    result = compare_runs(args.runs, labels=args.labels, alpha=args.alpha, outcomes=args.outcome)
    paths = write_comparison(result, args.out)
    comp = result.comparability
    print(f"compared {' vs '.join(comp.versions)} on {comp.overlap_statement}")
    for k, v in result.counts.items():
        print(f"  {k}: {v}")
    for n in comp.notes:
        print(f"note: {n}")
    for w in comp.warnings:
        print(f"warning: {w}")
    print(f"report: {paths['html']}\n        {paths['markdown']}, {paths['json']}, {paths['tables']}/")
    status = 1 if comp.warnings else 0
    if args.check:
        from ..report.browser import check_report

        verdict = check_report(paths["html"])
        print("\n".join(verdict.lines()))
        status = max(status, 0 if verdict.ok else 1)
    return status
