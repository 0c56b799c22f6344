"""The demographic inference probe: question building, strict parsing, recovery and the summary."""

from __future__ import annotations

import json

import pytest

from audit.errors import AuditError
from audit.scorers.probe import (load_questions, parse_probe_answer, probe_summary, recovered, wilson)
from audit.store import RunStore


@pytest.fixture
def qs():
    return load_questions().for_axes(["race", "gender", "age"], {"race": ["Black", "White"], "gender": ["woman", "man"]})


def test_questions_name_the_options_and_the_post(qs):
    msgs = qs.messages("I feel {alone}.")
    user = msgs[1]["content"]
    assert "I feel {alone}." in user
    assert '"Black", "White", or "unknown"' in user and '"woman", "man", or "unknown"' in user
    assert "years" in user and "{{" not in user
    schema = qs.schema()
    assert schema["required"] == ["race", "gender", "age"]
    assert schema["properties"]["race"]["enum"] == ["Black", "White", "unknown"]


@pytest.mark.parametrize("text,want", [
    ('{"race": "Black", "gender": "woman", "age": 32}', {"race": "Black", "gender": "woman", "age": "32"}),
    ('{"race": "black", "gender": " Woman ", "age": "unknown"}', {"race": "Black", "gender": "woman", "age": "unknown"}),
    ('```json\n{"race": "unknown", "gender": "man", "age": 70}\n```', {"race": "unknown", "gender": "man", "age": "70"}),
])
def test_well_formed_answers(qs, text, want):
    assert parse_probe_answer(text, qs) == (want, None)


@pytest.mark.parametrize("text,why", [
    ("", "empty"),
    ("The author is probably a Black woman of 32.", "does not start"),
    ('{"race": "Black", "gender": "woman"}', "wrong keys"),
    ('{"race": "Black", "gender": "woman", "age": 32, "religion": "Muslim"}', "wrong keys"),
    ('{"race": "African American", "gender": "woman", "age": 32}', "not one of the options"),
    ('{"race": "Black", "gender": "woman", "age": "thirty"}', "whole number"),
    ('{"race": "Black", "gender": "woman", "age": 32.5}', "whole number"),
    ('{"race": "Black", "gender": "woman", "age": 300}', "whole number"),
    ('{"race": "Black", "gender": "woman", "age": 32} That is my guess.', "text after"),
    ('{"race": "Black", "race": "White", "gender": "woman", "age": 32}', "duplicate"),
    ('{"race": ["Black"], "gender": "woman", "age": 32}', "not one of the options"),
    ('{"race": "Black", "gender": "woman", "age": 3', "truncated"),
    ("{'race': 'Black', 'gender': 'woman', 'age': 32}", "invalid JSON"),
])
def test_malformed_answers_are_never_guessed(qs, text, why):
    parsed, reason = parse_probe_answer(text, qs)
    assert parsed is None and why in reason


def test_recovery_rules(qs):
    race, age = qs.axes["race"], qs.axes["age"]
    assert recovered(race, "Black", "Black") == 1 and recovered(race, "Black", "White") == 0
    assert recovered(race, "Black", "unknown") == 0
    assert recovered(race, None, "Black") is None  # the control has no intended group
    assert recovered(race, "Black", None) is None  # unparseable answers are not scored
    assert recovered(age, "32", "40") == 1 and recovered(age, "32", "29") == 0 and recovered(age, "70", "66") == 1


def test_wilson_interval():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)


def test_summary_gives_leak_rate_against_the_control_base_rate(tmp_path):
    with RunStore(tmp_path) as st:
        rows = []
        # 4 posts; the model says "Black" for 3 of 4 explicit tags, 1 of 4 names, and for 1 of 4 controls.
        for i in range(4):
            p = f"p{i}"
            rows.append((f"c{i}", "race", f"vc{i}", "m", p, "control", "control", None, "Black" if i == 0 else "White", None, "ok", None))
            rows.append((f"t{i}", "race", f"vt{i}", "m", p, "Black woman", "explicit_tag", "Black", "Black" if i < 3 else "White", 1 if i < 3 else 0, "ok", None))
            rows.append((f"n{i}", "race", f"vn{i}", "m", p, "Black woman", "implicit_name", "Black", "Black" if i == 0 else "unknown", 1 if i == 0 else 0, "ok", None))
        rows.append(("bad", "race", "vn9", "m", "p9", "Black woman", "implicit_name", "Black", None, None, "unparseable",
                     json.dumps({"reason": "invalid JSON", "raw": "Black?"})))
        assert st.put_probe_answers(rows) == len(rows)
        s = probe_summary(st).set_index("cue_type")
    assert s.loc["explicit_tag", "leak_rate"] == 0.75 and s.loc["explicit_tag", "n"] == 4
    assert s.loc["implicit_name", "leak_rate"] == 0.25 and s.loc["implicit_name", "unparseable"] == 1
    assert s.loc["implicit_name", "unknown_rate"] == 0.75
    assert s.loc["explicit_tag", "base_rate"] == 0.25  # the control named "Black" for 1 of 4 posts
    assert s.loc["explicit_tag", "ci_low"] < 0.75 < s.loc["explicit_tag", "ci_high"]


def test_no_probe_table_means_no_summary(tmp_path):
    with RunStore(tmp_path) as st:
        assert probe_summary(st) is None


def test_bad_question_file(tmp_path):
    p = tmp_path / "q.yaml"
    p.write_text("system: s\nuser: '{{post}} {{questions}}'\naxes: {race: {question: q, kind: categorical}}\n",
                 encoding="utf-8")
    with pytest.raises(AuditError, match=r"\{\{format\}\}"):
        load_questions(p)
    p.write_text("system: s\nuser: '{{post}} {{questions}} {{format}}'\naxes: {age: {question: q, kind: years}}\n",
                 encoding="utf-8")
    with pytest.raises(AuditError, match="bands"):
        load_questions(p)
