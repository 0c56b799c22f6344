"""Reading the files of a release in chunks (``empathy-audit import``, :mod:`audit.importer`).

A release file is read as a stream of DataFrames of at most ``chunk_rows`` rows each, so the import's
memory stays flat whatever the file's size (issue 28, item 8: a 1 GB CSV imports in at most 2 GB of
memory; ``benchmarks/bench_import.py`` measures it). Cells are text (no number or ``NA`` guessing),
Python ``str`` objects (``object`` dtype: pandas' Arrow-backed strings cannot hold a lone surrogate,
and one Arrow string column of more than 2 GB fails), and empty cells are missing.

Every failure to read is one :class:`~audit.errors.AuditError` that says what to do:

- a file that is not UTF-8: which encoding it looks like (a UTF-16 byte-order mark, NUL bytes) and
  how to re-save it, or ``encoding:`` for the file;
- a TSV read without ``quoting: csv`` whose fields are quoted (a quoted reply with a newline or tab in
  it splits into two rows): a cell with an unbalanced double quote is refused with the hint;
- a tokenizer error: the line, and the same hint where the file holds double quotes.
"""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import AuditError
from .untrusted import replace_unencodable

__all__ = ["FORMATS", "file_format", "iter_release_file", "encoding_advice"]

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
CHUNK_ROWS = 20_000
QUOTE_HINT = ("if its fields are quoted (replies with newlines or tabs inside double quotes), add quoting: csv "
              "for this file in the import spec")


def file_format(f: Any, p: Path) -> str:
    if f.format:
        return f.format
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise AuditError(f"cannot tell the format of '{p.name}' from its suffix", where=str(p),
                         fix="give format: csv, tsv, jsonl or parquet for this file")
    return fmt


