"""The first run: wall-clock time of the README's demo audit on the embedded model, cold, on this machine.

Each repetition runs ``empathy-audit run analyses/demo.yaml`` in a fresh run directory and a fresh
process (the embedded llama.cpp server starts and loads the model each time; the weights are already
in the cache, so the install and the one-time weight download are excluded, as issue 19 states the
target). It prints every repetition's total and per-stage times (from the run store) and the median,
against the 300 s target. Run it on an idle machine: the embedded model uses 2 threads, and other
work on a 2-core machine slows it nearly proportionally.

Run: ``python benchmarks/bench_demo.py [--repeats 2] [--spec analyses/demo.yaml] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 300.0


def run_once(spec: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "run", str(spec), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True)
    total = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"the demo failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    from audit.store import RunStore

    with RunStore(out, create=False) as st:
        meta = st.meta_dict()
        n = len(st.replies_df())
    stages = {k.removeprefix("stage."): v for k, v in meta.items() if k.startswith("stage.")}
    return {"total_s": round(total, 1), "replies": n, "stages": stages, "exit": proc.returncode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--spec", default=str(ROOT / "analyses" / "demo.yaml"))
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from audit.backends.weights import ensure_weights

    ensure_weights(progress=True)  # once, outside the timing: the install step of the README command
    runs = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
            r = run_once(Path(args.spec), Path(tmp) / "run")
        runs.append(r)
        print(f"run {i + 1}: {r['total_s']:.1f} s for {r['replies']} replies (exit {r['exit']})")
        for name, line in r["stages"].items():
            print(f"    {name:<9} {line}")
    med = statistics.median(r["total_s"] for r in runs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"median of {len(runs)} cold runs: {med:.1f} s (target <= {TARGET_S:.0f} s: "
          f"{'met' if med <= TARGET_S else 'NOT met'}); {os.cpu_count()} cores, {platform.machine()}, "
          f"1-minute load average {load:.2f} at the end")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median_s": med, "target_s": TARGET_S}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
