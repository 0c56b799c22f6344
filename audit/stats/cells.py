"""Cell tables: the sufficient statistics every test of a run's analysis is fitted from.

A *cell* is a set of observations that share everything a model of the analysis can see: the post,
the variant (so the group and cue type), the prompt style, the model and the outcome. The replies of a
cell differ only in their sample index, and every model the analysis fits treats them as exchangeable,
so each test depends on them only through

* ``n``: the observed values (score present, reply answered),
* ``n_missing``: the requests of the cell without an observed value,
* ``value``: their mean (NaN when ``n = 0``),
* ``ss``: their sum of squares about that mean (``sum_k (y_k - ybar)^2``),
* ``vmin`` / ``vmax``: their smallest and largest value (the constancy rules of
  :mod:`audit.stats.degenerate` judge the range and scale of the observations, which these keep; the
  sum of squares cannot tell them exactly),
* ``all01``: whether every value of the cell is 0 or 1 (binary outcomes are fitted by GEE).

Why these are sufficient:

* the random-intercept models (:func:`audit.stats.fastlmm.fit_nested_ri`): the REML/ML criterion
  depends on the data through ``[X y]'[X y]`` and the per-cluster sums of ``[X y]``; within a cell
  ``X`` is constant, so ``sum_k y_k = n ybar`` and ``sum_k y_k^2 = n ybar^2 + ss``;
* cluster-robust OLS: ``X'X``, ``X'y``, the per-cluster score sums ``sum_c x_c (n_c ybar_c - n_c x_c'b)``
  and the residual sum of squares ``sum_c n_c (ybar_c - x_c'b)^2 + ss``;
* GEE with categorical covariates and a 0/1 outcome: the number of ones and zeros of each cell
  (``n ybar`` and ``n (1 - ybar)``); the observations of a cell are exchangeable within their cluster,
  so the cluster's rows are rebuilt exactly, up to their order (which an exchangeable working
  correlation does not see);
* the disparity bootstrap and permutations: the per-(post, variant) sums and counts;
* the paired contrasts: the per-post group means, ``sum n ybar / sum n``.

:func:`cells_from_rows` aggregates a long table of replies (one row per reply and outcome) into cells;
:meth:`audit.store.RunStore.score_cells` does the same in one streaming pass over the run store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Cells", "CELLS", "CELL_STATS", "cells_from_rows", "expand_binary", "cells_binary", "cell_weights"]


@dataclass(frozen=True)
class Cells:
    """The names of the cell statistics' columns (the table's ``outcome`` column holds the cell mean)."""

    n: str = "n"
    missing: str = "n_missing"
    ss: str = "ss"
    lo: str = "vmin"
    hi: str = "vmax"
    binary: str = "all01"


CELLS = Cells()
CELL_STATS = ["n", "n_missing", "ss", "vmin", "vmax", "all01"]


def cells_from_rows(table: pd.DataFrame, keys: list[str], outcome: str = "value") -> pd.DataFrame:
    """One row per distinct ``keys`` of a long table: the keys, ``outcome`` (the cell mean of the observed
    values, NaN when there is none) and :data:`CELL_STATS`. Rows with a missing ``outcome`` count in
    ``n_missing``. The cells come in the order of ``keys`` (sorted)."""
    y = pd.to_numeric(table[outcome], errors="coerce").to_numpy(dtype=float)
    codes = table.groupby(keys, sort=True, observed=True, dropna=False).ngroup().to_numpy()
    k = int(codes.max()) + 1 if len(codes) else 0
    first = np.full(k, len(codes), dtype=np.int64)
    np.minimum.at(first, codes, np.arange(len(codes)))
    out = table.iloc[first][keys].reset_index(drop=True)
    ok = ~np.isnan(y)
    n = np.bincount(codes[ok], minlength=k).astype(float)
    size = np.bincount(codes, minlength=k).astype(float)
    s = np.bincount(codes[ok], y[ok], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
    dev = y[ok] - mean[codes[ok]]
    ss = np.bincount(codes[ok], dev * dev, minlength=k)
    lo = np.full(k, np.inf)
    hi = np.full(k, -np.inf)
    np.minimum.at(lo, codes[ok], y[ok])
    np.maximum.at(hi, codes[ok], y[ok])
    not01 = np.bincount(codes[ok], ~np.isin(y[ok], (0.0, 1.0)), minlength=k)
    out[outcome] = mean
    out["n"] = n.astype(np.int64)
    out["n_missing"] = (size - n).astype(np.int64)
    out["ss"] = ss
    out["vmin"] = np.where(n > 0, lo, np.nan)
    out["vmax"] = np.where(n > 0, hi, np.nan)
    out["all01"] = not01 == 0
    return out


def cell_weights(d: pd.DataFrame, cells: "Cells | None") -> np.ndarray | None:
    """The cells' observation counts as floats, or None when there are no cells or every cell holds one
    observation: the cells are then the observations, and the fits take the row path, number for number
    (the same sums in the same order as an analysis of the rows)."""
    if cells is None:
        return None
    w = d[cells.n].to_numpy(dtype=float)
    return None if np.all(w == 1.0) else w


def cells_binary(d: pd.DataFrame, cells: Cells = CELLS) -> bool:
    """Whether the observed values of the cells ``d`` are exactly the two values 0 and 1 (as
    :func:`audit.stats.gaps.is_binary` of the observations)."""
    seen = d[d[cells.n] > 0]
    return bool(len(seen) and seen[cells.binary].all() and seen[cells.lo].min() == 0.0
                and seen[cells.hi].max() == 1.0)


def expand_binary(y: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The observations of 0/1 cells (mean ``y``, size ``n``): ``(row, value)`` with ``row`` the cell of
    each observation, the ones of a cell before its zeros. Exact: ``n y`` is the cell's count of ones."""
    n = np.asarray(n, dtype=np.int64)
    ones = np.rint(np.asarray(y, dtype=float) * n).astype(np.int64)
    row = np.repeat(np.arange(len(n)), n)
    start = np.repeat(np.cumsum(n) - n, n)
    value = ((np.arange(len(row)) - start) < np.repeat(ones, n)).astype(float)
    return row, value
