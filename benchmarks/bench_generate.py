"""Throughput of the toolkit's request layer against a bare async ``openai`` loop, and its memory.

    python benchmarks/bench_generate.py                  # stub + embedded + 100,000-request memory run
    python benchmarks/bench_generate.py --quick          # smaller numbers, a minute or so
    python benchmarks/bench_generate.py --skip-embedded --memory-requests 0

What it measures (a benchmark, not a test: nothing here asserts a time):

1. **Overhead** against a fast local stub server (``audit.testing``, the public fake server, in its own
   process, no latency): requests/s of :func:`audit.engine.complete` (content-addressed keys, a SQLite commit
   per reply, rate limiter, retry bookkeeping) beside a bare ``AsyncOpenAI`` loop with a semaphore
   at the same concurrency. Rounds alternate bare/toolkit; the best round of each is compared.
2. **The embedded model** (SmolLM2-135M on llama.cpp): the same comparison where the model, not the
   client, is the bottleneck.
3. **Memory**: RSS of this process, sampled while ``complete`` streams ``--memory-requests``
   requests (a generator, so the items are never all in memory) through the stub.

Target (issue 3): ratio >= 0.95 of the bare client's throughput; RSS under 300 MB over 100,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai

from audit.engine import complete
from audit.spec import DecodingSpec, ModelSpec
from audit.store import RunStore

DEC = DecodingSpec(temperature=0.7, max_tokens=32, seed=1)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def messages(i: int, tag: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a kind peer supporter."},
            {"role": "user", "content": f"[{tag} {i}] I have been feeling low since I moved to a new city and I "
                                        "don't know anyone here. Some days I don't leave my room."}]


async def bare_loop(base_url: str, model: str, n: int, conc: int, tag: str, extra: dict | None = None) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=300)
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            r = await client.chat.completions.create(
                model=model, messages=messages(i, tag), temperature=DEC.temperature, top_p=DEC.top_p,
                max_tokens=DEC.max_tokens, seed=i, extra_body=extra or None)
            assert r.choices[0].message.content is not None

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(n)))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    await client.close()
    return n / dt, 1000 * cpu / n


def toolkit(model: ModelSpec, n: int, tag: str, run_dir: Path) -> float:
    items = [{"purpose": "reply", "messages": messages(i, tag), "variant_id": f"v{i}", "style": "bench",
              "sample_index": 0} for i in range(n)]
    with RunStore(run_dir) as st:
        t0, c0 = time.perf_counter(), time.process_time()
        s = complete(st, model, DEC, items, progress=False)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert s.ok == n, s.format()
    return n / dt, 1000 * cpu / n


def compare(name: str, base_url: str, model_name: str, model: ModelSpec, n: int, conc: int, rounds: int,
            tmp: Path, extra: dict | None = None) -> dict:
    bare, tk, bare_cpu, tk_cpu = [], [], [], []
    for r in range(rounds):
        # alternate which goes first, so a trend in the machine's load favours neither
        for which in (("bare", "toolkit") if r % 2 == 0 else ("toolkit", "bare")):
            if which == "bare":
                rate, cpu = asyncio.run(bare_loop(base_url, model_name, n, conc, f"bare{r}", extra))
                bare.append(rate)
                bare_cpu.append(cpu)
            else:
                rate, cpu = toolkit(model, n, f"tk{r}", tmp / f"{name}-{r}")
                tk.append(rate)
                tk_cpu.append(cpu)
        print(f"  [{name}] round {r + 1}: bare {bare[-1]:.1f} req/s ({bare_cpu[-1]:.2f} ms CPU/req), "
              f"toolkit {tk[-1]:.1f} req/s ({tk_cpu[-1]:.2f} ms CPU/req)", flush=True)
    med = statistics.median
    res = {"bench": name, "requests": n, "concurrency": conc, "rounds": rounds,
           "bare_req_s": max(bare), "toolkit_req_s": max(tk), "ratio": max(tk) / max(bare),
           "ratio_median": med(tk) / med(bare),
           "bare_cpu_ms_per_req": med(bare_cpu), "toolkit_cpu_ms_per_req": med(tk_cpu),
           "cpu_ratio": med(bare_cpu) / med(tk_cpu)}
    print(f"{name}: bare {res['bare_req_s']:.2f} req/s, toolkit {res['toolkit_req_s']:.2f} req/s (best of {rounds}): "
          f"throughput ratio {res['ratio']:.3f} best / {res['ratio_median']:.3f} median; client CPU per request "
          f"(median): bare {res['bare_cpu_ms_per_req']:.2f} ms, toolkit {res['toolkit_cpu_ms_per_req']:.2f} ms "
          f"(ratio {res['cpu_ratio']:.3f})", flush=True)
    return res


def start_stub() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "audit.testing"], stdout=subprocess.PIPE, text=True)
    return proc, json.loads(proc.stdout.readline())["base_url"]


def memory_run(base_url: str, n: int, conc: int, tmp: Path) -> dict:
    model = ModelSpec(label="stub", base_url=base_url, model="stub-model", max_in_flight=conc)
    samples: list[tuple[int, float]] = []
    stop = threading.Event()
    counter = {"n": 0}

    def gen():
        for i in range(n):
            counter["n"] = i
            yield {"purpose": "reply", "messages": messages(i, "mem"), "variant_id": f"v{i}", "style": "bench",
                   "sample_index": 0}

    def sampler():
        while not stop.wait(1.0):
            samples.append((counter["n"], rss_mb()))

    start = rss_mb()
    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    with RunStore(tmp / "memory") as st:
        t0 = time.perf_counter()
        s = complete(st, model, DEC, gen(), progress=False)
        dt = time.perf_counter() - t0
    stop.set()
    th.join()
    peak = max([r for _, r in samples] + [rss_mb()])
    at_10pct = [r for i, r in samples if i >= n * 0.1]
    res = {"bench": "memory", "requests": n, "ok": s.ok, "seconds": dt, "req_s": n / dt, "rss_start_mb": start,
           "rss_peak_mb": peak, "rss_growth_after_10pct_mb": (max(at_10pct) - min(at_10pct)) if at_10pct else 0.0}
    print(f"memory: {n} requests in {dt:.0f} s ({n / dt:.0f} req/s); RSS start {start:.0f} MB, peak {peak:.0f} MB, "
          f"growth after the first 10% {res['rss_growth_after_10pct_mb']:.1f} MB", flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--stub-requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--embedded-requests", type=int, default=24)
    ap.add_argument("--skip-embedded", action="store_true")
    ap.add_argument("--memory-requests", type=int, default=100_000)
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args()
    if a.quick:
        a.stub_requests, a.embedded_requests, a.memory_requests, a.rounds = 500, 8, 5000, 2
    results = []
    print(f"cores: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as d:
        tmp = Path(d)
        stub, url = start_stub()
        try:
            m = ModelSpec(label="stub", base_url=url, model="stub-model", max_in_flight=a.concurrency)
            results.append(compare("stub", url, "stub-model", m, a.stub_requests, a.concurrency, a.rounds, tmp))
            if a.memory_requests:
                results.append(memory_run(url, a.memory_requests, a.concurrency, tmp))
        finally:
            stub.terminate()
            stub.wait()
        if not a.skip_embedded:
            from audit.backends.embedded import embedded_identity, embedded_session

            conc = 2
            with embedded_session(parallel=conc, progress=True) as srv:
                # ignore_eos: every reply is exactly max_tokens long, so both sides do the same work
                m = ModelSpec(label="embedded", max_in_flight=conc, extra_body={"ignore_eos": True})
                results.append(compare("embedded", srv.base_url, embedded_identity()[1], m, a.embedded_requests,
                                       conc, min(a.rounds, 3), tmp, extra={"cache_prompt": False, "ignore_eos": True}))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
