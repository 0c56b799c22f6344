"""The design classification of integer-coded rows: the counted (dense codes) and sorted paths agree."""

from __future__ import annotations

import numpy as np
import pytest

from audit.stats.designs import design_of_codes


def _by_sets(g, c, w):
    """The classification written out with Python sets: the reference."""
    groups_of: dict[int, set] = {}
    rows_of: dict[int, float] = {}
    for gi, ci, wi in zip(g.tolist(), c.tolist(), w.tolist()):
        groups_of.setdefault(ci, set()).add(gi)
        rows_of[ci] = rows_of.get(ci, 0.0) + wi
    n = len(groups_of)
    shared = sum(len(s) > 1 for s in groups_of.values())
    kind = "counterfactual" if shared == n and n else ("observational" if shared == 0 else "mixed")
    return kind, n, int(w.sum()), shared, bool(len(w) and max(rows_of.values()) > 1)


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_design_of_codes_equals_its_definition(sparse, share):
    rng = np.random.default_rng(int(share * 10) + sparse)
    n_clusters = 300
    c = np.repeat(np.arange(n_clusters), 4)
    g = np.where(rng.random(len(c)) < share, rng.integers(0, 5, len(c)), c % 5)  # shared clusters: several groups
    w = rng.integers(1, 3, len(c)).astype(float)
    keep = rng.random(len(c)) < 0.7  # a subset: unused cluster codes in between
    g, c, w = g[keep], c[keep], w[keep]
    if sparse:  # codes far apart (not a categorical's): the sorted path
        c = c * 1_000_003 + 17
    info = design_of_codes(g, c, w)
    assert (info.kind, info.n_clusters, info.n_rows, info.shared_clusters, info.repeats) == _by_sets(g, c, w)
