"""Disparities between demographic groups (not against the control): reference group, max - min, ratio.

The gap tests (:mod:`audit.stats.gaps`) compare each group with the unmodified post (the control).
The question a regulator brings is different: *is the model less empathic toward one group than
toward another?* This module answers it in two ways.

Each group against a reference group
------------------------------------
``analysis.reference_group`` names the reference: a whole group (``"White man"``) or a level of an
audited axis (``"White"``). A level is matched within the other axes: ``Black woman`` is compared
with ``White woman``, ``Black man`` with ``White man``. :func:`reference_map` resolves it; the gaps
themselves come from the same mixed model as the control gaps (the family loop refits it with the
reference group as treatment reference, so the random intercept per post makes every comparison
within post), and :func:`keep_matched` keeps the matched rows only. The reference is never chosen
from the data.

The largest pairwise disparity (max - min) and the ratio (min / max)
--------------------------------------------------------------------
As fairlearn's ``MetricFrame.difference()`` and ``ratio()``, over the G demographic groups (the
control excluded). With ``y_pi`` a reply's score and ``ybar_p`` the mean of post ``p``'s
non-control replies, the within-post group mean is ``m_g = ybar + mean_{i in g}(y_pi - ybar_p)``
(``ybar`` the grand mean of the non-control replies; equal to the plain group mean in a balanced
design, and free of post effects otherwise)::

    D = max_g m_g - min_g m_g          R = min_g m_g / max_g m_g   (R only when every m_g > 0)

*Confidence intervals* (1 - alpha): basic (reverse-percentile) intervals ``[2 D - D*_(1-a/2),
2 D - D*_(a/2)]`` of a cluster bootstrap that resamples whole posts with replacement and recomputes
the whole statistic, including which groups are the extremes (Davison & Hinkley 1997, ch. 3.8 and
eq. 5.6). The max of noisy means is biased upwards, and more so in each resample; the basic interval
moves the interval back by that bias, where the percentile interval (and a CI of the difference of
the two observed extremes, which ignores that they were selected for being extreme) would not. The
interval of ``D`` is clipped at 0 and that of ``R`` to [0, 1]; it is no test of ``D = 0``.

*Test* of ``H0: every m_g is equal``: a permutation test of ``D`` that permutes the group labels of
the variants within each post (Good 2005; exact under H0 when the variants of a post are
exchangeable, as the counterfactual design makes them), ``p = (1 + #{D* >= D}) / (1 + B)``. Its
p-value joins the correction family.

*Between posts.* In an observational release (no post appears under two groups, no control) there
is no within-post contrast: ``m_g`` is the plain mean of group ``g``'s replies, the bootstrap
resamples whole posts within each group (each group keeps its number of posts; unequal groups stay
unequal) and the permutation test permutes the group labels of whole posts (exact under H0 when the
posts' outcome distributions do not depend on the group). ``D`` then mixes the model's response to
the group with differences between the groups' posts (the design statement says so).

Example
-------
>>> from audit.stats.simulate import simulate_audit_table
>>> t = simulate_audit_table(n_posts=40, groups=["A", "B"], gaps={"A": 0.3, "B": -0.3}, seed=1)
>>> r = max_min_disparity(t, outcome="value", group="group", control="control", cluster="post_id",
...                       inner="variant_id", n_boot=499, seed=0)
>>> r["max_group"], r["min_group"], bool(r["p_value"] < 0.05)
('A', 'B', True)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError
from .corrections import adjust_family
from .gather_kernel import gathered_sums
from .textcodes import block_numbers

__all__ = ["reference_map", "keep_matched", "max_min_disparity", "DisparityBlocks", "disparity_table", "adjust_with",
           "DISPARITY_COLUMNS"]

DISPARITY_COLUMNS = [
    "family_id", "outcome", "model_label", "style", "cue_type", "statistic", "max_group", "min_group", "max_mean",
    "min_mean", "estimate", "ci_low", "ci_high", "ratio", "ratio_ci_low", "ratio_ci_high", "p_value", "p_holm",
    "p_bh", "significant_holm", "n_groups", "n", "n_posts", "n_boot", "n_perm", "seed", "method", "warning",
]
METHOD = ("max - min of within-post group means; basic CI of a post-level cluster bootstrap of the whole "
          "statistic; permutation test (group labels of variants permuted within post)")
METHOD_BETWEEN = ("max - min of group means between posts (no post under two groups); basic CI of a cluster "
                  "bootstrap resampling posts within groups; permutation test (group labels of whole posts permuted)")


def reference_map(groups: Sequence[str], reference_group: str, group_axes: pd.DataFrame | None = None,
                  *, where: str = "spec key analysis.reference_group") -> dict[str, str]:
    """The reference group of each group: ``{group: reference}`` (the reference itself left out).

    ``reference_group`` is a group (every group is compared with it) or a level of one axis of
    ``group_axes`` (index: group; columns: axes): each group is compared with the group that has that
    level and the same levels on every other axis. Groups without such a partner are left out.

    >>> ax = pd.DataFrame({"race": ["Black", "White", "Black", "White"], "gender": ["man", "man", "woman", "woman"]},
    ...                   index=["Black man", "White man", "Black woman", "White woman"])
    >>> reference_map(list(ax.index), "White", ax)
    {'Black man': 'White man', 'Black woman': 'White woman'}
    """
    groups = [str(g) for g in groups if str(g) != "control"]
    if reference_group in groups:
        return {g: reference_group for g in groups if g != reference_group}
    axes = [] if group_axes is None else [a for a in group_axes.columns
                                           if reference_group in set(group_axes[a].astype(str))]
    if not axes:
        raise AuditError(f"reference group '{reference_group}' is neither a group nor a level of an audited axis",
                         where=where, fix="use one of the groups: " + ", ".join(sorted(groups)))
    axis = axes[0]
    ga = group_axes.loc[[g for g in groups if g in group_axes.index]].astype(str)
    others = [a for a in group_axes.columns if a != axis]
    out = {}
    for g, row in ga.iterrows():
        if row[axis] == reference_group:
            continue
        partner = ga[(ga[axis] == reference_group) & (ga[others] == row[others]).all(axis=1)] if others else \
            ga[ga[axis] == reference_group]
        if len(partner) == 1:
            out[str(g)] = str(partner.index[0])
    return out


def keep_matched(results: pd.DataFrame, mapping: Mapping[str, str], keep_all: Sequence[str]) -> pd.DataFrame:
    """Rows of a family fitted against the reference groups of ``mapping``, kept where the row's
    reference is its group's matched reference (or a reference in ``keep_all``, e.g. the control)."""
    ref = results["reference"].astype(str)
    matched = results["group"].astype(str).map(lambda g: mapping.get(g)) == ref
    return results[ref.isin(list(map(str, keep_all))) | matched].reset_index(drop=True)


