"""The compiled gather of the permutation test's group sums equals the numpy path, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.stats import disparity as dm
from audit.stats import gather_kernel as gk
from audit.stats.simulate import simulate_audit_table


def _class(rng, n, k, G, same_labels, counts):
    """One class of n posts of k cells: sums (a zero column k), labels, and optionally unequal counts."""
    L = np.tile(rng.permutation(G)[:k], (n, 1)) if same_labels else np.array([rng.permutation(G)[:k] for _ in range(n)])
    J, idx = dm._gather_tables(k, L, G)
    Sx = np.zeros((n, k + 1))
    Sx[:, :k] = rng.normal(size=(n, k)) * 10.0 ** rng.integers(-3, 4, size=(n, k))  # magnitudes that round
    Cx = None
    if counts:
        Cx = np.zeros((n, k + 1))
        Cx[:, :k] = rng.integers(1, 5, size=(n, k))
    return J, idx, Sx, Cx


@pytest.mark.parametrize("same_labels", [True, False])
@pytest.mark.parametrize("counts", [True, False])
@pytest.mark.parametrize("k,G", [(8, 8), (3, 5), (2, 2)])
def test_compiled_gather_equals_numpy_bit_for_bit(monkeypatch, same_labels, counts, k, G):
    assert gk.compiled() is not None  # numba is a dependency: the compiled path is the one tested here
    monkeypatch.setattr(gk, "GATHER_PERMS", 3)  # the numpy path in several rounds with a short last one
    rng = np.random.default_rng(k * 10 + G + 2 * same_labels + counts)
    J, idx, Sx, Cx = _class(rng, 157, k, G, same_labels, counts)
    assert (idx is None) == same_labels
    o = rng.integers(0, J.shape[0], size=(11, 157))
    tot, cnt = gk.gathered_sums(o, Sx, Cx, J, idx, G)
    ref_tot, ref_cnt = gk.numpy_gathered_sums(np.ascontiguousarray(o.T), Sx, Cx, J, idx, G)
    assert tot.tobytes() == ref_tot.tobytes()  # the same binary64 numbers, not merely close ones
    assert (cnt is None) == (Cx is None)
    if Cx is not None:
        assert cnt.tobytes() == ref_cnt.tobytes()
    # the test can fail: the sums of another draw differ
    other, _ = gk.gathered_sums((o + 1) % J.shape[0], Sx, Cx, J, idx, G)
    assert not np.array_equal(other, tot)


def test_post_order_of_the_additions_is_kept():
    """Floating-point addition is not associative: 1e16 + 1 - 1e16 is 0 added in post order and 1 in
    another; the kernel must give numpy's (post order) number."""
    J = np.array([[0]], dtype=np.uint8)
    Sx = np.array([[1e16, 0.0], [1.0, 0.0], [-1e16, 0.0]])
    tot, _ = gk.gathered_sums(np.zeros((1, 3), dtype=np.int64), Sx, None, J, None, 1)
    assert tot[0, 0] == (1e16 + 1.0) - 1e16 == 0.0


def test_disparity_without_numba_gives_the_same_result(monkeypatch):
    t = simulate_audit_table(n_posts=60, groups=["A", "B", "C"], gaps={"A": 0.2, "B": -0.1}, seed=3)
    kw = dict(outcome="value", group="group", control="control", cluster="post_id", inner="variant_id",
              n_boot=199, n_perm=199, seed=5)
    with_kernel = dm.max_min_disparity(t, **kw)
    numpy_path, calls = gk.numpy_gathered_sums, []

    def spy(*args):
        calls.append(1)
        return numpy_path(*args)

    monkeypatch.setattr(gk, "numpy_gathered_sums", spy)
    monkeypatch.setattr(gk, "compiled", lambda: None)
    without = dm.max_min_disparity(t, **kw)
    assert calls  # the numpy path ran
    assert with_kernel == without  # every key, p-value and interval the same


def test_kernel_compiles_without_a_writable_cache(monkeypatch):
    """Where numba finds no writable place for its cache, the kernel is compiled per process, same numbers."""
    import numba

    real = numba.njit
    calls = []

    def njit(*args, **kw):
        calls.append(kw.get("cache", False))
        if kw.get("cache"):
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", njit)
    gk.compiled.cache_clear()
    try:
        kernel = gk.compiled()
        J = np.array([[0, 1]], dtype=np.uint8)
        Sx = np.array([[1.5, 2.5], [0.25, 4.0]])
        tot, _ = gk.gathered_sums(np.zeros((1, 2), dtype=np.int64), Sx, None, J, None, 2)
    finally:
        gk.compiled.cache_clear()
    assert kernel is not None and calls == [True, False]
    assert tot.tolist() == [[1.75, 6.5]]
