"""A whole audit run at scale: score (1 and 2 processes), analyze and report a run store of N requests.

A synthetic empathy audit of ``--n`` requests (default 1,000,000) is written into a run store the way a
real run fills it: a spec (``--models`` models, ``--samples`` samples, the default scorers, no probe),
its variants (posts x 9 groups: the control and 8 race x gender groups with an explicit cue), the
design, the requests and their replies (300 words each, transactions of ``--chunk`` rows, through
``RunStore.put_requests`` / ``put_replies``). Then, timed one after the other with the real stages:

1. ``score`` throughput with 1 process and with 2 processes (:mod:`audit.scoring`) on the first
   ``--score-sample`` replies of a separate store of the same shape (so both count the same pairs),
   printed as pairs per second and as the ratio 2 processes / 1 process (target: >= 1.8 on 2 cores);
2. ``score`` of the whole N-request store with ``--workers`` processes (default: one per core);
3. the aggregation alone (:func:`audit.stats.stage.analysis_cells`: the one pass over the scores that
   reduces them to cells, :mod:`audit.stats.cells`), in a process of its own;
4. ``empathy-audit analyze RUN_DIR`` (the command: the store opened and checked, :func:`audit.analyze_run`:
   the aggregation, then every gap test, paired contrasts, disparities, power, model comparisons fitted
   from the cells, the results stored, the summary printed), in a process of its own;
5. the report (:func:`audit.report.render`: HTML, Markdown, results.json, tables, ``tables/replies.csv``
   only up to 100,000 replies; no browser check), in a process of its own;

each with its wall time and the peak RSS of its process. Run:
``python benchmarks/bench_run_scale.py [--n 1000000] [--keep DIR]``; it writes ~3 GB per 1M requests
into a temporary directory (removed unless ``--keep``). ``--reuse DIR`` times the stages on a run built
earlier with ``--keep DIR --stored-scores`` (no build, no scoring sample); ``--curve 100000,1000000``
builds a run of each size (scores written directly) and prints one line per size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from audit.spec import spec_from_dict  # noqa: E402
from audit.store import RunStore  # noqa: E402
from bench_store_scale import TimedWriter, request_and_reply  # noqa: E402  (benchmarks/ is sys.path[0])

WORDS = ("feel hear sounds hard really sorry time help talk someone things going through lot understand "
         "support week work sleep friends family alone tired stress care okay maybe try small step "
         "you are not alone it makes sense that what has been the hardest part for you lately").split()
RACES, GENDERS = ("Black", "White", "Asian", "Hispanic"), ("woman", "man")
SYSTEM = "You are a peer supporter on a mental-health forum. Reply to the post below with warmth and care."


def _rss_mb() -> tuple[float, float]:
    """Peak RSS (MB) of this process and of its largest finished child. This process's peak is the
    kernel's high-water mark of its own address space (``VmHWM``): ``ru_maxrss`` carries over the
    peak of the process that started it (a phase started by a build that held 2.6 GB reported 2.6 GB).
    A forked child's peak counts the pages it shares with its parent."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        with open("/proc/self/status") as fh:
            own = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):  # not Linux
        pass
    return own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def make_spec(run_dir: Path, models: int, samples: int) -> object:
    return spec_from_dict({
        "name": "scale", "output": str(run_dir), "samples": samples,
        "models": [{"label": f"m{m}", "base_url": f"https://api.example/m{m}/v1", "model": f"model-{m}"}
                   for m in range(models)],
        "scoring": {"scorers": ["epitome", "length", "refusal", "sentiment"], "inference_probe": False},
        "analysis": {"paired_check": True},
    })


