"""Agreement between scorers that scored the same run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.scorers.agreement import agreement_table, scorer_agreement
from audit.scorers.validation import confusion_matrix
from audit.scorers.validation import quadratic_weighted_kappa as _qwk


def quadratic_weighted_kappa(a, b):
    return _qwk(confusion_matrix(list(a), list(b)))
from audit.store import RunStore


def test_quadratic_weighted_kappa_matches_the_definition():
    sklearn = pytest.importorskip("sklearn.metrics", reason="scikit-learn is in the test extra")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 3, 40)
        b = np.where(rng.random(40) < 0.6, a, rng.integers(0, 3, 40))
        assert quadratic_weighted_kappa(a, b) == pytest.approx(sklearn.cohen_kappa_score(a, b, weights="quadratic"))
    assert quadratic_weighted_kappa(np.array([0, 1, 2]), np.array([0, 1, 2])) == 1.0


def _long(scorer, measure, values):
    return pd.DataFrame({"request_key": [f"k{i}" for i in range(len(values))], "scorer": scorer,
                         "measure": measure, "value": values, "detail": None})


def test_agreement_pairs_scorers_on_shared_measures_and_shared_replies():
    er_a = [0, 1, 2, 2, 1, 0, np.nan, 2]
    er_b = [0, 1, 2, 1, 1, 0, 2, np.nan]
    scores = pd.concat([_long("epitome", "ER", er_a), _long("llm-judge", "ER", er_b),
                        _long("epitome", "empathy", [0.1, 0.5, 0.9, 0.7, 0.4, 0.2, 0.3, 0.8]),
                        _long("llm-judge", "empathy", [0.2, 0.6, 1.0, 0.5, 0.5, 0.1, 0.3, 0.9]),
                        _long("length", "words", list(range(8)))])
    t = agreement_table(scores).set_index(["scorer_a", "scorer_b", "measure"])
    er = t.loc[("epitome", "llm-judge", "ER")]
    assert er["n"] == 6 and er["exact"] == pytest.approx(5 / 6)
    assert er["weighted_kappa"] == pytest.approx(quadratic_weighted_kappa(np.array([0, 1, 2, 2, 1, 0]), np.array([0, 1, 2, 1, 1, 0])))
    assert er["mean_diff"] == pytest.approx(-1 / 6)
    emp = t.loc[("epitome", "llm-judge", "empathy")]
    assert emp["spearman"] > 0.8 and np.isnan(emp["weighted_kappa"])  # kappa only for levels
    assert "words" not in t.index.get_level_values("measure")  # length shares no measure


def test_one_scorer_means_no_agreement_rows(tmp_path):
    with RunStore(tmp_path) as st:
        st.put_scores([("k1", "epitome", "ER", 1.0, None)])
        assert scorer_agreement(st).empty
