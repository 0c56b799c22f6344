"""The fast paths of the max - min disparity test (audit.stats.disparity, issue 31) give the numbers of the
straightforward computation they replaced: the permuted group sums gathered through order tables (and
the constant counts summed once) against one weighted ``bincount`` over every (permutation, post, cell),
and the bootstrap weights counted in chunks against counting all draws at once. Same seed, same draws,
same numbers, on a messy cell table that sends posts down every path."""

import numpy as np
import pandas as pd
import pytest

from audit.stats import disparity as dm
from audit.stats import gather_kernel


def _reference_post_weights(rng, P, n_boot):
    """The bootstrap weights as they were computed before issue 31: every draw at once, then counted."""
    idx = rng.integers(0, P, size=(n_boot, P)) + (P * np.arange(n_boot))[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * P).reshape(n_boot, P).astype(float)


def _reference_permuted_ranges(sp, sc, pp, gg, P, G, n_perm, rng):
    """The permutation test as it was before issue 31: one weighted bincount per class and block."""
    ks = np.bincount(pp, minlength=P)
    first = np.concatenate([[0], np.cumsum(ks)[:-1]])
    classes = []
    for k in np.unique(ks[ks > 0]):
        posts = np.flatnonzero(ks == k)
        cells = (first[posts][:, None] + np.arange(k)[None, :])
        table = dm._all_orders(int(k)) if k <= dm._PERM_TABLE_MAX else None
        L = gg[cells]
        if table is not None and (L == L[:1]).all():
            table = L[0][table]
            L = None
        classes.append((int(k), sp[cells], sc[cells], L, table))
    block = max(1, dm._PERM_BLOCK_CELLS // max(len(pp), 1))
    Dp = np.empty(n_perm)
    for start in range(0, n_perm, block):
        b = min(block, n_perm - start)
        tot = np.zeros(b * G)
        cnt = np.zeros(b * G)
        for k, S, C, L, table in classes:
            n = len(S)
            if L is None:
                labels = table[rng.integers(0, len(table), size=(b, n))]
            else:
                orders = (table[rng.integers(0, len(table), size=(b, n))] if table is not None
                          else np.argsort(rng.random((b, n, k)), axis=2))
                labels = L[np.arange(n)[None, :, None], orders]
            labels = (labels + G * np.arange(b)[:, None, None]).ravel()
            tot += np.bincount(labels, np.broadcast_to(S, (b, n, k)).ravel(), b * G)
            cnt += np.bincount(labels, np.broadcast_to(C, (b, n, k)).ravel(), b * G)
        with np.errstate(invalid="ignore", divide="ignore"):
            mp = (tot / cnt).reshape(b, G)
        Dp[start:start + b] = np.nanmax(mp, axis=1) - np.nanmin(mp, axis=1)
    return Dp


GROUPS = list("ABCDEFGHIJ")


def _messy_cells(seed=11):
    """A cell table (one row per variant, style, model and outcome; ``n`` replies of mean ``value``)
    whose posts differ in every way the permutation code distinguishes:

    - 30 posts with the groups A..H in the same order, 3 replies a cell (same labels, equal counts);
    - 20 posts with 6 of the 10 groups, in random order, 1-4 replies a cell (own labels, unequal counts);
    - 3 posts with 5 of the groups, 2 replies a cell (own labels, equal counts);
    - 5 posts A, A, B, C (a group twice: the general bincount path) and 4 posts with 5 cells and a
      duplicated group in a random order;
    - one post with 10 cells (more than 8: orders by sorting uniform keys) and one with a single cell;
    - a control in most posts, two styles of some variants (their rows make one cell), two models, and
      the outcome ``y2`` missing on some rows (its cells, and so its classes of posts, differ from y1's).
    """
    rng = np.random.default_rng(seed)
    posts = []
    posts += [list("ABCDEFGH")] * 30
    posts += [list(rng.choice(GROUPS, 6, replace=False)) for _ in range(20)]
    posts += [list(rng.choice(GROUPS, 5, replace=False)) for _ in range(3)]
    posts += [list("AABC")] * 5
    posts += [list(rng.permutation(list("DDEFG"))) for _ in range(4)]
    posts += [GROUPS[:], ["C"]]
    counts = ([[3] * 8] * 30 + [list(rng.integers(1, 5, 6)) for _ in range(20)] + [[2] * 5] * 3
              + [[3] * 4] * 5 + [list(rng.integers(1, 4, 5)) for _ in range(4)] + [[2] * 10, [4]])
    effect = dict(zip(GROUPS, rng.normal(0, 0.04, len(GROUPS))))
    rows = []
    for p, (groups, ns) in enumerate(zip(posts, counts)):
        level = rng.normal(0, 1)
        variants = [("control", 2)] * (p % 7 != 0) + list(zip(groups, ns))
        for v, (g, n) in enumerate(variants):
            styles = ["plain", "warm"] if v % 3 == 0 and n > 1 else ["plain"]
            for s, style in enumerate(styles):
                m = n if len(styles) == 1 else (n // 2 if s == 0 else n - n // 2)
                for model in ("m0", "m1"):
                    for outcome in ("y1", "y2"):
                        value = level + effect.get(g, 0.0) + rng.normal(0, 0.5)
                        if outcome == "y2" and (p + v) % 5 == 0:
                            value = np.nan
                        rows.append(dict(post_id=f"p{p:03d}", variant_id=f"p{p:03d}-v{v}", group=g, style=style,
                                         model_label=model, outcome=outcome, value=value, n=int(m)))
    return pd.DataFrame(rows)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks small enough that every loop runs several times with a short last round."""
    monkeypatch.setattr(dm, "_PERM_BLOCK_CELLS", 2_000)
    monkeypatch.setattr(gather_kernel, "GATHER_PERMS", 3)
    monkeypatch.setattr(dm, "_BOOT_ROWS", 7)


def _sorted_cells(d, outcome):
    d = d[(d["outcome"] == outcome) & (d["group"] != "control")]
    d = d[d["value"].notna()]
    sums, counts, cpost, cgroup, labels, *_ = dm._cells(d, "value", "group", "post_id", "variant_id", "n")
    order = np.lexsort((np.arange(len(cpost)), cpost))
    return sums[order], counts[order], cpost[order], cgroup[order], int(cpost.max()) + 1, len(labels)


@pytest.mark.parametrize("outcome", ["y1", "y2"])
def test_gathered_permutations_equal_the_bincount_of_every_cell(small_blocks, monkeypatch, outcome):
    t = _messy_cells()
    sp, sc, pp, gg, P, G = _sorted_cells(t[t["model_label"] == "m0"], outcome)
    paths = []
    real = dm.gathered_sums

    def spy(o, Sx, Cx, J, idx, G):
        paths.append(("same labels" if idx is None else "own labels", "counts" if Cx is not None else "constant"))
        return real(o, Sx, Cx, J, idx, G)

    monkeypatch.setattr(dm, "gathered_sums", spy)
    for seed in (0, 1, 2):
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        fast = dm._permuted_ranges(sp, sc, pp, gg, P, G, 101, r1)
        ref = _reference_permuted_ranges(sp, sc, pp, gg, P, G, 101, r2)
        np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-15)
        assert r1.integers(0, 2**62) == r2.integers(0, 2**62)  # the same draws were taken, in the same order
    # the messy table went down the gathered paths (the rest, duplicated groups and > 8 cells, by bincount)
    assert {("same labels", "constant"), ("own labels", "counts")} <= set(paths)
    # and a wrong draw (another seed) gives other permutations: the comparison would see it
    other = _reference_permuted_ranges(sp, sc, pp, gg, P, G, 101, np.random.default_rng(99))
    assert not np.allclose(dm._permuted_ranges(sp, sc, pp, gg, P, G, 101, np.random.default_rng(0)), other)


def test_bootstrap_weights_counted_in_chunks_are_the_draws_counted_at_once(small_blocks):
    for P, n_boot in [(7, 50), (61, 23), (1, 3)]:
        r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
        np.testing.assert_array_equal(dm._post_weights(r1, P, n_boot), _reference_post_weights(r2, P, n_boot))
        assert r1.integers(0, 2**62) == r2.integers(0, 2**62)


def test_disparity_table_of_a_messy_release_is_unchanged(small_blocks, monkeypatch):
    t = _messy_cells()
    fast = dm.disparity_table(t, control="control", seed=3, n_boot=99, n_perm=199, weight="n")
    monkeypatch.setattr(dm, "_permuted_ranges", _reference_permuted_ranges)
    monkeypatch.setattr(dm, "_post_weights", _reference_post_weights)
    ref = dm.disparity_table(t, control="control", seed=3, n_boot=99, n_perm=199, weight="n")
    assert len(fast) == 4 and fast["p_value"].notna().all()
    num = ["max_mean", "min_mean", "estimate", "ci_low", "ci_high", "ratio", "ratio_ci_low", "ratio_ci_high",
           "p_value"]
    pd.testing.assert_frame_equal(fast.drop(columns=num), ref.drop(columns=num))
    np.testing.assert_allclose(fast[num].to_numpy(float), ref[num].to_numpy(float), rtol=1e-12, atol=1e-15)
    assert (fast["p_value"] == ref["p_value"]).all()


def _reference_cells(d, outcome, group, cluster, unit, weight=None):
    """The cells as they were numbered before issue 31: factorized "post\\x1funit" strings, np.unique groups."""
    y = d[outcome].to_numpy(dtype=float)
    w = d[weight].to_numpy(dtype=float) if weight else None
    if w is not None and np.all(w == 1.0):
        w = None
    post = pd.factorize(d[cluster].astype(str))[0]
    if w is None:
        yc = y - (np.bincount(post, y) / np.bincount(post))[post]
    else:
        yc = w * (y - (np.bincount(post, w * y) / np.bincount(post, w))[post])
    u = d[unit].astype(str) if unit in d.columns else pd.Series(np.arange(len(d)).astype(str), index=d.index)
    key = pd.factorize(pd.Series(post).astype(str) + "\x1f" + u.to_numpy())[0]
    labels, gcode = np.unique(d[group].astype(str).to_numpy(), return_inverse=True)
    nu = key.max() + 1
    cell_post, cell_group = np.zeros(nu, dtype=int), np.zeros(nu, dtype=int)
    cell_post[key], cell_group[key] = post, gcode
    return np.bincount(key, yc, nu), np.bincount(key, w, nu) if w is not None else np.bincount(key, minlength=nu), \
        cell_post, cell_group, labels


@pytest.mark.parametrize("unit, weight", [("variant_id", "n"), ("variant_id", None), ("", None)])
def test_cells_numbered_on_integer_codes_as_on_strings(unit, weight):
    t = _messy_cells()
    d = t[(t["outcome"] == "y2") & (t["model_label"] == "m1") & (t["group"] != "control") & t["value"].notna()]
    d = d.sample(frac=1.0, random_state=4).astype({"group": "category", "post_id": "category"})  # rows shuffled
    got = dm._cells(d, "value", "group", "post_id", unit, weight)
    ref = _reference_cells(d, "value", "group", "post_id", unit, weight)
    for a, b in zip(got[:4], ref[:4]):
        np.testing.assert_array_equal(a, b)
    assert list(got[4]) == list(ref[4]) and got[4].dtype == ref[4].dtype


def test_blocks_and_their_seeds_follow_the_groupby_order():
    """disparity_table takes its (outcome, model) blocks by group number: the same blocks, in the groupby's
    order (categories in their own order, a row with a missing key in none), each with seed + i."""
    t = _messy_cells()
    t.loc[t.index[:3], "model_label"] = None
    t["model_label"] = pd.Categorical(t["model_label"], categories=["m1", "m0", "m9"])
    got = dm.disparity_table(t, control="control", seed=7, n_boot=49, n_perm=49, weight="n")
    want = []
    for i, ((outcome, model), d) in enumerate(t.groupby(["outcome", "model_label"], sort=True)):
        r = dm.max_min_disparity(d, outcome="value", control="control", inner="variant_id", n_boot=49, n_perm=49,
                                 seed=7 + i, weight="n")
        want.append((outcome, model, r["estimate"], r["ci_low"], r["p_value"], r["seed"]))
    got_rows = got[["outcome", "model_label", "estimate", "ci_low", "p_value", "seed"]].to_numpy()
    assert [tuple(x) for x in got_rows] == want
    assert [m for _, m, *_ in want] == ["m1", "m0", "m1", "m0"]