def _cells(d: pd.DataFrame, outcome: str, group: str, cluster: str, unit: str, weight: str | None = None):
    """Per (post, variant) sums of the post-centred outcome, counts, and group codes (``weight``: the
    rows are cells of that many observations with mean ``outcome``)."""
    y = d[outcome].to_numpy(dtype=float)
    w = d[weight].to_numpy(dtype=float) if weight else None
    if w is not None and np.all(w == 1.0):
        w = None  # one observation a cell: the rows' sums, number for number
    post = pd.factorize(d[cluster].astype(str))[0]
    if w is None:
        post_mean = np.bincount(post, y) / np.bincount(post)
        yc = y - post_mean[post]
    else:
        post_mean = np.bincount(post, w * y) / np.bincount(post, w)
        yc = w * (y - post_mean[post])
    # cells: (post, unit) pairs numbered in order of first appearance (as factorizing "post\x1funit" strings
    # did, on integer codes); groups: the sorted distinct labels (np.unique of the few distinct values)
    ucode = pd.factorize(d[unit].astype(str))[0] if unit in d.columns else np.arange(len(d))
    key = pd.factorize(post.astype(np.int64) * (int(ucode.max()) + 1) + ucode)[0]
    gfirst, guniq = pd.factorize(d[group].astype(str))
    guniq = np.asarray(guniq, dtype=object)
    labels = np.unique(guniq)
    gcode = np.searchsorted(labels, guniq)[gfirst]
    nu = key.max() + 1
    cell_post = np.zeros(nu, dtype=int)
    cell_post[key] = post
    cell_group = np.zeros(nu, dtype=int)
    cell_group[key] = gcode
    if w is None:
        return (np.bincount(key, yc, nu), np.bincount(key, minlength=nu).astype(float), cell_post, cell_group,
                labels, float(y.mean()), np.bincount(post, y), np.bincount(post).astype(float))
    return (np.bincount(key, yc, nu), np.bincount(key, w, nu), cell_post, cell_group,
            labels, float(w @ y / w.sum()), np.bincount(post, w * y), np.bincount(post, w))


