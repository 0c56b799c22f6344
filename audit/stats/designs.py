"""Which comparison a table allows: counterfactual, observational or mixed design.

A gap between groups means "how the model answers the same post when only the group changes" only
when the same posts appear under the groups compared. :func:`detect_design` reads that off the
table:

* **counterfactual** - every cluster (post) appears under two or more groups: each gap is a
  within-post contrast, and post content cancels;
* **observational** - every cluster appears under one group only: a gap is a between-post contrast,
  so it mixes the model's response to the group with differences between the posts;
* **mixed** - some clusters are shared, some are not.

The effective sample size of a clustered comparison is the number of clusters, not of rows (rows
of one post are not independent; Kish 1965, design effect). Where no cluster has more than one row,
a random intercept per cluster cannot be told apart from the residual (its variance is not
identifiable), so :func:`audit.stats.gap_test` fits OLS with cluster-robust (CR1) standard errors
instead and names it.

Example
-------
>>> import pandas as pd
>>> df = pd.DataFrame({"post": [1, 1, 2, 2, 3, 4], "group": ["c", "A", "c", "A", "c", "A"]})
>>> d = detect_design(df, "group", "post")
>>> d.kind, d.n_clusters, d.shared_clusters
('mixed', 4, 2)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .missing import level_labels

__all__ = ["DesignInfo", "design_codes", "design_of_codes", "detect_design"]


@dataclass(frozen=True)
class DesignInfo:
    """What :func:`detect_design` found: ``kind`` (counterfactual | observational | mixed),
    ``n_clusters`` (the effective sample size), ``n_rows``, ``shared_clusters`` (clusters seen under
    two or more groups) and ``repeats`` (some cluster has more than one row)."""

    kind: str
    n_clusters: int
    n_rows: int
    shared_clusters: int
    repeats: bool

    def statement(self, cluster_word: str = "posts") -> str:
        """The design in plain words, for reports and the command line."""
        n, s = self.n_clusters, self.shared_clusters
        size = f"Effective sample size: {n} {cluster_word} ({self.n_rows} rows)."
        if self.kind == "counterfactual":
            text = (f"Counterfactual design: each of the {n} {cluster_word} appears under several groups, so every gap "
                    "compares the model's replies to the same post with only the group changed.")
        elif self.kind == "observational":
            text = (f"Observational design: each of the {n} {cluster_word} appears under one group only, so a gap mixes "
                    "the model's response to the group with differences between the posts; it is not a "
                    "counterfactual comparison.")
        else:
            text = (f"Mixed design: {s} of the {n} {cluster_word} appear under several groups, the others under one "
                    "only, so a gap partly mixes the model's response to the group with differences between the "
                    "posts.")
        if not self.repeats:
            size += (" No post has more than one row, so a post variance cannot be estimated: the gaps come from "
                     "OLS with cluster-robust standard errors.")
        return f"{text} {size}"

    def as_dict(self) -> dict:
        return {**asdict(self), "statement": self.statement()}


def detect_design(data: pd.DataFrame, group: str, cluster: str, *, weight: str | None = None) -> DesignInfo:
    """Classify the design of a long table by how its clusters spread over the groups (module doc).

    Rows with a missing group or cluster are ignored. ``weight``: a column of row counts (the rows are
    cells of that many observations, :mod:`audit.stats.cells`). Example: see the module docstring.
    """
    g, c, w, ok = design_codes(data, group, cluster, weight=weight)
    return design_of_codes(g[ok], c[ok], w[ok])


def design_codes(data: pd.DataFrame, group: str, cluster: str, *,
                 weight: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The columns :func:`detect_design` reads as ``(group codes, cluster codes, counts, usable)``: groups
    as the user wrote them (level_labels), clusters by their text, ``usable`` the rows with both."""
    g = pd.factorize(level_labels(data[group]), use_na_sentinel=True)[0]
    col = data[cluster]
    if isinstance(col.dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(col.cat.categories):
        c = col.cat.codes.to_numpy()  # text categories: one code per text already
    else:
        c = pd.factorize(col.astype(str), use_na_sentinel=True)[0]
    w = data[weight].to_numpy(dtype=float) if weight is not None else np.ones(len(data))
    ok = (g >= 0) & (c >= 0) & data[cluster].notna().to_numpy()
    return g, c, w, ok


def design_of_codes(g: np.ndarray, c: np.ndarray, w: np.ndarray) -> DesignInfo:
    """:func:`detect_design` of rows given as integer codes of their group ``g`` and cluster ``c`` (any
    numbering, no missing value) and their counts ``w``: a caller that classifies several subsets of one
    table (each group against the reference) codes its columns once."""
    k = int(g.max()) + 1 if len(g) else 1
    if len(c) and c.min() >= 0 and c.max() < 4 * len(c) + 1024 and (int(c.max()) + 1) * k < 16 * len(c) + 65536:
        # dense codes (a categorical's): clusters and (cluster, group) pairs counted in bins, not sorted
        # (np.unique sorts; ~2 ms for each group of a 66,000-cell block, 8 groups a block)
        present = np.bincount(c) > 0
        c = (np.cumsum(present) - 1)[c]
        n = int(present.sum())
        per = (np.bincount(c * k + g, minlength=n * k).reshape(n, k) > 0).sum(axis=1)  # groups per cluster
    else:
        cu, c = np.unique(c, return_inverse=True)
        n = len(cu)
        pairs = np.unique(c * k + g)
        per = np.bincount(pairs // k, minlength=n)  # groups per cluster
    shared = int((per > 1).sum())
    kind = "counterfactual" if shared == n and n else ("observational" if shared == 0 else "mixed")
    repeats = bool(len(w) and np.bincount(c, weights=w, minlength=n).max() > 1)
    total = w.sum()
    return DesignInfo(kind, n, int(total), shared, repeats)
