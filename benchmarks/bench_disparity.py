"""The max - min disparity test of ``analyze`` alone (:func:`audit.stats.disparity.disparity_table`).

Loads the cell table of a run (a pandas pickle of :func:`audit.stats.stage.analysis_cells`' table, one
row per variant, style, model and outcome; e.g. written by ``pd.to_pickle`` after the aggregation) and
times the disparity tests exactly as ``analyze`` calls them (the observed cells, ``weight="n"``, the
default 1,999 bootstrap resamples and permutations, seed 0). Prints ``disparity_table: N s`` (wall),
the CPU seconds and the peak RSS of the process. Run:
``python benchmarks/bench_disparity.py CELLS.pkl [--seed 0] [--out results.csv]``; ``--out`` writes
the table (to compare two versions of the code number for number).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from audit.stats.disparity import disparity_table  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", help="pickled cell table (pd.read_pickle)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--out", help="write the resulting table to this CSV")
    a = ap.parse_args(argv)
    table = pd.read_pickle(a.cells)
    observed = table[table["n"] > 0]
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    out = disparity_table(observed, control="control", alpha=a.alpha, seed=a.seed, weight="n")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"cells: {len(table):,} rows, {len(out)} (outcome, model) tests")
    print(f"disparity_table: {wall:.1f} s")
    print(f"cpu: {cpu:.1f} s")
    print(f"peak RSS: {rss:.0f} MB (after loading the table: {rss_load:.0f} MB)")
    if a.out:
        out.to_csv(a.out, index=False, float_format="%.17g")


if __name__ == "__main__":
    main()
