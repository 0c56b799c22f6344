"""Time of ``empathy-audit import`` on a release the size of a full replication (Gabriel et al. 2024:
65 posts x 105 variants x 3 styles x 3 samples = 61,425 replies), on this machine.

The release is synthetic: one long CSV with a post id, a group, the variant text (the post with a cue
in front, so every row passes the alignment check against its control), a reply of 60-120 words and
one published score column. The import (read, match and check every row, write the run store) is
timed once into a fresh run directory (wall clock and CPU time of this process), then once more into
the same directory (the idempotent re-import, which reads and checks everything again but writes
nothing new).

Run: ``python benchmarks/bench_import.py`` (``--posts 65 --groups 104 --replies 9``).
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from audit.importer import import_release, import_spec_from_dict  # noqa: E402


def release(posts: int, groups: int, replies: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    rows = []
    for p in range(posts):
        post = " ".join(rng.choices(words, k=rng.randint(40, 120)))
        for g in range(groups + 1):
            group = "control" if g == 0 else f"group-{g}"
            text = post if g == 0 else f"I am {group}. {post}"
            for s in range(replies):
                rows.append(dict(post_id=f"p{p}", group=group, text=text, sample=s,
                                 reply=" ".join(rng.choices(words, k=rng.randint(60, 120))),
                                 published=round(rng.uniform(0, 2), 3)))
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--posts", type=int, default=65)
    ap.add_argument("--groups", type=int, default=104)
    ap.add_argument("--replies", type=int, default=9, help="replies per variant (styles x samples)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "release.csv"
        df = release(args.posts, args.groups, args.replies)
        df.to_csv(path, index=False)
        spec = import_spec_from_dict({
            "name": "bench", "files": [{"path": str(path)}], "match": "id",
            "columns": {"post_id": "post_id", "variant": "text", "reply": "reply", "group": "group",
                        "sample": "sample"},
            "scores": {"published": {"empathy": "published"}}})
        print(f"release: {len(df):,} rows, {path.stat().st_size / 1e6:.1f} MB")
        for what in ("import into a new run directory", "re-import (idempotent)"):
            t0, c0 = time.perf_counter(), time.process_time()
            s = import_release(spec, Path(tmp) / "run")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"{what}: {wall:.1f} s wall, {cpu:.1f} s CPU ({s.imported / wall:,.0f} rows/s wall); "
                  f"{s.imported:,} imported, {s.unmatched} unmatched")


if __name__ == "__main__":
    main()
