"""``empathy-audit score`` and ``empathy-audit scorers list|train|validate|invariance``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..cliargs import bounded_int, output_dir, output_file, probability
from ..errors import AuditError
from ..jsonable import jsonable
from .run import workers_option

MECHANISMS = ("ER", "IP", "EX")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score the stored replies of a run (never regenerates, never rescores)",
                       description="Score the stored replies of RUN_DIR into its run store. Replies are never "
                       "regenerated and a stored score is never recomputed; run it again to add a scorer or to "
                       "finish an interrupted run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (contains store.sqlite)")
    p.add_argument("--scorers", nargs="+", metavar="NAME",
                   help="scorers to run (default: scoring.scorers of the run's spec); see 'scorers list'")
    p.add_argument("--spec", metavar="SPEC", help="spec to configure scorers from (default: the run's own spec)")
    p.add_argument("--no-probe", action="store_true", help="do not run the demographic inference probe")
    p.add_argument("--no-invariance", action="store_true", help="do not run the scorer invariance check")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    workers_option(p)
    p.set_defaults(func=cmd_score)

    t = sub.add_parser("score-table", help="score the replies of any table (CSV/TSV/JSONL/parquet); no run store",
                       description="Score every (post, reply) row of FILE with the named scorers and write FILE's "
                       "rows with one column <scorer>.<measure> per measure to --out (.csv .tsv .jsonl .parquet).")
    t.add_argument("file", metavar="FILE", help="table with a post column and a reply column")
    t.add_argument("--post", required=True, metavar="COL", help="column with the post (the context of the reply)")
    t.add_argument("--reply", required=True, metavar="COL", help="column with the reply to score")
    t.add_argument("--scorers", nargs="+", required=True, metavar="NAME", help="local scorers; see 'scorers list'")
    t.add_argument("--out", required=True, metavar="FILE",
                   type=output_file(".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".parquet", ".pq"),
                   help="output table (.csv .tsv .jsonl .parquet)")
    t.set_defaults(func=cmd_score_table)

    s = sub.add_parser("scorers", help="list, train, validate and check scorers for bias")
    ssub = s.add_subparsers(dest="scorers_command", metavar="ACTION")
    s.set_defaults(func=lambda a: (s.print_help(), 1)[1])

    sl = ssub.add_parser("list", help="the available scorers and what they measure")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(func=cmd_list)

    st = ssub.add_parser("train", help="train the embedded epitome (or epitome-plus) scorer from EPITOME-format CSVs",
                         description="Retrain the embedded epitome scorer, or the optional epitome-plus "
                         "cross-encoder (extra 'train-plus'), and cross-validate it from the three EPITOME Reddit "
                         "CSV files.")
    st.add_argument("scorer", nargs="?", default="epitome", choices=["epitome", "epitome-plus"],
                    help="the trainable scorer")
    st.add_argument("--data", required=True, metavar="DIR",
                    help="directory with emotional-reactions-reddit.csv, interpretations-reddit.csv, explorations-reddit.csv")
    st.add_argument("--out", metavar="DIR", type=output_dir(),
                    help="where to write the artifact (default: the shipped artifact folder)")
    st.add_argument("--no-cv", action="store_true", help="skip the cross-validation (faster)")
    st.set_defaults(func=cmd_train)

    sv = ssub.add_parser("validate", help="accuracy, macro-F1, weighted kappa of a scorer on labelled pairs")
    sv.add_argument("--scorer", default="epitome", metavar="NAME")
    sv.add_argument("--mechanism", required=True, choices=MECHANISMS)
    sv.add_argument("--data", required=True, metavar="FILE.csv",
                    help="CSV with columns seeker_post, response_post, level")
    sv.add_argument("--spec", metavar="SPEC", help="spec configuring the scorer (llm-judge model, hf checkpoints)")
    sv.add_argument("--json", action="store_true", help="print the result as one JSON object")
    sv.set_defaults(func=cmd_validate)

    si = ssub.add_parser("invariance", help="does a scorer create a gap by itself? (identical replies, every variant)")
    si.add_argument("spec", nargs="?", default="demo", metavar="SPEC", help="audit spec (default: the built-in demo)")
    si.add_argument("--scorer", metavar="NAME", help="scorer to check (default: the spec's scorers that read the post)")
    si.add_argument("--run", metavar="RUN_DIR", help="run directory (default: the spec's); uses its control replies")
    si.add_argument("--replies-per-post", type=bounded_int(1, cap=100), default=3, metavar="K",
                    help="control replies per post (default 3)")
    si.add_argument("--alpha", type=probability("alpha"), default=0.05, help="level of the check (default 0.05)")
    si.add_argument("--json", action="store_true", help="print the summary table as JSON")
    si.set_defaults(func=cmd_invariance)


# --------------------------------------------------------------------------- handlers


def cmd_score(args: argparse.Namespace) -> int:
    from ..scoring import score_run

    spec = None
    if args.spec:
        from ..spec import load_spec

        spec = load_spec(args.spec)
    _warn_before_scoring(spec, Path(args.run_dir), args.scorers)
    summary = score_run(spec, Path(args.run_dir), args.scorers, probe=False if args.no_probe else None,
                        invariance=False if args.no_invariance else None,
                        progress=not args.json and sys.stderr.isatty(), workers=args.workers)
    if args.json:
        print(json.dumps(jsonable(summary.as_dict()), indent=2))
    else:
        print("\n".join(summary.lines()))
    return 0


def _warn_before_scoring(spec: Any, run_dir: Path, names: list[str] | None) -> None:
    """Scorer checks before the first request (:mod:`audit.preflight`): a missing extra is an error, an
    llm-judge on the embedded model a warning."""
    from ..preflight import check_scorers
    from ..store import RunStore

    if spec is None:
        with RunStore(run_dir, create=False) as store:
            spec = store.latest_spec()
    if spec is None:
        return
    names = list(names or getattr(getattr(spec, "scoring", None), "scorers", None) or [])
    for w in check_scorers(spec, names):
        print(f"warning: {w}", file=sys.stderr)


def cmd_score_table(args: argparse.Namespace) -> int:
    from ..score_table import EMPTY_COLUMN, score_table, write_table
    from ..stats import read_table

    out = score_table(read_table(args.file), post=args.post, reply=args.reply, scorers=args.scorers,
                      where=str(args.file))
    path = write_table(out, args.out)
    cols = [c for c in out.columns if any(c.startswith(f"{s}.") for s in args.scorers)]
    unscored = {c: int(out[c].isna().sum()) for c in cols if out[c].isna().any()}
    n_empty = int(out[EMPTY_COLUMN].sum())
    print(f"scored {len(out)} rows with {', '.join(args.scorers)} -> {path}"
          + (f" (not scorable: {unscored})" if unscored else ""))
    if n_empty:
        print(f"warning: {n_empty} of {len(out)} replies are empty, null or whitespace only: missing, not scored "
              f"(column {EMPTY_COLUMN}); compare their share between groups before reading any gap")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ..scorers import available_scorers

    rows = available_scorers()
    broken = [r for r in rows if r.get("error")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 1 if broken else 0
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        if r.get("error"):
            continue
        src = "" if r["source"] == "built-in" else f" [plugin: {r['source']}]"
        print(f"{r['name']:<{w}}  {', '.join(r['measures']):<22}  {r['description']}{src}")
        for m in r["declared"]:
            scale = f"{m['range'][0]:g}..{m['range'][1]:g}" if m.get("range") else "unbounded"
            higher = f"; higher is {m['higher_is']}" if m.get("higher_is") else ""
            gap = "relative to the control mean" if m["gap_unit"] == "relative" else f"in {m['gap_unit']}"
            print(f"{'':<{w}}    {m['name']}: {m['label']} ({m['kind']}, {scale}{higher}; gap {gap})")
    print("\nAlso: the demographic inference probe (scoring.inference_probe) and "
          "'empathy-audit scorers invariance'.")
    for r in broken:
        print(f"error: {r['error']}", file=sys.stderr)
    return 1 if broken else 0


def cmd_train(args: argparse.Namespace) -> int:
    data = Path(args.data)
    if not data.is_dir():
        raise AuditError("training data directory not found", where=str(data),
                         fix="give the directory holding the three EPITOME CSV files")
    if args.scorer == "epitome-plus":
        from ..scorers import epitome_plus_train as trainer
    else:
        from ..scorers import epitome_train as trainer

    result = trainer.train(data, Path(args.out) if args.out else None, cv=not args.no_cv,
                                 progress=sys.stderr.isatty())
    if result is not None:
        print(json.dumps(jsonable(result if isinstance(result, dict) else {"artifact": str(result)}), indent=2, default=str))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ..scorers import get_scorer
    from ..scorers.validation import read_labelled, validate

    df = read_labelled(args.data)
    spec = None
    if args.spec:
        from ..spec import load_spec

        spec = load_spec(args.spec)
    scorer = get_scorer(args.scorer, spec)
    if args.mechanism not in scorer.measures:
        raise AuditError(f"scorer {args.scorer!r} does not score {args.mechanism} (it gives {list(scorer.measures)})",
                         where="--mechanism", fix="choose a mechanism the scorer outputs, or another scorer")
    res = validate(scorer, args.mechanism, df)
    if args.json:
        print(json.dumps(jsonable(res), indent=2))
        return 0
    print(format_validation(args.scorer, args.mechanism, res))
    cv = (scorer.info().get("cv") or {}).get(args.mechanism)
    if isinstance(cv, dict) and "accuracy" in cv:     # the figures shipped with a trained scorer, for comparison
        print(f"  for comparison, {args.scorer}'s cross-validated figures on EPITOME Reddit ({args.mechanism}): "
              f"accuracy {cv['accuracy']:.3f}, macro-F1 {cv['macro_f1']:.3f}")
    return 0


def format_validation(scorer: str, mechanism: str, res: dict[str, Any]) -> str:
    lines = [f"{scorer} on {mechanism}: n = {res.get('n')}"]
    for k, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("weighted_kappa", "quadratic-weighted kappa")):
        v = res.get(k)
        lines.append(f"  {label:<26} {v:.3f}" if isinstance(v, (int, float)) and v == v else f"  {label:<26} n/a")
    for k, v in res.items():
        if k not in ("accuracy", "macro_f1", "weighted_kappa", "n", "per_level", "confusion") and isinstance(v, (int, float)):
            lines.append(f"  {k:<26} {v}")
    per = res.get("per_level")
    if per:
        lines.append("  per level:   precision  recall  support")
        items = per.items() if isinstance(per, dict) else enumerate(per)
        for lv, d in items:
            d = d if isinstance(d, dict) else {}
            fmt = lambda x: f"{x:.3f}" if isinstance(x, (int, float)) and x == x else " n/a"  # noqa: E731
            lines.append(f"    level {lv}    {fmt(d.get('precision')):>9}  {fmt(d.get('recall')):>6}  {d.get('support', '')!s:>7}")
    conf = res.get("confusion")
    if conf is not None:
        conf = conf.tolist() if hasattr(conf, "tolist") else conf
        lines.append("  confusion (rows: true level 0/1/2, columns: predicted 0/1/2):")
        for i, row in enumerate(conf):
            lines.append(f"    {i}: " + " ".join(f"{int(x):>6}" for x in row))
    return "\n".join(lines)


def cmd_invariance(args: argparse.Namespace) -> int:
    from ..scorers.invariance import invariance_check

    if args.replies_per_post < 1:
        raise AuditError("--replies-per-post must be at least 1", where="--replies-per-post")
    if not 0 < args.alpha < 1:
        raise AuditError("--alpha must be between 0 and 1", where="--alpha")
    res = invariance_check(args.spec, args.run, args.scorer, replies_per_post=args.replies_per_post, alpha=args.alpha)
    if args.json:
        print(json.dumps({"verdicts": jsonable(res.verdicts()), "pairs": res.pairs,
                          "table": jsonable(res.table.to_dict("records"))}, indent=2))
        return 0
    print(res.text())
    t = res.table
    if not t.empty:
        show = t[t["group"] != "pooled"].sort_values(["scorer", "measure", "cue_type", "group"])
        print(f"\n{'scorer':<10} {'measure':<8} {'cue type':<20} {'group':<18} {'n':>5} {'shift':>8} {'95% CI':>19} {'rel':>7} flag")
        for r in show.to_dict("records"):
            ci = f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r["ci_low"] == r["ci_low"] else "n/a"
            rel = f"{r['relative_shift']:+.1%}" if r["relative_shift"] == r["relative_shift"] else "n/a"
            print(f"{r['scorer']:<10} {r['measure']:<8} {r['cue_type']:<20} {str(r['group']):<18} {r['n_pairs']:>5} "
                  f"{r['mean_shift']:>+8.3f} {ci:>19} {rel:>7} {'*' if r['flagged'] else ''}")
    return 0
