"""The llm-judge answer parser on well-formed and malformed judge outputs, and the rubric."""

from __future__ import annotations

import json
import math

import pytest

from audit.errors import AuditError
from audit.scorers.judge import (ANSWER_SCHEMA, JudgeScorer, load_rubric, parse_judge_answer, verdict_frame,
                                 with_response_format)
from audit.spec import JudgeSpec, ModelSpec

GOOD = {"ER": {"rationale": "Says they feel sad for the seeker.", "level": 2},
        "IP": {"rationale": "Says 'I understand'.", "level": 1},
        "EX": {"rationale": "No question.", "level": 0}}


def _j(obj) -> str:
    return json.dumps(obj)


def test_well_formed_answer_is_parsed_exactly():
    v = parse_judge_answer(_j(GOOD))
    assert v.ok and v.levels == {"ER": 2, "IP": 1, "EX": 0}
    assert v.empathy == pytest.approx(1.0)
    assert v.rationales["IP"] == "Says 'I understand'."


def test_a_single_code_fence_around_the_whole_answer_is_a_wrapper_not_prose():
    for fence in ("```json\n{}\n```", "```\n{}\n```", "  ```JSON\n{}```  "):
        v = parse_judge_answer(fence.replace("{}", _j(GOOD)))
        assert v.ok, (fence, v.error)
        assert v.levels == {"ER": 2, "IP": 1, "EX": 0}


def test_rationale_may_be_omitted_but_not_mistyped():
    assert parse_judge_answer(_j({m: {"level": 1} for m in ("ER", "IP", "EX")})).levels == {"ER": 1, "IP": 1, "EX": 1}
    bad = json.loads(_j(GOOD))
    bad["EX"]["rationale"] = 3
    assert not parse_judge_answer(_j(bad)).ok


def _mut(fn):
    obj = json.loads(_j(GOOD))
    fn(obj)
    return _j(obj)


