"""Time the fits that run from the cell table, called the way :func:`audit.stats.stage.analyze_cells` calls them.

Loads a cell table (a pandas pickle of what :func:`audit.stats.stage.analysis_cells` returns: one row per
variant, style, model and outcome, the input of ``analyze_cells``) and times, one line per piece, wall
time and peak RSS (the process's resident set, polled every 5 ms; ``+N MB`` over the loaded table):

* ``fit_nested_ri``  - the exact random-intercept fits of the gap tests of every continuous outcome and
  model (:func:`audit.stats.fastlmm.fit_nested_ri`; styles pooled; the pooled-cue-type model and the one
  with a group x cue-type condition, as :func:`audit.stats.gaps.gap_test` fits them; the one-level
  fallback where the nested model does not converge), each through :func:`audit.stats.gaps._fit_one`;
  the time inside ``_fit_one`` and inside ``fit_nested_ri`` is printed beside the total (which also
  holds this script's validation and set-up of each block, as gap_test does them).
* ``models_table``   - :func:`audit.stats.models_compare.models_table` (the group x model interactions).
* ``variability``    - :func:`audit.stats.stage._variability` (within-variant sampling variance).
* ``paired``         - :func:`audit.stats.paired.paired_contrasts` of every (outcome, model, style) block.

Run: ``python benchmarks/bench_cell_fits.py /path/to/cells.pkl`` (``--pieces fit_nested_ri paired`` for
some; ``--check out.pkl`` stores the results, ``--against old.pkl`` compares them with stored ones).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH first: time another checkout

from audit.errors import AuditError  # noqa: E402
from audit.stats.cells import CELLS, cells_binary  # noqa: E402
from audit.stats.fastlmm import fit_nested_ri  # noqa: E402
from audit.stats import gaps  # noqa: E402
from audit.stats.gaps import validate_table  # noqa: E402
from audit.stats.models_compare import models_table  # noqa: E402
from audit.stats.paired import paired_contrasts  # noqa: E402
from audit.stats.stage import _variability  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Peak:
    """Peak RSS while the ``with`` block runs (polled)."""

    def __enter__(self):
        self.base = self.peak = rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)
        self._t.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())


def gap_fits(table: pd.DataFrame, reference: str = "control") -> tuple[dict, list[float]]:
    """The random-intercept fits of the gap tests of the continuous outcomes, through
    :func:`audit.stats.gaps._fit_one` as :func:`audit.stats.gaps.gap_test` calls it (see the module
    docstring); returns the fits and the seconds spent inside :func:`fit_nested_ri` and ``_fit_one``."""
    spent = [0.0, 0.0]  # inside fit_nested_ri, inside _fit_one
    fits = []

    def timed(*args, **kw):
        t = time.perf_counter()
        f = fit_nested_ri(*args, **kw)
        spent[0] += time.perf_counter() - t
        fits.append(f)
        return f

    gaps.fit_nested_ri = timed
    out = {}
    try:
        for (outcome, model), d_om in table.groupby(["outcome", "model_label"], sort=True, observed=True):
            if cells_binary(d_om[d_om["n"] > 0]):
                continue  # GEE (not timed here)
            factors = ["style"] if d_om["style"].nunique() > 1 else []
            seen = d_om[d_om["n"] > 0]
            inner = "variant_id" if len(seen) and seen.groupby("variant_id", observed=True)["n"].sum().max() > 1 \
                else None
            try:
                d = validate_table(d_om, "value", "group", reference, "post_id", factors, inner, cells=CELLS)
            except AuditError:
                continue  # not fitted (e.g. a constant outcome)
            variants = [("pooled", d, "group")]
            ref_by = d.loc[d["group"] == reference, "cue_type"].astype(str).unique()
            if len(ref_by) == 1:  # gap_test's model with a group x cue-type condition
                dd = d.copy()
                dd["__c__"] = np.where(dd["group"] == reference, reference,
                                       dd["group"].astype(str) + "\x1f" + dd["cue_type"].astype(str))
                variants.append(("by cue", dd, "__c__"))
            for label, dv, gcol in variants:
                fits.clear()
                t = time.perf_counter()
                gaps._fit_one(dv, "value", gcol, reference, "post_id", tuple(factors), inner, "fast", True, 0.05,
                              False, CELLS)
                spent[1] += time.perf_counter() - t
                f = fits[-1]
                out[(str(outcome), str(model), label)] = (f.params, f.bse, f.criterion)  # theta at 0: noise
    finally:
        gaps.fit_nested_ri = fit_nested_ri
    return out, spent


def paired_all(table: pd.DataFrame, reference: str = "control") -> pd.DataFrame:
    parts = []
    for (outcome, model), d_om in table.groupby(["outcome", "model_label"], sort=True):
        styles = sorted(d_om["style"].unique())
        blocks = [("pooled", d_om)] + ([(s, d_om[d_om["style"] == s]) for s in styles] if len(styles) > 1 else [])
        for style, d in blocks:
            seen = d[d["n"] > 0]
            p = paired_contrasts(seen, "value", "group", reference, "post_id", by="cue_type", weight="n")
            p.insert(0, "outcome", outcome)
            p.insert(1, "model_label", model)
            p.insert(2, "style", style)
            parts.append(p)
    return pd.concat(parts, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", help="pickled cell table (pandas)")
    ap.add_argument("--pieces", nargs="*", default=["fit_nested_ri", "models_table", "variability", "paired"])
    ap.add_argument("--check", help="store the results here (pickle)")
    ap.add_argument("--against", help="compare the results with these stored ones")
    a = ap.parse_args()
    t = time.perf_counter()
    table = pd.read_pickle(a.cells)
    print(f"loaded {len(table):,} cells in {time.perf_counter() - t:.1f} s; RSS {rss_mb():,.0f} MB", flush=True)
    observed = table if (table["n"] > 0).all() else table[table["n"] > 0]
    models = list(dict.fromkeys(table["model_label"].astype(str)))
    results = {}
    for piece in a.pieces:
        extra = ""
        with Peak() as pk:
            t = time.perf_counter()
            if piece == "fit_nested_ri":
                r, fit_s = gap_fits(table)
                extra = (f" (_fit_one {fit_s[1]:.2f} s over {len(r)} models, of which fit_nested_ri {fit_s[0]:.2f} s; "
                         f"the rest: validate_table and the set-up of the blocks)")
            elif piece == "models_table":
                r = models_table(table, reference_model=None, reference="control", alpha=0.05, pre_registered=False,
                                 model_order=models, cells=CELLS)
            elif piece == "variability":
                r = _variability(observed, "control")
            elif piece == "paired":
                r = paired_all(table)
            else:
                raise SystemExit(f"unknown piece {piece}")
            wall = time.perf_counter() - t
        results[piece] = r
        print(f"{piece}: {wall:.2f} s{extra}; peak RSS {pk.peak:,.0f} MB (+{pk.peak - pk.base:,.0f})", flush=True)
    if a.check:
        with open(a.check, "wb") as f:
            pickle.dump(results, f)
    if a.against:
        with open(a.against, "rb") as f:
            old = pickle.load(f)
        for piece, r in results.items():
            if piece in old:
                print(f"{piece}: max relative difference (|a - b| / max(|a|, |b|, 1e-6)) {_maxrel(old[piece], r):.3g}")


def _maxrel(a, b) -> float:
    if isinstance(a, tuple) and isinstance(a[0], pd.DataFrame):
        a = a[0]
        b = b[0]
    if isinstance(a, dict):
        assert a.keys() == b.keys(), "different fits"
        return max((_maxrel(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):  # params, bse[, theta], criterion: theta at a boundary is noise
            a, b = [a[0], a[1], a[-1]], [b[0], b[1], b[-1]]
        return max((_maxrel(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, pd.DataFrame):
        assert list(a.columns) == list(b.columns) and len(a) == len(b), "different tables"
        num = [c for c in a.columns if pd.api.types.is_float_dtype(a[c])]
        other = [c for c in a.columns if c not in num]
        assert a[other].astype(str).equals(b[other].astype(str)), "non-numeric columns differ"
        return max((_maxrel(a[c].to_numpy(), b[c].to_numpy()) for c in num), default=0.0)
    x, y = np.atleast_1d(np.asarray(a, dtype=float)), np.atleast_1d(np.asarray(b, dtype=float))
    if not np.array_equal(np.isnan(x), np.isnan(y)):
        print(f"  {int((np.isnan(x) != np.isnan(y)).sum())} value(s) NaN in one result only")
    ok = ~np.isnan(x) & ~np.isnan(y)
    if not ok.any():
        return 0.0
    return float(np.max(np.abs(x[ok] - y[ok]) / np.maximum(np.maximum(np.abs(x[ok]), np.abs(y[ok])), 1e-6)))


if __name__ == "__main__":
    main()
