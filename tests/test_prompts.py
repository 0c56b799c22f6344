"""Prompt styles are data: loading, placeholders, hashes, errors."""

from __future__ import annotations

import pytest

from audit.errors import AuditError
from audit.prompts import available_styles, build_messages, load_style

SHIPPED = {"plain", "peer_supporter", "forum_post", "clinician", "with_demographics", "without_demographics"}
POST = "I can't {sleep} and I feel alone since my move. {post}"  # braces in a post stay as they are


def test_shipped_styles_exist_and_put_the_post_in_once():
    assert SHIPPED <= set(available_styles())
    hashes = set()
    for name in SHIPPED:
        msgs, h = build_messages(name, POST)
        assert msgs[-1]["role"] == "user"
        assert sum(m["content"].count(POST) for m in msgs) == 1
        assert [m["role"] for m in msgs] in (["user"], ["system", "user"])
        hashes.add(h)
    assert len(hashes) == len(SHIPPED)
    assert build_messages("plain", POST)[0] == [{"role": "user", "content": POST}]


def test_with_and_without_demographics_differ_only_in_the_instruction():
    w = load_style("with_demographics")
    wo = load_style("without_demographics")
    assert "demographic" in w.system and "demographic" in wo.system
    assert "Do not use" in wo.system and "Do not use" not in w.system
    assert w.user == wo.user


def test_style_hash_follows_the_wording_only(tmp_path):
    d = tmp_path / "styles"
    d.mkdir()
    (d / "mine.yaml").write_text("name: mine\ndescription: a\nsystem: Be kind.\nuser: '{post}'\n")
    h1 = build_messages("mine", "x", templates=tmp_path)[1]
    (d / "mine.yaml").write_text("name: mine\ndescription: changed description\nsystem: Be kind.\nuser: '{post}'\n")
    assert build_messages("mine", "x", templates=tmp_path)[1] == h1
    (d / "mine.yaml").write_text("name: mine\nsystem: Be very kind.\nuser: '{post}'\n")
    assert build_messages("mine", "x", templates=tmp_path)[1] != h1


def test_unknown_style_lists_the_available_ones():
    with pytest.raises(AuditError) as ei:
        build_messages("therapist", "x")
    assert "unknown prompt style 'therapist'" in str(ei.value) and "peer_supporter" in str(ei.value)


@pytest.mark.parametrize("body,words", [
    ("name: bad\nuser: 'no placeholder'\n", "exactly once"),
    ("name: bad\nuser: '{post} {post}'\n", "exactly once"),
    ("name: bad\nuser: '{post}'\ncolour: red\n", "unknown key 'colour'"),
    ("name: other\nuser: '{post}'\n", "differs from its file name"),
    ("name: bad\nuser: [unclosed\n", "invalid YAML"),
])
def test_bad_style_files_are_clear_errors(tmp_path, body, words):
    d = tmp_path / "styles"
    d.mkdir()
    (d / "bad.yaml").write_text(body)
    with pytest.raises(AuditError) as ei:
        load_style("bad", templates=tmp_path)
    assert words in str(ei.value) and "bad.yaml" in str(ei.value)