MALFORMED = {
    "empty": ("", "empty"),
    "whitespace": ("  \n ", "empty"),
    "none": (None, "empty"),
    "not json": ("ER: 2, IP: 1, EX: 0", "does not start with a JSON object"),
    "prose before": ("Here is my rating: " + _j(GOOD), "does not start"),
    "prose after": (_j(GOOD) + "\nI hope this helps!", "text after"),
    "two objects": (_j(GOOD) + _j(GOOD), "text after"),
    "fence with prose": ("Sure!\n```json\n" + _j(GOOD) + "\n```", "does not start"),
    "prose after fence": ("```json\n" + _j(GOOD) + "\n```\nDone.", "fence"),
    "unclosed fence": ("```json\n" + _j(GOOD), "fence"),
    "truncated": (_j(GOOD)[:57], "truncated"),
    "truncated mid string": ('{"ER": {"rationale": "The response expre', "truncated"),
    "array": ("[2, 1, 0]", "does not start"),
    "missing key": (_mut(lambda o: o.pop("EX")), "missing ['EX']"),
    "extra key": (_mut(lambda o: o.update(empathy=1)), "unexpected ['empathy']"),
    "lowercase keys": (_j({k.lower(): v for k, v in GOOD.items()}), "wrong keys"),
    "level too high": (_mut(lambda o: o["ER"].update(level=3)), "out of range"),
    "level negative": (_mut(lambda o: o["IP"].update(level=-1)), "out of range"),
    "level as string": (_mut(lambda o: o["ER"].update(level="2")), "not an integer"),
    "level as word": (_mut(lambda o: o["ER"].update(level="strong")), "not an integer"),
    "level fractional": (_mut(lambda o: o["EX"].update(level=1.5)), "not an integer"),
    "level float": (_mut(lambda o: o["EX"].update(level=1.0)), "not an integer"),
    "level bool": (_mut(lambda o: o["EX"].update(level=True)), "not an integer"),
    "level null": (_mut(lambda o: o["EX"].update(level=None)), "not an integer"),
    "bare levels": (_j({"ER": 2, "IP": 1, "EX": 0}), "not an object"),
    "missing level": (_mut(lambda o: o["ER"].pop("level")), "missing 'level'"),
    "extra inner key": (_mut(lambda o: o["ER"].update(score=2)), "unexpected key"),
    "duplicate key": ('{"ER": {"level": 0}, "ER": {"level": 2}, "IP": {"level": 1}, "EX": {"level": 0}}', "duplicate"),
    "NaN constant": ('{"ER": {"level": NaN}, "IP": {"level": 1}, "EX": {"level": 0}}', "non-standard"),
    "single quotes": ("{'ER': {'level': 2}, 'IP': {'level': 1}, 'EX': {'level': 0}}", "invalid JSON"),
    "trailing comma": ('{"ER": {"level": 2}, "IP": {"level": 1}, "EX": {"level": 0},}', "invalid JSON"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_answers_are_unparseable_never_guessed(name):
    text, why = MALFORMED[name]
    v = parse_judge_answer(text)
    assert not v.ok, f"{name}: parsed as {v.levels}"
    assert v.levels is None and math.isnan(v.empathy)
    assert why.lower() in v.error.lower(), f"{name}: {v.error}"
    assert v.raw == text


def test_finish_reason_length_is_reported_as_truncation():
    v = parse_judge_answer('{"ER": {"rationale": "ok", "level": 2}, "IP": {"rat', finish_reason="length")
    assert not v.ok and "max_tokens" in v.error


def test_verdict_frame_records_unparseable_raw_text_and_keeps_failed_calls_pending():
    answers = [
        {"request_key": "k1", "status": "ok", "text": _j(GOOD), "finish_reason": "stop", "error": None},
        {"request_key": "k2", "status": "ok", "text": "I think ER is 2.", "finish_reason": "stop", "error": None},
        {"request_key": "k3", "status": "failed", "text": None, "finish_reason": None, "error": "HTTP 503"},
        {"request_key": "k4", "status": "content_filter", "text": None, "finish_reason": "content_filter", "error": None},
        None,
    ]
    df = verdict_frame(answers)
    assert df.loc[0, ["ER", "IP", "EX", "empathy"]].tolist() == [2.0, 1.0, 0.0, 1.0]
    assert df.loc[0, "detail_ER"] == GOOD["ER"]["rationale"]
    assert df.loc[1, ["ER", "IP", "EX", "empathy"]].isna().all()
    d = json.loads(df.loc[1, "detail"])
    assert d["raw"] == "I think ER is 2." and d["judge_key"] == "k2" and d["unparseable"]
    assert df["pending"].tolist() == [False, False, True, False, True]
    assert "HTTP 503" in df.loc[2, "detail"]
    assert df.loc[3, ["ER", "IP", "EX"]].isna().all() and "content_filter" in df.loc[3, "detail"]


def test_rubric_messages_hold_post_and_reply_verbatim_even_with_braces():
    r = load_rubric()
    post, reply = "I feel {lost} and {{seeker_post}}", "That sounds {hard}."
    msgs = r.messages(post, reply)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert post in msgs[1]["content"] and reply in msgs[1]["content"]
    for mech in ("Emotional Reactions", "Interpretations", "Explorations"):
        assert mech in msgs[0]["content"]
    assert len(r.sha256) == 64


def test_bad_rubric_file_is_one_clear_error(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\nversion: 1\nsystem: rate it\nuser: 'RESPONSE: {{response_post}}'\n", encoding="utf-8")
    with pytest.raises(AuditError, match=r"\{\{seeker_post\}\}"):
        load_rubric(p)


def test_response_format_is_requested_through_the_request_body_unless_disabled():
    m = ModelSpec(label="j", base_url="http://localhost:1/v1", model="judge")
    js = with_response_format(m, "json_schema", ANSWER_SCHEMA, "epitome_levels")
    rf = js.extra_body["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["required"] == ["ER", "IP", "EX"]
    assert with_response_format(m, "json_object", ANSWER_SCHEMA, "x").extra_body["response_format"] == {"type": "json_object"}
    assert "response_format" not in with_response_format(m, "none", ANSWER_SCHEMA, "x").extra_body
    assert m.extra_body == {}  # the spec's own model is not modified
    sc = JudgeScorer(JudgeSpec(model=m, response_format="none"))
    assert "response_format" not in sc.model.extra_body
    info = sc.info()
    assert info["model"] == "judge" and info["endpoint"] == "http://localhost:1/v1" and len(info["rubric_sha256"]) == 64
