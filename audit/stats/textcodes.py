"""Text labels of a column without a conversion per row (issue 31).

The analysis's cell table keeps its labels as categoricals (:func:`audit.stats.stage.analysis_cells`).
``col.astype(str)`` converts every row (pandas' arrow-backed strings: seconds at a million cells), and a
group-by or ``np.unique`` over text sorts or hashes every row again. Both helpers here convert each
distinct label once and keep the rows as integer codes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["as_text", "block_numbers", "block_rows", "first_rows", "text_codes", "text_factorize"]


def as_text(col: pd.Series) -> np.ndarray:
    """``col.astype(str).to_numpy()`` as an object array of ``str``, from a categorical's categories (each
    converted once) when ``col`` is one without missing values."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        if len(codes) and codes.min() >= 0:
            return np.asarray(col.cat.categories.astype(str).to_numpy(), dtype=object)[codes]
    elif col.dtype == object and pd.api.types.infer_dtype(col, skipna=False) == "string":
        return col.to_numpy()  # already str, every one
    return np.asarray(col.astype(str).to_numpy(), dtype=object)


def text_codes(col: pd.Series) -> np.ndarray:
    """The codes of ``np.unique(col.astype(str), return_inverse=True)``: each row's label as its rank among
    the distinct texts (sorted), from a categorical's codes when ``col`` is one without missing values."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        if len(codes) and codes.min() >= 0:
            present = np.flatnonzero(np.bincount(codes, minlength=len(col.cat.categories)))  # ranked among these
            texts = np.asarray(col.cat.categories[present].astype(str).to_numpy(), dtype=object)
            if len(set(texts)) == len(texts):  # else two categories read the same: merge them below
                rank = np.empty(len(col.cat.categories), dtype=np.intp)
                rank[present] = np.argsort(np.argsort(texts, kind="stable"), kind="stable")
                return rank[codes]
    return pd.factorize(as_text(col), sort=True)[0].astype(np.intp)


def text_factorize(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``pd.factorize(col.astype(str))``: codes and the distinct texts in order of appearance, from a
    categorical's codes when ``col`` is one without missing values (no text hashed per row)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()
        if len(codes) and codes.min() >= 0:
            seen = pd.unique(codes)  # the categories in order of appearance
            tcode, texts = pd.factorize(np.asarray(col.cat.categories[seen].astype(str).to_numpy(), dtype=object))
            remap = np.full(len(col.cat.categories), -1, dtype=np.intp)
            remap[seen] = tcode  # categories that read the same share a code
            return remap[codes], np.asarray(texts, dtype=object)
    if isinstance(col.dtype, pd.StringDtype) and not col.isna().any():  # pandas' own strings: hashed as they are
        codes, texts = pd.factorize(col)
        return codes.astype(np.intp), np.asarray(texts.to_numpy(dtype=object), dtype=object)
    codes, texts = pd.factorize(as_text(col))
    return codes.astype(np.intp), np.asarray(texts, dtype=object)


def block_numbers(table: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, int]:
    """``(table.groupby(keys, sort=True).ngroup(), ngroups)`` with -1 for a row with a missing key: each
    row's block, blocks numbered in the sorted order of their keys. From the categoricals' codes when every
    key is one (a group-by built ~150 MB of index arrays for a million-reply cell table)."""
    cols = [table[k] for k in keys]
    if cols and all(isinstance(c.dtype, pd.CategoricalDtype) for c in cols):
        combined = np.zeros(len(table), dtype=np.int64)
        missing = np.zeros(len(table), dtype=bool)
        for c in cols:  # mixed radix over the categories, the first key most significant: the sort order
            codes = c.cat.codes.to_numpy()
            missing |= codes < 0
            combined *= len(c.cat.categories)
            combined += codes
        size = int(np.prod([len(c.cat.categories) for c in cols], dtype=np.float64))
        if size <= 4 * len(table) + 65_536:  # few combinations: numbered through a table of them, not sorted
            combined[missing] = size          # (np.unique sorted 3.3M codes in ~0.3 s, 4 times an analysis)
            present = np.bincount(combined, minlength=size + 1)[:size] > 0
            renumber = np.append(np.cumsum(present) - 1, -1)
            return renumber[combined], int(present.sum())
        combined[missing] = -1
        present, numbers = np.unique(combined[~missing], return_inverse=True)
        out = np.full(len(table), -1, dtype=np.int64)
        out[~missing] = numbers
        return out, len(present)
    gb = table.groupby(keys, sort=True)
    numbers = gb.ngroup().to_numpy()
    if numbers.dtype.kind == "f":  # rows with a missing key: NaN, in no block
        numbers = np.where(np.isnan(numbers), -1, numbers)
    return numbers.astype(np.int64), gb.ngroups  # a copy of its own (pandas' array is read-only)


def block_rows(table: pd.DataFrame, keys: list[str], keep: np.ndarray | None = None):
    """The row positions of each block of ``keys`` (:func:`block_numbers`), one array a block, in the sorted
    order of a group-by; with ``keep``, only the kept rows, and a block without one is skipped. Taking each
    block out by its positions copies one block at a time (iterating a group-by first copies the whole
    table in sorted order)."""
    numbers, n_blocks = block_numbers(table, keys)
    if keep is not None:
        numbers[~keep] = -1
    order = np.argsort(numbers, kind="stable")
    bounds = np.searchsorted(numbers[order], np.arange(n_blocks + 1))
    for k in range(n_blocks):
        if bounds[k + 1] > bounds[k]:
            yield order[bounds[k]:bounds[k + 1]]


def first_rows(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``table.drop_duplicates(keys)``: the first row of each distinct combination of ``keys``, in the
    table's order. From the categoricals' codes when every key is one (hashing the rows of a million-reply
    cell table took ~0.2 s a call): a missing value is a value of its own, as for ``drop_duplicates``."""
    cols = [table[k] for k in keys]
    if not cols or not all(isinstance(c.dtype, pd.CategoricalDtype) for c in cols):
        return table.drop_duplicates(keys)
    combined = np.zeros(len(table), dtype=np.int64)
    size = 1
    for c in cols:  # mixed radix; code -1 (missing) shifted to 0
        combined *= len(c.cat.categories) + 1
        combined += c.cat.codes.to_numpy().astype(np.int64) + 1
        size *= len(c.cat.categories) + 1
    if size <= 4 * len(table) + 65_536:
        first = np.full(size, len(table), dtype=np.int64)
        np.minimum.at(first, combined, np.arange(len(table), dtype=np.int64))
        pos = np.sort(first[first < len(table)])
    else:
        pos = np.sort(np.unique(combined, return_index=True)[1])
    return table.iloc[pos]
