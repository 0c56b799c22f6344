"""Throughput of the scorers: (post, reply) pairs scored per second, on this machine.

Pairs: the EPITOME Reddit pairs in ``../shared/epitome_data`` when present (real post and reply
lengths), else synthetic support posts and replies; repeated to ``--pairs``. Each scorer is timed on
``--repeats`` runs after one warm-up run (wall clock, and CPU time of this process: on a shared
machine the CPU-time rate is the one that says what the code does; scoring is single-threaded) (artifact load and caches excluded from the timing; the
load time is printed separately), best and median reported. Scorers that call a model over the
network (``llm-judge``) or need user checkpoints (``hf-classifier``) are skipped unless named with
``--scorers``. The issue-4 target for ``epitome`` is >= 2,000 pairs/s on 2 CPU cores.

Run: ``python benchmarks/bench_scorers.py`` (``--pairs 20000 --repeats 3 --scorers epitome length``,
``--json FILE``). Other scorers registered in :mod:`audit.scorers` are picked up by name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.scorers import available_scorers, get_scorer  # noqa: E402

OFFLINE = ("epitome", "length", "refusal", "sentiment")
DATA = Path(__file__).resolve().parents[2] / "shared" / "epitome_data" / "emotional-reactions-reddit.csv"


def load_pairs(n: int) -> tuple[list[str], list[str], str]:
    if DATA.is_file():
        import pandas as pd

        df = pd.read_csv(DATA, keep_default_na=False)
        posts, replies, src = df["seeker_post"].tolist(), df["response_post"].tolist(), "EPITOME Reddit pairs"
    else:
        posts = [f"I have been feeling really low for weeks and my {w} does not help. I can't sleep." for w in
                 ("job", "family", "school", "partner")]
        replies = ["I'm so sorry you are going through this. Have you been able to talk to anyone about it?",
                   "That sounds exhausting. I went through something similar last year and it got better.",
                   "Try to get some rest.", "What do you think is keeping you up at night?"]
        src = "synthetic pairs"
    reps = -(-n // len(posts))
    return (posts * reps)[:n], (replies * reps)[:n], src


def bench(name: str, posts: list[str], replies: list[str], repeats: int) -> dict:
    t0 = time.perf_counter()
    scorer = get_scorer(name)
    scorer.score(posts[:64], replies[:64])          # warm-up: loads the artifact, fills caches
    load_s = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = scorer.score(posts, replies)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        assert len(out) == len(posts)
    best, med = min(times), statistics.median(times)
    return {"scorer": name, "pairs": len(posts), "load_and_warmup_s": load_s, "best_s": best, "median_s": med,
            "pairs_per_s_best": len(posts) / best, "pairs_per_s_median": len(posts) / med,
            "pairs_per_cpu_s": len(posts) / min(cpu)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scorers", nargs="*", default=None, help="default: the scorers that run offline")
    ap.add_argument("--json", metavar="FILE")
    a = ap.parse_args(argv)
    names = a.scorers or [s["name"] for s in available_scorers() if s["name"] in OFFLINE]
    posts, replies, src = load_pairs(a.pairs)
    print(f"{len(posts)} pairs ({src}); {os.cpu_count()} CPUs visible; load average "
          f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "")
    rows = []
    for name in names:
        try:
            r = bench(name, posts, replies, a.repeats)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"{name:<14} skipped: {exc}")
            continue
        rows.append(r)
        print(f"{name:<14} {r['pairs_per_s_best']:>10,.0f} pairs/s best  {r['pairs_per_s_median']:>10,.0f} median  "
              f"{r['pairs_per_cpu_s']:>10,.0f} per CPU-second  (load+warm-up {r['load_and_warmup_s']:.2f} s)",
              flush=True)
    ep = next((r for r in rows if r["scorer"] == "epitome"), None)
    if ep:
        print(f"epitome / target 2,000 pairs/s: {ep['pairs_per_s_best'] / 2000:.2f}x wall clock, "
              f"{ep['pairs_per_cpu_s'] / 2000:.2f}x per CPU-second (one core)")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
