"""``empathy-audit stigma reanalyze FILE``: the stigma suite's parser, coder and analysis on a table of raw answers."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cliargs import bounded_int, output_dir, seed
from ..errors import AuditError

FIELDS = ("output", "question", "model", "condition", "race", "gender", "education", "vignette", "sample")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stigma", help="the stigma suite's tools (reanalyze published raw answers)",
                       description="Tools of the stigma suite (Moore et al., FAccT 2025). Run the suite itself with "
                                   "`empathy-audit run analyses/stigma.yaml`.")
    s = p.add_subparsers(dest="stigma_command", metavar="COMMAND", required=True)
    r = s.add_parser("reanalyze", help="parse, code and analyse a table of raw answers (replication mode)",
                     description="Parse every raw answer of FILE (CSV, TSV, JSONL, parquet), code the six stigma items "
                                 "and print the stigma rates per model x condition with cluster-bootstrap CIs; the "
                                 "demographic gap tests and the item table are written with --out. Published codes "
                                 "are not reused: each answer is parsed again.")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--columns", default="", metavar="FIELD=COL,...",
                   help="column names for " + ", ".join(FIELDS) + " (default: the field names; upstream files: "
                        "question=question_only)")
    r.add_argument("--parser", choices=("strict", "upstream"), default="strict",
                   help="answer parser: strict (default; reads an option only when it is unmistakable, never a "
                        "lone capital inside prose) or upstream (the published study's: the first word, stripped "
                        "of ( ) : . *, if it is an option letter); see docs/stigma.md")
    r.add_argument("--levels", default="", metavar="AXIS=L|L|...,...",
                   help="the known levels of race, gender, education (default: the published design's)")
    r.add_argument("--drop-blank", action="store_true",
                   help="drop rows with a blank design cell (counted and stated) instead of stopping")
    r.add_argument("--dedupe", action="store_true",
                   help="keep the first of rows with the same design key (the rest counted and stated) instead of "
                        "stopping")
    r.add_argument("--n-boot", type=bounded_int(50, cap=100_000), default=2000, metavar="B",
                   help="bootstrap resamples (default 2000)")
    r.add_argument("--seed", type=seed(), default=0, help="bootstrap seed (default 0)")
    r.add_argument("--out", metavar="DIR", type=output_dir(),
                   help="write rates, tests, items, parse counts and answers as CSV here")
    r.set_defaults(func=_reanalyze)


def parse_columns(text: str, fields: tuple[str, ...] = FIELDS) -> dict[str, str]:
    """``--columns FIELD=COL,...`` as a dict; one AuditError for an entry that is not a known field."""
    out: dict[str, str] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        field, sep, col = part.partition("=")
        if not sep or field.strip() not in fields or not col.strip():
            raise AuditError(f"bad --columns entry '{part}'", where="--columns",
                             fix="write FIELD=COLUMN pairs separated by commas; fields: " + ", ".join(fields))
        out[field.strip()] = col.strip()
    return out


def _reanalyze(args: argparse.Namespace) -> int:
    from ..untrusted import csv_safe
    from ..stigma.replicate import reanalyze_stigma

    levels = {k: [x.strip() for x in v.split("|") if x.strip()]
              for k, v in parse_columns(args.levels, ("race", "gender", "education")).items()}
    res = reanalyze_stigma(args.file, n_boot=args.n_boot, seed=args.seed, parser=args.parser, levels=levels or None,
                           drop_blank=args.drop_blank, dedupe=args.dedupe, **parse_columns(args.columns))
    show = res.rates[["model_label", "condition", "rate", "ci_low", "ci_high", "n", "n_dont_know", "n_unparseable",
                      "human_rate"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    m = res.meta
    tc = m["table_checks"]
    dropped = tc["n_rows_read"] - m["n_answers"]
    if dropped or m["table_checks_sentence"]:
        print(f"{tc['n_rows_read']} rows read, {dropped} dropped: {m['table_checks_sentence']}")
    print(f"parser: {m['parser']}")
    print(f"{m['n_answers']} answers: {m['n_counted']} counted, {m['n_dont_know']} 'do not know' (dropped), "
          f"{m['n_unparseable']} unparseable; {m['family_size']} gap tests, {m['n_significant_holm']} significant "
          f"after Holm")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in {**res.tables(), "stigma_answers": res.coded}.items():
            csv_safe(df).to_csv(out / f"{name}.csv", index=False)
        print(f"tables: {out}/")
    return 0
