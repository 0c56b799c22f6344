"""The family loop: every gap test an analysis makes, adjusted together for multiplicity.

An analysis is a list of :class:`Block` s: the rows of one model fit (an outcome, and for a run also
a model and a prompt style), named by ``labels``. :func:`fit_family` runs :func:`~audit.stats.gap_test`
on every block against every reference level, labels the rows, and adjusts the p-values of all of
them together with :func:`~audit.stats.adjust_family` (Holm 1979; Benjamini & Hochberg 1995): the
family is every row returned, so the multiplicity correction covers exactly what is reported.

Both the run's analysis stage (:func:`audit.stats.stage.analyze_scores`) and the analysis of any long
table (:func:`audit.stats.longtable.analyze_table`) build their blocks and call this one loop.

Example
-------
>>> import numpy as np, pandas as pd
>>> from audit.stats.family import Block, fit_family
>>> rng = np.random.default_rng(0)
>>> df = pd.DataFrame({"post": np.repeat(np.arange(30), 2), "group": np.tile(["control", "A"], 30)})
>>> df["y"] = rng.normal(0, 1, 60) + rng.normal(0, 1, 30)[df.post]
>>> res, notes = fit_family([Block({"outcome": "y"}, df, "y", where="demo")], group="group",
...                         references=["control"], cluster="post")
>>> res[["outcome", "group", "reference"]].values.tolist(), notes
([['y', 'A', 'control']], [])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd

from ..errors import AuditError
from .corrections import adjust_family
from .gaps import gap_test
from .missing import level_labels

__all__ = ["Block", "fit_family", "fit_block", "family_table", "split_families", "matches_primary", "CONFIRMATORY", "EXPLORATORY"]


@dataclass(frozen=True)
class Block:
    """The rows of one model fit in a family.

    ``labels``: columns put in front of each result row (e.g. ``{"outcome": "epitome.ER", "model_label":
    "gpt", "style": "pooled"}``); ``outcome``: the column of ``data`` holding the outcome; ``factors`` and
    ``inner``: the model terms of :func:`~audit.stats.gap_test`; ``where``: where a problem is reported.
    """

    labels: dict[str, str]
    data: pd.DataFrame
    outcome: str
    factors: tuple[str, ...] = ()
    inner: str | None = None
    where: str = "the table"
    cells: object = None  # audit.stats.cells.Cells when ``data`` holds cells, not observations


def fit_family(
    blocks: Iterable[Block],
    *,
    group: str,
    references: Sequence[str],
    cluster: str,
    by: str | None = None,
    method: str = "auto",
    reml: bool = True,
    alpha: float = 0.05,
    strict: bool = True,
    name_reference: bool = True,
    allow_missing: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Gap tests of every block against every reference, Holm/BH-adjusted over all of them.

    ``strict=True`` raises the first :class:`~audit.errors.AuditError` (a table a user gave should be
    fixed); ``strict=False`` records a test that cannot be fitted as rows with ``method='not
    fitted'``, no p-value and the reason in ``warning`` (outside the family), and returns the reasons
    as ``notes``. A problem is reported at the block's ``where``, followed by ``", reference <level>"``
    when ``name_reference``. ``allow_missing`` is :func:`~audit.stats.gap_test`'s (analyse despite
differential missingness). Returns ``(results, notes)``: the label columns, then
    :func:`~audit.stats.gap_test`'s columns, then ``p_holm, p_bh, significant_holm``.
    """
    parts, notes = [], []
    for b in blocks:
        p, n = fit_block(b, group=group, references=references, cluster=cluster, by=by, method=method, reml=reml,
                         alpha=alpha, strict=strict, name_reference=name_reference, allow_missing=allow_missing)
        parts += p
        notes += n
    return family_table(parts, alpha=alpha), notes


