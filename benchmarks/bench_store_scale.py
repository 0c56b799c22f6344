"""The run store at audit scale: insert time, bytes per request, and the gap analysis at 1M rows.

A synthetic run of N requests (default 1,000,000) shaped like a large audit: distinct prompts (post
with a cue, under a ~100-word system prompt; ~1.1 KB each) sent to ``--models`` models with
``--samples`` samples each, so N / (models x samples) distinct prompts; each reply 300 words. The
requests and replies are written through :class:`audit.store.RunStore` (``put_requests`` /
``put_replies``) in transactions of ``--chunk`` rows, as the request engine and batch collect write
them. Printed:

- insert time of the requests and of the replies, rows per second;
- store size per request, and beyond the reply text (file size minus the UTF-8 bytes of every reply
  text, over N);
- the time of :func:`audit.analyze_table` (the random-intercept gap models of the analysis, on the
  per-post sufficient statistics) on an N-row long table (outcome, group, post), Holm and BH included;
- peak RSS of this process.

Run: ``python benchmarks/bench_store_scale.py [--n 1000000] [--keep DIR] [--report-every N]
[--no-analysis]``. It writes ~2.7 GB per 1M requests (a temporary directory, removed unless ``--keep``);
``--report-every`` prints the growth curve (bytes per request, insert rate, RSS) as the store grows.
Scoring, the analysis stage and the report of a whole run: ``benchmarks/bench_run_scale.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from audit.store import RunStore, request_key  # noqa: E402

WORDS = ("feel hear sounds hard really sorry time help talk someone things going through lot understand "
         "support week work sleep friends family alone tired stress care okay maybe try small step").split()
SYSTEM = ("You are a peer supporter on a mental-health forum. Reply to the post below with warmth and care, "
          "in your own words, as one person to another. " * 4).strip()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def request_and_reply(key_text: Callable[[], str], variant_id: str, messages: list[dict[str, str]], m: int,
                      s: int) -> tuple[dict[str, Any], tuple[dict[str, Any], list], int]:
    """One reply request of model ``m``, sample ``s``, as the request engine records it, its stored
    reply (text from ``key_text()``) and the reply's size in UTF-8 bytes."""
    params = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 400, "seed": 1000 + s}
    key = request_key(f"https://api.example/m{m}/v1", f"model-{m}", messages, params, s)
    req = {"request_key": key, "purpose": "reply", "variant_id": variant_id, "model_label": f"m{m}",
           "endpoint_id": f"https://api.example/m{m}/v1", "model_name": f"model-{m}", "style": "peer_supporter",
           "style_hash": "h" * 16, "sample_index": s, "messages": messages, "params": params}
    text = key_text()
    rep = ({"request_key": key, "status": "ok", "text": text, "finish_reason": "stop", "prompt_tokens": 400,
            "completion_tokens": 390, "latency_s": None, "attempts": 1, "model_reported": f"model-{m}",
            "runtime": "openai batch", "runtime_version": "fp_1"}, [])
    return req, rep, len(text.encode("utf-8"))


class TimedWriter:
    """Writes chunks of requests and replies through the store, as the engine does, and times each."""

    def __init__(self, store: RunStore):
        self.store, self.t_requests, self.t_replies = store, 0.0, 0.0

    def write(self, reqs: list, reps: list) -> None:
        t0 = time.perf_counter()
        self.store.put_requests(reqs)
        self.t_requests += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.store.put_replies(reps)
        self.t_replies += time.perf_counter() - t0


