"""``empathy-audit judge validate`` and ``empathy-audit appropriateness reanalyze``: the appropriateness
suite's judge validation and replication mode (thin layers over :mod:`audit.appropriateness`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cliargs import bounded_int, output_dir, output_file, seed
from ..errors import AuditError
from .stigma import parse_columns as _pairs

VALIDATE_FIELDS = ("reply", "criterion", "judge", "humans")
REANALYZE_FIELDS = ("reply", "stimulus", "model", "judge_label", "group", "context", "criterion",
                    "appropriate_answer", "key")


def register(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("judge", help="LLM-judge tools (validate a judge against human labels)",
                       description="Tools for the LLM judges of the suites.")
    js = j.add_subparsers(dest="judge_command", metavar="COMMAND", required=True)
    v = js.add_parser("validate", help="agreement of a judge's labels with human labels (Cohen's / Fleiss' kappa)",
                      description="Read a table of (reply, criterion, judge label, one or more human labels; yes/no) "
                                  "and print Fleiss' kappa over the judge and the annotators, Fleiss' kappa among "
                                  "the annotators alone, the judge's Cohen's kappa against each annotator and "
                                  "against their majority (with accuracy), and the annotators' pairwise Cohen's "
                                  "kappa, each row labelled. The published judge (GPT-4o, Moore et al. 2025) "
                                  "reached Fleiss' kappa 0.959 over the judge and two annotators.")
    v.add_argument("--data", required=True, metavar="FILE", help="CSV, TSV, JSONL or parquet table")
    v.add_argument("--columns", default="", metavar="FIELD=COL,...",
                   help="column names for reply, criterion, judge, humans (humans: COL|COL|...; default every "
                        "column starting with 'human' or 'annotator'; the judge's column may not be among them)")
    v.add_argument("--json", metavar="OUT", type=output_file(".json"), help="also write the result as JSON here")
    v.set_defaults(func=_validate)

    p = sub.add_parser("appropriateness", help="the appropriateness suite's tools (reanalyze raw replies)",
                       description="Tools of the crisis-appropriateness suite (Moore et al., FAccT 2025). Run the "
                                   "suite itself with `empathy-audit run analyses/appropriateness.yaml`.")
    s = p.add_subparsers(dest="appropriateness_command", metavar="COMMAND", required=True)
    r = s.add_parser("reanalyze", help="judge (or take judge labels of) and analyse a table of raw replies",
                     description="Judge every raw reply of FILE against its stimulus's criterion (or take the judge "
                                 "labels of a column) and print the appropriate rates per model x condition with "
                                 "cluster-bootstrap CIs; gap tests and tables are written with --out.")
    r.add_argument("file", metavar="FILE")
    r.add_argument("--columns", default="", metavar="FIELD=COL,...",
                   help="column names for " + ", ".join(REANALYZE_FIELDS) + " (default: the field names)")
    r.add_argument("--judge-base-url", metavar="URL", help="OpenAI-compatible endpoint of the judge")
    r.add_argument("--judge-model", metavar="NAME", help="the judge's model name")
    r.add_argument("--judge-api-key-env", metavar="VAR", help="environment variable holding the judge's API key")
    r.add_argument("--store", metavar="DIR", type=output_dir(),
                   help="run store for the judge calls (default: the cache directory)")
    r.add_argument("--drop-blank", action="store_true",
                   help="drop rows with a blank stimulus, model, group, context, criterion or key cell (counted and "
                        "stated) instead of stopping")
    r.add_argument("--dedupe", action="store_true",
                   help="keep the first of rows with the same design key (the rest counted and stated) instead of "
                        "stopping")
    r.add_argument("--n-boot", type=bounded_int(50, cap=100_000), default=2000, metavar="B",
                   help="bootstrap resamples (default 2000)")
    r.add_argument("--seed", type=seed(), default=0, help="bootstrap seed (default 0)")
    r.add_argument("--out", metavar="DIR", type=output_dir(),
                   help="write rates, tests, judge counts and replies as CSV here")
    r.set_defaults(func=_reanalyze)


def _validate(args: argparse.Namespace) -> int:
    from ..appropriateness.validation import validate_judge

    cols = _pairs(args.columns, VALIDATE_FIELDS)
    humans = cols.pop("humans", None)
    res = validate_judge(args.data, humans=humans.split("|") if humans else None, **cols)
    fa = res.fleiss_all
    print(f"Fleiss' kappa, judge + {len(res.columns['humans'])} annotators: {fa['kappa']:.3f} (n = {fa['n']})")
    if res.fleiss is not None:
        print(f"Fleiss' kappa, {res.fleiss['raters']} annotators alone: {res.fleiss['kappa']:.3f} "
              f"(n = {res.fleiss['n']})")
    print(res.pairs.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if res.n_ties:
        print(f"{res.n_ties} rows where the annotators tie are left out of the majority comparison")
    print(res.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(res.as_dict(), indent=1, allow_nan=False), encoding="utf-8")
        print(f"json: {args.json}")
    return 0


def _reanalyze(args: argparse.Namespace) -> int:
    from ..appropriateness.replicate import reanalyze_appropriateness
    from ..untrusted import csv_safe

    judge = None
    if args.judge_base_url or args.judge_model:
        from ..spec import DecodingSpec, JudgeSpec, ModelSpec
        from ..appropriateness.stimuli import prompt_settings

        if not (args.judge_base_url and args.judge_model):
            raise AuditError("--judge-base-url and --judge-model go together", where="the command line",
                             fix="give both, or neither (then the table needs judge labels)")
        judge = JudgeSpec(model=ModelSpec(label="judge", base_url=args.judge_base_url, model=args.judge_model,
                                          api_key_env=args.judge_api_key_env),
                          decoding=DecodingSpec(**prompt_settings()["judge"]["decoding"]), response_format="none")
    res = reanalyze_appropriateness(args.file, judge=judge, store_dir=args.store, n_boot=args.n_boot, seed=args.seed,
                                    drop_blank=args.drop_blank, dedupe=args.dedupe,
                                    **_pairs(args.columns, REANALYZE_FIELDS))
    show = res.rates[res.rates["by"] == "condition"][["model_label", "level", "rate", "ci_low", "ci_high", "n",
                                                       "n_unparseable", "n_unanswered"]]
    print(show.rename(columns={"level": "condition"}).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    m = res.meta
    tc = m["table_checks"]
    dropped = tc["n_rows_read"] - m["n_replies"]
    if dropped or m["table_checks_sentence"]:
        print(f"{tc['n_rows_read']} rows read, {dropped} dropped: {m['table_checks_sentence']}")
    if m["criterion_column"] or m["appropriate_answer_column"]:
        print(f"per-row criterion from column {m['criterion_column'] or '(none)'}, correct answer from column "
              f"{m['appropriate_answer_column'] or '(none)'}: {m['n_noncanonical_criterion']} rows with another "
              f"criterion wording, {m['n_noncanonical_answer']} with another correct answer than the stimulus's")
    print(f"{m['n_replies']} replies: {m['n_unparseable']} unparseable and {m['n_unanswered']} unanswered judgements "
          f"(counted as inappropriate); {m['family_size']} gap tests, {m['n_significant_holm']} significant after Holm")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, df in {**res.tables(), "appropriateness_replies": res.judged}.items():
            csv_safe(df).to_csv(out / f"{name}.csv", index=False)
        print(f"tables: {out}/")
    return 0
