"""The appropriateness suite's verdicts in the run store: scores of scorer ``appropriateness-judge``
(:mod:`audit.appropriateness.judge`). :func:`judged_from_store` reads them back as the judged table of
:mod:`audit.appropriateness.analysis`; :func:`judge_todo` lists the replies still to judge."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from .judge import SCORER
from .stimuli import final_client_message, stimuli_by_id


def _answered(store: Any) -> pd.DataFrame:
    reps = store.replies_df("reply")
    return reps[reps["status"].isin(["ok", "content_filter"])].copy()


def judge_todo(store: Any) -> pd.DataFrame:
    """Answered replies without a stored verdict, with the ``criterion``, ``query`` (the client's final
    message as sent) and ``appropriate_answer`` of their stimulus."""
    reps = _answered(store)
    reps = reps[~reps["request_key"].isin(store.scored_keys(SCORER))]
    if reps.empty:
        return reps.assign(criterion=[], query=[], appropriate_answer=[])
    st = stimuli_by_id()
    reps["criterion"] = [st[s]["criterion"] for s in reps["stimulus"]]
    reps["appropriate_answer"] = [st[s]["appropriate_answer"] for s in reps["stimulus"]]
    reps["query"] = [final_client_message(t) for t in reps["post_text"]]
    return reps


def judged_from_store(store: Any) -> pd.DataFrame:
    """One row per answered and judged reply: the reply's columns and attributes, ``appropriate``
    (0/1) and ``judge_status``, ``judge_answer``, ``options``, ``truncated``, ``judge_reason``,
    ``judge_raw`` from the verdict's detail."""
    reps = _answered(store)
    sc = store.scores_df()
    sc = sc[(sc["scorer"] == SCORER) & (sc["measure"] == "appropriate")].set_index("request_key")
    df = reps[reps["request_key"].isin(sc.index)].copy()
    if df.empty:
        return df
    det = [json.loads(d) if isinstance(d, str) else {} for d in sc.loc[df["request_key"], "detail"]]
    df["appropriate"] = sc.loc[df["request_key"], "value"].to_numpy(dtype=float)
    df["judge_status"] = [d.get("status", "unparseable") for d in det]
    df["judge_answer"] = [d.get("answer") for d in det]
    df["options"] = [" / ".join(d.get("options") or []) for d in det]
    df["truncated"] = [bool(d.get("truncated")) for d in det]
    df["judge_reason"] = [d.get("reason", "") for d in det]
    df["judge_raw"] = [d.get("raw", "") for d in det]
    df["group"] = df["group_name"]
    return df


__all__ = ["judge_todo", "judged_from_store"]