def fit_block(
    b: Block,
    *,
    group: str,
    references: Sequence[str],
    cluster: str,
    by: str | None = None,
    method: str = "auto",
    reml: bool = True,
    alpha: float = 0.05,
    strict: bool = True,
    name_reference: bool = True,
    allow_missing: bool = False,
) -> tuple[list[pd.DataFrame], list[str]]:
    """One block's part of :func:`fit_family` (the same arguments): its labelled result rows against each
    reference, not yet adjusted, and the notes of the tests that could not be fitted. A pure function of
    the block, so blocks may be fitted in any process and order, and :func:`family_table` of the parts in
    block order is :func:`fit_family`'s table."""
    parts, notes = [], []
    for ref in references:
        where = f"{b.where}, reference {ref}" if name_reference else b.where
        try:
            r = gap_test(b.data, outcome=b.outcome, group=group, control=str(ref), cluster=cluster,
                         factors=list(b.factors), inner=b.inner, by=by, method=method, reml=reml, alpha=alpha,
                         where=where, allow_missing=allow_missing, cells=b.cells)
        except AuditError as exc:
            if strict:
                raise
            others = sorted(set(level_labels(b.data[group]).dropna()) - {str(ref)})
            pooled = {by: "pooled"} if by else {}
            r = pd.DataFrame([dict(group=g, reference=ref, **pooled, method="not fitted", converged=False,
                                   warning=exc.message) for g in others])
            notes.append(f"{where}: {exc.what}")
        for i, (name, value) in enumerate(b.labels.items()):
            r.insert(i, name, value)
        parts.append(r)
    return parts, notes


def family_table(parts: list[pd.DataFrame], *, alpha: float = 0.05) -> pd.DataFrame:
    """The blocks' parts (:func:`fit_block`) as one table, Holm/BH-adjusted over all of its tests."""
    if not parts:
        return pd.DataFrame()
    res = pd.concat(parts, ignore_index=True)
    if "p_value" not in res.columns:  # not one test could be fitted
        res["p_value"] = float("nan")
    return adjust_family(res, alpha=alpha)


#: Family labels of a pre-registered analysis (spec key ``analysis.primary``).
CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"


def matches_primary(outcomes: pd.Series, primary: Sequence[str]) -> pd.Series:
    """Whether each outcome is one of the ``primary`` names (``scorer.measure`` exactly, or a bare
    measure name matching the part after the last dot)."""
    o = outcomes.astype(str)
    hit = pd.Series(False, index=outcomes.index)
    for w in primary:
        hit |= (o == w) | ((o.str.rpartition(".")[2] == w) if "." not in w else False)
    return hit


def split_families(results: pd.DataFrame, others: pd.DataFrame | None, primary: Sequence[str], *,
                   alpha: float = 0.05) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Label and adjust a pre-registered analysis: the **confirmatory** family is every test of a
    primary outcome with style and cue type pooled (each group against each reference, each model)
    plus the primary outcomes' max - min disparity tests (``others``); Holm (FWER) is called on it.
    Every other test is **exploratory**: adjusted in its own family, reported with BH (FDR) q-values
    and ``significant_bh``. Adds the column ``family`` to both tables.
    """
    from .corrections import adjust_within

    def label(df: pd.DataFrame) -> pd.Series:
        conf = matches_primary(df["outcome"], primary)
        for col in ("style", "cue_type"):
            if col in df.columns:
                conf &= df[col].astype(str) == "pooled"
        if "pre_registered" in df.columns:  # differences of gaps between models: only a stated reference model
            conf &= df["pre_registered"].astype(object).fillna(True).astype(bool)
        return pd.Series(pd.Categorical(conf.map({True: CONFIRMATORY, False: EXPLORATORY}),
                                        [CONFIRMATORY, EXPLORATORY]).astype(str), index=df.index)

    res = results.assign(family=label(results))
    if others is None or others.empty:
        return adjust_within(res, alpha=alpha), others
    oth = others.assign(family=label(others))
    both = adjust_within(pd.concat([res, oth], ignore_index=True, sort=False), alpha=alpha)
    cols = ["p_holm", "p_bh", "significant_holm", "significant_bh", "family"]
    a, b = res.copy(), oth.copy()
    a[cols] = both[cols].iloc[:len(a)].to_numpy()
    b[cols] = both[cols].iloc[len(a):].to_numpy()
    for df in (a, b):
        df["p_holm"] = df["p_holm"].astype(float)
        df["p_bh"] = df["p_bh"].astype(float)
        df["significant_holm"] = df["significant_holm"].astype(bool)
        df["significant_bh"] = df["significant_bh"].astype(bool)
    return a, b
