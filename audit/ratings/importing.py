"""Import a rater's filled packet (``empathy-audit ratings import RUN_DIR FILE --rater ID``).

Two formats, told apart by content (a JSON list, else CSV):

- the packet's **CSV** (``ratings.csv``), filled in a spreadsheet: columns ``item_id``, ``er``,
  ``ip``, ``ex``, ``harmful``, ``comment`` are read (``post`` and ``reply`` are ignored). Comma,
  semicolon or tab separated (spreadsheets in some locales save with ``;``), UTF-8 with or without
  a byte-order mark. Rows are numbered as a spreadsheet shows them (the header is row 1).
- a **Label Studio** JSON export of the packet's tasks: a list of tasks, each with ``data.item_id``
  and ``annotations[]``, each annotation with ``result[]`` entries ``{"from_name": "er", "to_name":
  "reply", "type": "choices", "value": {"choices": ["1"]}}`` (``harmful``: choices ``harmful`` /
  ``not harmful``; ``comment``: type ``textarea``, ``value.text``). Cancelled (skipped) annotations
  are not ratings. Label Studio's ``JSON-MIN`` export (one flat object per task with ``item_id``,
  ``er``, ``ip``, ``ex``, ``harmful``, ``comment``) is read too.

Levels must be 0, 1 or 2 (``1.0`` as a spreadsheet may write it is 1). A blank level is "not rated":
counted, not an error, and stored as NULL. ``harmful``: yes/y/true/1/x/harmful or no/n/false/0/not
harmful, blank = not flagged.

Every problem is an :class:`~audit.errors.AuditError` naming the file and the row (CSV) or task
(JSON), and nothing of the file is stored unless every row is good:

- an item id that no packet of this run has;
- an item of another rater's packet (an error, not a warning: per-rater ids make it a certain
  mix-up of files or ``--rater``);
- a level out of range or not a number; a harmful flag that is neither yes nor no;
- the same item twice in one file (also two annotations on one Label Studio task);
- a rating that differs from the one already stored for this rater and reply (a conflicting
  re-import); ``replace=True`` (``--replace``) overwrites instead.

Importing the same file again changes nothing (idempotent): each stored row keeps the SHA-256 of the
file that brought it and its import time.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..errors import AuditError
from ..resources import sha256_file
from ..store import RunStore
from .packet import LEVEL_COLUMNS

YES = {"yes", "y", "true", "1", "x", "harmful"}
NO = {"no", "n", "false", "0", "not harmful", ""}


@dataclass
class ImportSummary:
    """What an import did: rows read, items rated, blank levels (not rated), rows written (new or
    replaced) and unchanged (already stored), items flagged harmful."""

    file: str
    rater: str
    format: str
    source_sha256: str
    rows: int = 0
    rated_items: int = 0
    unrated_items: int = 0
    blank_levels: int = 0
    written: int = 0
    unchanged: int = 0
    harmful: int = 0
    by_measure: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return (f"{self.file}: {self.rows} items read ({self.format}) for rater {self.rater}: {self.rated_items} rated, "
                f"{self.unrated_items} not rated, {self.blank_levels} blank levels; {self.written} ratings stored, "
                f"{self.unchanged} already stored; {self.harmful} flagged harmful")


@dataclass
class _Row:
    where: str               # "row 5" or "task 3 (id 17)"
    item_id: str
    levels: dict[str, float | None]
    harmful: int | None
    comment: str | None


def _level(raw: Any, where: str, column: str, path: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, (list, tuple)):
        if len(raw) > 1:
            raise AuditError(f"{column} has {len(raw)} choices, one level is allowed", where=f"{path}, {where}",
                             fix="choose one level per mechanism")
        raw = raw[0] if raw else None
        if raw is None:
            return None
    text = str(raw).strip().lstrip("'")  # a leading quote: a spreadsheet's 'this is text' mark
    if text == "":
        return None
    head = text.split(":", 1)[0].strip()  # "1: weak" as a label may read
    try:
        v = float(head)
    except ValueError:
        raise AuditError(f"{column} is {text!r}, not a level", where=f"{path}, {where}",
                         fix="write 0, 1 or 2 (or leave it empty if not rated)") from None
    if not math.isfinite(v) or v != int(v) or not 0 <= v <= 2:
        raise AuditError(f"{column} is {text}, out of range", where=f"{path}, {where}",
                         fix="write 0, 1 or 2 (or leave it empty if not rated)")
    return float(int(v))


def _harmful(raw: Any, where: str, path: str) -> int | None:
    if isinstance(raw, (list, tuple)):
        raw = raw[0] if raw else None
    if raw is None:
        return None
    text = str(raw).strip().lower()
    if text in YES:
        return 1
    if text in NO:
        return 0 if text else None
    raise AuditError(f"harmful is {raw!r}, neither yes nor no", where=f"{path}, {where}",
                     fix="write yes or no (or leave it empty)")


def _read_text(path: Path) -> str:
    try:  # bytes decoded as they are: a line break inside a quoted cell ("\r\n", "\r") stays what it was
        return path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise AuditError("ratings file not found", where=str(path), fix="check the path") from None
    except UnicodeDecodeError as exc:
        raise AuditError(f"ratings file is not UTF-8 (byte {exc.start})", where=str(path),
                         fix="save the spreadsheet as 'CSV UTF-8'") from None
    except OSError as exc:
        raise AuditError(f"cannot read the ratings file: {exc.strerror}", where=str(path)) from None


class _RatingsCsv(csv.excel):
    """The packet's CSV dialect (RFC 4180: ``"`` quotes, a doubled ``""`` inside a quoted cell) with
    the delimiter of the file."""


def _dialect(text: str) -> type[csv.Dialect]:
    """RFC 4180 quoting with the delimiter the header row uses (``,``, or ``;`` / tab as spreadsheets
    in some locales save). Only the delimiter is read off the file: the header names no quoted cell,
    so :class:`csv.Sniffer` given it cannot tell how quotes are escaped and guessed ``doublequote=False``,
    which broke every row whose post or reply holds a ``"``; given the whole file, it is misled by the
    commas and semicolons inside the texts."""
    header = text.split("\n", 1)[0]
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    delim = max(counts, key=lambda d: counts[d]) if max(counts.values()) else ","
    return type("_Dialect", (_RatingsCsv,), {"delimiter": delim})


def _csv_rows(text: str, path: str) -> Iterator[_Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=_dialect(text))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    need = {"item_id", *LEVEL_COLUMNS}
    if not need <= set(header):
        missing = ", ".join(sorted(need - set(header)))
        raise AuditError(f"the CSV lacks the column(s) {missing}", where=f"{path}, row 1",
                         fix="import the packet's ratings.csv with its header row unchanged")
    try:
        for i, rec in enumerate(reader, start=2):
            where = f"row {i}"
            if None in rec:  # more fields than the header names: the file's quoting is broken, not a level
                raise AuditError(f"the row has {len(header) + len(rec[None])} fields, the header {len(header)}",
                                 where=f"{path}, {where}",
                                 fix="save the spreadsheet as CSV again with its quoting (a cell with a quote, "
                                     "comma or line break must stay in double quotes)")
            item = (rec.get("item_id") or "").strip().lstrip("'")
            if not item and not any((rec.get(c) or "").strip() for c in (*LEVEL_COLUMNS, "harmful", "comment")):
                continue  # an empty line
            if not item:
                raise AuditError("the item_id is empty", where=f"{path}, {where}",
                                 fix="keep the item_id column of the packet unchanged")
            yield _Row(where, item, {m: _level(rec.get(c), where, c, path) for c, m in LEVEL_COLUMNS.items()},
                       _harmful(rec.get("harmful"), where, path), (rec.get("comment") or "").strip() or None)
    except csv.Error as exc:
        raise AuditError(f"the CSV cannot be read: {exc}", where=f"{path}, row {reader.line_num}",
                         fix="save the spreadsheet as CSV again") from None


def _ls_rows(tasks: list[Any], path: str) -> Iterator[_Row]:
    for n, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            raise AuditError("a task is not a JSON object", where=f"{path}, task {n}",
                             fix="import Label Studio's JSON export of the packet's project")
        where = f"task {n}" + (f" (id {task['id']})" if "id" in task else "")
        data = task.get("data") if isinstance(task.get("data"), dict) else task
        item = str(data.get("item_id") or "").strip()
        if not item:
            raise AuditError("the task has no data.item_id", where=f"{path}, {where}",
                             fix="import tasks made from the packet's label-studio-tasks.json")
        if "annotations" not in task:  # JSON-MIN: the choices are flat keys of the task
            yield _Row(where, item, {m: _level(task.get(c), where, c, path) for c, m in LEVEL_COLUMNS.items()},
                       _harmful(task.get("harmful"), where, path), (str(task.get("comment") or "").strip() or None))
            continue
        anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        if len(anns) > 1:
            raise AuditError(f"the task has {len(anns)} annotations; one file holds one rater's ratings",
                             where=f"{path}, {where}",
                             fix="export each annotator's project separately (or filter by annotator) and import "
                                 "each file with its --rater")
        values: dict[str, Any] = {}
        for res in (anns[0].get("result") or []) if anns else []:
            name, val = res.get("from_name"), res.get("value") or {}
            if name in values:
                raise AuditError(f"{name} is given twice in one annotation", where=f"{path}, {where}",
                                 fix="give one answer per question")
            values[name] = val.get("choices") if "choices" in val else val.get("text")
        comment = values.get("comment")
        if isinstance(comment, list):
            comment = "\n".join(str(c) for c in comment)
        yield _Row(where, item, {m: _level(values.get(c), where, c, path) for c, m in LEVEL_COLUMNS.items()},
                   _harmful(values.get("harmful"), where, path), (str(comment).strip() or None) if comment else None)


def read_rating_file(path: str | Path) -> tuple[str, list[_Row]]:
    """The rows of a filled CSV or a Label Studio JSON export: ``(format, rows)``."""
    p = Path(path)
    text = _read_text(p)
    stripped = text.lstrip()
    if stripped.startswith("[") or stripped.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AuditError(f"the JSON cannot be read: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                             where=str(p), fix="import Label Studio's JSON export unchanged") from None
        if not isinstance(doc, list):
            raise AuditError("the JSON is not a list of tasks", where=str(p),
                             fix="export the Label Studio project as JSON (or JSON-MIN)")
        return "label-studio", list(_ls_rows(doc, str(p)))
    return "csv", list(_csv_rows(text, str(p)))


def import_ratings(run_dir: str | Path, path: str | Path, *, rater: str, replace: bool = False) -> ImportSummary:
    """Check and store one rater's filled file (module docstring). All rows or none are stored. The
    rater id goes through the one label rule (:func:`audit.labels.clean_label`: NFC, whitespace)."""
    from ..labels import clean_label

    rater = clean_label(rater) or ""
    p = Path(path)
    fmt, rows = read_rating_file(p)
    sha = sha256_file(p)
    summary = ImportSummary(file=str(p), rater=rater, format=fmt, source_sha256=sha, rows=len(rows))
    with RunStore(run_dir, create=False) as store:
        items = store.rating_items_df().set_index("item_id")
        if items.empty:
            raise AuditError("this run has no rating packet", where=str(store.run_dir),
                             fix="make one first: empathy-audit ratings packet RUN_DIR --n N --raters K --out DIR")
        known_raters = sorted(set(items["rater"]))
        if rater not in known_raters:
            raise AuditError(f"rater {rater!r} has no packet in this run (raters: {', '.join(known_raters)})",
                             where=str(p), fix="give --rater as the packet named the rater (its folder name)")
        seen: dict[str, str] = {}
        for r in rows:
            if r.item_id not in items.index:
                raise AuditError(f"item id {r.item_id!r} is in no rating packet of this run", where=f"{p}, {r.where}",
                                 fix="check that the file belongs to this run's packet and that the item_id column "
                                     "was not edited")
            owner = items.at[r.item_id, "rater"]
            if owner != rater:
                raise AuditError(f"item {r.item_id} is in rater {owner}'s packet, not in rater {rater}'s",
                                 where=f"{p}, {r.where}", fix=f"import this file with --rater {owner}, or give "
                                 f"{rater}'s own file")
            if r.item_id in seen:
                raise AuditError(f"item {r.item_id} appears twice (first at {seen[r.item_id]})", where=f"{p}, {r.where}",
                                 fix="keep one row per item")
            seen[r.item_id] = r.where
        stored = store.ratings_df()
        # keyed by reply, not item id: the same reply in two packets of one rater is one rating
        stored = stored[stored["rater"] == rater].set_index(["request_key", "measure"])
        out = []
        for r in rows:
            key = items.at[r.item_id, "request_key"]
            given = {m: v for m, v in r.levels.items() if v is not None}
            summary.blank_levels += len(r.levels) - len(given)
            if not given and r.harmful is None and r.comment is None:
                summary.unrated_items += 1
                continue
            summary.rated_items += 1
            summary.harmful += int(r.harmful == 1)
            for m, v in r.levels.items():
                summary.by_measure[m] = summary.by_measure.get(m, 0) + int(v is not None)
                new = (v, r.harmful, r.comment)
                if (key, m) in stored.index:
                    old_row = stored.loc[(key, m)]
                    old = (None if _missing(old_row["value"]) else float(old_row["value"]),
                           None if _missing(old_row["harmful"]) else int(old_row["harmful"]),
                           None if _missing(old_row["comment"]) else old_row["comment"])
                    if old == new:
                        summary.unchanged += 1
                        continue
                    filling = old[0] is None and old[1:] == new[1:]  # a level left blank before, given now
                    if not replace and not filling:
                        raise AuditError(
                            f"item {r.item_id} {m}: this file says {_show(new)}, the stored rating (imported "
                            f"{old_row['imported_at']} from {old_row['source_name'] or 'another file'}) says {_show(old)}",
                            where=f"{p}, {r.where}",
                            fix="import the corrected file with --replace to overwrite this rater's stored ratings, "
                                "or fix the file")
                out.append((r.item_id, key, rater, m, v, r.harmful, r.comment, sha, p.name))
        summary.written = store.put_ratings(out, replace=True) if out else 0  # conflicts were refused above
    return summary


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _show(t: tuple[Any, ...]) -> str:
    v, h, c = t
    return (f"level {'blank' if v is None else int(v)}, harmful {'yes' if h == 1 else 'no' if h == 0 else 'blank'}"
            + (f", comment {c[:40]!r}" if c else ""))


__all__ = ["ImportSummary", "import_ratings", "read_rating_file"]
