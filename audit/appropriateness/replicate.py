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

from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import AuditError
from .analysis import AppropriatenessResult, analyze_appropriateness
from .stimuli import CONTROL, load_stimuli, stimuli_by_id


def _stimulus_id(value: Any, by_text: dict[str, str], ids: set[str]) -> str | None:
    s = str(value).strip()
    return s if s in ids else by_text.get(s)


CRITERION_COLUMNS = ("criterion", "verification_prompt")
ANSWER_COLUMNS = ("appropriate_answer", "verification_correct")


def reanalyze_appropriateness(data: pd.DataFrame | str | Path, *, reply: str = "reply", stimulus: str = "stimulus",
                              model: str = "model", judge_label: str | None = None, group: str | None = None,
                              context: str | None = None, criterion: str | None = None,
                              appropriate_answer: str | None = None, key: str | None = None, judge: Any = None,
                              store_dir: str | Path | None = None, seed: int = 0, truncate: int = 1024,
                              n_boot: int = 2000, alpha: float = 0.05,
                              reference_rates: dict[str, float] | None = None, progress: bool = False,
                              drop_blank: bool = False, dedupe: bool = False) -> AppropriatenessResult:
    """Judge (or take the judge labels of) and analyse a table of raw replies (a DataFrame or a file
    :func:`audit.stats.read_table` reads; a text file that is not UTF-8 is refused with the encoding and
    how to re-save it). Columns: ``reply`` (the raw reply), ``stimulus`` (a stimulus id of
    ``appropriateness_stimuli.jsonl`` or the text of one of its client messages), ``model``; optional
    ``judge_label`` (the judge's yes/no answer to the criterion; blank = unanswered), ``group`` (the
    demographic group; default every row is the no-cue control), ``context`` and ``key`` (a row id,
    e.g. upstream's ``key``: rows with the same id are duplicates).

    Per-row criterion: ``criterion`` (the yes/no question the reply was judged by) and
    ``appropriate_answer`` (the answer that makes the reply appropriate). When not named, columns
    called ``criterion``/``verification_prompt`` and ``appropriate_answer``/``verification_correct``
    (upstream's names) are used if the table has them. A row's own correct answer always wins over
    the stimulus's canonical one; a row whose criterion differs from the canonical wording without a
    correct answer of its own is an error (the canonical answer may not fit it). When judging, each
    reply is judged by its row's criterion. ``meta`` says how many rows carried a non-canonical
    criterion or answer.

    The table is validated like any input (:mod:`audit.reanalysis`): blank stimulus, model, group,
    context, criterion, answer or key cells are an error naming the row and column (``drop_blank``:
    dropped and counted); group labels are whitespace-stripped, ``control`` is matched in any case,
    and two spellings of a group that differ only in case are an error; two rows with the same
    model, stimulus, group, context and key (without a key column: the same reply text) are an error
    (``dedupe``: the later rows are dropped and counted). ``meta['table_checks']`` holds the counts.

    Without ``judge_label``, ``judge`` (a :class:`audit.spec.JudgeSpec`) judges every reply through the
    request engine into the run store at ``store_dir`` (default: the toolkit's cache directory), so a
    second call sends nothing. Raises one AuditError naming the missing column or the first bad row."""
    from ..reanalysis import TableChecks, check_blanks, check_duplicates, consistent_labels, norm_label, \
        read_text_table
    from .validation import binary_labels

    where = str(data) if not isinstance(data, pd.DataFrame) else "the table"
    if not isinstance(data, pd.DataFrame):
        data = read_text_table(data, text_columns=[c for c in (reply, stimulus, model, group, context, judge_label,
                                                               criterion, appropriate_answer, key) if c])
    data = data.reset_index(drop=True)
    criterion = criterion or next((c for c in CRITERION_COLUMNS if c in data.columns), None)
    appropriate_answer = appropriate_answer or next((c for c in ANSWER_COLUMNS if c in data.columns), None)
    cols = {"reply": reply, "stimulus": stimulus, "model": model}
    cols.update({k: v for k, v in (("judge_label", judge_label), ("group", group), ("context", context),
                                   ("criterion", criterion), ("appropriate_answer", appropriate_answer),
                                   ("key", key)) if v})
    missing = [f"{k} (column '{v}')" for k, v in cols.items() if v not in data.columns]
    if missing:
        raise AuditError(f"the table has no {', '.join(missing)}", where=where,
                         fix="name the columns with --columns FIELD=COLUMN (library: the keyword arguments); "
                             "the table has: " + ", ".join(map(str, data.columns)))
    if judge_label is None and judge is None:
        raise AuditError("the table has no judge labels and no judge model was given", where=where,
                         fix="give judge_label=COLUMN (CLI --columns judge_label=COL) or a judge "
                             "(CLI --judge-base-url and --judge-model)")
    checks = TableChecks(n_rows=len(data))
    data = check_blanks(data, {k: v for k, v in cols.items() if k not in ("reply", "judge_label")}, where=where,
                        drop_blank=drop_blank, checks=checks)
    if data.empty:
        raise AuditError("no row is left after dropping the rows with blank cells", where=where,
                         fix="fill the blank cells")
    st = stimuli_by_id()
    by_text = {m["content"]: r["id"] for r in load_stimuli().to_dict("records") for m in r["messages"] if m["role"] == "user"}
    ids = pd.Series([_stimulus_id(v, by_text, set(st)) for v in data[stimulus]], index=data.index, dtype=object)
    if ids.isna().any():
        bad = ids.isna().idxmax()
        raise AuditError(f"row {int(bad) + 2}: {str(data[stimulus].loc[bad])[:80]!r} is none of the 10 stimuli",
                         where=f"{where}, column '{stimulus}'",
                         fix="give the stimulus id (" + ", ".join(st) + ") or one of its client messages exactly")
    df = pd.DataFrame({
        "model_label": consistent_labels(data, model, where=where, checks=checks), "stimulus": ids,
        "reply": data[reply].where(data[reply].notna(), None),
        "group": consistent_labels(data, group, where=where, checks=checks, canonical={CONTROL: CONTROL})
        if group else CONTROL,
        "context": data[context].astype(str).str.strip() if context else "table",
    }, index=data.index)
    # the criterion and the answer that makes a reply appropriate: the row's own when the table has them
    crit = [st[s]["criterion"] for s in ids]
    want = [st[s]["appropriate_answer"] for s in ids]
    if appropriate_answer:
        lab = binary_labels(data[appropriate_answer], f"{where}, column '{appropriate_answer}'")
        row_want = ["yes" if v == 1 else "no" for v in lab]
        df["_own_answer"] = [a != b for a, b in zip(row_want, want)]
        want = row_want
    if criterion:
        row_crit = [str(c).strip() for c in data[criterion]]
        own = []
        for (i, c), c0 in zip(zip(data.index, row_crit), crit):
            own.append(norm_label(c) != norm_label(c0))
            if own[-1]:
                if not appropriate_answer:
                    raise AuditError(f"row {int(i) + 2}: the criterion {c[:80]!r} is not the stimulus's canonical "
                                     f"one ({c0!r}), and the table gives no correct answer for it",
                                     where=f"{where}, column '{criterion}'",
                                     fix="name the column holding each row's appropriate answer (yes/no) with "
                                         "--columns appropriate_answer=COLUMN; the canonical answer may not fit "
                                         "another wording")
        crit = row_crit
        df["_own_criterion"] = own
    df["criterion"] = crit
    df["appropriate_answer"] = want
    if key:
        df["_key"] = data[key].astype(str).str.strip()
    if judge_label:
        df["_label"] = data[judge_label]
    df = check_duplicates(df, ["model_label", "stimulus"] + (["group"] if group else []) + (["context"] if context else [])
                          + (["_key"] if key else ["reply"]),
                          where=where, dedupe=dedupe, checks=checks, compare=["_label"] if judge_label else ["reply"],
                          names={"model_label": model, "group": group or "group", "context": context or "context",
                                 "_key": key or "key", "reply": reply},
                          hint="if the rows are different replies to one cell, name the column that tells them "
                               "apart: --columns key=COLUMN")
    # counted on the rows kept (after --drop-blank and --dedupe)
    n_crit = int(df["_own_criterion"].sum()) if "_own_criterion" in df.columns else 0
    n_ans = int(df["_own_answer"].sum()) if "_own_answer" in df.columns else 0
    df["condition"] = [st[s]["condition"] for s in df["stimulus"]]
    df["prefix"] = df["context"]
    df["cue_type"] = [CONTROL if g == CONTROL else "table" for g in df["group"]]
    df = df.reset_index(drop=True)
    df["request_key"] = [f"table:{i}" for i in range(len(df))]
    if judge_label is not None:
        labels = binary_labels(df["_label"], f"{where}, column '{judge_label}'")
        status, appropriate = [], []
        for lab, w in zip(labels, df["appropriate_answer"]):
            if pd.isna(lab):
                status.append("unanswered"), appropriate.append(0.0)
            else:
                status.append("judged"), appropriate.append(float(("yes" if lab == 1 else "no") == w))
        df["judge_status"], df["appropriate"] = status, appropriate
    else:
        df = _judge_table(df, list(df["appropriate_answer"]), judge, store_dir, seed, truncate, progress)
    helper = [c for c in ("_label", "_key", "_own_criterion", "_own_answer") if c in df.columns]
    res = analyze_appropriateness(df.drop(columns=helper), n_boot=n_boot, seed=seed, alpha=alpha,
                                  reference_rates=reference_rates)
    res.meta["criterion_column"] = criterion
    res.meta["appropriate_answer_column"] = appropriate_answer
    res.meta["n_noncanonical_criterion"] = n_crit
    res.meta["n_noncanonical_answer"] = n_ans
    res.meta["table_checks"] = checks.as_meta()
    res.meta["table_checks_sentence"] = checks.sentence()
    return res


def _judge_table(df: pd.DataFrame, want: list[str], judge: Any, store_dir: str | Path | None, seed: int,
                 truncate: int, progress: bool) -> pd.DataFrame:
    import hashlib
    import json

    from ..scorers.judge import default_cache_dir
    from ..store import RunStore
    from .judge import judge_rows

    st = stimuli_by_id()
    todo = df.copy()
    # the key names the judged content (model, stimulus, reply, and the criterion and answer when a row
    # brings its own): the same reply under the same criterion is judged once
    def _key(m: str, s: str, r: str, c: str, a: str) -> str:
        own = "" if (c, a) == (st[s]["criterion"], st[s]["appropriate_answer"]) else f"\x00{c}\x00{a}"
        return "table:" + hashlib.sha256(f"{m}\x00{s}\x00{r}{own}".encode()).hexdigest()[:24]

    todo["request_key"] = [_key(m, s, r, c, a) for m, s, r, c, a in
                           zip(df["model_label"], df["stimulus"], df["reply"].fillna(""), df["criterion"], want)]
    todo["status"] = "ok"
    todo["criterion"] = list(df["criterion"])
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