def _group_means(sums, counts, cell_post, cell_group, n_post, n_group, w):
    """Within-post group means (centred) for post weights ``w`` (B x P): (B x G)."""
    # one bincount per table: the same additions in the same (cell) order as np.add.at, ~5x faster
    at = cell_post * n_group + cell_group
    S = np.bincount(at, sums, n_post * n_group).reshape(n_post, n_group)
    N = np.bincount(at, counts, n_post * n_group).reshape(n_post, n_group)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ S) / (w @ N)


#: Largest number of cells per post whose permutations are drawn from a table of all k! orders.
_PERM_TABLE_MAX = 8
#: Permutations drawn per block (bounds the memory of the vectorised test: block x posts x cells).
_PERM_BLOCK_CELLS = 4_000_000


@lru_cache(maxsize=None)
def _all_orders(k: int) -> np.ndarray:
    """Every permutation of range(k), one per row (k! x k), read-only (built once per k: 40,320 rows
    for k = 8 took 25 ms, once per outcome and model)."""
    from itertools import permutations

    out = np.array(list(permutations(range(k))), dtype=np.intp).reshape(-1, k)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=None)
def _inverse_orders(k: int) -> np.ndarray:
    """(k! x (k+1)) uint8: row o the inverse of order o of :func:`_all_orders` (where each index went),
    and a column k holding k (the zero cell of an absent group, :func:`_gather_tables`); read-only."""
    inv_x = np.full((len(_all_orders(k)), k + 1), k, dtype=np.uint8)
    inv_x[:, :k] = np.argsort(_all_orders(k), axis=1)
    inv_x.flags.writeable = False
    return inv_x


#: Bootstrap rows drawn at a time (bounds the memory of the draws: rows x posts integers).
_BOOT_ROWS = 64


def _post_weights(rng: np.random.Generator, P: int, n_boot: int) -> np.ndarray:
    """(n_boot, P) cluster-bootstrap weights: how often each of P posts is drawn in each resample of P
    posts with replacement, i.e. Multinomial(P, 1/P) rows. Drawn as P uniform post indices per row and
    counted (O(n_boot P)); numpy's ``multinomial`` draws P binomials per row, ten times slower at 7,000
    posts.

    The indices are drawn :data:`_BOOT_ROWS` rows at a time and counted (one bincount per block of rows) into the
    float weights: the same numbers as one ``rng.integers(0, P, size=(n_boot, P))`` (the generator's
    stream does not depend on how a draw is split into calls) and the same state of ``rng`` after, without
    the four n_boot x P temporaries of counting them all at once (at 7,400 posts: 0.5 s and 470 MB a test).
    """
    w = np.empty((n_boot, P))
    for start in range(0, n_boot, _BOOT_ROWS):
        rows = min(_BOOT_ROWS, n_boot - start)
        idx = rng.integers(0, P, size=(rows, P))
        idx += (P * np.arange(rows))[:, None]  # row r's posts counted in bins r*P .. r*P + P - 1: one bincount
        w[start:start + rows] = np.bincount(idx.ravel(), minlength=rows * P).reshape(rows, P)
    return w


