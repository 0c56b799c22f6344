"""No silent drops: group levels as written, missing outcomes counted, differential missingness.

A gap computed on the rows that happen to have an outcome is only the gap of the population when
the outcome is missing at random *within* each group. When the share of missing outcomes differs
between a group and its reference, the usable rows of the two groups were selected differently and
the gap is biased (in the worst case all of it is selection: drop the low values of one group and a
gap appears). These functions make every drop visible:

* :func:`level_labels` - group levels as the user wrote them (an integral float column read as
  ``0.0, 1.0`` is labelled ``0, 1``), and :func:`match_level` to find a level a user names;
* :func:`missing_by_group` - rows and missing outcomes per group (and per ``by`` level);
* :func:`differential_missingness` - each group's missing share against the reference's, with
  Fisher's exact test of the 2x2 table (group/reference x missing/present; Fisher 1922). A group is
  flagged when ``p < alpha`` or when all of its outcomes are missing while the reference has some.

Example
-------
>>> import numpy as np, pandas as pd
>>> df = pd.DataFrame({"group": ["c"] * 20 + ["A"] * 20, "y": [1.0] * 20 + [np.nan] * 12 + [1.0] * 8})
>>> differential_missingness(missing_by_group(df, "y", "group"), "c")[["group", "n_missing", "flagged"]].values.tolist()
[['A', 12, True]]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["level_labels", "match_level", "missing_by_group", "differential_missingness", "missing_note"]


def level_labels(values: pd.Series) -> pd.Series:
    """The levels of a group column as text, as the user wrote them.

    A float column whose values are all whole numbers (pandas reads ``0, 1`` with a missing value as
    ``0.0, 1.0``) is labelled ``0, 1``; any other column is ``str`` of its values. Missing values stay
    missing.
    """
    s = pd.Series(values)
    if isinstance(s.dtype, pd.CategoricalDtype):  # str() of each category once, not of each row (seconds a
        names = [str(x) for x in s.cat.categories]  # call on a million replies' cells)
        if len(set(names)) == len(names):
            return s.cat.rename_categories(names)
    if pd.api.types.is_float_dtype(s):
        v = s.to_numpy(dtype=float)
        ok = ~np.isnan(v)
        if np.all(np.mod(v[ok], 1) == 0):
            out = pd.Series([str(int(x)) if o else None for x, o in zip(v, ok)], index=s.index, dtype=object)
            return out
    return s.where(s.isna(), s.astype(str))


def match_level(labels: pd.Series | list[str], level: object) -> str | None:
    """The label among ``labels`` that the user's ``level`` names: the same text, else the same number
    (``"0"`` names ``"0.0"`` and the other way round); None when no label matches."""
    present = [str(x) for x in pd.unique(pd.Series(labels).dropna())]
    text = str(level)
    if text in present:
        return text
    try:
        num = float(text)
    except ValueError:
        return None
    hits = []
    for lv in present:
        try:
            if float(lv) == num:
                hits.append(lv)
        except ValueError:
            continue
    return hits[0] if len(hits) == 1 else None


def missing_by_group(data: pd.DataFrame, outcome: str, group: str, by: str | None = None, *,
                     cells=None) -> pd.DataFrame:
    """Rows and missing outcomes per group (per ``(group, by)`` with ``by``).

    Columns: ``group`` (labels of :func:`level_labels`), [``by``], ``n_rows``, ``n_missing``,
    ``share_missing``. A row counts as missing when its outcome is NaN/None; rows without a group are
    not counted (the analysis refuses them). ``cells`` (:class:`audit.stats.cells.Cells`): the rows are
    cells and their observed and missing counts are summed.
    """
    if cells is not None:
        d = pd.DataFrame({"group": level_labels(data[group]), "missing": data[cells.missing].to_numpy(),
                          "rows": data[cells.missing].to_numpy() + data[cells.n].to_numpy()}, index=data.index)
    else:
        y = pd.to_numeric(data[outcome], errors="coerce")
        d = pd.DataFrame({"group": level_labels(data[group]), "missing": y.isna().to_numpy(), "rows": 1},
                         index=data.index)
    keys = ["group"]
    if by is not None:
        d[by] = data[by].astype(str)
        keys.append(by)
    d = d[d["group"].notna()]
    out = d.groupby(keys, sort=True).agg(n_rows=("rows", "sum"), n_missing=("missing", "sum")).reset_index()
    out["n_rows"] = out["n_rows"].astype(int)
    out = out[out["n_rows"] > 0].reset_index(drop=True)
    out["n_missing"] = out["n_missing"].astype(int)
    out["share_missing"] = out["n_missing"] / out["n_rows"]
    return out


def differential_missingness(counts: pd.DataFrame, reference: str, alpha: float = 0.05) -> pd.DataFrame:
    """Each group's missing share against the reference's (rows of :func:`missing_by_group`).

    For group g with ``m_g`` of ``n_g`` outcomes missing and the reference with ``m_r`` of ``n_r``,
    ``p`` is the two-sided Fisher exact test of the table ``[[m_g, n_g - m_g], [m_r, n_r - m_r]]``
    (Fisher 1922; exact, so valid for small counts). ``flagged`` when ``p < alpha``, or when every
    outcome of the group is missing while the reference has some (nothing is left to compare).

    Returns ``group, n_rows, n_missing, share_missing, ref_n_rows, ref_n_missing, ref_share_missing,
    p_value, flagged`` for every group other than the reference.
    """
    c = counts.groupby("group", sort=True)[["n_rows", "n_missing"]].sum()
    if reference not in c.index:
        return pd.DataFrame(columns=["group", "n_rows", "n_missing", "share_missing", "ref_n_rows", "ref_n_missing",
                                     "ref_share_missing", "p_value", "flagged"])
    nr, mr = int(c.loc[reference, "n_rows"]), int(c.loc[reference, "n_missing"])
    rows = []
    for g, r in c.drop(index=reference).iterrows():
        n, m = int(r["n_rows"]), int(r["n_missing"])
        p = float(stats.fisher_exact([[m, n - m], [mr, nr - mr]])[1]) if (m + mr) > 0 else 1.0
        rows.append(dict(group=g, n_rows=n, n_missing=m, share_missing=m / n if n else np.nan, ref_n_rows=nr,
                         ref_n_missing=mr, ref_share_missing=mr / nr if nr else np.nan, p_value=p,
                         flagged=bool(p < alpha or (m == n and mr < nr))))
    return pd.DataFrame(rows)


def missing_note(row: dict | pd.Series) -> str:
    """One sentence on a group's missingness against the reference (a row of
    :func:`differential_missingness`)."""
    return (f"missing outcomes differ: {row['group']} {row['n_missing']} of {row['n_rows']} "
            f"({100 * row['share_missing']:.0f}%) vs reference {row['ref_n_missing']} of {row['ref_n_rows']} "
            f"({100 * row['ref_share_missing']:.0f}%), Fisher exact p = {row['p_value']:.2g}")
