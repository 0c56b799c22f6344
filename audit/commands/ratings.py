"""``empathy-audit ratings packet|import|agreement``: human ratings of a run's replies (audit/ratings/)."""

from __future__ import annotations

import argparse
import json

from ..cliargs import bounded_int, output_dir, seed


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("ratings", help="human rating packets, rating import, and how well the scorer agrees by group",
                       description="Check the scorer against people: make blinded rating packets of a run's "
                       "replies, import the filled files, and see whether the scorer's error differs by group.")
    rsub = r.add_subparsers(dest="ratings_command", metavar="ACTION")
    r.set_defaults(func=lambda a: (r.print_help(), 1)[1])

    p = rsub.add_parser("packet", help="a blinded, stratified sample of the run's replies for human raters",
                        description="Draw N answered replies of RUN_DIR (every group x cue type, the control and "
                        "each model; equal allocation), blind them (no group, cue or model labels; opaque item ids; "
                        "a random order per rater) and write a rater guide, a CSV, a printable HTML and a Label "
                        "Studio project per rater under --out. The item -> reply mapping stays in the run store.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=bounded_int(1, cap=100_000), required=True, metavar="N", help="distinct replies to rate")
    p.add_argument("--raters", required=True, metavar="K|NAMES",
                   help="number of raters (ids r1..rK) or comma-separated rater ids")
    p.add_argument("--overlap", type=bounded_int(0, cap=100_000), metavar="M",
                   help="replies rated by every rater, for agreement (default: 20%% of N with 2+ raters)")
    p.add_argument("--seed", type=seed(), help="sampling seed (default: the spec's seed)")
    p.add_argument("--out", required=True, metavar="DIR", type=output_dir(new=True), help="new folder for the packet")
    p.set_defaults(func=cmd_packet)

    i = rsub.add_parser("import", help="import a rater's filled CSV or Label Studio JSON export",
                        description="Check and store one rater's ratings. Re-importing the same file changes "
                        "nothing; a file that contradicts stored ratings is refused unless --replace.")
    i.add_argument("run_dir", metavar="RUN_DIR")
    i.add_argument("file", metavar="FILE", help="the rater's ratings.csv, or Label Studio's JSON / JSON-MIN export")
    i.add_argument("--rater", required=True, metavar="ID", help="whose ratings these are (the packet's rater id)")
    i.add_argument("--replace", action="store_true", help="overwrite this rater's stored ratings of the file's items")
    i.set_defaults(func=cmd_import)

    a = rsub.add_parser("agreement", help="agreement between raters and the scorer's error by group",
                        description="Krippendorff's alpha and pairwise weighted kappa between raters; the scorers' "
                        "accuracy, weighted kappa and bias against the human consensus, overall and per group; and "
                        "a test of whether the scorer's error differs by group.")
    a.add_argument("run_dir", metavar="RUN_DIR")
    a.add_argument("--json", action="store_true", help="print one JSON object (results.json's human_ratings)")
    a.set_defaults(func=cmd_agreement)


MAX_RATERS = 1000


def _raters(text: str) -> int | list[str]:
    """``--raters``: a count (1..1000) or rater ids, each through the one label rule (audit/labels.py);
    two ids that differ only by case or whitespace are refused (their files would be confused)."""
    from ..errors import AuditError
    from ..labels import clean_label, fold_key

    text = text.strip()
    if text.isdigit():
        k = int(text)
        if not 1 <= k <= MAX_RATERS:
            raise AuditError(f"--raters {k} is out of range", where="--raters",
                             fix=f"give 1 to {MAX_RATERS} raters, or their ids separated by commas")
        return k
    names = [c for c in (clean_label(t) for t in text.split(",")) if c]
    seen: dict[str, str] = {}
    for n in names:
        if fold_key(n) in seen:
            raise AuditError(f"rater ids {seen[fold_key(n)]!r} and {n!r} are one id up to case or spacing",
                             where="--raters", fix="give every rater a distinct id")
        seen[fold_key(n)] = n
    return names


def cmd_packet(args: argparse.Namespace) -> int:
    from ..ratings import make_packet

    packet = make_packet(args.run_dir, n=args.n, raters=_raters(args.raters), out=args.out, overlap=args.overlap,
                         seed=args.seed)
    print(packet.summary())
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ..ratings import import_ratings

    print(import_ratings(args.run_dir, args.file, rater=args.rater, replace=args.replace).line())
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    from ..ratings import run_ratings_summary, summary_text

    s = run_ratings_summary(args.run_dir)
    if args.json:
        print(json.dumps(s.as_json() if s is not None else None, indent=1, allow_nan=False))
    else:
        print(summary_text(s))
    return 0
