"""Synthetic audit tables with known (planted) gaps: for tests, benchmarks and power planning.

:func:`simulate_audit_table` draws a long table shaped like :func:`audit.stats.analysis_table`::

    value = ref_mean + gap[group] + u_post + v_variant + e,
    u ~ N(0, sd_post^2), v ~ N(0, sd_variant^2), e ~ N(0, sd_resid^2)

(or, with ``binary=True``, ``value ~ Bernoulli(clip(ref_mean + gap + u, 0, 1))``).
Each post has one control variant and one variant per group x cue type; each variant is replied to
``samples`` times in each style.

Example
-------
>>> from audit.stats.simulate import simulate_audit_table
>>> t = simulate_audit_table(n_posts=5, groups=["A", "B"], cue_types=["tag"], seed=0)
>>> sorted(t.group.unique())
['A', 'B', 'control']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["simulate_audit_table", "permute_within"]


def simulate_audit_table(
    *,
    n_posts: int = 40,
    groups: list[str] | tuple[str, ...] = ("A", "B"),
    cue_types: list[str] | tuple[str, ...] = ("explicit_tag",),
    samples: int = 1,
    styles: list[str] | tuple[str, ...] = ("plain",),
    gaps: dict[str, float] | None = None,
    ref_mean: float = 1.0,
    sd_post: float = 0.3,
    sd_variant: float = 0.0,
    sd_resid: float = 0.5,
    binary: bool = False,
    outcome: str = "epitome.empathy",
    model_label: str = "m",
    seed: int = 0,
) -> pd.DataFrame:
    """A synthetic long analysis table with planted gaps ``gaps[group]`` (absolute)."""
    rng = np.random.default_rng(seed)
    gaps = gaps or {}
    conds = [("control", "control")] + [(g, c) for g in groups for c in cue_types]
    nv, ns, nst = len(conds), int(samples), len(styles)
    P = int(n_posts)
    post = np.repeat(np.arange(P), nv * nst * ns)
    vi = np.tile(np.repeat(np.arange(nv), nst * ns), P)
    st = np.tile(np.repeat(np.arange(nst), ns), P * nv)
    si = np.tile(np.arange(ns), P * nv * nst)
    grp = np.array([conds[k][0] for k in range(nv)])[vi]
    cue = np.array([conds[k][1] for k in range(nv)])[vi]
    gap = np.array([gaps.get(conds[k][0], 0.0) for k in range(nv)])[vi]
    mu = ref_mean + gap + rng.normal(0, sd_post, P)[post]
    if sd_variant > 0:
        mu = mu + rng.normal(0, sd_variant, P * nv)[post * nv + vi]
    if binary:
        value = (rng.random(post.size) < np.clip(mu, 0, 1)).astype(float)
    else:
        value = mu + rng.normal(0, sd_resid, post.size)
    return pd.DataFrame({
        "request_key": [f"r{i}" for i in range(post.size)],
        "post_id": np.char.add("p", post.astype(str)),
        "variant_id": np.char.add(np.char.add("p", post.astype(str)), np.char.add("v", vi.astype(str))),
        "group": grp, "cue_type": cue, "style": np.array(styles)[st], "model_label": model_label,
        "sample_index": si, "outcome": outcome, "value": value,
    })


def permute_within(df: pd.DataFrame, column: str, cluster: str, seed: int = 0, also: tuple[str, ...] = ()) -> pd.DataFrame:
    """Permute ``column`` (and the columns in ``also`` with it) within each ``cluster``: removes any
    signal of the labels while keeping the design (the calibration null)."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    cols = [column, *also]
    codes = pd.factorize(out[cluster])[0]
    order = np.lexsort((rng.random(len(out)), codes))  # random order within cluster
    src = np.argsort(codes, kind="stable")              # cluster-sorted positions
    out.loc[out.index[src], cols] = out.loc[out.index[order], cols].to_numpy()
    return out
