"""Input checks shared by the replication modes (``stigma reanalyze``, ``appropriateness reanalyze``,
``judge validate``): a published table is validated like any other input before a rate is computed.

- :func:`read_text_table`: :func:`audit.stats.read_table` after an encoding check, so a UTF-16 or
  Windows-1252 export gets one error that names the encoding and how to re-save the file, not a
  codec traceback.
- :func:`check_blanks`: a blank cell in a design column is an error naming the file, row and column;
  with ``drop_blank`` the rows are dropped and counted instead.
- :func:`match_levels`: labels are matched to the known levels case-insensitively, with surrounding
  and repeated whitespace ignored (``white`` -> ``White``); an unknown label is an error listing the
  known levels.
- :func:`check_duplicates`: two rows with the same design key are an error; with ``dedupe`` the later
  copies are dropped and counted.

Row numbers are those a spreadsheet shows for a CSV with one header row (the first data row is row 2),
as in the rest of the toolkit's table errors: the functions take a frame whose index is the 0-based row
of the file (``reset_index(drop=True)`` after reading) and keep that index when they drop rows.

The label normalisation here is deliberately small and local (issue 27); a shared helper for spec,
import and ratings labels is planned and this one should call it once it exists.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .errors import AuditError

TEXT_SUFFIXES = {".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json", ""}
RESAVE = ("re-save it as UTF-8 (Excel: File > Save As > 'CSV UTF-8'; LibreOffice: Save As > Character set "
          "'Unicode (UTF-8)'; command line: iconv -f {enc} -t UTF-8 IN > OUT)")


def check_encoding(path: str | Path) -> None:
    """Raise one AuditError when a text table is not UTF-8: a UTF-16/32 byte-order mark, NUL bytes (UTF-16
    without a mark) or bytes that do not decode as UTF-8 (with the line and the likely encoding)."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in TEXT_SUFFIXES:
        return
    raw = p.read_bytes()
    for bom, enc in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                     (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if raw.startswith(bom):
            raise AuditError(f"the file is {enc}-encoded (it starts with a {enc} byte-order mark), not UTF-8",
                             where=str(p), fix=RESAVE.format(enc=enc))
    if b"\x00" in raw[:4096]:
        raise AuditError("the file holds NUL bytes: it is most likely UTF-16 without a byte-order mark, not UTF-8",
                         where=str(p), fix=RESAVE.format(enc="UTF-16LE"))
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        byte = raw[exc.start:exc.start + 1].hex()
        enc = "Windows-1252 (or Latin-1)"
        raise AuditError(f"line {line}: byte 0x{byte} is not UTF-8; the file is most likely {enc}",
                         where=str(p), fix=RESAVE.format(enc="WINDOWS-1252")) from None


def read_text_table(path: str | Path, *, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """:func:`audit.stats.read_table` after :func:`check_encoding`."""
    from .stats.longtable import read_table

    check_encoding(path)
    return read_table(path, text_columns=text_columns)


def is_blank(v: object) -> bool:
    """None, NaN/NA and text that is empty or only whitespace."""
    if v is None:
        return True
    if isinstance(v, str):
        return not v.strip()
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def norm_label(v: object) -> str:
    """A label for matching: text, stripped, inner whitespace collapsed, case-folded."""
    return re.sub(r"\s+", " ", str(v)).strip().casefold()


@dataclass
class TableChecks:
    """What the checks changed, for the summary: ``dropped_blank`` (column -> rows dropped for a blank
    cell there), ``dropped_duplicates`` (rows dropped as repeats of a design key), ``duplicates_differ``
    (of those, how many differed from the kept row in some other column), ``recased`` (column ->
    {written: known} labels matched case-insensitively)."""

    n_rows: int = 0
    dropped_blank: dict[str, int] = field(default_factory=dict)
    dropped_duplicates: int = 0
    duplicates_differ: int = 0
    recased: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped_blank.values()) + self.dropped_duplicates

    def as_meta(self) -> dict[str, object]:
        return {"n_rows_read": self.n_rows, "dropped_blank": dict(self.dropped_blank),
                "dropped_duplicates": self.dropped_duplicates, "duplicates_differ": self.duplicates_differ,
                "recased": {k: dict(v) for k, v in self.recased.items()}}

    def sentence(self) -> str:
        """One line for the printed summary ('' when nothing was dropped or re-cased)."""
        parts = []
        if self.dropped_blank:
            parts.append("dropped for a blank cell (--drop-blank): " + ", ".join(
                f"{n} in column '{c}'" for c, n in self.dropped_blank.items()))
        if self.dropped_duplicates:
            differ = (f", {self.duplicates_differ} of them differing from the kept row in another column"
                      if self.duplicates_differ else "")
            parts.append(f"dropped as repeats of an earlier row's design key (--dedupe): "
                         f"{self.dropped_duplicates}{differ}")
        for c, m in self.recased.items():
            parts.append(f"column '{c}' matched case-insensitively: " + ", ".join(
                f"'{a}' -> '{b}'" for a, b in sorted(m.items())))
        return "; ".join(parts)


def check_blanks(df: pd.DataFrame, columns: dict[str, str], *, where: str, drop_blank: bool,
                 checks: TableChecks, flag: str = "--drop-blank") -> pd.DataFrame:
    """Rows whose cell is blank in any of ``columns`` (field -> column): an AuditError naming the first
    (file, row, column), or with ``drop_blank`` those rows dropped and counted per column (a row blank in
    two columns is counted once, under the first)."""
    keep = pd.Series(True, index=df.index)
    for fld, col in columns.items():
        blank = df[col].map(is_blank) & keep
        if not blank.any():
            continue
        if not drop_blank:
            n = int(blank.sum())
            raise AuditError(f"row {int(blank.idxmax()) + 2}: the {fld} cell is blank ({n} blank cell{'s' if n > 1 else ''} in "
                             f"this column)", where=f"{where}, column '{col}'",
                             fix=f"fill the cells, or pass {flag} to drop those rows (they are counted and "
                                 "stated in the summary)")
        checks.dropped_blank[col] = int(blank.sum())
        keep &= ~blank
    return df[keep]


def match_levels(df: pd.DataFrame, column: str, known: Iterable[str], *, where: str, what: str,
                 checks: TableChecks) -> pd.Series:
    """The cells of ``column`` as the ``known`` level each names (case-insensitive, whitespace-stripped);
    an AuditError listing the known levels for the first label that names none."""
    known = list(known)
    by = {norm_label(k): k for k in known}
    out, recased = [], {}
    for i, v in df[column].items():
        k = by.get(norm_label(v))
        if k is None:
            raise AuditError(f"row {int(i) + 2}: unknown {what} '{str(v)[:60]}'", where=f"{where}, column '{column}'",
                             fix="use one of the known levels (any case): " + ", ".join(known))
        if str(v) != k:
            recased[str(v)] = k
        out.append(k)
    if recased:
        checks.recased.setdefault(column, {}).update(recased)
    return pd.Series(out, index=df.index, dtype=object)


def consistent_labels(df: pd.DataFrame, column: str, *, where: str, checks: TableChecks,
                      canonical: dict[str, str] | None = None) -> pd.Series:
    """Free labels (no known list): whitespace stripped; a label in ``canonical`` (normalised -> spelling)
    takes that spelling; two spellings of one label that differ only in case are an AuditError."""
    canonical = {norm_label(k): v for k, v in (canonical or {}).items()}
    seen: dict[str, str] = {}
    out, recased = [], {}
    for i, v in df[column].items():
        s = re.sub(r"\s+", " ", str(v)).strip()
        n = s.casefold()
        if n in canonical:
            s = canonical[n]
        elif n in seen and seen[n] != s:
            raise AuditError(f"row {int(i) + 2}: '{s}' and '{seen[n]}' differ only in case", where=f"{where}, column '{column}'",
                             fix="write every group with one spelling; the analysis would otherwise treat them as "
                                 "two groups")
        seen.setdefault(n, s)
        if s != str(v):
            recased[str(v)] = s
        out.append(s)
    if recased:
        checks.recased.setdefault(column, {}).update(recased)
    return pd.Series(out, index=df.index, dtype=object)


def check_duplicates(df: pd.DataFrame, key: Sequence[str], *, where: str, dedupe: bool, checks: TableChecks,
                     compare: Sequence[str] = (), names: dict[str, str] | None = None,
                     hint: str = "") -> pd.DataFrame:
    """Rows whose ``key`` columns repeat an earlier row's: an AuditError naming both rows and the key,
    or with ``dedupe`` the repeats dropped (the first row is kept) and counted; ``compare`` columns
    count the dropped repeats that differ from the kept row."""
    def text(v: object) -> str:
        return "" if is_blank(v) else str(v)

    # one string per row (blank and NaN cells compare equal to each other, unlike in pandas' NaN logic)
    k = pd.Series(["\x1f".join(t) for t in zip(*(df[c].map(text) for c in key))], index=df.index, dtype=object)
    dup = k.duplicated(keep="first")
    if not dup.any():
        return df
    names = names or {}
    if not dedupe:
        pos = dup.idxmax()
        first = k.index[(k == k[pos]).to_numpy()][0]
        row = df.loc[pos]
        label = ", ".join(f"{names.get(c, c)}={text(row[c]):.40}" for c in key)
        raise AuditError(f"rows {int(first) + 2} and {int(pos) + 2} have the same design key ({label}); "
                         f"{int(dup.sum())} rows repeat an earlier row's key", where=where,
                         fix="remove the repeats, or pass --dedupe to keep each key's first row (the dropped rows "
                             "are counted and stated in the summary)" + (f"; {hint}" if hint else ""))
    if compare:
        kept = {kk: tuple(text(v) for v in vals) for kk, vals in
                zip(k[~dup], zip(*(df.loc[~dup, c] for c in compare)))}
        checks.duplicates_differ += sum(kept[kk] != tuple(text(v) for v in vals) for kk, vals in
                                        zip(k[dup], zip(*(df.loc[dup, c] for c in compare))))
    checks.dropped_duplicates += int(dup.sum())
    return df[~dup]


__all__ = ["TableChecks", "check_blanks", "check_duplicates", "check_encoding", "consistent_labels",
           "is_blank", "match_levels", "norm_label", "read_text_table"]
