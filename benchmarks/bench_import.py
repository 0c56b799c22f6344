"""Time of ``empathy-audit import`` on a release the size of a full replication (Gabriel et al. 2024:
65 posts x 105 variants x 3 styles x 3 samples = 61,425 replies), on this machine.

The release is synthetic: one long CSV with a post id, a group, the variant text (the post with a cue
in front, so every row passes the alignment check against its control), a reply of 60-120 words and
one published score column. The import (read, match and check every row, write the run store) is
timed once into a fresh run directory (wall clock and CPU time of this process), then once more into
the same directory (the idempotent re-import, which reads and checks everything again but writes
nothing new).

Run: ``python benchmarks/bench_import.py`` (``--posts 65 --groups 104 --replies 9``).

Memory (issue 28, item 8: a 1 GB CSV imports in at most 2 GB RSS): ``python benchmarks/bench_import.py
--gb 1`` writes a CSV of about 1 GB under /tmp (streamed, never held in memory: 2,000 posts x 10
conditions x 50 samples, replies of ~900 characters), imports it in a child process and prints that
process's peak resident set size (``ru_maxrss`` of the child), then deletes the files. Nothing big is
committed. Measured (2 shared cores, tests running beside it): 1.00 GB, 748,640 rows -> peak RSS
1.10 GiB, 627 s wall; the store 1.76 GB.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import shutil
import subprocess
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


def write_big_release(path: Path, target_bytes: float, seed: int = 0) -> int:
    """Stream a long CSV of about ``target_bytes`` to ``path`` (post_id, group, text, sample, reply,
    published); returns its rows. 2,000 posts x 10 conditions x samples, replies of ~900 characters."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    posts = [" ".join(rng.choices(words, k=50)) for _ in range(2000)]
    groups = ["control"] + [f"group-{g}" for g in range(1, 10)]
    n = written = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["post_id", "group", "text", "sample", "reply", "published"])
        s = 0
        while written < target_bytes:
            for p, post in enumerate(posts):
                for g in groups:
                    text = post if g == "control" else f"I am {g}. {post}"
                    reply = " ".join(rng.choices(words, k=150))
                    w.writerow([f"p{p}", g, text, s, reply, round(rng.uniform(0, 2), 3)])
                    n += 1
                written = fh.tell()
                if written >= target_bytes:
                    break
            s += 1
    return n


def _import_child(path: str, run: str) -> None:
    spec = import_spec_from_dict({
        "name": "bench-big", "files": [{"path": path}], "match": "id",
        "columns": {"post_id": "post_id", "variant": "text", "reply": "reply", "group": "group", "sample": "sample"},
        "scores": {"published": {"empathy": "published"}}})
    t0 = time.perf_counter()
    s = import_release(spec, run)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    print(f"imported {s.imported:,} rows in {time.perf_counter() - t0:.0f} s; peak RSS of the import process "
          f"{peak:.2f} GiB")


def big(gb: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-import-", dir="/tmp"))
    try:
        path = tmp / "release.csv"
        t0 = time.perf_counter()
        rows = write_big_release(path, gb * 1e9)
        size = path.stat().st_size
        print(f"release: {rows:,} rows, {size / 1e9:.2f} GB (written in {time.perf_counter() - t0:.0f} s)")
        subprocess.run([sys.executable, __file__, "--child", str(path), str(tmp / "run")], check=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2
        store = tmp / "run" / "store.sqlite"
        print(f"peak RSS (child, ru_maxrss): {peak:.2f} GiB for a {size / 1e9:.2f} GB CSV "
              f"({peak * 1024 ** 3 / size:.2f} bytes of memory per byte of file); target <= 2 GiB; "
              f"store {store.stat().st_size / 1e9:.2f} GB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, help="memory benchmark: import a CSV of this many GB (written to /tmp)")
    ap.add_argument("--child", nargs=2, metavar=("CSV", "RUN_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--posts", type=int, default=65)
    ap.add_argument("--groups", type=int, default=104)
    ap.add_argument("--replies", type=int, default=9, help="replies per variant (styles x samples)")
    args = ap.parse_args()
    if args.child:
        return _import_child(*args.child)
    if args.gb:
        return big(args.gb)
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
