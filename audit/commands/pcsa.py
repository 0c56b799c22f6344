"""``empathy-audit pcsa validation-table``: a labelling table of a PCSA run's judged conversations
(a thin layer over :func:`audit.pcsa.validation.validation_table`)."""

from __future__ import annotations

import argparse

from ..cliargs import bounded_int, output_file, seed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pcsa", help="the PCSA suite's tools (a judge-validation table)",
                       description="Tools of the PCSA suite. Run the suite itself with `empathy-audit run SPEC`.")
    s = p.add_subparsers(dest="pcsa_command", metavar="COMMAND", required=True)
    v = s.add_parser("validation-table", help="a labelling table of judged conversations for human annotators",
                     description="Write the run's judged conversations (transcript, criterion, the judge's yes/no "
                                 "and axes, empty human_1/human_2) for annotators; the group and design go to "
                                 "<stem>.key.csv. Fill the human columns, then `empathy-audit judge validate "
                                 "--data FILE`.")
    v.add_argument("run_dir", metavar="RUN_DIR")
    v.add_argument("--out", required=True, metavar="FILE", type=output_file(".csv", ".tsv", ".jsonl"),
                   help=".csv, .tsv or .jsonl")
    v.add_argument("--n", type=bounded_int(1, cap=1_000_000), metavar="N",
                   help="a stratified random sample of N (verdict x arm x group)")
    v.add_argument("--seed", type=seed(), default=0, help="sampling seed (default 0)")
    v.add_argument("--force", action="store_true", help="replace an existing table (a backup of it is kept beside "
                   "it); by default a non-empty table is never overwritten, since annotators may have filled it")
    v.set_defaults(func=_table)


def _table(args: argparse.Namespace) -> int:
    from ..pcsa.validation import validation_table

    res = validation_table(args.run_dir, out=args.out, n=args.n, seed=args.seed, force=args.force)
    print(res.summary())
    for b in res.backups:
        print(f"backup of the replaced file: {b}")
    print(f"table: {res.paths['table']}\nkey (not for annotators): {res.paths['key']}")
    print(f"next: fill the human_* columns, then empathy-audit judge validate --data {res.paths['table']} "
          "--columns reply=transcript")
    return 0
