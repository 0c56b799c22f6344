"""Score the replies of any table, without a run store (``empathy-audit score-table``).

For users who only want scores: a table with a post column and a reply column in, the same table
with one column ``<scorer>.<measure>`` per measure out. The scorers are those of
:func:`audit.scorers.get_scorer`; ones that call a model through the run store (``uses_store``, e.g.
``llm-judge``) need a run and are refused here with what to do instead.

Example
-------
>>> import pandas as pd
>>> t = pd.DataFrame({"post": ["I feel alone."], "reply": ["That sounds hard. I'm here."]})
>>> score_table(t, post="post", reply="reply", scorers=["length"])["length.words"].tolist()
[5.0]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import AuditError

__all__ = ["score_table", "write_table", "cell_text", "EMPTY_COLUMN"]

#: Output column: True where the reply is empty, null or whitespace only (its scores are missing).
EMPTY_COLUMN = "reply_empty"


def score_table(data: pd.DataFrame, *, post: str, reply: str, scorers: Sequence[str], spec: Any = None,
                where: str = "the table") -> pd.DataFrame:
    """``data`` with a column ``<scorer>.<measure>`` for every measure of every scorer (NaN where a
    scorer cannot score a pair) and ``reply_empty``. An empty, null or whitespace-only reply is
    missing: NaN on every measure (never a score of 0) and ``reply_empty`` True; no row is dropped.
    An input column with the name of an output column is refused, never overwritten."""
    from .scorers import get_scorer

    missing = [c for c in (post, reply) if c not in data.columns]
    if missing:
        raise AuditError(f"column(s) {missing} not found (columns are: {', '.join(map(str, data.columns[:20]))})",
                         where=where, fix="name the post and reply columns with --post and --reply")
    if not scorers:
        raise AuditError("no scorer named", where=where, fix="name scorers with --scorers (see `scorers list`)")
    posts = [cell_text(v) or "" for v in data[post]]
    replies = [cell_text(v) for v in data[reply]]
    empty = [r is None for r in replies]  # empty is missing: no score, never a score of 0
    scorer_objs = [(name, get_scorer(name)) for name in scorers]
    for name, scorer in scorer_objs:
        if getattr(scorer, "uses_store", False):
            raise AuditError(f"scorer '{name}' calls a model and needs a run store", where=where,
                             fix="import the table into a run (`empathy-audit score RUN_DIR`) or choose a local scorer")
    outputs = [f"{name}.{m}" for name, scorer in scorer_objs for m in scorer.measures] + [EMPTY_COLUMN]
    clash = [c for c in outputs if c in data.columns]
    if clash:
        raise AuditError(f"the table already has column(s) {clash}, which the scores would overwrite", where=where,
                         fix="rename or drop those columns first (or score into a copy without them)")
    out = data.copy()
    for name, scorer in scorer_objs:
        scores = scorer.score(posts, [r or "" for r in replies]).reset_index(drop=True)
        for m in scorer.measures:
            col = pd.to_numeric(scores[m], errors="coerce").to_numpy(dtype=float, copy=True) if m in scores else \
                np.full(len(out), np.nan)
            col[np.asarray(empty, dtype=bool)] = np.nan
            out[f"{name}.{m}"] = col
    out[EMPTY_COLUMN] = empty
    return out


def cell_text(v: Any) -> str | None:
    """A table cell as text, None when missing, empty or whitespace only. A JSON value (a dict or list
    read from JSON Lines, an array from parquet) becomes JSON text, never a Python repr."""
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (dict, list, tuple)):
        s = json.dumps(v, ensure_ascii=False, default=str)
    else:
        s = str(v)
    return s if s.strip() else None


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as parquet, JSONL, TSV or CSV by the file's ending (CSV otherwise)."""
    from .untrusted import csv_safe

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".jsonl", ".ndjson"):  # nested JSON values as JSON text, never a Python repr
        df = df.copy()
        for c in df.columns:
            if df[c].dtype == object and any(isinstance(v, (dict, list, tuple, np.ndarray)) for v in df[c]):
                df[c] = [cell_text(v) if isinstance(v, (dict, list, tuple, np.ndarray)) else v for v in df[c]]
    if suffix not in (".parquet", ".pq", ".jsonl", ".ndjson"):
        df = csv_safe(df)  # a spreadsheet must not run a reply that starts like a formula
    if suffix in (".parquet", ".pq"):
        df.to_parquet(p, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(p, orient="records", lines=True, force_ascii=False)
    elif suffix in (".tsv", ".tab"):
        df.to_csv(p, sep="\t", index=False)
    else:
        df.to_csv(p, index=False)
    return p