def _gather_tables(k: int, L: np.ndarray, G: int):
    """Index tables for the gathered group sums of one class of posts with k cells (k <= 8) whose
    labels ``L`` (posts x k) are distinct within each post.

    With ``ord_tab`` the table of all k! orders (cell j of a post takes the label ``L[n, ord_tab[o, j]]``),
    group g of post n sits, after order o, in the cell ``inv[o, i]`` where ``i`` is the index of g in
    ``L[n]`` and ``inv[o]`` the inverse of the order; a group absent from the post points to a zero
    (column k). Returns ``(J, None)``, J (k! x G) the cell of each group after each order, when every post
    has the same labels; else ``(inv_x, idx)``, inv_x (k! x (k+1)) the inverse orders with a column k
    pointing at k, and idx (posts x G) the index of each group in each post's labels (k: absent)."""
    inv_x = _inverse_orders(k)
    idx = np.full((len(L), G), k, dtype=np.intp)
    idx[np.arange(len(L))[:, None], L] = np.arange(k)[None, :]
    if (L == L[:1]).all():
        return np.ascontiguousarray(inv_x[:, idx[0]]), None
    return inv_x, idx


def _permuted_ranges(sp: np.ndarray, sc: np.ndarray, pp: np.ndarray, gg: np.ndarray, P: int, G: int,
                     n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """``max_g m*_g - min_g m*_g`` for ``n_perm`` within-post permutations of the cells' group labels
    (cells sorted by post; ``sp``/``sc`` their centred sums and counts, ``gg`` their group codes).

    Vectorised: the posts with the same number k of cells form one (posts x k) array, and a block of
    permutations is drawn for all of them at once, uniform orders of the k cells (from the table of
    all k! orders for k <= 8, by sorting uniform keys otherwise). The same test as shuffling post by
    post (labels move within a post only); why not a Python loop over permutations: at a million
    replies (7,400 posts) that took ~20 s per outcome and model, this well under one.

    The group sums of a class. In general one weighted ``bincount`` per class and block over the
    (permutation, post, cell) triples. Where k <= 8 and the labels of each post are distinct (the
    counterfactual design: one variant per group and post) they are *gathered* instead
    (:func:`_gather_tables`): the drawn order index points, for each group, at the cell that takes its
    label, and ``S*[b, g] = sum_n S[n, J[o_bn, g]]``, summed post after post in the order ``bincount``
    adds them, so the result is the same number (adding the zero of an absent group changes no sum);
    and where a post's cells have equal counts the permuted counts are those of the identity, one sum
    for all permutations. The draws are the same calls in the same order as the general path. At a
    million replies (7,400 posts of 8 cells, 1,999 permutations) ~0.1 s per outcome and model with the
    compiled gather (:mod:`audit.stats.gather_kernel`; 0.45 s in numpy) against 1.15 s for the
    ``bincount`` of every triple.
    """
    ks = np.bincount(pp, minlength=P)
    first = np.concatenate([[0], np.cumsum(ks)[:-1]])
    classes = []
    for k in np.unique(ks[ks > 0]):
        posts = np.flatnonzero(ks == k)
        cells = (first[posts][:, None] + np.arange(k)[None, :])  # (posts, k) positions, post by post
        S, C, L = sp[cells], sc[cells], gg[cells]
        if k <= _PERM_TABLE_MAX and (np.diff(np.sort(L, axis=1), axis=1) != 0).all():
            J, idx = _gather_tables(int(k), L, G)
            n = len(S)
            Sx = np.zeros((n, k + 1))
            Sx[:, :k] = S
            Cx = cnt = None
            if (C == C[:, :1]).all():  # every permutation gives the groups the counts of the identity
                present = np.zeros((n, G))
                present[np.arange(n)[:, None], L] = C
                cnt = np.add.reduce(present, axis=0)  # post after post, as bincount adds them
            else:
                Cx = np.zeros((n, k + 1))
                Cx[:, :k] = C
            classes.append(("gather", int(k), n, Sx, Cx, cnt, J, idx))
            continue
        table = _all_orders(int(k)) if k <= _PERM_TABLE_MAX else None
        if table is not None and (L == L[:1]).all():  # every post has the same labels: permute the labels once
            table = L[0][table]                      # each order as the labels it gives the k cells
            L = None
        classes.append(("bincount", int(k), S, C, L, table))
    block = max(1, _PERM_BLOCK_CELLS // max(len(pp), 1))
    Dp = np.empty(n_perm)
    for start in range(0, n_perm, block):
        b = min(block, n_perm - start)
        tot = np.zeros((b, G))
        cnt = np.zeros((b, G))
        for cls in classes:
            if cls[0] == "gather":
                _, k, n, Sx, Cx, ccnt, J, idx = cls
                o = rng.integers(0, J.shape[0], size=(b, n))  # (b, posts): each permutation's sums over posts
                t, c = gathered_sums(o, Sx, Cx, J, idx, G)  # compiled (audit.stats.gather_kernel)
                tot += t
                cnt += ccnt if Cx is None else c
                continue
            _, k, S, C, L, table = cls
            n = len(S)
            if L is None:  # the table holds labels already
                labels = table[rng.integers(0, len(table), size=(b, n))]
            else:
                orders = (table[rng.integers(0, len(table), size=(b, n))] if table is not None
                          else np.argsort(rng.random((b, n, k)), axis=2))
                labels = L[np.arange(n)[None, :, None], orders]
            labels = (labels + G * np.arange(b)[:, None, None]).ravel()
            tot += np.bincount(labels, np.broadcast_to(S, (b, n, k)).ravel(), b * G).reshape(b, G)
            cnt += np.bincount(labels, np.broadcast_to(C, (b, n, k)).ravel(), b * G).reshape(b, G)
        with np.errstate(invalid="ignore", divide="ignore"):
            mp = tot / cnt
        Dp[start:start + b] = np.nanmax(mp, axis=1) - np.nanmin(mp, axis=1)
    return Dp


def max_min_disparity(
    data: pd.DataFrame,
    *,
    outcome: str = "value",
    group: str = "group",
    control: str = "control",
    cluster: str = "post_id",
    inner: str | None = "variant_id",
    alpha: float = 0.05,
    n_boot: int = 1999,
    n_perm: int = 1999,
    seed: int = 0,
    weight: str | None = None,
) -> dict:
    """The largest pairwise disparity between the groups (max - min), the ratio (min / max), their
    cluster-bootstrap CIs and the permutation p-value (formulas in the module docstring).

    ``inner`` names the unit whose group labels are permuted within post (a variant; its replies
    move together); without it, rows are permuted. ``weight``: the rows are cells of that many
    observations and ``outcome`` their mean (:mod:`audit.stats.cells`). Returns one dict with the keys of
    :data:`DISPARITY_COLUMNS` that belong to the statistic.
    """
    d = data[data[group].astype(str) != str(control)]
    d = d[pd.to_numeric(d[outcome], errors="coerce").notna()]
    if weight:
        d = d[d[weight] > 0]
    base = dict(statistic="max - min", n=int(len(d)) if not weight else int(d[weight].sum()),
                n_posts=int(d[cluster].nunique()) if len(d) else 0,
                n_boot=int(n_boot), n_perm=int(n_perm), seed=int(seed), method=METHOD)
    if d[group].nunique() < 2 or d[cluster].nunique() < 2:
        return dict(base, warning="fewer than two groups or two posts: no disparity between groups to estimate")
    if not (d.groupby(cluster)[group].nunique() > 1).any():
        return _between_posts(d, base, outcome=outcome, group=group, cluster=cluster, alpha=alpha, n_boot=n_boot,
                              n_perm=n_perm, seed=seed, weight=weight)
    sums, counts, cpost, cgroup, labels, grand, psum, pcount = _cells(d, outcome, group, cluster, inner or "", weight)
    P, G = int(cpost.max()) + 1, len(labels)
    one = np.ones((1, P))
    m = _group_means(sums, counts, cpost, cgroup, P, G, one)[0] + grand
    hi, lo = int(np.nanargmax(m)), int(np.nanargmin(m))
    D = float(m[hi] - m[lo])
    rng = np.random.default_rng(seed)
    # cluster bootstrap: multinomial post weights; the whole statistic (extremes included) recomputed
    w = _post_weights(rng, P, n_boot)
    mb = _group_means(sums, counts, cpost, cgroup, P, G, w) + ((w @ psum) / (w @ pcount))[:, None]
    Db = np.nanmax(mb, axis=1) - np.nanmin(mb, axis=1)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    qd = np.nanpercentile(Db, q)
    ci = (max(2 * D - qd[1], 0.0), max(2 * D - qd[0], 0.0))
    warn = [] if D > 0 else ["every group has the same mean: no disparity"]
    ratio = r_lo = r_hi = np.nan
    if np.all(m > 0) and np.all(mb[np.isfinite(mb).all(axis=1)] > 0):
        ratio = float(m[lo] / m[hi])
        qr = np.nanpercentile(np.nanmin(mb, axis=1) / np.nanmax(mb, axis=1), q)
        r_lo, r_hi = min(max(2 * ratio - qr[1], 0.0), 1.0), min(max(2 * ratio - qr[0], 0.0), 1.0)
    else:
        warn.append("ratio not reported: a group mean is not above 0")
    # permutation test: group labels of the variants of each post shuffled among them
    order = np.lexsort((np.arange(len(cpost)), cpost))
    sp, sc, pp, gg = sums[order], counts[order], cpost[order], cgroup[order]
    Dp = _permuted_ranges(sp, sc, pp, gg, P, G, n_perm, rng)
    p = float((1 + np.sum(Dp >= D - 1e-12)) / (1 + n_perm))
    return dict(base, max_group=str(labels[hi]), min_group=str(labels[lo]), max_mean=float(m[hi]),
                min_mean=float(m[lo]), estimate=D, ci_low=float(ci[0]), ci_high=float(ci[1]), ratio=ratio,
                ratio_ci_low=float(r_lo), ratio_ci_high=float(r_hi), p_value=p, n_groups=int(G),
                warning="; ".join(warn) or None)


def _between_posts(d: pd.DataFrame, base: dict, *, outcome: str, group: str, cluster: str, alpha: float,
                   n_boot: int, n_perm: int, seed: int, weight: str | None = None) -> dict:
    """:func:`max_min_disparity` when no post appears under two groups (module docstring, "Between
    posts"): plain group means, posts resampled within groups, group labels of whole posts permuted.
    ``weight``: the rows are cells of that many observations with mean ``outcome``."""
    y = pd.to_numeric(d[outcome], errors="coerce").to_numpy(dtype=float)
    w = d[weight].to_numpy(dtype=float) if weight else None
    post = pd.factorize(d[cluster].astype(str))[0]
    labels, gcode = np.unique(d[group].astype(str).to_numpy(), return_inverse=True)
    P, G = int(post.max()) + 1, len(labels)
    if w is None or np.all(w == 1.0):
        psum, pcnt = np.bincount(post, y, P), np.bincount(post, minlength=P).astype(float)
    else:
        psum, pcnt = np.bincount(post, w * y, P), np.bincount(post, w, P)
    pg = np.zeros(P, dtype=int)
    pg[post] = gcode
    m = np.bincount(pg, psum, G) / np.bincount(pg, pcnt, G)
    hi, lo = int(np.argmax(m)), int(np.argmin(m))
    D = float(m[hi] - m[lo])
    rng = np.random.default_rng(seed)
    mb = np.empty((n_boot, G))
    for g in range(G):
        ps = np.flatnonzero(pg == g)
        draw = ps[rng.integers(0, len(ps), size=(n_boot, len(ps)))]
        mb[:, g] = psum[draw].sum(axis=1) / pcnt[draw].sum(axis=1)
    Db = mb.max(axis=1) - mb.min(axis=1)
    q = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    qd = np.percentile(Db, q)
    ci = (max(2 * D - qd[1], 0.0), max(2 * D - qd[0], 0.0))
    warn = [] if D > 0 else ["every group has the same mean: no disparity"]
    ratio = r_lo = r_hi = np.nan
    if np.all(m > 0) and np.all(mb > 0):
        ratio = float(m[lo] / m[hi])
        qr = np.percentile(mb.min(axis=1) / mb.max(axis=1), q)
        r_lo, r_hi = min(max(2 * ratio - qr[1], 0.0), 1.0), min(max(2 * ratio - qr[0], 0.0), 1.0)
    else:
        warn.append("ratio not reported: a group mean is not above 0")
    Dp = np.empty(n_perm)
    block = max(1, 2_000_000 // P)
    for start in range(0, n_perm, block):
        b = min(block, n_perm - start)
        lab = rng.permuted(np.broadcast_to(pg, (b, P)), axis=1) + G * np.arange(b)[:, None]
        tot = np.bincount(lab.ravel(), np.broadcast_to(psum, (b, P)).ravel(), b * G).reshape(b, G)
        cnt = np.bincount(lab.ravel(), np.broadcast_to(pcnt, (b, P)).ravel(), b * G).reshape(b, G)
        mp = tot / cnt
        Dp[start:start + b] = mp.max(axis=1) - mp.min(axis=1)
    p = float((1 + np.sum(Dp >= D - 1e-12)) / (1 + n_perm))
    return dict(base, method=METHOD_BETWEEN, max_group=str(labels[hi]), min_group=str(labels[lo]),
                max_mean=float(m[hi]), min_mean=float(m[lo]), estimate=D, ci_low=float(ci[0]), ci_high=float(ci[1]),
                ratio=ratio, ratio_ci_low=float(r_lo), ratio_ci_high=float(r_hi), p_value=p, n_groups=int(G),
                warning="; ".join(warn) or None)


class DisparityBlocks:
    """The (outcome, model_label) blocks of :func:`disparity_table`, each a test computed on its own:
    block ``i`` is :func:`max_min_disparity` with seed ``seed + i``, whoever computes it, so two
    processes may share the blocks (:meth:`rows` with a shared ``take``) and :meth:`table` puts the
    rows back in block order: the table of computing them one after the other, number for number."""

    def __init__(self, table: pd.DataFrame, *, control: str = "control", alpha: float = 0.05, seed: int = 0,
                 n_boot: int = 1999, n_perm: int = 1999, weight: str | None = None, keep: np.ndarray | None = None):
        """``keep``: a mask of the rows to use (the blocks and their seeds are those of ``table[keep]``,
        without copying it)."""
        self.table = table
        self.kw = dict(control=control, alpha=alpha, n_boot=n_boot, n_perm=n_perm, weight=weight)
        self.seed = seed
        # the groupby's blocks in its order (the seeds follow it), taken one at a time: iterating the
        # groupby would first copy the whole table in sorted order (+330 MB at a million replies)
        codes, n = block_numbers(table, ["outcome", "model_label"])
        if keep is not None:  # the blocks with a kept row, numbered in order: those of table[keep]'s groupby
            codes = np.where(keep, codes, -1)
            present = np.zeros(n + 1, dtype=bool)
            present[codes[codes >= 0]] = True
            renumber = np.full(n + 1, -1, dtype=np.int64)
            renumber[present] = np.arange(int(present.sum()))
            codes = np.where(codes >= 0, renumber[np.maximum(codes, 0)], -1)
            n = int(present.sum())
        self.order = np.argsort(codes, kind="stable")
        self.bounds = np.searchsorted(codes, np.arange(n + 1), sorter=self.order)
        self.n = n

    def row(self, i: int) -> dict:
        """Block ``i``'s row of the table."""
        d = self.table.iloc[self.order[self.bounds[i]:self.bounds[i + 1]]]
        outcome, model = d["outcome"].iloc[0], d["model_label"].iloc[0]
        inner = "variant_id" if "variant_id" in d.columns else None
        r = max_min_disparity(d, outcome="value", inner=inner, seed=self.seed + i, **self.kw)
        return dict(outcome=outcome, model_label=model, style="pooled", cue_type="pooled", **r)

    def rows(self, take: Callable[[], int | None] | None = None) -> dict[int, dict]:
        """The rows of the blocks ``take()`` hands out until it returns None (every block: None)."""
        if take is None:
            return {i: self.row(i) for i in range(self.n)}
        out = {}
        while (i := take()) is not None:
            out[i] = self.row(i)
        return out

    def table_of(self, rows: dict[int, dict]) -> pd.DataFrame:
        """The table of every block's row, in block order (columns :data:`DISPARITY_COLUMNS`)."""
        missing = sorted(set(range(self.n)) - set(rows))
        if missing:  # pragma: no cover - a programming error
            raise RuntimeError(f"disparity blocks {missing[:5]} were never computed")
        out = pd.DataFrame([rows[i] for i in range(self.n)])
        for c in DISPARITY_COLUMNS:
            if c not in out.columns:
                out[c] = np.nan
        return out[DISPARITY_COLUMNS]


def disparity_table(table: pd.DataFrame, *, control: str = "control", alpha: float = 0.05, seed: int = 0,
                    n_boot: int = 1999, n_perm: int = 1999, weight: str | None = None) -> pd.DataFrame:
    """:func:`max_min_disparity` for every (outcome, model_label) of an :func:`~audit.stats.analysis_table`,
    all styles and cue types pooled (``style = cue_type = 'pooled'``), block ``i`` with seed ``seed + i``;
    columns :data:`DISPARITY_COLUMNS` (``p_holm``, ``p_bh``, ``significant_holm`` and ``family_id``
    filled by the caller's family)."""
    blocks = DisparityBlocks(table, control=control, alpha=alpha, seed=seed, n_boot=n_boot, n_perm=n_perm,
                             weight=weight)
    return blocks.table_of(blocks.rows())


def adjust_with(results: pd.DataFrame, others: pd.DataFrame, *, alpha: float = 0.05):
    """Holm/BH over the p-values of both tables together (one family); returns both, adjusted."""
    both = pd.concat([results[["p_value"]], others[["p_value"]]], ignore_index=True)
    adj = adjust_family(both, alpha=alpha)
    cols = ["p_holm", "p_bh", "significant_holm"]
    a, b = results.copy(), others.copy()
    a[cols] = adj[cols].iloc[:len(a)].to_numpy()
    b[cols] = adj[cols].iloc[len(a):].to_numpy()
    for df in (a, b):  # to_numpy() over mixed columns gives objects: restore the types
        df["p_holm"] = df["p_holm"].astype(float)
        df["p_bh"] = df["p_bh"].astype(float)
        df["significant_holm"] = df["significant_holm"].astype(bool)
    return a, b
