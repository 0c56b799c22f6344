"""The fast paths of the cell fits (issue 31): sums by distinct design row in the exact random-intercept
fit, integer-coded labels, and the closed-form paired t-test, each against the path it replaces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest

from audit.stats import fastlmm
from audit.stats.fastlmm import _design_rows, _labels, fit_nested_ri
from audit.stats.models_compare import _largest_sum, _sums
from audit.stats.paired import _paired_t


def _messy_design(seed: int, *, inner: bool, weighted: bool, factor: bool):
    """Posts x groups (x styles) x samples with cells left out at random, unequal cell sizes, a planted
    post and variant effect, and text labels."""
    rng = np.random.default_rng(seed)
    posts, groups, styles = int(rng.integers(8, 30)), int(rng.integers(2, 6)), 2 if factor else 1
    post, grp, sty = (a.ravel() for a in np.meshgrid(np.arange(posts), np.arange(groups), np.arange(styles),
                                                      indexing="ij"))
    if inner:  # replicate samples of every variant
        rep = int(rng.integers(2, 4))
        post, grp, sty = np.repeat(post, rep), np.repeat(grp, rep), np.repeat(sty, rep)
    keep = rng.random(len(post)) > 0.15
    post, grp, sty = post[keep], grp[keep], sty[keep]
    cols = [np.ones(len(post))] + [(grp == g) * 1.0 for g in range(1, groups)]
    if factor:
        cols.append((sty == 1) * 1.0)
    X = np.column_stack(cols)
    variant = post * 100 + grp * 10 + sty
    y = (X @ rng.normal(size=X.shape[1]) + rng.normal(0, 0.7, posts)[post]
         + rng.normal(0, 0.4, 10_000)[variant % 10_000] + rng.normal(size=len(post)))
    w = rng.integers(1, 5, len(post)).astype(float) if weighted else None
    ss = float(rng.uniform(0, 20)) if weighted else 0.0
    labels = np.array([f"post {p:03d}" for p in post], dtype=object)
    inn = np.array([f"v{v}" for v in variant], dtype=object) if inner else None
    return y, X, labels, inn, w, ss


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("reml", [True, False])
def test_sums_by_design_row_fit_as_the_rows(seed, reml, monkeypatch):
    inner, weighted, factor = bool(seed % 2), seed % 3 != 0, seed >= 3
    y, X, labels, inn, w, ss = _messy_design(seed, inner=inner, weighted=weighted, factor=factor)
    fast = fit_nested_ri(y, X, labels, inn, reml=reml, weights=w, within_ss=ss)
    monkeypatch.setattr(fastlmm, "_MAX_DESIGN_ROWS", 0)  # every design row distinct: the row-wise sums
    rows = fit_nested_ri(y, X, labels, inn, reml=reml, weights=w, within_ss=ss)
    # the same criterion (sums in another order: rounding), so the same optimum to the optimiser's tolerance
    assert fast.criterion == pytest.approx(rows.criterion, rel=1e-12)
    np.testing.assert_allclose(fast.params, rows.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fast.bse, rows.bse, rtol=1e-6)
    assert (fast.n_obs, fast.n_groups, fast.n_inner, fast.singular) == (rows.n_obs, rows.n_groups, rows.n_inner,
                                                                        rows.singular)


def test_design_rows_found_exactly_or_not_at_all():
    rng = np.random.default_rng(3)
    D = np.array([[1.0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 0.5, -2.25]])
    idx = rng.integers(0, 4, 500)
    got = _design_rows(D[idx])
    assert got is not None
    rows, r = got
    np.testing.assert_array_equal(rows[r], D[idx])
    assert len(rows) == 4
    # a continuous covariate (more distinct rows than the limit) and a missing value: the row-wise path
    assert _design_rows(rng.normal(size=(fastlmm._MAX_DESIGN_ROWS + 1, 2))) is None
    bad = D[idx].copy()
    bad[7, 1] = np.nan
    assert _design_rows(bad) is None


def test_labels_code_as_np_unique():
    rng = np.random.default_rng(0)
    for values in (np.array([f"p{i}" for i in rng.integers(0, 40, 300)], dtype=object),
                   rng.integers(-5, 50, 300), np.array(["b", " a", "A", "a ", "b"], dtype=object)):
        codes, n = _labels(values)
        uniq, inv = np.unique(values, return_inverse=True)
        np.testing.assert_array_equal(codes, inv.ravel())
        assert n == len(uniq)


def test_paired_t_is_pingouins_paired_ttest():
    rng = np.random.default_rng(11)
    for n in (2, 3, 17, 250):
        x = rng.normal(size=n)
        y = 0.6 * x + rng.normal(0.3, 1, n)
        ref = pg.ttest(x, y, paired=True).iloc[0]
        got = _paired_t(x, y)
        assert got["t"] == pytest.approx(float(ref["T"]), rel=1e-12)
        assert got["dof"] == float(ref["dof"])
        assert got["p_value"] == pytest.approx(float(ref["p_val"]), rel=1e-12)
        assert got["cohen_d"] == pytest.approx(float(ref["cohen_d"]), rel=1e-12)
        assert [got["ci_low"], got["ci_high"]] == pytest.approx(list(ref["CI95"]), rel=1e-12)


def test_coded_group_sums_are_groupby_sums():
    rng = np.random.default_rng(5)
    d = pd.DataFrame({"v": rng.choice(["a", "b", "c d"], 400), "m": pd.Categorical(rng.choice(["m1", "m2"], 400)),
                      "s": rng.choice(["x", None], 400), "n": rng.integers(0, 5, 400)})
    ref = d.groupby(["v", "m", "s"], observed=True)["n"].sum()
    np.testing.assert_array_equal(np.sort(_sums(d, ["v", "m", "s"], "n")), np.sort(ref.to_numpy()))
    assert _largest_sum(d, ["v", "m"], None) == d.groupby(["v", "m"], observed=True).size().max()


def test_design_given_by_its_distinct_rows_fits_as_the_matrix():
    y, X, labels, inn, w, ss = _messy_design(4, inner=True, weighted=True, factor=True)
    D, r = np.unique(X, axis=0, return_inverse=True)
    D = np.vstack([D, np.full(X.shape[1], 7.0)])  # a row no observation has: left out
    a = fit_nested_ri(y, X, labels, inn, weights=w, within_ss=ss)
    b = fit_nested_ri(y, (D, r.ravel()), labels, inn, weights=w, within_ss=ss)
    np.testing.assert_allclose(b.params, a.params, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(b.bse, a.bse, rtol=1e-6)
    assert b.criterion == pytest.approx(a.criterion, rel=1e-12)


def test_text_codes_are_those_of_the_texts():
    from audit.stats.textcodes import as_text, text_codes, text_factorize

    rng = np.random.default_rng(2)
    raw = rng.choice(["b", "a ", "A", "10", "9"], 200)
    cols = [pd.Series(raw, dtype=object), pd.Series(raw, dtype="string"), pd.Series(pd.Categorical(raw)),
            pd.Series(pd.Categorical(raw, categories=["b", "a ", "A", "10", "9", "unused"])),
            pd.Series(rng.choice([1, 10, 2], 200)).astype("category"),  # texts sort otherwise than numbers
            pd.Series(pd.Categorical([1, "1", 2, 1, "2"] * 4))]  # categories that read the same
    for col in cols:
        text = col.astype(str).to_numpy()
        np.testing.assert_array_equal(as_text(col), text)
        np.testing.assert_array_equal(text_codes(col), np.unique(text, return_inverse=True)[1].ravel())
        codes, uniq = text_factorize(col)
        ref_codes, ref_uniq = pd.factorize(text)
        np.testing.assert_array_equal(codes, ref_codes)
        assert list(uniq) == list(ref_uniq)


def test_block_numbers_from_category_codes_equal_the_groupby():
    """``block_numbers`` (the analysis's (outcome, model) blocks from the categoricals' codes) numbers rows as
    ``groupby(keys, sort=True).ngroup()``: category order (not alphabetical), unused categories and combinations
    skipped, a missing key in no block (-1); and the same through the group-by for plain text columns."""
    from audit.stats.textcodes import block_numbers

    rng = np.random.default_rng(4)
    n = 500
    out = pd.Categorical(rng.choice(["z.ER", "a.EX", "m.x", None], size=n, p=[0.4, 0.3, 0.2, 0.1]),
                         categories=["z.ER", "unused", "m.x", "a.EX"])
    mod = pd.Categorical(rng.choice(["m2", "m1"], size=n), categories=["m2", "m0", "m1"])
    t = pd.DataFrame({"outcome": out, "model_label": mod})
    t = t[~((t["outcome"] == "m.x") & (t["model_label"] == "m1"))].reset_index(drop=True)  # a combination never seen
    got, k = block_numbers(t, ["outcome", "model_label"])
    gb = t.groupby(["outcome", "model_label"], sort=True, observed=True)
    want = gb.ngroup().to_numpy()
    assert k == gb.ngroups == 5
    assert (got[np.isnan(want)] == -1).all() and (np.isnan(want) == (got == -1)).all()
    assert np.array_equal(got[got >= 0], want[~np.isnan(want)].astype(np.int64))
    plain = t.astype(object).dropna()
    got2, k2 = block_numbers(plain, ["outcome", "model_label"])
    assert k2 == plain.groupby(["outcome", "model_label"]).ngroups
    assert np.array_equal(got2, plain.groupby(["outcome", "model_label"], sort=True).ngroup().to_numpy())


def test_block_numbers_of_many_combinations_equal_the_groupby():
    """Keys with more combinations than rows go the sorted way; the numbers are the group-by's all the same."""
    from audit.stats.textcodes import block_numbers

    rng = np.random.default_rng(5)
    cats = [f"k{i:04d}" for i in range(400)]
    a = pd.Categorical(rng.choice(cats, size=300), categories=cats[::-1])
    b = pd.Categorical(rng.choice(cats + [None], size=300), categories=cats)
    t = pd.DataFrame({"a": a, "b": b})
    got, k = block_numbers(t, ["a", "b"])
    want = t.groupby(["a", "b"], sort=True, observed=True).ngroup().to_numpy()
    assert k == int(np.nanmax(want)) + 1
    assert np.array_equal(np.isnan(want), got == -1)
    assert np.array_equal(got[got >= 0], want[~np.isnan(want)].astype(np.int64))


@pytest.mark.parametrize("many", [False, True])
def test_first_rows_equal_drop_duplicates(many):
    """first_rows (from the categoricals' codes) keeps the rows drop_duplicates keeps, missing values a value
    of their own; few combinations are counted, many go the sorted way; text columns go to drop_duplicates."""
    from audit.stats.textcodes import first_rows

    rng = np.random.default_rng(8)
    n = 400
    cats = [f"c{i}" for i in range(30_000 if many else 4)]  # many: more combinations than the counted way takes
    a = pd.Categorical(rng.choice(cats + [None], size=n), categories=cats[::-1])
    b = pd.Categorical(rng.choice(["x", "y", None], size=n), categories=["y", "unused", "x"])
    t = pd.DataFrame({"a": a, "b": b, "v": np.arange(n)})
    t.index = t.index * 3 + 1  # an index that is not positions
    for keys in (["a"], ["a", "b"], ["b"]):
        want = t.drop_duplicates(keys)
        got = first_rows(t, keys)
        pd.testing.assert_frame_equal(got, want)
    plain = t.astype({"a": object})
    pd.testing.assert_frame_equal(first_rows(plain, ["a", "b"]), plain.drop_duplicates(["a", "b"]))
