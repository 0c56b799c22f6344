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

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .errors import AuditError

__all__ = ["score_table", "write_table"]


def score_table(data: pd.DataFrame, *, post: str, reply: str, scorers: Sequence[str], spec: Any = None,
                where: str = "the table") -> pd.DataFrame:
    """``data`` with a column ``<scorer>.<measure>`` for every measure of every scorer (NaN where a
    scorer cannot score a pair, e.g. an empty reply). Missing post or reply text is scored as ``""``
    and counted by the scorer's NaN, never dropped: the output has exactly the input's rows."""
    from .scorers import get_scorer

    missing = [c for c in (post, reply) if c not in data.columns]
    if missing:
        raise AuditError(f"column(s) {missing} not found (columns are: {', '.join(map(str, data.columns[:20]))})",
                         where=where, fix="name the post and reply columns with --post and --reply")
    if not scorers:
        raise AuditError("no scorer named", where=where, fix="name scorers with --scorers (see `scorers list`)")
    posts = data[post].fillna("").astype(str).tolist()
    replies = data[reply].fillna("").astype(str).tolist()
    out = data.copy()
    for name in scorers:
        scorer = get_scorer(name)
        if getattr(scorer, "uses_store", False):
            raise AuditError(f"scorer '{name}' calls a model and needs a run store", where=where,
                             fix="import the table into a run (`empathy-audit score RUN_DIR`) or choose a local scorer")
        scores = scorer.score(posts, replies).reset_index(drop=True)
        for m in scorer.measures:
            out[f"{name}.{m}"] = pd.to_numeric(scores[m], errors="coerce").to_numpy() if m in scores else float("nan")
    return out


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as parquet, JSONL, TSV or CSV by the file's ending (CSV otherwise)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        df.to_parquet(p, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(p, orient="records", lines=True, force_ascii=False)
    elif suffix in (".tsv", ".tab"):
        df.to_csv(p, sep="\t", index=False)
    else:
        df.to_csv(p, index=False)
    return p
