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

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from ..errors import AuditError
from .analysis import StigmaResult, analyze_stigma, code_answers
from .stimuli import items_by_id, moore_vignettes, vignette_id

AXES = ("race", "gender", "education")


def _question_id(value: Any, by_text: dict[str, str], ids: set[str]) -> str | None:
    s = str(value).strip()
    if s in ids:
        return s
    first = s.splitlines()[0].strip() if s else ""
    return by_text.get(first) or by_text.get(first.replace("'", "\u2019"))


def published_levels() -> dict[str, list[str]]:
    """The levels of the published design's demographic axes (``race, gender, education``), as the
    vignettes file writes them."""
    v = moore_vignettes()
    return {ax: list(dict.fromkeys(v[ax])) for ax in AXES}


def reanalyze_stigma(data: pd.DataFrame | str | Path, *, output: str = "output", question: str = "question",
                     model: str = "model", condition: str = "condition", race: str = "race", gender: str = "gender",
                     education: str = "education", vignette: str | None = None, sample: str | None = None,
                     n_boot: int = 2000, seed: int = 0, reference: dict[str, str] | None = None, alpha: float = 0.05,
                     parser: str = "strict", levels: dict[str, Sequence[str]] | None = None,
                     drop_blank: bool = False, dedupe: bool = False) -> StigmaResult:
    """Parse, code and analyse a table of raw answers (a DataFrame or a file :func:`audit.stats.read_table`
    reads; a text file that is not UTF-8 is refused with the encoding and how to re-save it). Column
    arguments name the table's columns: ``output`` (the raw answer text), ``question`` (an item id of
    ``items.yaml``, the question text, or the question with its options as upstream prints it),
    ``model``, ``condition`` (daily troubles, depression, alcohol dependence, schizophrenia), ``race``,
    ``gender``, ``education``, optionally ``vignette`` (the cluster; by default each condition x race x
    gender x education is one vignette, as in the published design) and ``sample`` (a column telling
    legitimate repeats of one design cell apart: a sample number, a prompt variant).

    The table is validated like any input (:mod:`audit.reanalysis`): a blank cell in a design column
    is an error naming its row and column (``drop_blank``: such rows are dropped and counted); the
    condition and the demographic labels are matched to the known ``levels`` (default: the published
    design's, :func:`published_levels`) case-insensitively, and an unknown label is an error listing
    them; two rows of one design key (model, condition, race, gender, education, question, plus the
    vignette and sample columns when given) are an error (``dedupe``: the later rows are dropped and
    counted). What was dropped or re-cased is in ``meta['table_checks']``.

    ``parser``: ``strict`` (default; never guesses) or ``upstream`` (the published study's parser;
    :func:`audit.stigma.parse.parse_answer_upstream`). Returns a
    :class:`~audit.stigma.analysis.StigmaResult`; its ``coded`` table holds every answer with its parse."""
    from ..reanalysis import TableChecks, check_blanks, check_duplicates, consistent_labels, match_levels, \
        read_text_table
    from .parse import get_parser
    from .stimuli import CONDITIONS

    get_parser(parser)
    where = str(data) if not isinstance(data, pd.DataFrame) else "the table"
    if not isinstance(data, pd.DataFrame):
        data = read_text_table(data, text_columns=[c for c in (question, condition, race, gender, education, model,
                                                               output, vignette, sample) if c])
    data = data.reset_index(drop=True)
    cols = {"output": output, "question": question, "model": model, "condition": condition, "race": race,
            "gender": gender, "education": education}
    if vignette:
        cols["vignette"] = vignette
    if sample:
        cols["sample"] = sample
    missing = [f"{k} (column '{v}')" for k, v in cols.items() if v not in data.columns]
    if missing:
        raise AuditError(f"the table has no {', '.join(missing)}", where=where,
                         fix="name the columns with --columns FIELD=COLUMN (library: the keyword arguments); "
                             "the table has: " + ", ".join(map(str, data.columns)))
    known = published_levels()
    for ax, lv in (levels or {}).items():
        if ax not in known:
            raise AuditError(f"'{ax}' is not a demographic axis of the stigma design", where="levels",
                             fix="give levels for: " + ", ".join(AXES))
        known[ax] = [str(x) for x in lv]
    checks = TableChecks(n_rows=len(data))
    # a blank answer is an outcome (unparseable, reason 'empty'); a blank design cell is not
    data = check_blanks(data, {k: v for k, v in cols.items() if k != "output"}, where=where, drop_blank=drop_blank,
                        checks=checks)
    if data.empty:
        raise AuditError("no row is left after dropping the rows with blank cells", where=where,
                         fix="fill the blank cells")
    items = items_by_id()
    by_text = {it.question: i for i, it in items.items()}
    qids = pd.Series([_question_id(v, by_text, set(items)) for v in data[question]], index=data.index, dtype=object)
    if qids.isna().any():
        bad = qids.isna().idxmax()
        raise AuditError(f"row {int(bad) + 2}: the question {str(data[question].loc[bad])[:80]!r} is none of the 14 "
                         "stigma questions", where=f"{where}, column '{question}'",
                         fix="give the item id (audit/data/moore/items.yaml) or the question text exactly")
    df = pd.DataFrame({
        "model_label": consistent_labels(data, model, where=where, checks=checks),
        "condition": match_levels(data, condition, CONDITIONS, where=where, what="condition", checks=checks),
        "race": match_levels(data, race, known["race"], where=where, what="race", checks=checks),
        "gender": match_levels(data, gender, known["gender"], where=where, what="gender", checks=checks),
        "education": match_levels(data, education, known["education"], where=where, what="education level",
                                  checks=checks),
        "reply": data[output].where(data[output].notna(), None),
        "question": qids,
    }, index=data.index)
    if vignette:
        df["post_id"] = data[vignette].astype(str).str.strip()
    else:
        df["post_id"] = [vignette_id("table", {"condition": c, "race": r, "gender": g, "education": e})
                         for c, r, g, e in zip(df["condition"], df["race"], df["gender"], df["education"])]
    key = ["model_label", "condition", "race", "gender", "education", "question"] + (["post_id"] if vignette else [])
    if sample:
        df["sample"] = data[sample].astype(str).str.strip()
        key.append("sample")
    df = check_duplicates(df, key, where=where, dedupe=dedupe, checks=checks, compare=["reply"],
                          names={"model_label": model, "post_id": vignette or "vignette", "sample": sample or "sample"},
                          hint="if the rows are legitimate repeats (samples, prompt variants), name the column that "
                               "tells them apart: --columns sample=COLUMN")
    ref = dict(reference or {})
    for ax, lv in list(ref.items()):
        if ax in known:
            ref[ax] = match_levels(pd.DataFrame({"reference": [lv]}), "reference", known[ax], where="reference",
                                   what=f"{ax} reference level", checks=TableChecks())[0]
    coded = code_answers(df.reset_index(drop=True), answer="reply", question="question", status=None, parser=parser)
    res = analyze_stigma(coded, axes=AXES, reference=ref or None, n_boot=n_boot, seed=seed, alpha=alpha)
    res.meta["parser"] = parser
    res.meta["table_checks"] = checks.as_meta()
    res.meta["table_checks_sentence"] = checks.sentence()
    return res


__all__ = ["published_levels", "reanalyze_stigma"]
