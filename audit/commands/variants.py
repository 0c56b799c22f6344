"""``empathy-audit variants SPEC [--out FILE.csv|.jsonl|.parquet]``: the counterfactual variant table."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from ..cliargs import bounded_int, output_file

WRITERS = (".csv", ".jsonl", ".parquet")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "variants", help="build the counterfactual variants of an audit and print counts per factor",
        description="Build the counterfactual variant table of SPEC (every post x group x cue type x alternative, "
                    "plus the unmodified control of every post), check each variant against its control, print "
                    "the counts per factor and optionally write the table.",
    )
    p.add_argument("spec", metavar="SPEC", help="audit spec (YAML file), or the name of a built-in audit (demo)")
    p.add_argument("--out", metavar="FILE", type=output_file(*WRITERS),
                   help="write the table to FILE (.csv, .jsonl or .parquet)")
    p.add_argument("--show", type=bounded_int(0, cap=100_000), default=0, metavar="N",
                   help="also print the first N variants' texts")
    p.add_argument("--list-posts", action="store_true", help="list the posts the spec selects, then stop")
    p.add_argument("--lint", action="store_true",
                   help="list words in the selected posts that may signal a demographic group (neutrality lint), "
                        "then stop; exit status 1 when any post is flagged")
    p.set_defaults(func=_variants)


def write_table(df: pd.DataFrame, out: str | Path) -> Path:
    """Write the variant table by file suffix; written to a temporary file first, then renamed."""
    from ..errors import AuditError

    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise AuditError(f"unsupported output type '{suffix or '(none)'}'", where=str(path),
                         fix=f"end the file name with one of {', '.join(WRITERS)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif suffix == ".jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        raise AuditError(f"cannot write the variant table: {exc.strerror or exc}", where=str(path),
                         fix="check the directory exists and is writable, and that the disk has space") from None
    return path


def format_counts(df: pd.DataFrame, design, skipped: dict[str, int] | None = None) -> list[str]:
    from ..counterfactual import CONTROL, counts_by_factor

    n_posts = df["post_id"].nunique()
    sizes = df.groupby("post_id").size()
    if sizes.nunique() == 1:
        lines = [f"variants: {len(df)} = {n_posts} posts x (1 control + {int(sizes.iloc[0]) - 1} cued variants)"]
    else:
        lines = [f"variants: {len(df)} from {n_posts} posts (1 control + {int(sizes.min()) - 1} to "
                 f"{int(sizes.max()) - 1} cued variants each)"]
    for reason, n in (skipped or {}).items():
        lines.append(f"  not built for {n} post(s): {reason} (counted, see docs/variants.md)")
    counts = counts_by_factor(df, design.axes)
    for factor in ["cue_type", "group", *design.axes, "topic", "risk"]:
        s = counts[factor]
        lines.append(f"  by {factor}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    alt = counts["alternatives per (group, cue type)"]
    for ct in design.cue_types:
        vals = alt.loc[ct] if ct in alt.index.get_level_values(0) else pd.Series(dtype=int)
        uniq = sorted(set(int(v) for v in vals))
        desc = f"{uniq[0]} per group" if len(uniq) == 1 else ", ".join(f"{g} {v}" for g, v in vals.items())
        lines.append(f"  alternatives of {ct}: {desc}")
    fixed = ", ".join(f"{k}={v}" for k, v in design.fixed.items()) or "nothing"
    lines.append(f"  held fixed in every variant: {fixed}; the control ('{CONTROL}') is the unmodified post")
    for ct in design.cue_types:
        if design.templates.cues[ct].sensitive:
            lines.append(f"  note: {ct} is marked sensitive in its template file; review its cues before use")
    return lines


def _variants(args: argparse.Namespace) -> int:
    from ..corpus import read_posts
    from ..counterfactual import resolve_design, variants_for
    from ..spec import load_spec

    spec = load_spec(args.spec)
    post_set = read_posts(spec)
    posts, report = post_set.frame, post_set.report
    if args.list_posts:
        for r in posts.itertuples(index=False):
            print(f"{r.post_id}\t{r.topic}\t{r.risk}\t{len(r.text.split())} words")
        return 0
    if args.lint:
        return _lint(posts)
    design = resolve_design(spec)
    df, skipped = variants_for(posts, design)
    for line in report.lines():
        print(line)
    print(f"templates: {design.templates.root} (sha256 {design.templates.digest[:12]})")
    for line in format_counts(df, design, skipped):
        print(line)
    n_req = len(df) * len(spec.styles) * spec.samples * len(spec.models)
    print(f"requests this spec implies: {len(df)} variants x {len(spec.styles)} style(s) x {spec.samples} "
          f"sample(s) x {len(spec.models)} model(s) = {n_req:,} replies")
    print("check: every variant equals its control plus exactly its cue (no placeholders, clean joins)"
          + ("; dialect variants equal their control with exactly the listed rule changes"
             if "implicit_dialect" in design.cue_types else ""))
    for r in df.head(max(args.show, 0)).itertuples(index=False):
        print(f"\n--- {r.variant_id} {r.post_id} {r.cue_type} {r.group} {r.alternative or ''}\n{r.text}")
    if args.out:
        path = write_table(df, args.out)
        print(f"wrote {len(df)} variants to {path}")
    return 0


def _lint(posts: pd.DataFrame) -> int:
    from ..corpus import neutrality_findings

    flagged = 0
    for r in posts.itertuples(index=False):
        found = neutrality_findings(r.text)
        if found:
            flagged += 1
            words = ", ".join(sorted({f"{w!r} ({cat})" for cat, w in found}))
            print(f"{r.post_id}: {words}")
    print(f"lint: {flagged} of {len(posts)} posts contain words that may signal a demographic group"
          + ("" if flagged else " (none)"))
    return 1 if flagged else 0
