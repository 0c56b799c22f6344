"""The built-in corpus: size, topics, risk set, and the neutrality lint over every post."""

from __future__ import annotations

import re

import pytest
import yaml

from audit.corpus import BUILTIN_POSTS, CORPUS_DIR, builtin_posts, corpus_info, neutrality_findings
from audit.resources import templates_dir

REQUIRED_TOPICS = {
    "depression", "anxiety", "grief", "loneliness", "work_stress", "money_stress", "relationship_conflict",
    "family_conflict", "body_image", "substance_use", "trauma", "suicidal_ideation", "self_harm",
}


@pytest.fixture(scope="module")
def posts():
    return builtin_posts()


def test_size_and_shape(posts):
    assert len(posts) >= 60
    assert list(posts.columns) == ["post_id", "text", "topic", "risk"]
    assert posts["post_id"].is_unique
    words = posts["text"].str.split().str.len()
    assert words.between(60, 250).all(), posts.loc[~words.between(60, 250), "post_id"].tolist()


def test_topics(posts):
    assert posts["topic"].nunique() >= 10
    assert REQUIRED_TOPICS <= set(posts["topic"])
    assert posts.groupby("topic").size().min() >= 3


def test_ids_are_stable_and_named_after_the_topic(posts):
    for pid, topic in zip(posts["post_id"], posts["topic"]):
        assert re.fullmatch(rf"{topic}-\d\d", pid), pid
    # ids are never renumbered: the numbers of each topic run 01..n without gaps
    for topic, g in posts.groupby("topic"):
        nums = sorted(int(p.rsplit("-", 1)[1]) for p in g["post_id"])
        assert nums == list(range(1, len(nums) + 1)), topic


def test_high_risk_set_is_clearly_marked(posts):
    high = posts[posts["risk"] == "high"]
    assert set(high["topic"]) == {"suicidal_ideation", "self_harm"}
    assert (posts[posts["topic"].isin(["suicidal_ideation", "self_harm"])]["risk"] == "high").all()
    assert len(high) >= 6
    assert set(posts["risk"]) == {"low", "moderate", "high"}
    raw = BUILTIN_POSTS.read_text(encoding="utf-8")
    assert "HIGH-RISK SET" in raw
    # the high-risk posts come after the marker, together
    marker = raw.index("HIGH-RISK SET")
    assert all(raw.index(f"id: {pid}\n") > marker for pid in high["post_id"])


def test_high_risk_posts_contain_no_method_details(posts):
    method_words = re.compile(r"\b(pills?|overdose|rope|hang|bridge|jump|gun|razor|blade|knife|cut(ting)?|bleach|"
                              r"poison|dose|lethal|wrists?)\b", re.I)
    high = posts[posts["risk"] == "high"]
    for pid, text in zip(high["post_id"], high["text"]):
        assert not method_words.search(text), (pid, method_words.search(text).group(0))


def test_no_post_starts_with_a_greeting_or_ends_with_a_signature(posts):
    """Cues are inserted before the first and after the last sentence; the post must not already hold one."""
    for pid, text in zip(posts["post_id"], posts["text"]):
        assert not re.match(r"(hi|hey|hello|dear|greetings)\b", text, re.I), pid
        assert not re.search(r"\n\s*[-–—]\s*\w+\s*$", text), pid
        assert text == text.strip() and "\r" not in text


def _template_names() -> list[str]:
    d = yaml.safe_load((templates_dir() / "cues" / "implicit_name.yaml").read_text(encoding="utf-8"))
    return [it["text"] for it in d["items"]]


def test_neutrality_lint_over_every_builtin_post(posts):
    """No built-in post may carry a demographic cue: it would be in the control and every variant."""
    names = re.compile(r"\b(" + "|".join(map(re.escape, _template_names())) + r")\b", re.I)
    problems = []
    for pid, text in zip(posts["post_id"], posts["text"]):
        for cat, word in neutrality_findings(text):
            problems.append(f"{pid}: {cat}: {word!r}")
        m = names.search(text)
        if m:
            problems.append(f"{pid}: template name {m.group(0)!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text, category", [
    ("As a mom of two I feel lost.", "gendered_self_reference"),
    ("I'm a single guy and it's hard.", "gendered_self_reference"),
    ("My husband doesn't understand.", "partner_gender"),
    ("My partner says she is tired of it.", "partner_gender"),
    ("He keeps telling me my partner is fine.", "partner_gender"),
    ("Being Black at my job is exhausting.", "race_ethnicity"),
    ("My Latina friends say I should relax.", "race_ethnicity"),
    ("I went to church on Sunday and cried.", "culture_religion"),
    ("My abuela always said this would pass.", "culture_religion"),
    ("Thanks for listening. My name is Sam.", "names"),
    ("Jennifer from work noticed.", "names"),
    ("I'm 32 years old and still lost.", "age"),
    ("I'm a 45-year-old with no savings.", "age"),
    ("I'm in my late twenties.", "age"),
    ("Since I retired I feel useless.", "age"),
    ("Ever since college I've felt this way.", "age"),
])
def test_lint_catches_each_category(text, category):
    found = {c for c, _ in neutrality_findings(text)}
    assert category in found, (text, found)


@pytest.mark.parametrize("text", [
    "My mom died last year and my dad is struggling.",  # relatives' genders are not the author's
    "My partner and I argue about money. They say I worry too much.",
    "I feel like my whole life is a mess right now.",
    "It has been fourteen years since the accident.",
])
def test_lint_leaves_neutral_text_alone(text):
    assert neutrality_findings(text) == []


def test_lexicon_and_review_note_exist_and_explain_themselves():
    lex = yaml.safe_load((CORPUS_DIR / "neutrality_lexicon.yaml").read_text(encoding="utf-8"))
    cats = lex["categories"]
    assert {"gendered_self_reference", "partner_gender", "race_ethnicity", "culture_religion", "names", "age"} <= set(cats)
    for c in cats.values():
        assert c.get("rationale") and (c.get("terms") or c.get("patterns"))
    review = (CORPUS_DIR / "REVIEW.md").read_text(encoding="utf-8")
    for word in ("original", "neutral", "high-risk", "review"):
        assert word in review.lower()


def test_corpus_info_records_provenance():
    info = corpus_info()
    assert info["version"] and info["license"] and "written for empathy-audit" in info["authorship"].lower()
    assert re.fullmatch(r"[0-9a-f]{64}", info["sha256"])


def test_review_note_counts_match_the_corpus(posts):
    """The review note states the corpus' size and risk mix; keep it true."""
    review = (CORPUS_DIR / "REVIEW.md").read_text(encoding="utf-8")
    risk = posts["risk"].value_counts()
    assert f"holds {len(posts)} help-seeking posts" in review
    assert f"across {posts['topic'].nunique()} topics" in review
    assert f"{risk['low']} are rated low risk, {risk['moderate']} moderate, {risk['high']} high" in review


def test_lint_flags_regional_spelling():
    assert ("regional_spelling", "apologise") in neutrality_findings("I apologise all the time.")
