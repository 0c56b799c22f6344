"""Untrusted text at the boundaries: surrogates, secrets, over-long replies, invisible characters."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.untrusted import (
    REPLACEMENT, redact_secrets, replace_unencodable, reply_char_limit, secrets_from_env, truncate_reply,
    visible_controls,
)


def test_lone_surrogates_are_replaced_and_counted():
    text = json.loads('"ok \\udc80 and \\ud83d\\ude00 and \\ud800"')   # one pair (an emoji) and two lone ones
    out, n = replace_unencodable(text)
    assert n == 2 and out == f"ok {REPLACEMENT} and \U0001F600 and {REPLACEMENT}"
    out.encode("utf-8")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=())))
def test_any_text_becomes_encodable_and_clean_text_is_untouched(text):
    out, n = replace_unencodable(text)
    out.encode("utf-8")
    assert len(out) == len(text)
    assert (n == 0) == (out == text)


def test_secrets_are_redacted_by_variable_name_and_never_returned(monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-live-0123456789abcdef")
    monkeypatch.setenv("SHORT", "abc")
    secrets = secrets_from_env(["MY_KEY", "SHORT", "UNSET_VARIABLE", None])
    assert secrets == {"MY_KEY": "sk-live-0123456789abcdef"}   # too short to redact safely: left out
    out, found = redact_secrets("here: sk-live-0123456789abcdef, again sk-live-0123456789abcdef.", secrets)
    assert out == "here: [REDACTED:MY_KEY], again [REDACTED:MY_KEY]." and found == ["MY_KEY"]
    assert redact_secrets("nothing here", secrets) == ("nothing here", [])
    assert redact_secrets(None, secrets) == (None, [])


def test_replies_longer_than_max_tokens_allows_are_cut_and_flagged():
    assert reply_char_limit(64) == 2048 and reply_char_limit(1) == 2000
    text = "x" * 200_000
    out, cut = truncate_reply(text, 64)
    assert cut and len(out) == 2048
    assert truncate_reply("short", 64) == ("short", False)


def test_invisible_and_bidi_characters_are_shown_not_obeyed():
    shown = visible_controls("a\u202eevil\u202c b\x00c\td\ne\u200bf \U0001F469\u200d\U0001F467")
    assert shown == "a<U+202E>evil<U+202C> b<U+0000>c\td\ne<U+200B>f \U0001F469\u200d\U0001F467"
    assert visible_controls("plain text") == "plain text"


def test_csv_cells_keep_their_row_whatever_line_ends_they_hold(tmp_path):
    import pandas as pd

    from audit.untrusted import csv_safe

    df = pd.DataFrame({"reply": ["0", "\r", "a\rb", "c\r\nd", "=1+1", "-2"], "n": range(6)})
    csv_safe(df).to_csv(tmp_path / "t.csv", index=False)
    back = pd.read_csv(tmp_path / "t.csv", dtype=str, keep_default_na=False)
    assert len(back) == 6 and back["reply"].tolist() == ["0", "\n", "a\nb", "c\nd", "'=1+1", "-2"]
