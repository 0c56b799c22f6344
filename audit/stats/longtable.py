"""Any long table, not only an audit run: read it, fit the audit's family of gap tests to it.

:func:`read_table` reads a long table (one row per observation) from CSV, TSV, JSONL, JSON or
parquet with errors a user can act on. :func:`analyze_table` fits the audit's gap model to every
outcome column against the control level (and any extra reference levels) and adjusts the p-values
over the whole family; it is what ``empathy-audit analyze TABLE`` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..errors import AuditError
from .family import Block, fit_family

__all__ = ["read_table", "analyze_table"]


def read_table(path: str | Path, *, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a long table (.csv, .tsv, .txt, .jsonl/.ndjson, .json, .parquet) with clear errors.

    ``text_columns`` (e.g. the group and cluster columns) are kept as the text the file holds, so a
    level written ``0`` or ``1.50`` is matched as written, not as a float ``0.0`` or ``1.5``.

    ``.txt`` files are sniffed for their separator; anything else unknown is read as CSV. A missing
    file, an unreadable file and a table without rows raise :class:`~audit.errors.AuditError`.

    Example
    -------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("post,group,score\\np1,control,1.5\\np1,A,1.25\\n")
    >>> read_table(path).shape
    (2, 3)
    """
    p = Path(path)
    if not p.exists():
        raise AuditError("table file not found", where=str(p), fix="check the path")
    suffix = "".join(p.suffixes[-2:]).lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    text = {c: str for c in text_columns if c}
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True)
        elif suffix == ".json":
            df = pd.read_json(p)
        elif suffix in (".tsv", ".tab"):
            df = pd.read_csv(p, sep="\t", dtype=text)
        else:
            df = (pd.read_csv(p, sep=None, engine="python", dtype=text) if suffix in (".txt",)
                  else pd.read_csv(p, dtype=text))
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditError(f"cannot read the table: {first}", where=str(p),
                         fix="give a CSV (comma-separated, header row), TSV, JSONL or parquet file") from None
    if df.empty:
        raise AuditError("the table has no rows", where=str(p), fix="give a table with one row per observation")
    return df


def analyze_table(
    data: pd.DataFrame,
    *,
    outcome: str | Sequence[str],
    group: str = "group",
    control: str = "control",
    cluster: str = "post_id",
    extra_references: Sequence[str] = (),
    factors: Sequence[str] = (),
    inner: str | None = None,
    by: str | None = None,
    method: str = "auto",
    reml: bool = True,
    alpha: float = 0.05,
    where: str = "the table",
    allow_missing: bool = False,
    fold_case: bool = False,
    warnings: list[str] | None = None,
) -> pd.DataFrame:
    """Gap tests of every outcome column, Holm/BH-adjusted over the whole family.

    For each column in ``outcome`` and each reference level (``control``, then ``extra_references``),
    :func:`~audit.stats.gap_test` fits ``outcome ~ C(group, Treatment(reference)) + factors +
    (1 | cluster) [+ (1 | cluster:inner)]`` (REML; GEE logistic with Mancl-DeRouen corrected robust
    SEs for 0/1 outcomes) and, with ``by``, the gaps per level of ``by`` beside the pooled ones. The
    family is every row returned; ``p_holm`` (Holm 1979, family-wise error) and ``p_bh`` (Benjamini &
    Hochberg 1995, false discovery rate) are adjusted over all of them (:func:`~audit.stats.adjust_family`).
    Formulas: :mod:`audit.stats.gaps` and ``docs/statistics.md``.

    Parameters
    ----------
    data : long table, one row per observation.
    outcome : outcome column, or several (each is part of the family).
    group, control, cluster : group column, its reference level, the cluster (base post) column.
    extra_references : further reference levels of ``group``; every group is compared with each too.
    factors, inner, by, method, reml, alpha : as in :func:`~audit.stats.gap_test`.
    where : how problems name the table (e.g. its file name).
    allow_missing : analyse even where the share of missing outcomes differs between a group and the
        reference (refused by default: :mod:`audit.stats.missing`); every row counts its missing
        outcomes (``n_missing``, ``ref_n_missing``) and states ``n_clusters`` and ``design``.
    fold_case : the group labels are cleaned (:mod:`audit.labels`: NFC, whitespace); labels equal up
        to case are refused unless ``fold_case``, which folds them (a warning is appended to ``warnings``).

    Returns
    -------
    DataFrame: ``outcome``, then :func:`~audit.stats.gap_test`'s columns (with a column named ``by``
    when ``by`` is given), then ``p_holm, p_bh, significant_holm``. The first problem that stops a
    test raises :class:`~audit.errors.AuditError` at ``where`` (and the reference level, when there
    are extra references).

    Example
    -------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(2)
    >>> df = pd.DataFrame({"post": np.repeat(np.arange(40), 3), "group": np.tile(["control", "A", "B"], 40)})
    >>> df["score"] = 1 - 0.4 * (df.group == "A") + rng.normal(0, .3, 40)[df.post] + rng.normal(0, .3, 120)
    >>> res = analyze_table(df, outcome="score", group="group", control="control", cluster="post")
    >>> res[["group", "significant_holm"]].values.tolist()
    [['A', True], ['B', False]]
    """
    outcomes = [outcome] if isinstance(outcome, str) else list(outcome)
    if not outcomes:
        raise AuditError("no outcome column named", where=where, fix="name at least one outcome column")
    from ..labels import clean_labels, clean_level

    if group in data.columns:
        data = data.copy()
        data[group], warns = clean_labels(data[group], where=where, column=group, fold_case=fold_case)
        if warnings is not None:
            warnings.extend(warns)
        control = clean_level(control, data[group], fold_case=fold_case) or control
        extra_references = [clean_level(x, data[group], fold_case=fold_case) or x for x in extra_references]
    blocks = [Block({"outcome": out}, data, out, tuple(factors), inner, where=where) for out in outcomes]
    res, _ = fit_family(blocks, group=group, references=[str(control), *map(str, extra_references)],
                        cluster=cluster, by=by, method=method, reml=reml, alpha=alpha, strict=True,
                        name_reference=bool(extra_references), allow_missing=allow_missing)
    return res
