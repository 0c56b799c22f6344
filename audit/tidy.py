"""The tidy export: one long table, one row per (request, scorer, measure), for R, a notebook or a
spreadsheet, with no need to read the run store.

:func:`tidy_table` returns it as a pandas DataFrame; ``empathy-audit export RUN_DIR --table tidy --out
FILE`` writes it (parquet, CSV or JSON lines). Columns (:data:`TIDY_COLUMNS`, then one column per audited
axis such as ``race``, ``gender``, ``age``):

==================  =================================================================================
``request_key``     the reply request (SHA-256 of endpoint, model, messages, decoding, sample)
``model_label``     the spec's label of the audited model; ``model_name``: the name sent to the endpoint
``style``           prompt style (``default`` where none); ``sample_index``: 0, 1, ... (``samples``)
``post_id``         the base post; ``variant_id``: the variant (content hash of its text and design)
``group``           demographic group (``control`` for the unmodified post)
``cue_type``        how the group is signalled (``control``, ``explicit_tag``, ``implicit_name``, ...)
``alternative``     which alternative of the cue type (a name, a phrase id)
``topic``, ``risk``  the base post's topic and risk level
``reply_status``    ``ok``, ``content_filter``, ``failed``, or empty (never answered)
``scorer``          the scorer (``epitome``, ``length``, ...); ``measure``: its measure (``ER``, ``words``)
``outcome``         ``scorer.measure``, as the results tables name it
``score``           the value; empty where the reply failed or was never answered, the scorer did not score
                    it, or its score is NULL (e.g. an unparseable judge answer)
==================  =================================================================================

Every reply request of the run's current design has one row per (scorer, measure) the run has scores of,
so ``rows = requests x measures`` and nothing is dropped silently: a missing score is an empty ``score``
with the reply's status beside it (as :func:`audit.stats.analysis_table`; derived ``>0`` outcomes are not
rows here, they are a function of ``score``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .store import RunStore

__all__ = ["tidy_table", "TIDY_COLUMNS"]

TIDY_COLUMNS = ["request_key", "model_label", "model_name", "style", "sample_index", "post_id", "variant_id", "group",
                "cue_type", "alternative", "topic", "risk", "reply_status", "scorer", "measure", "outcome", "score"]
_NOT_AXES = {"request_key", "purpose", "variant_id", "subject_key", "model_label", "endpoint_id", "model_name", "style",
             "style_hash", "sample_index", "messages_json", "params_json", "status", "reply", "finish_reason",
             "prompt_tokens", "completion_tokens", "latency_s", "attempts", "model_reported", "runtime",
             "runtime_version", "error", "replied_at", "flags", "post_id", "topic", "risk", "group_name", "cue_type",
             "alternative", "cue_text", "post_text", "group"}


def tidy_table(run: str | Path | RunStore) -> pd.DataFrame:
    """The run's tidy long table (module docstring): one row per (reply request, scorer, measure).

    >>> import audit
    >>> # df = audit.tidy_table("reports/demo"); df.groupby(["model_label", "group", "outcome"]).score.mean()
    """
    if isinstance(run, RunStore):
        return _tidy(run)
    with RunStore(run, create=False) as st:
        return _tidy(st)


def _tidy(store: RunStore) -> pd.DataFrame:
    rep = store.replies_df("reply")
    sc = store.scores_df()
    axes = [c for c in rep.columns if c not in _NOT_AXES]
    if rep.empty:
        return pd.DataFrame(columns=TIDY_COLUMNS + axes)
    rep = rep.assign(group=rep["group_name"], reply_status=rep["status"], style=rep["style"].fillna("default"))
    measures = sc[["scorer", "measure"]].drop_duplicates().sort_values(["scorer", "measure"])
    grid = rep.merge(measures, how="cross")
    df = grid.merge(sc[["request_key", "scorer", "measure", "value"]], on=["request_key", "scorer", "measure"],
                    how="left")
    answered = df["reply_status"].isin(["ok", "content_filter"])
    df["score"] = np.where(answered, df["value"].astype(float), np.nan)
    df["outcome"] = df["scorer"].astype(str) + "." + df["measure"].astype(str)
    return df[TIDY_COLUMNS + axes].reset_index(drop=True)
