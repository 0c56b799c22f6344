"""Untrusted text at the boundaries: model replies, judge and probe answers, posts, templates.

Replies and posts are data. They are stored, scored and shown, never evaluated. Four things can
still go wrong with data that arrives from outside, and each has one function here:

- :func:`replace_unencodable`: a lone UTF-16 surrogate (``"\\udc80"``, which JSON can carry and
  Python decodes) cannot be encoded as UTF-8, so SQLite, a CSV writer or a report would fail on it.
  Each is replaced by U+FFFD and counted.
- :func:`redact_secrets`: an endpoint that echoes the API key in a normal reply must not get the key
  into the store or a report. Every exact occurrence of a secret is replaced by ``[REDACTED:<ENV>]``.
- :func:`truncate_reply`: a reply far longer than ``max_tokens`` allows is not what was asked for
  (a broken or hostile endpoint); it is cut at :func:`reply_char_limit` and flagged, so a scorer
  never spends minutes on it.
- :func:`visible_controls`: for display only: NUL and the Unicode bidirectional controls (which can
  reorder the text of a table cell, CVE-2021-42574 "Trojan Source") are shown as visible escapes.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

REPLACEMENT = "\ufffd"
MIN_SECRET_LENGTH = 8   # shorter values are not redacted: "abc" would cut every word that holds it
CHARS_PER_TOKEN_LIMIT = 32  # no tokenizer averages near this; real text averages about 4 (English)
MIN_REPLY_CHARS = 2000

_SURROGATE = re.compile("[\ud800-\udfff]")
# Bidirectional formatting characters (Unicode 15, UAX #9), zero-width spaces and the byte-order
# mark, which make displayed text differ from stored text; plus NUL and the C0/C1 controls except
# tab and newline. The zero-width joiners (U+200C, U+200D) stay: scripts and emoji need them.
_INVISIBLE = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f"
                        "\u061c\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")


def replace_unencodable(text: str) -> tuple[str, int]:
    """``text`` with every lone surrogate replaced by U+FFFD, and how many were replaced.

    A correctly paired surrogate cannot occur in a Python str (it is one code point), so every
    surrogate code point found is lone and unencodable.
    """
    if not text:
        return text, 0
    out, n = _SURROGATE.subn(REPLACEMENT, text)
    return out, n


def secrets_from_env(names: Iterable[str | None]) -> dict[str, str]:
    """``{variable: value}`` of the named environment variables that are set and long enough to redact."""
    out: dict[str, str] = {}
    for name in names:
        if name:
            value = os.environ.get(name, "")
            if len(value) >= MIN_SECRET_LENGTH:
                out[name] = value
    return out


def redact_secrets(text: str | None, secrets: dict[str, str]) -> tuple[str | None, list[str]]:
    """``text`` with every exact occurrence of a secret value replaced by ``[REDACTED:<variable>]``,
    and the variables whose value was found (the values themselves are never returned)."""
    if not text or not secrets:
        return text, []
    found = []
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):  # longest first
        if value in text:
            text = text.replace(value, f"[REDACTED:{name}]")
            found.append(name)
    return text, found


def reply_char_limit(max_tokens: int) -> int:
    """The longest reply accepted as is for ``max_tokens``: ``max(2000, 32 * max_tokens)`` characters."""
    return max(MIN_REPLY_CHARS, CHARS_PER_TOKEN_LIMIT * int(max_tokens))


def truncate_reply(text: str | None, max_tokens: int) -> tuple[str | None, bool]:
    """``text`` cut to :func:`reply_char_limit` characters, and whether it was cut."""
    limit = reply_char_limit(max_tokens)
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _cell(v: str) -> str:
    # a lone CR is a line end to CSV readers, but pandas quotes only cells holding "\n": make it one
    v = visible_controls(v.replace("\r\n", "\n").replace("\r", "\n"))
    return "'" + v if v.startswith(_FORMULA_START) and not _numeric(v) else v


def csv_safe(df: Any) -> Any:
    """A copy of the DataFrame ``df`` fit for a spreadsheet: a text cell that starts like a formula
    (``= + - @``, tab) gets a leading quote (OWASP, CSV injection), unless it is a number; invisible
    or bidi characters are shown (:func:`visible_controls`); line ends become ``\n`` (a lone CR
    would split the row for a CSV reader, since writers quote only cells that hold ``\n``)."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_object_dtype(out[c]) or pd.api.types.is_string_dtype(out[c]):
            out[c] = [_cell(v) if isinstance(v, str) else v for v in out[c]]
    return out


def visible_controls(text: str) -> str:
    """``text`` for display: NUL, other control characters and bidi/invisible formatting characters
    become visible escapes (``<U+202E>``), so a cell shows what is stored and cannot reorder itself."""
    if not text:
        return text
    return _INVISIBLE.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


__all__ = ["csv_safe", "redact_secrets", "replace_unencodable", "reply_char_limit", "secrets_from_env", "truncate_reply",
           "visible_controls"]
