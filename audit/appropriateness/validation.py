"""Judge validation: how well does an LLM judge's yes/no label agree with human labels?

Input: a table with one row per judged reply: the reply, the criterion question, the judge's label
and one or more human label columns (labels ``yes``/``no``; also accepted: ``true``/``false``,
``1``/``0``, ``y``/``n``, any case). Missing human labels are allowed (a blank cell); a label that is
none of those is one clear error naming the row and column. The judge's column listed among the
annotators is refused (it would compare the judge with itself).

Reported (:func:`validate_judge`), each row labelled by what it is (``statistic``):

- ``Fleiss' kappa, judge + annotators``: Fleiss' kappa over the judge and every annotator as raters
  of equal standing, over the rows all of them labelled (Fleiss 1971;
  :func:`statsmodels.stats.inter_rater.fleiss_kappa`): ``k = (P_bar - P_e) / (1 - P_e)`` with
  ``P_i = sum_j n_ij (n_ij - 1) / (m (m - 1))`` the agreement on row ``i`` of its ``m`` raters and
  ``P_e = sum_j p_j^2`` from the pooled label shares. This is the figure Moore et al. (2025) publish
  for their GPT-4o judge: 0.959 over the judge and two annotators.
- ``Fleiss' kappa, annotators``: the same among the annotators alone (how well the humans agree: the
  ceiling the judge can be held to);
- ``Cohen's kappa, judge vs annotator``: for each annotator, ``k = (p_o - p_e) / (1 - p_e)`` with
  ``p_o`` the observed agreement and ``p_e = sum_c p_judge(c) p_human(c)`` the agreement expected by
  chance (Cohen 1960; :func:`statsmodels.stats.inter_rater.cohens_kappa` on the 2 x 2 table), and
  accuracy ``p_o``, over the rows both labelled;
- ``Cohen's kappa, judge vs annotator majority`` (rows where the annotators tie are left out and
  counted);
- ``Cohen's kappa, annotator pair``: for every pair of annotators.

Kappa is undefined (NaN) when the raters give one label throughout; the row says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError

PUBLISHED = ("The published judge (GPT-4o; Moore et al. 2025) reached Fleiss' kappa 0.959 over the judge and two "
             "annotators.")
FLEISS_ALL = "Fleiss' kappa, judge + annotators"
FLEISS_HUMANS = "Fleiss' kappa, annotators"
COHEN_JUDGE = "Cohen's kappa, judge vs annotator"
COHEN_MAJORITY = "Cohen's kappa, judge vs annotator majority"
COHEN_PAIR = "Cohen's kappa, annotator pair"
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


def _fleiss(frame: pd.DataFrame) -> dict[str, Any]:
    """Fleiss' kappa of the columns of ``frame`` (raters, 0/1) over the rows every rater labelled."""
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    complete = frame.dropna()
    if not len(complete):
        return {"kappa": float("nan"), "n": 0, "raters": frame.shape[1]}
    table, _ = aggregate_raters(complete.astype(int).to_numpy(), n_cat=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        fk = float(fleiss_kappa(table, method="fleiss"))
    return {"kappa": fk, "n": int(len(complete)), "raters": frame.shape[1]}


@dataclass
class JudgeValidation:
    """``pairs``: one row per Cohen's kappa (``statistic, a, b, kappa, accuracy, n, note``);
    ``fleiss``: ``{kappa, n, raters}`` among the annotators (None with one annotator); ``fleiss_all``:
    ``{kappa, n, raters}`` over the judge and the annotators (``raters`` counts the judge); ``n_rows``;
    ``n_ties`` (rows left out of the majority); ``columns`` used."""

    pairs: pd.DataFrame
    fleiss: dict[str, Any] | None
    n_rows: int
    n_ties: int
    columns: dict[str, Any] = field(default_factory=dict)
    fleiss_all: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        from ..jsonable import jsonable

        return jsonable({"pairs": self.pairs.to_dict("records"), "fleiss": self.fleiss,
                         "fleiss_all": self.fleiss_all, "n_rows": self.n_rows, "n_ties": self.n_ties,
                         "columns": self.columns, "published": PUBLISHED})

    def summary(self, published: bool = True) -> str:
        """One sentence for the report, each figure named by what it is (``published``: followed by the
        published GPT-4o judge's figure of the appropriateness suite; False for other suites' judges)."""
        parts = []
        n_h = len(self.columns.get("humans") or [])
        fa = self.fleiss_all
        if fa is not None and np.isfinite(fa["kappa"]):
            parts.append(f"Fleiss' kappa over the judge and {n_h} annotator{'s' if n_h != 1 else ''} "
                         f"{fa['kappa']:.3f} (n = {fa['n']})")
        if self.fleiss is not None and np.isfinite(self.fleiss["kappa"]):
            parts.append(f"Fleiss' kappa among the {self.fleiss['raters']} annotators alone "
                         f"{self.fleiss['kappa']:.3f} (n = {self.fleiss['n']})")
        per = self.pairs[self.pairs["statistic"] == COHEN_JUDGE]
        if len(per):
            parts.append("Cohen's kappa of the judge against each annotator: " + ", ".join(
                f"{b} {k:.2f}" if np.isfinite(k) else f"{b} n/a" for b, k in zip(per["b"], per["kappa"])))
        maj = self.pairs[self.pairs["statistic"] == COHEN_MAJORITY]
        if n_h > 1 and len(maj) and np.isfinite(maj["kappa"].iloc[0]):
            r = maj.iloc[0]
            parts.append(f"against the annotators' majority {r['kappa']:.2f} (accuracy {100 * r['accuracy']:.0f}%, "
                         f"n = {int(r['n'])})")
        text = ("On the validation table (" + str(self.n_rows) + " rows): " + "; ".join(parts) + ". "
                if parts else "The validation table gave no usable comparison. ")
        return text + PUBLISHED if published else text.strip()


def validate_judge(data: pd.DataFrame | str | Path, *, judge: str = "judge", humans: Sequence[str] | None = None,
                   reply: str | None = "reply", criterion: str | None = "criterion") -> JudgeValidation:
    """Agreement of the judge's labels with the human labels of ``data`` (a DataFrame or a file
    :func:`audit.stats.read_table` reads; a text file that is not UTF-8 is refused with re-save
    advice); see the module docstring. ``humans``: the annotator columns (default: every column whose
    name starts with ``human`` or ``annotator``, the judge's column excepted); naming the judge's
    column among them is an error. ``reply``/``criterion`` are checked to exist when given (None: not
    required)."""
    where = str(data) if not isinstance(data, pd.DataFrame) else "the table"
    if not isinstance(data, pd.DataFrame):
        from ..reanalysis import read_text_table

        data = read_text_table(data)
    if humans:
        humans = list(humans)
        if judge in humans:
            raise AuditError(f"the judge's column '{judge}' is listed among the annotators", where=where,
                             fix="list only the human annotators' columns (CLI: --columns judge=COL,humans=A|B); "
                                 "the judge is compared with them, not with itself")
        dup = next((h for h in humans if humans.count(h) > 1), None)
        if dup is not None:
            raise AuditError(f"the annotator column '{dup}' is listed twice", where=where,
                             fix="list each annotator's column once")
    else:
        humans = [c for c in data.columns if str(c).lower().startswith(("human", "annotator")) and c != judge]
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
        rows.append({"statistic": COHEN_JUDGE, "a": "judge", "b": h, "kappa": k, "accuracy": acc, "n": n,
                     "note": note})
    H = pd.DataFrame(hs)
    n_lab = H.notna().sum(axis=1)
    yes = H.sum(axis=1)
    majority = pd.Series(np.where(yes * 2 > n_lab, 1.0, np.where(yes * 2 < n_lab, 0.0, np.nan)), index=H.index)
    majority[n_lab == 0] = np.nan
    n_ties = int(((yes * 2 == n_lab) & (n_lab > 0)).sum())
    k, acc, n, note = _kappa(j, majority)
    rows.append({"statistic": COHEN_MAJORITY, "a": "judge", "b": "human majority", "kappa": k, "accuracy": acc,
                 "n": n, "note": note})
    for a, b in combinations(humans, 2):
        k, acc, n, note = _kappa(hs[a], hs[b])
        rows.append({"statistic": COHEN_PAIR, "a": a, "b": b, "kappa": k, "accuracy": acc, "n": n, "note": note})
    fleiss = _fleiss(H) if len(humans) >= 2 else None
    fleiss_all = _fleiss(pd.concat([j.rename("judge"), H], axis=1))
    return JudgeValidation(pd.DataFrame(rows), fleiss, int(len(data)), n_ties,
                           {"judge": judge, "humans": humans, "reply": reply, "criterion": criterion}, fleiss_all)


def validation_summary_table(path: str | Path, *, judge: str = "judge", humans: Sequence[str] | None = None,
                             source: str | None = None, published: bool = True) -> pd.DataFrame:
    """The judge-validation rows a suite stores for its report (a spec's ``judge_validation``): a row
    ``judge + humans | Fleiss`` (Fleiss' kappa over the judge and the annotators), a row
    ``humans | Fleiss`` (among the annotators, when two or more), then the :class:`JudgeValidation`
    pairs (Cohen's kappa), each with its ``statistic`` label, the one-sentence ``summary`` and the
    ``source`` (default ``path``)."""
    v = validate_judge(path, judge=judge, humans=humans, reply=None, criterion=None)
    n_h = len(v.columns["humans"])
    extra = [{"statistic": FLEISS_ALL, "a": "judge + humans", "b": "Fleiss", "kappa": v.fleiss_all["kappa"],
              "accuracy": float("nan"), "n": v.fleiss_all["n"], "note": f"judge and {n_h} annotators"}]
    if v.fleiss:
        extra.append({"statistic": FLEISS_HUMANS, "a": "humans", "b": "Fleiss", "kappa": v.fleiss["kappa"],
                      "accuracy": float("nan"), "n": v.fleiss["n"], "note": f"{v.fleiss['raters']} annotators"})
    t = pd.concat([pd.DataFrame(extra), v.pairs], ignore_index=True)
    t["summary"] = v.summary(published=published)
    t["source"] = str(source if source is not None else path)
    return t


def validation_context(table: pd.DataFrame | None) -> dict[str, Any] | None:
    """A stored validation table (:func:`validation_summary_table`) as the reports' template context:
    ``summary``, ``source`` and formatted ``rows``; None without a table."""
    from ..report.suite_report import pct, records

    if table is None or not len(table):
        return None
    def statistic(r: dict[str, Any]) -> str:  # tables stored before the column existed
        if r.get("statistic"):
            return r["statistic"]
        if r["b"] == "Fleiss":
            return FLEISS_HUMANS if r["a"] == "humans" else FLEISS_ALL
        return COHEN_MAJORITY if r["b"] == "human majority" else COHEN_JUDGE if r["a"] == "judge" else COHEN_PAIR

    def kappa(r: dict[str, Any]) -> str:  # Fleiss' kappa to three places, as published (0.959)
        if r["kappa"] is None:
            return "n/a"
        return f"{r['kappa']:.3f}" if r["b"] == "Fleiss" else f"{r['kappa']:.2f}"

    return {"summary": table["summary"].iloc[0], "source": table["source"].iloc[0],
            "rows": [{"statistic": statistic(r), "a": r["a"], "b": r["b"], "kappa": kappa(r),
                      "accuracy": pct(r["accuracy"]), "n": r["n"], "note": r["note"] or ""} for r in records(table)]}


__all__ = ["COHEN_JUDGE", "COHEN_MAJORITY", "COHEN_PAIR", "FLEISS_ALL", "FLEISS_HUMANS", "JudgeValidation", "PUBLISHED", "binary_labels", "validate_judge", "validation_context",
           "validation_summary_table"]
