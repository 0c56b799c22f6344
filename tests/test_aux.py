"""Auxiliary scorers: length, refusal patterns (with their documented examples), VADER sentiment."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from audit.errors import AuditError
from audit.scorers import available_scorers, get_scorer
from audit.scorers.auxiliary import _normalise, count_words, load_refusal_patterns


def test_every_refusal_pattern_matches_its_examples_and_no_counter_example():
    pats = load_refusal_patterns()
    sc = get_scorer("refusal")
    assert pats["patterns"], "the shipped file must have patterns"
    for p in pats["patterns"]:
        assert p["examples"], f"pattern {p['id']} needs examples"
        assert p["source"].strip()
        for ex in p["examples"]:
            assert p["compiled"].search(_normalise(ex)), f"{p['id']} does not match its example {ex!r}"
            assert sc.match(ex) is not None
    assert len(pats["counter_examples"]) >= 5
    for ex in pats["counter_examples"]:
        assert sc.match(ex) is None, f"counter-example flagged as refusal: {ex!r} ({sc.match(ex)})"


def test_refusal_scores_and_names_the_pattern():
    sc = get_scorer("refusal")
    df = sc.score(["p"] * 4, [
        "I'm really sorry that you're feeling this way, but I’m unable to provide the help that you need.",
        "I'm so sorry to hear that. That sounds lonely. What happened?",
        "As an AI language model, I cannot offer therapy.",
        "",
    ])
    assert df["refusal"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert df["detail"][0] in {p["id"] for p in load_refusal_patterns()["patterns"]}
    assert pd.isna(df["detail"][1])


def test_refusal_pattern_file_errors_are_clear(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("patterns:\n  - {id: x, regex: '(unclosed', source: me}\n", encoding="utf-8")
    with pytest.raises(AuditError) as e:
        load_refusal_patterns(bad)
    assert "patterns[0]" in e.value.message and "'x'" in e.value.message
    bad.write_text("patterns:\n  - {id: x, regex: 'a'}\n", encoding="utf-8")
    with pytest.raises(AuditError, match="source"):
        load_refusal_patterns(bad)


@pytest.mark.parametrize("text,n", [
    ("", 0), ("You are not alone.", 4), ("don't  give up", 3), ("I’m here, 24/7!", 4), ("— ... ", 0),
])
def test_word_count(text, n):
    assert count_words(text) == n
    assert get_scorer("length").score(["x"], [text])["words"][0] == n


def test_sentiment_is_vader_compound_and_nan_for_empty():
    df = get_scorer("sentiment").score(["x"] * 3, ["I am so happy and grateful for you!", "This is terrible and awful.", " "])
    assert df["compound"][0] > 0.5
    assert df["compound"][1] < -0.5
    assert math.isnan(df["compound"][2])


def test_registry_lists_every_scorer_and_rejects_unknown_names():
    names = [s["name"] for s in available_scorers()]
    assert names[:2] == ["epitome", "llm-judge"] and {"hf-classifier", "length", "refusal", "sentiment"} <= set(names)
    with pytest.raises(AuditError, match="unknown scorer 'empathy'"):
        get_scorer("empathy")


def test_mismatched_pairs_are_an_audit_error():
    with pytest.raises(AuditError, match="2 posts but 1 replies"):
        get_scorer("length").score(["a", "b"], ["c"])
    with pytest.raises(AuditError, match="pair 0"):
        get_scorer("refusal").score([None], ["c"])  # type: ignore[list-item]


def test_hf_classifier_errors_are_clear_without_the_extra(tmp_path):
    from audit.scorers.hf import HFClassifierScorer

    with pytest.raises(AuditError, match="config.json"):
        HFClassifierScorer({"ER": tmp_path})
    with pytest.raises(AuditError, match="unknown mechanism"):
        HFClassifierScorer({"empathy": tmp_path})
    with pytest.raises(AuditError, match="hf_classifier"):
        get_scorer("hf-classifier")
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    sc = HFClassifierScorer({"ER": tmp_path})
    assert sc.measures == ("ER",)  # empathy needs all three mechanisms
    try:
        import transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(AuditError, match=r"empathy-audit\[hf\]"):
            sc.score(["post"], ["reply"])
    else:
        with pytest.raises(AuditError, match="cannot load the ER checkpoint"):
            sc.score(["post"], ["reply"])


def test_sentiment_is_linear_in_reply_length_and_unchanged_for_usual_replies(monkeypatch):
    """A 200 KB reply is scored in sentence chunks of at most VADER_CHUNK characters (VADER on one long
    text grows faster than linearly: 33 s a reply in issue 12 F); a usual reply is scored whole."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from audit.scorers.auxiliary import VADER_CHUNK, SentimentScorer

    s = SentimentScorer()
    short = "I'm so sorry. That sounds really hard, and you deserve support."
    assert s.compound(short) == SentimentIntensityAnalyzer().polarity_scores(short)["compound"]
    seen: list[int] = []
    original = s._analyzer.polarity_scores
    monkeypatch.setattr(s._analyzer, "polarity_scores", lambda t: (seen.append(len(t)), original(t))[1])
    long = ("I am so happy and proud of you. " * 3000) + ("This is awful and I hate it. " * 3000)
    value = s.compound(long)
    assert max(seen) <= VADER_CHUNK and sum(seen) == len(long)
    assert -1 <= value <= 1 and abs(value) < 0.9   # the positive and the negative halves both count
