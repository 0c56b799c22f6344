"""Agreement of a scorer with human labels: accuracy, macro-F1, per-level precision/recall,
quadratic-weighted kappa and the confusion matrix (numpy only; no scikit-learn needed).

The metrics, for true levels ``y`` and predicted levels ``p`` over the label set ``L = (0, 1, 2)``:

- accuracy = mean(y == p)
- precision_l = #(y == l and p == l) / #(p == l); recall_l = #(y == l and p == l) / #(y == l);
  F1_l = 2 P R / (P + R) (0 when P + R = 0 or the level is never predicted nor present).
- macro-F1 = mean over the levels present in ``y`` or ``p`` of F1_l (scikit-learn's
  ``f1_score(average='macro')`` with ``zero_division=0``).
- quadratic-weighted kappa (Cohen 1968): with the confusion matrix O, E = outer(row sums, column
  sums) / n and weights w_ij = (i - j)^2 / (K - 1)^2, kappa = 1 - sum(w O) / sum(w E).

>>> from audit.scorers.validation import metrics
>>> m = metrics([0, 1, 2, 2], [0, 1, 2, 1])
>>> m["accuracy"], m["n"]
(0.75, 4)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError

LEVELS = (0, 1, 2)
MECHANISMS = ("ER", "IP", "EX")


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int] = LEVELS) -> np.ndarray:
    """Counts ``C[i, j]`` of pairs with true level ``labels[i]`` and predicted level ``labels[j]``."""
    index = {lab: i for i, lab in enumerate(labels)}
    c = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        if t not in index or p not in index:
            raise ValueError(f"level {t if t not in index else p!r} is not one of {list(labels)}")
        c[index[t], index[p]] += 1
    return c


def quadratic_weighted_kappa(conf: np.ndarray) -> float:
    """Cohen's quadratic-weighted kappa from a confusion matrix (NaN when undefined, e.g. one level only)."""
    o = np.asarray(conf, dtype=float)
    n = o.sum()
    k = o.shape[0]
    if n == 0 or k < 2:
        return float("nan")
    i, j = np.indices((k, k))
    w = (i - j) ** 2 / (k - 1) ** 2
    e = np.outer(o.sum(axis=1), o.sum(axis=0)) / n
    den = (w * e).sum()
    if den == 0:
        return float("nan")
    return float(1.0 - (w * o).sum() / den)


def metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[int] = LEVELS) -> dict[str, Any]:
    """All agreement figures for integer levels; see the module docstring for the formulas."""
    y_true = [int(v) for v in y_true]
    y_pred = [int(v) for v in y_pred]
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    conf = confusion_matrix(y_true, y_pred, labels)
    n = int(conf.sum())
    tp = np.diag(conf).astype(float)
    pred_n = conf.sum(axis=0).astype(float)
    true_n = conf.sum(axis=1).astype(float)
    per_level: dict[str, dict[str, Any]] = {}
    f1s = []
    for i, lab in enumerate(labels):
        prec = tp[i] / pred_n[i] if pred_n[i] > 0 else float("nan")
        rec = tp[i] / true_n[i] if true_n[i] > 0 else float("nan")
        p0 = 0.0 if math.isnan(prec) else prec
        r0 = 0.0 if math.isnan(rec) else rec
        f1 = 2 * p0 * r0 / (p0 + r0) if p0 + r0 > 0 else 0.0
        per_level[str(lab)] = {"precision": prec, "recall": rec, "f1": f1, "support": int(true_n[i]),
                               "predicted": int(pred_n[i])}
        if true_n[i] > 0 or pred_n[i] > 0:
            f1s.append(f1)
    return {
        "accuracy": float(tp.sum() / n) if n else float("nan"),
        "macro_f1": float(np.mean(f1s)) if f1s else float("nan"),
        "weighted_kappa": quadratic_weighted_kappa(conf),
        "n": n,
        "per_level": per_level,
        "confusion": conf.tolist(),
    }


