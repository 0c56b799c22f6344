"""Replication mode: re-analyse a table of raw model answers to the stigma questions.

Published raw outputs (e.g. Moore et al.'s ``results/stigma/all_combined.csv``: columns ``condition,
race, gender, education, vignette, question, question_only, options, output, answer, code, model``)
or any table with the stimulus fields, the question and the raw answer go through the same parser,
coder and analysis as a run of the suite (:mod:`audit.stigma.parse`, :mod:`audit.stigma.analysis`).
Published codes are never reused: every answer is parsed again from its raw text.

>>> import audit.stigma.replicate as r                                  # doctest: +SKIP
>>> res = r.reanalyze_stigma("all_combined.csv", output="output", question="question_only")  # doctest: +SKIP
>>> res.rates                                                           # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import AuditError
from .analysis import StigmaResult, analyze_stigma, code_answers
from .stimuli import items_by_id, vignette_id


def _question_id(value: Any, by_text: dict[str, str], ids: set[str]) -> str | None:
    s = str(value).strip()
    if s in ids:
        return s
    first = s.splitlines()[0].strip() if s else ""
    return by_text.get(first) or by_text.get(first.replace("'", "\u2019"))


def reanalyze_stigma(data: pd.DataFrame | str | Path, *, output: str = "output", question: str = "question",
                     model: str = "model", condition: str = "condition", race: str = "race", gender: str = "gender",
                     education: str = "education", vignette: str | None = None, n_boot: int = 2000, seed: int = 0,
                     reference: dict[str, str] | None = None, alpha: float = 0.05,
                     fold_case: bool = False) -> StigmaResult:
    """Parse, code and analyse a table of raw answers (a DataFrame or a file :func:`audit.stats.read_table`
    reads). Column arguments name the table's columns: ``output`` (the raw answer text), ``question``
    (an item id of ``items.yaml``, the question text, or the question with its options as upstream
    prints it), ``model``, ``condition`` (daily troubles, depression, alcohol dependence,
    schizophrenia), ``race``, ``gender``, ``education`` and optionally ``vignette`` (the cluster; by
    default each condition x race x gender x education is one vignette, as in the published design).
    Returns a :class:`~audit.stigma.analysis.StigmaResult`; its ``coded`` table holds every answer with
    its parse. Raises one AuditError naming the missing column or the first row that cannot be used."""
    where = str(data) if not isinstance(data, pd.DataFrame) else "the table"
    if not isinstance(data, pd.DataFrame):
        from ..stats.longtable import read_table

        data = read_table(data, text_columns=[c for c in (question, condition, race, gender, education, model,
                                                              output) if c])
    cols = {"output": output, "question": question, "model": model, "condition": condition, "race": race,
            "gender": gender, "education": education}
    if vignette:
        cols["vignette"] = vignette
    missing = [f"{k} (column '{v}')" for k, v in cols.items() if v not in data.columns]
    if missing:
        raise AuditError(f"the table has no {', '.join(missing)}", where=where,
                         fix="name the columns with --columns FIELD=COLUMN (library: the keyword arguments); "
                             "the table has: " + ", ".join(map(str, data.columns)))
    items = items_by_id()
    by_text = {it.question: i for i, it in items.items()}
    from ..labels import clean_labels

    labels = {}
    for field, col in (("model_label", model), ("condition", condition), ("race", race), ("gender", gender),
                       ("education", education)):  # one label rule for every entry point (audit/labels.py)
        labels[field], warns = clean_labels(data[col], where=where, column=col, fold_case=fold_case)
        for w in warns:
            print(f"warning: {w}", file=sys.stderr)
        labels[field] = labels[field].fillna("").astype(str)
    if fold_case:  # a folded level is spelled as its reference level where they are one up to case
        from ..labels import clean_level
        from .analysis import DEFAULT_REFERENCE

        for axis, level in {**DEFAULT_REFERENCE, **(reference or {})}.items():
            if axis in labels:
                spelled = clean_level(level, labels[axis], fold_case=True)
                labels[axis] = labels[axis].replace(spelled, level) if spelled else labels[axis]
    df = pd.DataFrame({**labels, "reply": data[output].where(data[output].notna(), None)})
    qids = [_question_id(v, by_text, set(items)) for v in data[question]]
    bad = next((i for i, q in enumerate(qids) if q is None), None)
    if bad is not None:
        raise AuditError(f"row {bad + 2}: the question {str(data[question].iloc[bad])[:80]!r} is none of the 14 "
                         "stigma questions", where=f"{where}, column '{question}'",
                         fix="give the item id (audit/data/moore/items.yaml) or the question text exactly")
    df["question"] = qids
    from .stimuli import CONDITIONS

    badc = sorted(set(df["condition"]) - set(CONDITIONS))
    if badc:
        raise AuditError(f"unknown condition '{badc[0]}'", where=f"{where}, column '{condition}'",
                         fix="use: " + ", ".join(CONDITIONS))
    if vignette:
        df["post_id"] = data[vignette].astype(str).to_numpy()
    else:
        df["post_id"] = [vignette_id("table", {"condition": c, "race": r, "gender": g, "education": e})
                         for c, r, g, e in zip(df["condition"], df["race"], df["gender"], df["education"])]
    coded = code_answers(df, answer="reply", question="question", status=None)
    return analyze_stigma(coded, axes=("race", "gender", "education"), reference=reference, n_boot=n_boot,
                          seed=seed, alpha=alpha)


__all__ = ["reanalyze_stigma"]
