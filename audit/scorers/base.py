"""The scorer protocol shared by every scorer family.

A scorer scores (post, reply) pairs in batches and declares what it outputs::

    class Scorer(Protocol):
        name: str                      # registry name, e.g. 'epitome', 'llm-judge', 'refusal'
        measures: tuple[str, ...]      # the columns score() returns, e.g. ('ER', 'IP', 'EX', 'empathy')
        def info(self) -> dict: ...    # identity: version, artifact sha256, validation figures, model
        def score(self, posts: list[str], replies: list[str]) -> pandas.DataFrame: ...

``score`` returns one row per pair and one column per measure (NaN where it cannot score); it may add
a ``detail`` column (text, e.g. the raw unparseable judge answer or the refusal pattern that matched).

Scorers that call a model (``llm-judge``) set ``uses_store = True``: :func:`audit.scoring.score_run`
then calls ``score(posts, replies, store=store, keys=request_keys)`` so that their model calls go
through the run store (cached and resumable) and name the judged reply.

Scorers that are pure functions of the pair (no model calls, no store, no state between calls) may
set ``parallel_safe = True``: the score stage then pickles them into worker processes and scores
large runs on every core, with the stage's own process the one writer of the store
(:class:`audit.scoring.ScoringPool`). Their scores must not depend on how pairs are batched.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from ..errors import AuditError

#: Keys of ``info()`` that identify what produced a score. Scores written by a scorer whose identity
#: differs from the one stored in ``scorer_info`` are never mixed into the same run silently.
IDENTITY_KEYS = ("name", "version", "artifact_sha256", "weights_sha256", "model", "endpoint", "rubric_sha256",
                 "patterns_sha256", "checkpoints")


@runtime_checkable
class Scorer(Protocol):
    name: str
    measures: tuple[str, ...]

    def info(self) -> dict[str, Any]: ...

    def score(self, posts: list[str], replies: list[str]) -> pd.DataFrame: ...


def identity(info: dict[str, Any]) -> dict[str, Any]:
    """The part of a scorer's ``info()`` that says what produced its scores (not how well it does)."""
    return {k: info[k] for k in IDENTITY_KEYS if k in info}


def check_pairs(posts: list[str], replies: list[str], who: str) -> None:
    """Raise an AuditError unless ``posts`` and ``replies`` are equally long lists of strings."""
    if len(posts) != len(replies):
        raise AuditError(
            f"{who}: {len(posts)} posts but {len(replies)} replies", where="score(posts, replies)",
            fix="pass one post per reply (the post the reply answers)",
        )
    for i, (p, r) in enumerate(zip(posts, replies)):
        if not isinstance(p, str) or not isinstance(r, str):
            bad = "post" if not isinstance(p, str) else "reply"
            raise AuditError(
                f"{who}: the {bad} of pair {i} is {type(p if bad == 'post' else r).__name__}, not text",
                where=f"score(posts, replies), pair {i}", fix="pass text for every post and reply (use '' for none)",
            )


def check_output(scorer: Any, df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Validate a scorer's output frame against its declared measures (a programming error otherwise)."""
    missing = [m for m in scorer.measures if m not in df.columns]
    if missing or len(df) != n:
        raise RuntimeError(
            f"scorer {scorer.name!r} returned {len(df)} rows and columns {list(df.columns)}; "
            f"expected {n} rows and measures {list(scorer.measures)}"
        )
    return df.reset_index(drop=True)


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
