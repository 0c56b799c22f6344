"""Validation metrics (audit.scorers.validation) against scikit-learn and by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from audit.errors import AuditError
from audit.scorers.validation import confusion_matrix, metrics, quadratic_weighted_kappa, validate

sk = pytest.importorskip("sklearn.metrics")

levels = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=60)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@seed(20201)
@settings(max_examples=200, deadline=None)
@given(levels)
def test_metrics_agree_with_scikit_learn(pairs):
    y = [a for a, _ in pairs]
    p = [b for _, b in pairs]
    m = metrics(y, p)
    assert m["n"] == len(y)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, p, average="macro", zero_division=0))
    assert m["confusion"] == sk.confusion_matrix(y, p, labels=[0, 1, 2]).tolist()
    ref = sk.cohen_kappa_score(y, p, weights="quadratic", labels=[0, 1, 2])
    if math.isnan(m["weighted_kappa"]):
        assert math.isnan(ref) or len(set(y)) == 1 and len(set(p)) == 1
    else:
        assert m["weighted_kappa"] == pytest.approx(ref)
    prec, rec, _, sup = sk.precision_recall_fscore_support(y, p, labels=[0, 1, 2], zero_division=np.nan)
    for i in range(3):
        d = m["per_level"][str(i)]
        assert d["support"] == sup[i]
        for got, want in ((d["precision"], prec[i]), (d["recall"], rec[i])):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_hand_computed_example():
    y = [0, 0, 1, 2, 2, 2]
    p = [0, 1, 1, 2, 2, 0]
    m = metrics(y, p)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    # level 0: P 1/2 R 1/2; level 1: P 1/2 R 1; level 2: P 1 R 2/3
    f = [0.5, 2 * 0.5 * 1 / 1.5, 2 * (2 / 3) / (1 + 2 / 3)]
    assert m["macro_f1"] == pytest.approx(sum(f) / 3)
    assert m["per_level"]["1"]["precision"] == pytest.approx(0.5) and m["per_level"]["1"]["recall"] == 1.0


def test_kappa_is_one_for_perfect_agreement_and_undefined_for_one_level():
    assert quadratic_weighted_kappa(confusion_matrix([0, 1, 2], [0, 1, 2])) == pytest.approx(1.0)
    assert math.isnan(quadratic_weighted_kappa(confusion_matrix([1, 1], [1, 1])))
    # A distant miss costs more than a near miss.
    near = quadratic_weighted_kappa(confusion_matrix([0, 1, 2, 2], [0, 1, 2, 1]))
    far = quadratic_weighted_kappa(confusion_matrix([0, 1, 2, 2], [0, 1, 2, 0]))
    assert near > far


def test_out_of_range_levels_are_rejected():
    with pytest.raises(ValueError):
        metrics([0, 3], [0, 1])
    with pytest.raises(ValueError):
        metrics([0, 1], [0])


class _Fixed:
    """A scorer that returns given values (NaN allowed) for ER."""

    name = "fixed"
    measures = ("ER", "IP", "EX", "empathy")

    def __init__(self, values):
        self.values = values
        self.seen = None

    def info(self):
        return {"name": self.name}

    def score(self, posts, replies):
        self.seen = (list(posts), list(replies))
        v = np.asarray(self.values, dtype=float)
        return pd.DataFrame({"ER": v, "IP": v, "EX": v, "empathy": v})


def _frame(levels):
    return pd.DataFrame({"seeker_post": [f"post {i}" for i in range(len(levels))],
                         "response_post": [f"reply {i}" for i in range(len(levels))], "level": levels})


def test_validate_rounds_halves_up_and_counts_unscored():
    sc = _Fixed([0.0, 1.5, 0.49, float("nan"), 2.0])
    res = validate(sc, "ER", _frame([0, 2, 0, 1, 1]))
    assert res["n"] == 4 and res["unscored"] == 1
    assert res["confusion"] == [[2, 0, 0], [0, 0, 1], [0, 0, 1]]
    assert res["accuracy"] == pytest.approx(3 / 4)
    assert sc.seen == ([f"post {i}" for i in range(5)], [f"reply {i}" for i in range(5)])
    assert set(res) >= {"accuracy", "macro_f1", "weighted_kappa", "n", "per_level", "confusion"}


def test_validate_rejects_bad_input():
    sc = _Fixed([0.0])
    with pytest.raises(AuditError):
        validate(sc, "XX", _frame([0]))
    with pytest.raises(AuditError):
        validate(sc, "ER", _frame([0]).drop(columns="level"))
    with pytest.raises(AuditError):
        validate(sc, "ER", _frame([5]))
