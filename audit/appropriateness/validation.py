"""Judge validation: how well does an LLM judge's yes/no label agree with human labels?

Input: a table with one row per judged reply: the reply, the criterion question, the judge's label
and one or more human label columns (labels ``yes``/``no``; also accepted: ``true``/``false``,
``1``/``0``, ``y``/``n``, any case). Missing human labels are allowed (a blank cell); a label that is
none of those is one clear error naming the row and column.

Reported (:func:`validate_judge`):

- judge vs each human: Cohen's kappa ``k = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed
  agreement and ``p_e = sum_c p_judge(c) p_human(c)`` the agreement expected by chance (Cohen 1960;
  :func:`statsmodels.stats.inter_rater.cohens_kappa` on the 2 x 2 table), and accuracy ``p_o``, over the rows both labelled;
- judge vs the human majority (rows where the humans tie are left out and counted);
- among the humans: Fleiss' kappa over the rows every human labelled (Fleiss 1971;
  :func:`statsmodels.stats.inter_rater.fleiss_kappa`) and Cohen's kappa for every pair.

Kappa is undefined (NaN) when both raters give one label throughout; the row says so.
The published judge (GPT-4o, Moore et al. 2025) reached kappa 0.96 against two annotators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError

PUBLISHED = "The published judge (GPT-4o; Moore et al. 2025) reached Cohen's kappa 0.96 against two annotators."
_LABELS = {"yes": 1, "no": 0, "true": 1, "false": 0, "1": 1, "0": 0, "y": 1, "n": 0, "1.0": 1, "0.0": 0}


def binary_labels(values: pd.Series, where: str) -> pd.Series:
    """yes/no labels as 1/0 (NaN for blanks); one AuditError naming the first bad row."""
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()):
            out.append(np.nan)
            continue
        key = str(v).strip().lower()
        if isinstance(v, bool):
            key = "true" if v else "false"
        if key not in _LABELS:
            raise AuditError(f"row {i + 2}: label {str(v)[:40]!r} is not yes or no", where=where,
                             fix="write yes or no (or true/false, 1/0); leave the cell blank when not labelled")
        out.append(float(_LABELS[key]))
    return pd.Series(out, index=values.index, dtype=float)


def _kappa(a: pd.Series, b: pd.Series) -> tuple[float, float, int, str]:
    from statsmodels.stats.inter_rater import cohens_kappa

    ok = a.notna() & b.notna()
    x, y = a[ok].astype(int).to_numpy(), b[ok].astype(int).to_numpy()
    if len(x) == 0:
        return np.nan, np.nan, 0, "no row labelled by both"
    acc = float((x == y).mean())
    if len(set(x) | set(y)) < 2:
        return np.nan, acc, len(x), "one label throughout: kappa undefined"
    table = np.zeros((2, 2))
    np.add.at(table, (x, y), 1)
    return float(cohens_kappa(table).kappa), acc, len(x), ""


@dataclass
class JudgeValidation:
    """``pairs``: one row per comparison (``a, b, kappa, accuracy, n, note``); ``fleiss``:
    ``{kappa, n, raters}`` among the humans (None with one human); ``n_rows``; ``n_ties`` (rows left
    out of the majority); ``columns`` used."""

    pairs: pd.DataFrame
    fleiss: dict[str, Any] | None
    n_rows: int
    n_ties: int
    columns: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        from ..jsonable import jsonable

        return jsonable({"pairs": self.pairs.to_dict("records"), "fleiss": self.fleiss, "n_rows": self.n_rows,
                         "n_ties": self.n_ties, "columns": self.columns, "published": PUBLISHED})

    def summary(self, published: bool = True) -> str:
        """One sentence for the report (``published``: followed by the published GPT-4o judge's kappa of
        the appropriateness suite; False for other suites' judges)."""
        maj = self.pairs[self.pairs["b"] == "human majority"]
        parts = []
        if len(maj) and np.isfinite(maj["kappa"].iloc[0]):
            r = maj.iloc[0]
            parts.append(f"the judge agreed with the human majority with Cohen's kappa {r['kappa']:.2f} "
                         f"(accuracy {100 * r['accuracy']:.0f}%, n = {int(r['n'])})")
        per = self.pairs[(self.pairs["a"] == "judge") & (self.pairs["b"] != "human majority")]
        if len(per):
            parts.append("per annotator: " + ", ".join(
                f"{b} {k:.2f}" if np.isfinite(k) else f"{b} n/a" for b, k in zip(per["b"], per["kappa"])))
        if self.fleiss is not None and np.isfinite(self.fleiss["kappa"]):
            parts.append(f"the annotators among themselves: Fleiss' kappa {self.fleiss['kappa']:.2f} "
                         f"({self.fleiss['raters']} annotators, n = {self.fleiss['n']})")
        text = ("On the validation table (" + str(self.n_rows) + " rows), " + "; ".join(parts) + ". "
                if parts else "The validation table gave no usable comparison. ")
        return text + PUBLISHED if published else text.strip()


def validate_judge(data: pd.DataFrame | str | Path, *, judge: str = "judge", humans: Sequence[str] | None = None,
                   reply: str | None = "reply", criterion: str | None = "criterion") -> JudgeValidation:
    """Agreement of the judge's labels with the human labels of ``data`` (a DataFrame or a file
    :func:`audit.stats.read_table` reads); see the module docstring. ``humans``: the human label
    columns (default: every column whose name starts with ``human``); ``reply``/``criterion`` are
    checked to exist when given (None: not required)."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    where = str(data) if not isinstance(data, pd.DataFrame) else "the table"
    if not isinstance(data, pd.DataFrame):
        from ..stats.longtable import read_table

        data = read_table(data)
    humans = list(humans) if humans else [c for c in data.columns if str(c).lower().startswith("human")]
    need = [c for c in (reply, criterion, judge, *humans) if c]
    missing = [c for c in need if c not in data.columns]
    if missing or not humans:
        raise AuditError(f"the table has no column {missing[0]!r}" if missing else "the table has no human label column",
                         where=where, fix="name the columns (CLI: --columns reply=...,criterion=...,judge=...,"
                                          "humans=a|b); the table has: " + ", ".join(map(str, data.columns)))
    if len(data) == 0:
        raise AuditError("the table has no row", where=where, fix="give at least one labelled reply")
    j = binary_labels(data[judge], f"{where}, column '{judge}'")
    hs = {h: binary_labels(data[h], f"{where}, column '{h}'") for h in humans}
    rows = []
    for h, s in hs.items():
        k, acc, n, note = _kappa(j, s)
        rows.append({"a": "judge", "b": h, "kappa": k, "accuracy": acc, "n": n, "note": note})
    H = pd.DataFrame(hs)
    n_lab = H.notna().sum(axis=1)
    yes = H.sum(axis=1)
    majority = pd.Series(np.where(yes * 2 > n_lab, 1.0, np.where(yes * 2 < n_lab, 0.0, np.nan)), index=H.index)
    majority[n_lab == 0] = np.nan
    n_ties = int(((yes * 2 == n_lab) & (n_lab > 0)).sum())
    k, acc, n, note = _kappa(j, majority)
    rows.append({"a": "judge", "b": "human majority", "kappa": k, "accuracy": acc, "n": n, "note": note})
    for a, b in combinations(humans, 2):
        k, acc, n, note = _kappa(hs[a], hs[b])
        rows.append({"a": a, "b": b, "kappa": k, "accuracy": acc, "n": n, "note": note})
    fleiss = None
    if len(humans) >= 2:
        complete = H.dropna()
        if len(complete):
            table, _ = aggregate_raters(complete.astype(int).to_numpy(), n_cat=2)
            with np.errstate(invalid="ignore", divide="ignore"):
                fk = float(fleiss_kappa(table, method="fleiss"))
            fleiss = {"kappa": fk, "n": int(len(complete)), "raters": len(humans)}
        else:
            fleiss = {"kappa": float("nan"), "n": 0, "raters": len(humans)}
    return JudgeValidation(pd.DataFrame(rows), fleiss, int(len(data)), n_ties,
                           {"judge": judge, "humans": humans, "reply": reply, "criterion": criterion})


def validation_summary_table(path: str | Path, *, judge: str = "judge", humans: Sequence[str] | None = None,
                             source: str | None = None, published: bool = True) -> pd.DataFrame:
    """The judge-validation rows a suite stores for its report (a spec's ``judge_validation``): the
    :class:`JudgeValidation` pairs of ``path`` plus a row ``humans | Fleiss`` (when two or more
    annotators), each with the one-sentence ``summary`` and the ``source`` (default ``path``)."""
    v = validate_judge(path, judge=judge, humans=humans, reply=None, criterion=None)
    t = v.pairs.copy()
    extra = [{"a": "humans", "b": "Fleiss", "kappa": v.fleiss["kappa"], "accuracy": float("nan"), "n": v.fleiss["n"],
              "note": f"{v.fleiss['raters']} annotators"}] if v.fleiss else []
    t = pd.concat([t, pd.DataFrame(extra)], ignore_index=True)
    t["summary"] = v.summary(published=published)
    t["source"] = str(source if source is not None else path)
    return t


def validation_context(table: pd.DataFrame | None) -> dict[str, Any] | None:
    """A stored validation table (:func:`validation_summary_table`) as the reports' template context:
    ``summary``, ``source`` and formatted ``rows``; None without a table."""
    from ..report.suite_report import pct, records

    if table is None or not len(table):
        return None
    return {"summary": table["summary"].iloc[0], "source": table["source"].iloc[0],
            "rows": [{"a": r["a"], "b": r["b"], "kappa": "n/a" if r["kappa"] is None else f"{r['kappa']:.2f}",
                      "accuracy": pct(r["accuracy"]), "n": r["n"], "note": r["note"] or ""} for r in records(table)]}


__all__ = ["JudgeValidation", "PUBLISHED", "binary_labels", "validate_judge", "validation_context",
           "validation_summary_table"]