def build(run_dir: Path, n: int, models: int, samples: int, chunk: int, seed: int = 0,
          report_every: int = 0) -> dict[str, float]:
    rng = random.Random(seed)
    next_report = report_every
    per_prompt = models * samples
    n_prompts = -(-n // per_prompt)
    reply_bytes = 0
    with RunStore(run_dir) as st:
        out = TimedWriter(st)
        reqs, reps = [], []
        written = 0
        for i in range(n_prompts):
            post = f"[post {i}] " + _text(rng, 120)
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": post}]
            for m in range(models):
                for s in range(samples):
                    if written >= n:
                        break
                    req, rep, size = request_and_reply(lambda: _text(rng, 300), f"v{i:08d}", messages, m, s)
                    reqs.append(req)
                    reps.append(rep)
                    reply_bytes += size
                    written += 1
            if len(reqs) >= chunk or written >= n:
                out.write(reqs, reps)
                reqs, reps = [], []
            if report_every and not reqs and (written >= next_report or written >= n):
                next_report += report_every
                st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                size = sum(p.stat().st_size for p in run_dir.iterdir() if p.name.startswith("store.sqlite"))
                print(f"  {written:>12,} requests: {(size - reply_bytes) / written:,.0f} bytes per request beyond "
                      f"the reply text; insert so far {written / (out.t_requests + out.t_replies):,.0f} "
                      f"requests/s (request and reply); "
                      f"peak RSS {_peak_rss_mb():,.0f} MB", flush=True)
            if written >= n:
                break
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        n_prompts_stored = st.count_rows("prompts")
    size = sum(p.stat().st_size for p in run_dir.iterdir() if p.name.startswith("store.sqlite"))
    return {"n": n, "prompts": n_prompts_stored, "t_requests": out.t_requests, "t_replies": out.t_replies, "bytes": size,
            "reply_bytes": reply_bytes}


def analysis(n: int, seed: int = 1) -> float:
    """Seconds of analyze_table on an n-row long table: 9 groups (control + 8), n / 45 posts."""
    rng = np.random.default_rng(seed)
    groups = np.array(["control"] + [f"g{k}" for k in range(8)])
    n_posts = max(n // 45, 10)
    post = rng.integers(0, n_posts, n)
    group = groups[rng.integers(0, len(groups), n)]
    y = rng.normal(0, 1, n_posts)[post] + (group == "g3") * 0.05 + rng.normal(0, 1, n)
    table = pd.DataFrame({"post_id": post.astype(str), "group": group, "value": y})
    from audit import analyze_table

    t0 = time.perf_counter()
    res = analyze_table(table, outcome="value", group="group", control="control", cluster="post_id")
    dt = time.perf_counter() - t0
    assert len(res) == 8
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=2000, help="rows per transaction")
    ap.add_argument("--keep", metavar="DIR", help="build the store here and keep it")
    ap.add_argument("--report-every", type=int, default=0, metavar="N",
                    help="print bytes per request, insert rate and RSS every N requests (the growth curve)")
    ap.add_argument("--no-analysis", action="store_true", help="measure the store only")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        run_dir = Path(args.keep) if args.keep else Path(tmp) / "run"
        r = build(run_dir, args.n, args.models, args.samples, args.chunk, report_every=args.report_every)
        n = r["n"]
        print(f"requests: {n:,} ({r['prompts']:,} distinct prompts; {args.models} models x {args.samples} samples), "
              f"{args.chunk} rows per transaction")
        print(f"insert: requests {r['t_requests']:.1f} s ({n / r['t_requests']:,.0f}/s), replies {r['t_replies']:.1f} s "
              f"({n / r['t_replies']:,.0f}/s)")
        print(f"store: {r['bytes'] / 1e9:.2f} GB, {r['bytes'] / n:,.0f} bytes per request, "
              f"{(r['bytes'] - r['reply_bytes']) / n:,.0f} bytes per request beyond the reply text "
              f"(replies {r['reply_bytes'] / n:,.0f} bytes each)")
        print(f"peak RSS after the store: {_peak_rss_mb():,.0f} MB")
        if args.no_analysis:
            return 0
        dt = analysis(n)
        print(f"analyze_table on {n:,} rows (8 gaps, random intercept per post): {dt:.1f} s")
        print(f"peak RSS: {_peak_rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
