"""Label hygiene, one rule for every entry point (spec, import, ratings, ``analyze``; the reanalysis
commands apply it to their known levels through :mod:`audit.reanalysis`).

A group label read from a user's file or command line is cleaned the same way everywhere:

1. Unicode NFC normalisation (``"Me\\u0301xico"`` and ``"México"`` are one label);
2. leading and trailing whitespace removed, inner runs of whitespace made one space
   (``"Black "``, ``"Black\\t"`` and ``"Black"`` are one label);
3. a label that is empty after that is missing (None), not a group called ``""``.

Labels that still differ only by case (``Control`` / ``control``, ``BLACK`` / ``Black``) are an
:class:`~audit.errors.AuditError` that names both spellings and where they are, because they would
otherwise print as two groups of one name, or look like one group and be two. With ``fold_case=True``
(the commands' ``--fold-case``) they are folded into the most frequent spelling (ties: a spelling that
is not all capitals, then the first in sorted order) with a warning that says which were folded.

>>> clean_label("  Black\\u00a0 woman ")
'Black woman'
>>> import pandas as pd
>>> clean_labels(pd.Series(["Black ", "White", "black"]), fold_case=True, where="t.csv", column="race")[0].tolist()
['Black', 'White', 'Black']
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Any, Iterable

import pandas as pd

from .errors import AuditError

__all__ = ["clean_label", "clean_labels", "clean_level", "fold_key"]


def clean_label(value: Any) -> str | None:
    """One label, cleaned (NFC, whitespace stripped and collapsed); None when missing or empty."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = " ".join(unicodedata.normalize("NFC", str(value)).split())
    return text or None


def fold_key(label: str) -> str:
    """The key two labels share when they differ only by case (and width/compatibility forms)."""
    return unicodedata.normalize("NFKC", label).casefold()


def _case_groups(labels: Iterable[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for lab in labels:
        groups.setdefault(fold_key(lab), [])
        if lab not in groups[fold_key(lab)]:
            groups[fold_key(lab)].append(lab)
    return {k: sorted(v) for k, v in groups.items() if len(v) > 1}


def clean_labels(values: pd.Series | Iterable[Any], *, where: str, column: str, fold_case: bool = False,
                 ) -> tuple[pd.Series, list[str]]:
    """``values`` cleaned with :func:`clean_label`, and the warnings to show.

    Labels equal up to case raise :class:`AuditError` naming the spellings, unless ``fold_case``:
    then every spelling becomes the most frequent one and a warning says so."""
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    cleaned = pd.Series([clean_label(v) for v in s], index=s.index, dtype=object)
    present = cleaned.dropna()
    clashes = _case_groups(present.unique().tolist())
    warnings: list[str] = []
    if clashes and not fold_case:
        first = next(iter(clashes.values()))
        more = f" (and {len(clashes) - 1} more such set(s))" if len(clashes) > 1 else ""
        raise AuditError(
            f"column '{column}' has labels that differ only by case: {' / '.join(repr(x) for x in first)}{more}",
            where=where, fix="make the spellings the same in the file, or pass --fold-case to treat them as one label")
    if clashes:
        counts = Counter(present.tolist())
        mapping: dict[str, str] = {}
        for spellings in clashes.values():
            keep = sorted(spellings, key=lambda x: (-counts[x], x.isupper(), x))[0]
            mapping.update({x: keep for x in spellings})
            warnings.append(f"{where}: column '{column}': labels {' / '.join(repr(x) for x in spellings)} differ only "
                            f"by case; folded into {keep!r} (--fold-case)")
        cleaned = cleaned.map(lambda x: mapping.get(x, x) if x is not None else None)
    return cleaned, warnings


def clean_level(level: Any, labels: pd.Series | Iterable[Any], *, fold_case: bool = False) -> str | None:
    """A level named on the command line (``--control``, ``--reference``) cleaned like the labels, and,
    with ``fold_case``, spelled as the (cleaned) labels spell it."""
    lab = clean_label(level)
    if lab is None or not fold_case:
        return lab
    for x in pd.Series(labels).dropna().unique():
        if fold_key(str(x)) == fold_key(lab):
            return str(x)
    return lab