def build(run_dir: Path, n: int, models: int, samples: int, chunk: int, seed: int = 0) -> dict[str, float]:
    """Fill ``run_dir`` with a run of ``n`` reply requests; returns insert timings and sizes."""
    from audit.design import design_id, design_of

    rng = random.Random(seed)
    groups = [("control", None, None)] + [(f"{r} {g}", r, g) for r in RACES for g in GENDERS]
    per_post = len(groups) * models * samples
    n_posts = -(-n // per_post)
    spec = make_spec(run_dir, models, samples)
    reply_bytes = 0
    with RunStore(run_dir) as st:
        st.put_spec(spec)
        variants = []
        for p in range(n_posts):
            post = f"[post {p}] " + _text(rng, 80)
            for name, race, gender in groups:
                cue = "" if race is None else f"As a {race} {gender}, "
                vid = hashlib.sha256(f"{p}|{name}".encode()).hexdigest()[:16]
                variants.append({"variant_id": vid, "post_id": f"p{p:06d}", "topic": "t", "risk": "low",
                                 "group": name, "cue_type": "control" if race is None else "explicit_statement",
                                 "alternative": None if race is None else "a1", "cue_text": cue, "text": cue + post,
                                 "race": race, "gender": gender})
        st.put_variants(pd.DataFrame(variants))
        keys: list[str] = []
        out = TimedWriter(st)
        reqs, reps = [], []
        written = 0
        for v in variants:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": v["text"]}]
            for m in range(models):
                for s in range(samples):
                    if written >= n:
                        break
                    req, rep, size = request_and_reply(lambda: _text(rng, 300), v["variant_id"], messages, m, s)
                    keys.append(req["request_key"])
                    reqs.append(req)
                    reps.append(rep)
                    reply_bytes += size
                    written += 1
            if len(reqs) >= chunk or written >= n:
                out.write(reqs, reps)
                reqs, reps = [], []
            if written >= n:
                break
        design = design_of(spec, [v["variant_id"] for v in variants], {"peer_supporter": "h" * 16})
        did = design_id(design)
        st.put_design_requests(did, keys)
        st.bind_design(did, design)
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(p.stat().st_size for p in run_dir.iterdir() if p.name.startswith("store.sqlite"))
    return {"t_requests": out.t_requests, "t_replies": out.t_replies, "bytes": size, "reply_bytes": reply_bytes,
            "posts": n_posts}


def score_rate(run_dir: Path, workers: int) -> tuple[float, int]:
    """Pairs per second of the score stage (every default scorer) with ``workers`` processes."""
    from audit.scoring import score_run

    t0 = time.perf_counter()
    summ = score_run(None, run_dir, workers=workers, probe=False, invariance=False)
    dt = time.perf_counter() - t0
    pairs = sum(s.scored for s in summ.scorers) // len(summ.scorers)
    return pairs / dt, pairs


def fill_scores(run_dir: Path, seed: int = 2) -> None:
    """Scores of every reply as the four default scorers would store them (their identities recorded
    by the scorers themselves), drawn at random with a gap of -0.1 level for the 'Black woman' group."""
    import numpy as np

    from audit.scorers import get_scorer
    from audit.scoring import check_identity

    rng = np.random.default_rng(seed)
    with RunStore(run_dir, create=False) as st:
        for name in ("epitome", "length", "refusal", "sentiment"):
            check_identity(st, get_scorer(name), get_scorer(name).info())
        after = ""
        while True:
            rows = st.conn.execute(
                "SELECT q.request_key, v.group_name FROM requests q JOIN variants v ON v.variant_id = q.variant_id"
                " WHERE q.request_key > ? ORDER BY q.request_key LIMIT 20000", (after,)).fetchall()
            if not rows:
                break
            after = rows[-1][0]
            out = []
            for key, group in rows:
                lv = np.clip(rng.normal(1.0 - 0.1 * (group == "Black woman"), 0.7, 3).round(), 0, 2)
                out += [(key, "epitome", m, float(v), None) for m, v in zip(("ER", "IP", "EX"), lv)]
                out += [(key, "epitome", "empathy", float(lv.mean()), None), (key, "length", "words", 300.0, None),
                        (key, "refusal", "refusal", float(rng.random() < 0.02), None),
                        (key, "sentiment", "compound", float(rng.uniform(-1, 1)), None)]
            st.put_scores(out)


def _phase(phase: str, run_dir: Path) -> dict:
    """Run one timed phase in a fresh process; its wall time and peak RSS (MB)."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--phase", phase, "--reuse", str(run_dir)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_phase(phase: str, run_dir: Path) -> None:
    from audit.report import render
    from audit.stats.stage import analysis_cells

    t0 = time.perf_counter()
    extra: dict = {}
    if phase == "aggregate":
        with RunStore(run_dir, create=False) as st:
            cells = analysis_cells(st, st.latest_spec())
        extra = {"cells": len(cells), "cells_per_outcome": int((cells["outcome"] == cells["outcome"].iloc[0]).sum())}
    elif phase == "analyze":  # the command a user runs: store opened and checked, analysis, summary printed
        import contextlib
        import io

        from audit.cli import main as cli_main

        with contextlib.redirect_stdout(io.StringIO()):
            status = cli_main(["analyze", str(run_dir)])
        if status != 0:
            raise SystemExit(f"empathy-audit analyze exited {status}")
        with RunStore(run_dir, create=False) as st:
            extra = {"tests": st.count_rows("results")}
    elif phase == "report":
        paths = render(run_dir, quiet=True)
        extra = {"html_mb": Path(paths["html"]).stat().st_size / 1e6,
                 "replies_csv": (Path(run_dir) / "tables" / "replies.csv").is_file()}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)  # the analysis's forked worker (audit.stats.parallel)
    print(json.dumps({"s": time.perf_counter() - t0, "cpu_s": ru.ru_utime + ru.ru_stime,
                      "worker_cpu_s": ch.ru_utime + ch.ru_stime, "rss_mb": _rss_mb()[0], "worker_rss_mb": _rss_mb()[1],
                      **extra}))


def time_stages(run_dir: Path, n: int) -> dict:
    """Aggregation, analyze and report of the run in ``run_dir``, each in its own process; prints the
    lines (``analyze: N s`` and ``report: N s`` are read by scripts)."""
    agg = _phase("aggregate", run_dir)
    print(f"aggregation: {agg['s']:.1f} s, {agg.get('cpu_s', 0):.1f} s CPU ({agg['cells']:,} cells, "
          f"{agg['cells_per_outcome']:,} per outcome, from "
          f"{n:,} replies); peak RSS {agg['rss_mb']:,.0f} MB", flush=True)
    an = _phase("analyze", run_dir)
    worker = (f" + forked worker {an['worker_cpu_s']:.1f} s CPU" if an.get("worker_cpu_s") else "")
    print(f"analyze: {an['s']:.1f} s ({an['tests']:,} tests, {an.get('cpu_s', 0):.1f} s CPU{worker}); peak RSS "
          f"{an['rss_mb']:,.0f} MB" + (f", forked worker {an['worker_rss_mb']:,.0f} MB (pages shared by the fork "
                                      "counted in both)" if an.get("worker_rss_mb") else ""), flush=True)
    rep = _phase("report", run_dir)
    print(f"report: {rep['s']:.1f} s ({rep.get('cpu_s', 0):.1f} s CPU, {rep['html_mb']:.1f} MB HTML; "
          "tables/replies.csv "
          f"{'written' if rep['replies_csv'] else 'not written (report --replies-table writes it)'}); "
          f"peak RSS {rep['rss_mb']:,.0f} MB", flush=True)
    return {"aggregate": agg, "analyze": an, "report": rep}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=2000, help="rows per transaction")
    ap.add_argument("--score-sample", type=int, default=20_000, help="replies of the 1-vs-2-process comparison")
    ap.add_argument("--workers", type=int, default=0, help="processes for scoring the whole store (0: one per core)")
    ap.add_argument("--keep", metavar="DIR", help="build the run here and keep it")
    ap.add_argument("--stored-scores", action="store_true",
                    help="instead of scoring the whole store, write scores drawn at random (a planted gap for one "
                         "group) straight into it: analyze and report time without the scoring time, which the "
                         "sample measures")
    ap.add_argument("--reuse", metavar="DIR", help="time aggregation, analyze and report on this run (built with "
                                                    "--keep DIR --stored-scores); nothing is built or scored")
    ap.add_argument("--curve", metavar="N,N,...", help="build a run of each size (scores written directly) and time "
                                                       "its aggregation, analyze and report")
    ap.add_argument("--phase", choices=("aggregate", "analyze", "report"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from audit.scoring import cpu_count

    if args.phase:
        _run_phase(args.phase, Path(args.reuse))
        return 0
    if args.reuse:
        with RunStore(Path(args.reuse), create=False) as st:
            n = st.count_rows("requests")
        print(f"run {args.reuse}: {n:,} requests; load: {os.getloadavg()[0]:.1f} (1-min average) on "
              f"{cpu_count()} cores", flush=True)
        time_stages(Path(args.reuse), n)
        return 0
    if args.curve:
        for size in [int(x) for x in args.curve.split(",")]:
            with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
                run_dir = Path(tmp) / "run"
                build(run_dir, size, args.models, args.samples, args.chunk)
                fill_scores(run_dir)
                print(f"--- {size:,} replies; load {os.getloadavg()[0]:.1f}", flush=True)
                time_stages(run_dir, size)
        return 0

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        small = Path(tmp) / "sample"
        build(small, args.score_sample, args.models, args.samples, args.chunk, seed=1)
        one_dir = Path(tmp) / "sample-1"
        os.rename(small, one_dir)
        build(small, args.score_sample, args.models, args.samples, args.chunk, seed=1)
        r1, pairs = score_rate(one_dir, 1)
        r2, _ = score_rate(small, 2)
        print(f"score, {pairs:,} replies x 4 scorers (epitome, length, refusal, sentiment), {cpu_count()} cores: "
              f"1 process {r1:,.0f} replies/s, 2 processes {r2:,.0f} replies/s: ratio {r2 / r1:.2f} (target >= 1.8)")

        run_dir = Path(args.keep) if args.keep else Path(tmp) / "run"
        b = build(run_dir, args.n, args.models, args.samples, args.chunk)
        n = args.n
        print(f"run of {n:,} requests ({b['posts']:,} posts x 9 groups x {args.models} models x {args.samples} "
              f"samples): insert requests {b['t_requests']:.1f} s ({n / b['t_requests']:,.0f}/s), replies "
              f"{b['t_replies']:.1f} s ({n / b['t_replies']:,.0f}/s); store {b['bytes'] / 1e9:.2f} GB, "
              f"{(b['bytes'] - b['reply_bytes']) / n:,.0f} bytes per request beyond the reply text")
        print(f"peak RSS after building: {_rss_mb()[0]:,.0f} MB", flush=True)
        if args.stored_scores:
            t0 = time.perf_counter()
            fill_scores(run_dir)
            print(f"scores written directly: {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            t0 = time.perf_counter()
            rate, pairs = score_rate(run_dir, args.workers)
            print(f"score {pairs:,} replies with {args.workers or cpu_count()} processes: {time.perf_counter() - t0:.1f} s "
              f"({rate:,.0f} replies/s); peak RSS {_rss_mb()[0]:,.0f} MB (largest worker {_rss_mb()[1]:,.0f} MB)",
                  flush=True)
        time_stages(run_dir, n)
        with RunStore(run_dir, create=False) as st:
            print(json.dumps({"scores": st.count_scores(), "results": st.count_rows("results")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
