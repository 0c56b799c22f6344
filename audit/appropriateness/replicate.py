"""Replication mode: judge and analyse a table of raw replies to the crisis stimuli.

Published raw replies (e.g. Moore et al.'s ``results/interjections/*.jsonl``) or any table with the
stimulus, the model and the raw reply go through the same judge (through the request engine: stored,
cached, resumable) and analysis as a run of the suite. Already-made judge labels (the judge's yes/no
answer to the criterion) can be given instead of judging again.

>>> import audit.appropriateness.replicate as r                                    # doctest: +SKIP
>>> res = r.reanalyze_appropriateness("replies.csv", judge_label="gpt4o_label")    # doctest: +SKIP
>>> res.rates                                                                       # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import AuditError
from .analysis import AppropriatenessResult, analyze_appropriateness
from .stimuli import CONTROL, load_stimuli, stimuli_by_id


def _stimulus_id(value: Any, by_text: dict[str, str], ids: set[str]) -> str | None:
    s = str(value).strip()
    return s if s in ids else by_text.get(s)


def _clean(values: pd.Series, where: str, column: str, fold_case: bool):
    """Labels through the one label rule (:mod:`audit.labels`); folded spellings are warned about."""
    from ..labels import clean_labels

    out, warns = clean_labels(values, where=where, column=column, fold_case=fold_case)
    for w in warns:
        print(f"warning: {w}", file=sys.stderr)
    return out.fillna("").astype(str).to_numpy()


def reanalyze_appropriateness(data: pd.DataFrame | str | Path, *, reply: str = "reply", stimulus: str = "stimulus",
                              model: str = "model", judge_label: str | None = None, group: str | None = None,
                              context: str | None = None, judge: Any = None, store_dir: str | Path | None = None,
                              seed: int = 0, truncate: int = 1024, n_boot: int = 2000, alpha: float = 0.05,
                              reference_rates: dict[str, float] | None = None,
                              progress: bool = False, fold_case: bool = False) -> AppropriatenessResult:
    """Judge (or take the judge labels of) and analyse a table of raw replies (a DataFrame or a file
    :func:`audit.stats.read_table` reads). Columns: ``reply`` (the raw reply), ``stimulus`` (a stimulus
    id of ``appropriateness_stimuli.jsonl`` or the text of one of its client messages), ``model``;
    optional ``judge_label`` (the judge's yes/no answer to the criterion; blank = unanswered),
    ``group`` (the demographic group; default every row is the no-cue control) and ``context``.
    Without ``judge_label``, ``judge`` (a :class:`audit.spec.JudgeSpec`) judges every reply through the
    request engine into the run store at ``store_dir`` (default: the toolkit's cache directory), so a
    second call sends nothing. Raises one AuditError naming the missing column or the first bad row."""
    from .validation import binary_labels

    where = str(data) if not isinstance(data, pd.DataFrame) else "the table"
    if not isinstance(data, pd.DataFrame):
        from ..stats.longtable import read_table

        data = read_table(data, text_columns=[c for c in (reply, stimulus, model, group, context, judge_label) if c])
    cols = {"reply": reply, "stimulus": stimulus, "model": model}
    cols.update({k: v for k, v in (("judge_label", judge_label), ("group", group), ("context", context)) if v})
    missing = [f"{k} (column '{v}')" for k, v in cols.items() if v not in data.columns]
    if missing:
        raise AuditError(f"the table has no {', '.join(missing)}", where=where,
                         fix="name the columns with --columns FIELD=COLUMN (library: the keyword arguments); "
                             "the table has: " + ", ".join(map(str, data.columns)))
    if judge_label is None and judge is None:
        raise AuditError("the table has no judge labels and no judge model was given", where=where,
                         fix="give judge_label=COLUMN (CLI --columns judge_label=COL) or a judge "
                             "(CLI --judge-base-url and --judge-model)")
    st = stimuli_by_id()
    by_text = {m["content"]: r["id"] for r in load_stimuli().to_dict("records") for m in r["messages"] if m["role"] == "user"}
    ids = [_stimulus_id(v, by_text, set(st)) for v in data[stimulus]]
    bad = next((i for i, s in enumerate(ids) if s is None), None)
    if bad is not None:
        raise AuditError(f"row {bad + 2}: {str(data[stimulus].iloc[bad])[:80]!r} is none of the 10 stimuli",
                         where=f"{where}, column '{stimulus}'",
                         fix="give the stimulus id (" + ", ".join(st) + ") or one of its client messages exactly")
    df = pd.DataFrame({
        "model_label": _clean(data[model], where, model, fold_case), "stimulus": ids,
        "reply": data[reply].where(data[reply].notna(), None).to_numpy(),
        "group": _clean(data[group], where, group, fold_case) if group else CONTROL,
        "context": data[context].astype(str).to_numpy() if context else "table",
    })
    df["condition"] = [st[s]["condition"] for s in ids]
    df["prefix"] = df["context"]
    df["cue_type"] = [CONTROL if g == CONTROL else "table" for g in df["group"]]
    df["request_key"] = [f"table:{i}" for i in range(len(df))]
    want = [st[s]["appropriate_answer"] for s in ids]
    if judge_label is not None:
        labels = binary_labels(data[judge_label].reset_index(drop=True), f"{where}, column '{judge_label}'")
        status, appropriate = [], []
        for lab, w in zip(labels, want):
            if pd.isna(lab):
                status.append("unanswered"), appropriate.append(0.0)
            else:
                status.append("judged"), appropriate.append(float(("yes" if lab == 1 else "no") == w))
        df["judge_status"], df["appropriate"] = status, appropriate
    else:
        df = _judge_table(df, want, judge, store_dir, seed, truncate, progress)
    return analyze_appropriateness(df, n_boot=n_boot, seed=seed, alpha=alpha, reference_rates=reference_rates)


def _judge_table(df: pd.DataFrame, want: list[str], judge: Any, store_dir: str | Path | None, seed: int,
                 truncate: int, progress: bool) -> pd.DataFrame:
    import hashlib
    import json

    from ..scorers.judge import default_cache_dir
    from ..store import RunStore
    from .judge import judge_rows

    st = stimuli_by_id()
    todo = df.copy()
    # the key names the judged content (model, stimulus, reply): the same reply is judged once
    todo["request_key"] = ["table:" + hashlib.sha256(f"{m}\x00{s}\x00{r}".encode()).hexdigest()[:24]
                           for m, s, r in zip(df["model_label"], df["stimulus"], df["reply"].fillna(""))]
    todo["status"] = "ok"
    todo["criterion"] = [st[s]["criterion"] for s in df["stimulus"]]
    todo["query"] = [next(m["content"] for m in reversed(st[s]["messages"]) if m["role"] == "user") for s in df["stimulus"]]
    todo["appropriate_answer"] = want
    with RunStore(Path(store_dir) if store_dir else default_cache_dir() / "appropriateness-judge") as store:
        rows, pending = judge_rows(store, judge, todo.drop_duplicates("request_key"), seed=seed, limit=truncate,
                                   progress=progress)
    if pending:
        raise AuditError(f"{pending} judge calls got no answer", where="the judge endpoint",
                         fix="run the same call again: answered calls are stored and only the rest are sent")
    verdicts = {k: (v, json.loads(d)) for k, _, _, v, d in rows}
    df = df.copy()
    df["request_key"] = todo["request_key"].to_numpy()
    df["appropriate"] = [verdicts[k][0] for k in df["request_key"]]
    df["judge_status"] = [verdicts[k][1]["status"] for k in df["request_key"]]
    return df


__all__ = ["reanalyze_appropriateness"]