def encoding_advice(path: Path, exc: UnicodeDecodeError, encoding: str) -> AuditError:
    """The error for a file that cannot be decoded: what it looks like, and how to re-save it."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        looks, enc = "UTF-16 (it starts with a UTF-16 byte-order mark; Excel's 'Unicode Text' saves so)", "utf-16"
    elif head.count(b"\x00") > len(head) // 8:
        looks, enc = "UTF-16 without a byte-order mark (every other byte is zero)", "utf-16-le"
    else:
        looks, enc = "a legacy 8-bit encoding such as Windows-1252 or Latin-1", "cp1252"
    return AuditError(
        f"the file is not valid {encoding.upper().replace('-SIG', '')} (byte {exc.start}): it looks like {looks}",
        where=str(path),
        fix=f"re-save it as UTF-8 (Excel: Save As 'CSV UTF-8'; or iconv -f {enc.upper()} -t UTF-8 FILE > NEW), "
            f"or give encoding: {enc} for this file in the import spec")


def _unbalanced_quote(chunk: pd.DataFrame, first_row: int, path: Path) -> None:
    """A TSV read with quotes as text: a cell with an odd number of double quotes that starts with one
    is a quoted field the reader split (a newline or tab inside the quotes)."""
    for col in chunk.columns:
        s = chunk[col]
        if s.dtype != object:
            continue
        for k, v in enumerate(s.tolist()):
            if isinstance(v, str) and v.startswith('"') and v.count('"') % 2 == 1:
                raise AuditError(
                    f"row {first_row + k} column '{col}' starts a quoted field that does not end in that field "
                    f"({v[:40]!r}): the file seems to quote its fields, and a quoted newline or tab split a row",
                    where=str(path), fix=QUOTE_HINT + "; if the quotes are text, give quoting: none")


def _csv_chunks(f: Any, path: Path, fmt: str, chunk_rows: int, encoding: str) -> Iterator[pd.DataFrame]:
    quoting = f.quoting or ("csv" if fmt == "csv" else "none")
    reader = pd.read_csv(path, sep="," if fmt == "csv" else "\t", header=0 if f.header else None, dtype=object,
                         keep_default_na=False, na_values=[""], encoding=encoding, chunksize=chunk_rows,
                         quoting=csv.QUOTE_MINIMAL if quoting == "csv" else csv.QUOTE_NONE)
    first = 1
    with reader:
        for df in reader:
            names = list(f.columns or [])
            if not f.header:
                if df.shape[1] != len(names):
                    raise AuditError(
                        f"the file has {df.shape[1]} column(s) but 'columns' names {len(names)} ({', '.join(names)})",
                        where=str(path), fix="name every column of the headerless file, in order"
                        + (f"; {QUOTE_HINT}" if fmt == "tsv" and f.quoting is None and _has_quote(path) else ""))
                df.columns = names
            elif names:
                if len(names) != df.shape[1]:
                    raise AuditError(f"the file has {df.shape[1]} column(s) but 'columns' names {len(names)}",
                                     where=str(path), fix="leave 'columns' out, or name every column in order")
                df.columns = names
            if fmt == "tsv" and f.quoting is None:
                _unbalanced_quote(df, first, path)
            first += len(df)
            yield df


def _has_quote(path: Path) -> bool:
    with open(path, "rb") as fh:
        return b'"' in fh.read(1 << 20)


def _jsonl_chunks(path: Path, chunk_rows: int, encoding: str) -> Iterator[pd.DataFrame]:
    """JSON Lines, one object per line (blank lines skipped), read with :mod:`json` rather than pandas:
    JSON can carry a lone surrogate escape (``"\\udc80"``) that pandas' string columns cannot hold; such
    characters are replaced (:func:`audit.untrusted.replace_unencodable`) and counted per row in column
    ``_unencodable``."""
    records: list[dict[str, Any]] = []
    fixed: list[int] = []
    with path.open(encoding=encoding) as fh:  # utf-8-sig: a byte-order mark is not part of the first key
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise AuditError(f"line {line_no} is not valid JSON ({exc.msg})", where=str(path),
                                 fix="give one JSON object per line") from None
            if not isinstance(obj, dict):
                raise AuditError(f"line {line_no} is not a JSON object", where=str(path),
                                 fix="give one JSON object per line")
            n = 0
            for k, v in obj.items():
                if isinstance(v, str):
                    obj[k], m = replace_unencodable(v)
                    n += m
            records.append(obj)
            fixed.append(n)
            if len(records) >= chunk_rows:
                yield _frame(records, fixed)
                records, fixed = [], []
    if records:
        yield _frame(records, fixed)


def _frame(records: list[dict[str, Any]], fixed: list[int]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records)
    df = df.astype({c: object for c in df.columns if df[c].dtype != object and not pd.api.types.is_numeric_dtype(df[c])})
    df["_unencodable"] = fixed
    return df


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        for batch in pf.iter_batches(batch_size=chunk_rows):
            df = batch.to_pandas()
            yield df.astype({c: object for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])})


def iter_release_file(f: Any, path: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The file ``f`` (an :class:`audit.importer.ImportFile`) at ``path`` as DataFrames of at most
    ``chunk_rows`` rows, with ``f.values`` added as constant columns. Every failure is an AuditError."""
    if not path.is_file():
        raise AuditError("release file not found", where=str(path), fix="check the path in the import spec")
    fmt = file_format(f, path)
    if fmt in ("jsonl", "parquet") and (f.columns or not f.header):
        raise AuditError("'header' and 'columns' describe csv/tsv files only; jsonl and parquet name their columns",
                         where=str(path), fix="leave 'header' and 'columns' out for this file")
    encoding = getattr(f, "encoding", None) or "utf-8-sig"
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise AuditError(f"unknown encoding '{encoding}'", where=str(path),
                         fix="give a Python codec name, e.g. utf-8, utf-16, cp1252") from None
    if fmt in ("csv", "tsv"):
        chunks = _csv_chunks(f, path, fmt, chunk_rows, encoding)
    elif fmt == "jsonl":
        chunks = _jsonl_chunks(path, chunk_rows, encoding)
    else:
        chunks = _parquet_chunks(path, chunk_rows)
    empty = True
    while True:
        try:
            df = next(chunks)
        except StopIteration:
            break
        except AuditError:
            raise
        except UnicodeDecodeError as exc:
            raise encoding_advice(path, exc, encoding) from None
        except pd.errors.EmptyDataError:
            break
        except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = f"; {QUOTE_HINT}" if fmt == "tsv" and f.quoting is None and _has_quote(path) else ""
            raise AuditError(f"cannot read the {fmt} file: {first}", where=str(path),
                             fix="check the format (and header/columns) given for this file" + hint) from None
        empty = False
        for k, v in f.values.items():
            df[k] = str(v)
        yield df
    if empty:
        raise AuditError("the file holds no rows", where=str(path), fix="check the path and the file")
