"""``empathy-audit import``: bring a released data set (replies someone else generated) into a run store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..cliargs import bounded_int, output_dir
from ..errors import AuditError
from ..jsonable import jsonable


# Flags that describe the mapping: with --spec the import spec says all of it.
MAPPING_FLAGS = ("name", "post_id", "post", "variant", "reply", "group", "cue_type", "model", "style", "sample", "axis",
                 "reference", "no_control", "match", "score", "no_header", "columns", "reference_group",
                 "allow_missing", "rows_per_post", "repeated_posts", "failed_value")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="import released replies (CSV/TSV/JSONL/parquet) into a run store, to score and report them",
        description="Import replies that someone else generated into the run store of RUN_DIR, so that score, "
        "analyze, report and export work on them. What the import means is an import spec (--spec FILE.yaml; see "
        "docs/replication.md), or, for one long table, the flags below. Variants are matched to their original "
        "posts by a post-id column or by row position (--match rows); the alignment is checked and every "
        "unmatched row counted. Exit status 2 on a bad mapping or an implausible alignment.")
    p.add_argument("files", nargs="*", metavar="FILE", help="release files (with flags; an import spec lists its own)")
    p.add_argument("--spec", metavar="IMPORT.yaml", help="import spec (files, columns, axes, control, scores, match)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", type=output_dir(),
                   help="run directory to write (a new one, or the same "
                   "import again: nothing changes)")
    p.add_argument("--name", metavar="NAME", help="run name (default: the name of RUN_DIR)")
    for field, what in (("post-id", "id of the original post"), ("post", "text of the original post"),
                        ("variant", "text the model replied to (default: --post)"), ("reply", "the reply"),
                        ("group", "group label"), ("cue-type", "cue type"), ("model", "model that replied"),
                        ("style", "prompt style"), ("sample", "sample index")):
        p.add_argument(f"--{field}", metavar="COL", help=f"column with the {what}")
    p.add_argument("--axis", action="append", default=[], metavar="COL",
                   help="column that is a demographic axis (repeatable); the group is its values joined")
    p.add_argument("--control", metavar="LEVEL", default="control", help="group label of the unmodified posts "
                   "(default: control)")
    p.add_argument("--reference", metavar="LEVEL", help="reference group when the release has no control "
                   "(with --no-control)")
    p.add_argument("--no-control", action="store_true", help="the release has no unmodified posts")
    p.add_argument("--match", choices=["id", "rows"], help="match variants to posts by --post-id (default when "
                   "given) or by row position")
    p.add_argument("--score", action="append", default=[], metavar="SCORER.MEASURE=COL",
                   help="a score column of the release, stored as scorer SCORER, measure MEASURE (repeatable), "
                        "e.g. published.empathy=empathy_score")
    p.add_argument("--no-header", action="store_true", help="the files have no header row (name them with --columns)")
    p.add_argument("--columns", metavar="A,B,...", help="column names of headerless files, in order")
    p.add_argument("--reference-group", metavar="LEVEL", help="analysis.reference_group of the stored audit spec")
    p.add_argument("--allow-missing", action="store_true", help="analysis.allow_missing of the stored audit spec")
    p.add_argument("--rows-per-post", type=bounded_int(1, cap=100_000), metavar="K", help="with --match rows: each post has K consecutive "
                   "rows (its sampled replies)")
    p.add_argument("--repeated-posts", choices=["samples", "posts"], help="identical post texts within one "
                   "condition are samples of one post (consecutive rows) or different posts; undeclared: an error")
    p.add_argument("--failed-value", action="append", default=[], metavar="TEXT",
                   help="a reply text that means the request failed (a placeholder such as ERROR); repeatable")
    p.add_argument("--force", action="store_true", help="import even when the alignment looks implausible "
                   "(unmatched rows are left out and counted), or when conditions have identical content or lack "
                   "their declared cue (with a warning in the report)")
    p.add_argument("--fold-case", action="store_true", help="treat group labels that differ only by case as one "
                   "label (the most frequent spelling), with a warning; by default they are refused")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=cmd_import)


def spec_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The import spec (as a mapping) that the flags of ``empathy-audit import`` describe."""
    if not args.files:
        raise AuditError("no file to import", where="empathy-audit import",
                         fix="give the release files, or an import spec with --spec")
    if not args.reply:
        raise AuditError("missing option --reply", where="empathy-audit import",
                         fix="name the reply column with --reply (and the other columns with their flags)")
    columns = {k: getattr(args, k) for k in ("post_id", "post", "variant", "reply", "group", "cue_type", "model",
                                               "style", "sample") if getattr(args, k)}
    names = [c.strip() for c in args.columns.split(",")] if args.columns else None
    files = [{"path": f, **({"header": False} if args.no_header else {}), **({"columns": names} if names else {})}
             for f in args.files]
    scores: dict[str, dict[str, str]] = {}
    for item in args.score:
        target, sep, col = item.partition("=")
        scorer, dot, measure = target.partition(".")
        if not (sep and dot and scorer and measure and col):
            raise AuditError(f"--score {item!r} is not SCORER.MEASURE=COLUMN", where="--score",
                             fix="write e.g. --score published.empathy=empathy_score")
        scores.setdefault(scorer, {})[measure] = col
    out: dict[str, Any] = {
        "name": args.name or _run_name(Path(args.out)), "files": files, "columns": columns,
        "axes": list(args.axis), "control": None if args.no_control else args.control,
        "match": args.match or ("id" if args.post_id else "rows"), "scores": scores,
        "allow_missing": bool(args.allow_missing),
    }
    if args.rows_per_post is not None:
        out["rows_per_post"] = args.rows_per_post
    if args.repeated_posts:
        out["repeated_posts"] = args.repeated_posts
    if args.failed_value:
        out["failed_values"] = list(args.failed_value)
    for k in ("reference", "reference_group"):
        if getattr(args, k):
            out[k] = getattr(args, k)
    return out


def _run_name(run_dir: Path) -> str:
    """A valid run name from the run directory's name (letters, digits, '_', '.', '-')."""
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_dir.resolve().name).lstrip("_.-")
    return name or "import"


def cmd_import(args: argparse.Namespace) -> int:
    from ..importer import import_release, import_spec_from_dict, load_import_spec
    from ..report.provenance import command_line

    if args.spec:
        if args.files:
            raise AuditError("give the files in the import spec or on the command line, not both",
                             where="empathy-audit import", fix="list the files under 'files' in the import spec")
        flags = [f"--{k.replace('_', '-')}" for k in MAPPING_FLAGS if getattr(args, k)]
        flags += ["--control"] if args.control != "control" else []
        if flags:  # they would be silently ignored
            raise AuditError(f"{', '.join(flags)} cannot be combined with --spec", where="empathy-audit import",
                             fix="put the mapping in the import spec (see docs/replication.md), or leave --spec out")
        spec = load_import_spec(args.spec)
    else:
        spec = import_spec_from_dict(spec_from_flags(args), where="empathy-audit import flags")
    summary = import_release(spec, Path(args.out), force=True if args.force else None, command=command_line(),
                             fold_case=args.fold_case)
    if args.json:
        print(json.dumps(jsonable(summary.as_dict()), indent=2))
    else:
        print("\n".join(summary.lines()))
    return 0
