"""The permutation test's gathered group sums (:func:`audit.stats.disparity._permuted_ranges`), compiled.

For one class of posts (n posts of k <= 8 cells, each group's label at most once in a post), a block
of b permutations is b x n drawn order indices ``o``; permutation i gives group g the sum
``S*[i, g] = sum_n Sx[n, c(i, n, g)]`` over the posts, where the cell ``c`` is ``J[o[i, n], g]``
(every post has the same labels) or ``J[o[i, n], idx[n, g]]`` (``J`` the inverse orders, ``idx`` the
index of group g in post n's labels; column k of ``Sx`` is a zero for an absent group). Likewise the
counts from ``Cx`` where the posts' cells differ in their counts.

Why compiled: at a million replies this is ~118M gathered values per test (7,400 posts, 8 groups,
1,999 permutations), 50 tests per analysis; numpy's ``take`` and ``add.reduce`` spent ~0.45 s per test
on its temporaries, the loop below ~0.1 s (numba, https://numba.pydata.org). It is compiled on first use
in a process and cached by numba beside this file (~0.8 s once, then ~0.3 s to load per process): not
before the analysis forks, so that the forked process loads it while this one fits the gap tests.

Same numbers: each sum is added post after post (``n = 0, 1, ...``) starting from the first post's
value, the order in which numpy's ``add.reduce`` over the post axis and ``bincount`` add them, so the
result is the same binary64 number, bit for bit (``tests/test_gather_kernel.py``). No ``fastmath``:
it would let the compiler reorder the additions. Where numba cannot be imported, :func:`gathered_sums`
runs the numpy path (:func:`numpy_gathered_sums`), which gives the same numbers more slowly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["gathered_sums", "numpy_gathered_sums", "compiled"]

#: Permutations whose group sums the numpy path gathers at once (a few MB of temporaries).
GATHER_PERMS = 16


def _kernel_source(o, Sx, Cx, J, idx, G):  # pragma: no cover - runs compiled (numba), tested through it
    b, n = o.shape
    tot = np.zeros((b, G))
    cnt = np.zeros((b, G))
    by_index = idx.shape[0] > 0
    counts = Cx.shape[0] > 0
    acc_s = np.zeros(G)
    acc_c = np.zeros(G)
    for i in range(b):
        for p in range(n):
            row = o[i, p]
            for g in range(G):
                c = J[row, idx[p, g]] if by_index else J[row, g]
                if p == 0:
                    acc_s[g] = Sx[p, c]
                    if counts:
                        acc_c[g] = Cx[p, c]
                else:
                    acc_s[g] += Sx[p, c]
                    if counts:
                        acc_c[g] += Cx[p, c]
        for g in range(G):
            tot[i, g] = acc_s[g]
            if counts:
                cnt[i, g] = acc_c[g]
    return tot, cnt


@lru_cache(maxsize=None)
def compiled():
    """The compiled kernel, or None where numba cannot be imported (the numpy path is used)."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; a platform without its wheels
        return None
    try:
        return numba.njit(cache=True, nogil=True)(_kernel_source)
    except RuntimeError:  # no writable place for numba's cache (a read-only install, no home): compiled per process
        return numba.njit(nogil=True)(_kernel_source)


def _typed(o, Sx, Cx, J, idx):
    """The argument types the kernel is compiled for (one specialisation: no recompiling per call)."""
    G = J.shape[1] if idx is None else idx.shape[1]
    return (np.ascontiguousarray(o, dtype=np.int64), np.ascontiguousarray(Sx, dtype=np.float64),
            np.ascontiguousarray(Cx if Cx is not None else np.zeros((0, Sx.shape[1])), dtype=np.float64),
            np.ascontiguousarray(J, dtype=np.uint8),
            np.ascontiguousarray(idx if idx is not None else np.zeros((0, G), dtype=np.int64), dtype=np.int64))


def gathered_sums(o: np.ndarray, Sx: np.ndarray, Cx: np.ndarray | None, J: np.ndarray, idx: np.ndarray | None,
                  G: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(b x G) permuted group sums, and counts unless ``Cx`` is None, for the order indices ``o``
    (b permutations x n posts); the formula is in the module docstring."""
    kernel = compiled()
    if kernel is None:
        return numpy_gathered_sums(np.ascontiguousarray(o.T), Sx, Cx, J, idx, G)
    if J.max(initial=0) > 255:  # pragma: no cover - J indexes at most k + 1 <= 9 cells
        raise ValueError("gathered_sums: a cell index above 255")
    tot, cnt = kernel(*_typed(o, Sx, Cx, J, idx), int(G))
    return tot, (cnt if Cx is not None else None)


def numpy_gathered_sums(o: np.ndarray, Sx: np.ndarray, Cx: np.ndarray | None, J: np.ndarray,
                        idx: np.ndarray | None, G: int) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`gathered_sums` in numpy, for order indices ``o`` laid out posts x b, :data:`GATHER_PERMS`
    permutations at a time: the path where numba is missing, and the reference the kernel must equal."""
    n, b = o.shape
    k1 = Sx.shape[1]
    base = (np.arange(n) * k1)[:, None, None]
    Sf, Cf = Sx.ravel(), None if Cx is None else Cx.ravel()
    tot = np.empty((b, G))
    cnt = None if Cx is None else np.empty((b, G))
    step = GATHER_PERMS
    pos = np.empty((n, min(step, b), G), dtype=np.intp)
    val = np.empty((n, min(step, b), G))
    for s in range(0, b, step):
        e = min(b, s + step)
        p, v = pos[:, :e - s], val[:, :e - s]
        if idx is None:  # the same labels in every post: one table row per drawn order
            cell = np.take(J, o[:, s:e], axis=0)                                   # (n, m, G) uint8
        else:            # the inverse order's entry at each group's index in the post's labels
            cell = np.take(J.ravel(), (o[:, s:e] * k1)[:, :, None] + idx[:, None, :])
        np.add(cell, base, out=p, casting="unsafe")
        np.take(Sf, p, out=v)
        np.add.reduce(v, axis=0, out=tot[s:e])
        if Cf is not None:
            np.take(Cf, p, out=v)
            np.add.reduce(v, axis=0, out=cnt[s:e])
    return tot, cnt
