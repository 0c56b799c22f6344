"""Simulated human raters for the rating tests (a test helper, not shipped).

A simulated rater fills its packet the way a person would: the CSV in a spreadsheet, or the tasks in
Label Studio, whose JSON export :func:`label_studio_export` writes in Label Studio's export format
(a list of tasks, each with ``data`` and ``annotations[].result[]`` entries with ``from_name``,
``to_name``, ``type`` and ``value.choices`` / ``value.text``; see
https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks).

The levels come from a ``truth(request_key, measure) -> level`` function; tests plant what they
want to find (e.g. humans rate one group's replies a level above the scorer). The rater looks the
reply of an item up in the run store, which a real rater cannot: only the simulation needs it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from audit.store import RunStore

Truth = Callable[[str, str], float | None]


def item_keys(run_dir: Path, rater: str) -> dict[str, str]:
    """item_id -> request_key of one rater's items (from the store, as only a simulation may)."""
    with RunStore(run_dir, create=False) as st:
        items = st.rating_items_df()
    mine = items[items["rater"] == rater]
    return dict(zip(mine["item_id"], mine["request_key"]))


def scorer_truth(run_dir: Path, *, shift: dict[str, float] | None = None, noise: float = 0.0, seed: int = 0,
                 measures: tuple[str, ...] = ("ER", "IP", "EX")) -> Truth:
    """Human levels = the epitome scorer's level + ``shift[group]`` (only on ``measures``) + rounded
    normal noise, clipped to 0..2: a scorer that under-scores group g by ``shift[g]`` levels."""
    shift = shift or {}
    rng = np.random.default_rng(seed)
    with RunStore(run_dir, create=False) as st:
        sc = st.scores_df()
        rep = st.replies_df()
    sc = sc[sc["scorer"] == "epitome"].set_index(["request_key", "measure"])["value"]
    group = dict(zip(rep["request_key"], rep["group"].where(rep["cue_type"] != "control", "control")))
    cache: dict[tuple[str, str], float] = {}

    def truth(key: str, measure: str) -> float | None:
        if (key, measure) not in cache:
            base = float(sc.get((key, measure), 1.0))
            d = shift.get(group[key], 0.0) if measure in measures else 0.0
            cache[(key, measure)] = float(np.clip(round(base + d + rng.normal(0, noise)), 0, 2)) if noise else \
                float(np.clip(round(base + d), 0, 2))
        return cache[(key, measure)]

    return truth


def fill_csv(run_dir: Path, packet_dir: Path, rater: str, truth: Truth, out: Path, *, delimiter: str = ",",
             blank_every: int = 0, harmful_every: int = 0, encoding: str = "utf-8") -> Path:
    """The rater's ratings.csv filled in (as a spreadsheet saves it); every ``blank_every``-th row left
    without levels, every ``harmful_every``-th flagged harmful with a comment."""
    keys = item_keys(run_dir, rater)
    df = pd.read_csv(packet_dir / rater / "ratings.csv", dtype=str, keep_default_na=False)
    for i, row in df.iterrows():
        if blank_every and (i + 1) % blank_every == 0:
            continue
        key = keys[row["item_id"]]
        for col, m in (("er", "ER"), ("ip", "IP"), ("ex", "EX")):
            v = truth(key, m)
            df.at[i, col] = "" if v is None else str(int(v))
        if harmful_every and (i + 1) % harmful_every == 0:
            df.at[i, "harmful"] = "yes"
            df.at[i, "comment"] = "dismisses the risk, <b>see</b> =cmd|' /C calc'!A0"
    df.to_csv(out, index=False, sep=delimiter, encoding=encoding, quoting=csv.QUOTE_MINIMAL)
    return out


def label_studio_export(run_dir: Path, packet_dir: Path, rater: str, truth: Truth, out: Path, *,
                        skip_every: int = 0) -> Path:
    """A Label Studio JSON export of the rater's tasks, annotated with ``truth``; every
    ``skip_every``-th task skipped (a cancelled annotation)."""
    keys = item_keys(run_dir, rater)
    tasks = json.loads((packet_dir / rater / "label-studio-tasks.json").read_text(encoding="utf-8"))
    export = []
    for n, t in enumerate(tasks, start=1):
        key = keys[t["data"]["item_id"]]
        cancelled = bool(skip_every and n % skip_every == 0)
        result = [] if cancelled else [
            {"id": f"r{n}{col}", "from_name": col, "to_name": "reply", "type": "choices", "origin": "manual",
             "value": {"choices": [str(int(truth(key, m)))]}}
            for col, m in (("er", "ER"), ("ip", "IP"), ("ex", "EX"))]
        if not cancelled and n == 1:
            result.append({"id": "h1", "from_name": "harmful", "to_name": "reply", "type": "choices",
                           "value": {"choices": ["not harmful"]}})
            result.append({"id": "c1", "from_name": "comment", "to_name": "reply", "type": "textarea",
                           "value": {"text": ["fine"]}})
        export.append({
            "id": 1000 + n, "data": t["data"], "meta": {}, "created_at": "2026-01-01T00:00:00.000000Z",
            "updated_at": "2026-01-01T00:00:00.000000Z", "project": 7, "predictions": [],
            "annotations": [{"id": 5000 + n, "completed_by": 3, "result": result, "was_cancelled": cancelled,
                             "ground_truth": False, "lead_time": 12.5, "task": 1000 + n, "project": 7}],
        })
    out.write_text(json.dumps(export, indent=1), encoding="utf-8")
    return out
