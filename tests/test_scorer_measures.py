"""Measure declarations: every built-in scorer declares its measures, the declaration is stored with
its info, and the catalog read from a run's scorer_info labels, orders and scales its outcomes (runs
stored before declarations existed fall back to the built-in declarations by scorer name)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.scorers import available_scorers, builtin_measures, builtin_names, get_scorer
from audit.scorers.measures import Measure, MeasureCatalog, any_level, measure_dicts
from audit.stats.stage import _is_level

# The labels reports have always printed for the built-in scorers (the golden run checks them in place).
BUILTIN_LABELS = {
    "epitome.ER": "Emotional Reactions", "epitome.empathy": "overall empathy (EPITOME mean)",
    "epitome.EX>0": "share of replies with any Explorations",
    "llm-judge.IP": "Interpretations (llm-judge)", "llm-judge.ER>0": "share of replies with any Emotional Reactions (llm-judge)",
    "hf-classifier.empathy": "overall empathy (EPITOME mean) (hf-classifier)",
    "length.words": "reply length (words)", "refusal.refusal": "refusal rate",
    "sentiment.compound": "sentiment (VADER compound)", "ER": "Emotional Reactions", "words": "reply length (words)",
}


@pytest.mark.parametrize("name", ["length", "refusal", "sentiment", "epitome"])
def test_a_built_in_scorer_declares_its_measures_and_stores_the_declaration(name):
    sc = get_scorer(name)
    assert tuple(m.name for m in sc.declared_measures) == tuple(sc.measures)
    assert sc.info()["measures"] == measure_dicts(sc.declared_measures)
    assert [Measure.from_dict(d) for d in sc.info()["measures"]] == list(sc.declared_measures)


def test_every_registered_scorer_lists_its_declarations():
    rows = {r["name"]: r for r in available_scorers()}
    assert set(builtin_names()) <= set(rows)
    for name in builtin_names():
        assert [d["name"] for d in rows[name]["declared"]] == rows[name]["measures"]
        assert all(d["label"] and d["kind"] in ("ordinal", "binary", "continuous") for d in rows[name]["declared"])


def test_a_run_stored_before_declarations_gets_the_built_in_labels():
    old = {"epitome": {"name": "epitome", "version": "1"}, "refusal": {"version": "1"}, "sentiment": {}}
    for catalog in (MeasureCatalog.from_scorer_info(old), MeasureCatalog.from_scorer_info(None)):
        assert {o: catalog.label(o) for o in BUILTIN_LABELS} == BUILTIN_LABELS
        assert catalog.is_absolute("refusal.refusal", 0.5) and catalog.scale_unit("refusal.refusal") == (
            100.0, "percentage points")
        assert catalog.is_absolute("sentiment.compound", 0.5) and catalog.scale_unit("sentiment.compound") == (
            1.0, "points")
        assert not catalog.is_absolute("epitome.ER", 1.2) and catalog.is_absolute("epitome.ER", 0.0)
    order = sorted(["length.words", "refusal.refusal", "epitome.ER>0", "sentiment.compound", "epitome.empathy",
                    "epitome.ER", "zz.other"], key=MeasureCatalog.from_scorer_info(old).sort_key)
    assert order == ["epitome.ER", "epitome.ER>0", "epitome.empathy", "sentiment.compound", "length.words",
                     "refusal.refusal", "zz.other"]


def test_a_stored_declaration_labels_a_scorer_the_project_does_not_know():
    warm = Measure("warm", "warmth (lexicon)", kind="ordinal", range=(0, 4), higher_is="warmer")
    er = Measure("ER", "Emotional Reactions", kind="ordinal", range=(0, 2))
    catalog = MeasureCatalog.from_scorer_info({"lab": {"measures": measure_dicts([warm, er])}})
    assert catalog.label("lab.warm") == "warmth (lexicon)"
    assert catalog.label("lab.warm>0") == "share of replies with any warmth (lexicon)"
    assert catalog.is_binary("lab.warm>0") and not catalog.is_binary("lab.warm")
    # a label a built-in scorer already uses gets the scorer's name, so a report can tell them apart
    assert catalog.label("lab.ER") == "Emotional Reactions (lab)"
    assert catalog.label("epitome.ER") == "Emotional Reactions"
    assert catalog.label("other.thing") == "thing (other)"  # undeclared: named, never dropped


def test_level_outcomes_follow_the_declared_kind():
    ordinal = Measure("warm", "warmth", kind="ordinal", range=(0, 4))
    continuous = Measure("mean", "a mean", kind="continuous", range=(0, 2))
    catalog = MeasureCatalog.from_scorer_info({"lab": {"measures": measure_dicts([ordinal, continuous])}})
    values = {"lab.warm": [0.0, 3.0, 1.0], "lab.mean": [0.0, 2.0, 1.0], "x.levels": [0.0, 2.0, 1.0],
              "x.binary": [0.0, 1.0, np.nan], "x.scale": [0.0, 2.5, 1.0]}
    derived = sorted(n for n, v in values.items() if _is_level(np.array(v), catalog.declared(n)))
    assert derived == ["lab.warm", "x.levels"]  # x.levels: undeclared, by its values; a 0/1 needs none


def test_a_bad_declaration_is_an_error_the_author_can_act_on():
    with pytest.raises(AuditError, match="kind 'scale' is not one of"):
        Measure("x", "X", kind="scale")
    with pytest.raises(AuditError, match="'percentage points' is for binary"):
        Measure("x", "X", kind="continuous", gap_unit="percentage points")
    with pytest.raises(AuditError, match="min must be below max"):
        Measure("x", "X", range=(2, 1))
    with pytest.raises(AuditError, match="without '.'"):
        Measure("a.b", "X")
    assert Measure("r", "R", kind="binary").gap_unit == "percentage points"
    assert any_level(builtin_measures("epitome")[0]).name == "ER>0"