def read_labelled(path: str | Path) -> pd.DataFrame:
    """Read a validation CSV (columns ``seeker_post, response_post, level`` in 0/1/2), checking every row.

    Returns the table with ``level`` as integers; any problem (missing file or column, no rows, a level
    that is not 0, 1 or 2) raises :class:`~audit.errors.AuditError` naming the file, row and column.
    The input of :func:`validate`.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = path.write_text("seeker_post,response_post,level\\nI feel alone.,That sounds hard.,2\\n")
    >>> read_labelled(path)["level"].tolist()
    [2]
    """
    p = Path(path)
    if not p.is_file():
        raise AuditError("validation data file not found", where=str(p), fix="check the path")
    try:
        df = pd.read_csv(p, dtype={"seeker_post": str, "response_post": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise AuditError(f"cannot read the CSV: {exc}", where=str(p), fix="give a UTF-8 CSV file with a header row") from None
    missing = [c for c in ("seeker_post", "response_post", "level") if c not in df.columns]
    if missing:
        raise AuditError(f"missing column(s) {missing} (found {list(df.columns)})", where=str(p),
                         fix="the file needs the columns seeker_post, response_post, level")
    if df.empty:
        raise AuditError("the file has no rows", where=str(p), fix="give labelled pairs")
    for i, v in enumerate(df["level"]):
        s = str(v).strip()
        if s not in ("0", "1", "2"):
            raise AuditError(f"level {v!r} is not 0, 1 or 2", where=f"{p}, row {i + 2}, column 'level'",
                             fix="label each pair with the EPITOME level 0 (none), 1 (weak) or 2 (strong)")
    df["level"] = df["level"].astype(str).str.strip().astype(int)
    return df


def validate(scorer: Any, mechanism: str, df: pd.DataFrame) -> dict[str, Any]:
    """Score ``df`` (columns ``seeker_post, response_post, level``) with ``scorer`` and compare its
    ``mechanism`` column with ``level``.

    Scores are rounded to the nearest level, halves up (a judge may give 1.5 -> 2; an EPITOME classifier gives
    0/1/2 already) and clipped to 0..2. Pairs the scorer could not score (NaN) are left out of the
    metrics and counted in ``unscored``; ``n`` is the number of pairs compared.
    """
    if mechanism not in MECHANISMS:
        raise AuditError(f"unknown mechanism {mechanism!r}", where="--mechanism", fix="use ER, IP or EX")
    missing = [c for c in ("seeker_post", "response_post", "level") if c not in df.columns]
    if missing:
        raise AuditError(f"missing column(s) {missing}", where="validation data",
                         fix="the data needs the columns seeker_post, response_post, level")
    if mechanism not in getattr(scorer, "measures", ()):
        raise AuditError(f"scorer {getattr(scorer, 'name', scorer)!r} does not output {mechanism}",
                         where="--mechanism", fix="choose a mechanism the scorer outputs")
    posts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in df["seeker_post"]]
    replies = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in df["response_post"]]
    truth = np.asarray(df["level"], dtype=float)
    bad = ~np.isin(truth, LEVELS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AuditError(f"level {df['level'].iloc[i]!r} is not 0, 1 or 2", where=f"validation data, row {i}",
                         fix="label each pair with the EPITOME level 0, 1 or 2")
    out = scorer.score(posts, replies)
    pred = np.asarray(out[mechanism], dtype=float)
    ok = ~np.isnan(pred)
    res = metrics(truth[ok].astype(int), np.clip(np.floor(pred[ok] + 0.5), 0, 2).astype(int))
    res["unscored"] = int((~ok).sum())
    res["mechanism"] = mechanism
    res["scorer"] = getattr(scorer, "name", type(scorer).__name__)
    return res


__all__ = ["LEVELS", "MECHANISMS", "confusion_matrix", "metrics", "quadratic_weighted_kappa", "read_labelled", "validate"]
