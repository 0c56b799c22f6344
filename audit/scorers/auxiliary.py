"""Auxiliary measures: reply length, refusals and sentiment.

- ``length``    -> ``words``: number of words in the reply (runs of letters/digits, apostrophes inside
  a word kept: "don't" is one word).
- ``refusal``   -> ``refusal``: 1 when the reply declines to engage, else 0. The patterns, their
  sources and the examples they must (not) match live in ``templates/refusal/patterns.yaml``; the id of
  the pattern that matched is the score's ``detail``. Replies withheld by the endpoint (status
  ``content_filter``) are counted as refusals by :func:`audit.scoring.score_run`. Refusals are a
  measure of their own so that they stay visible rather than being averaged into empathy.
- ``sentiment`` -> ``compound``: VADER's compound polarity of the reply, -1..1 (Hutto & Gilbert,
  ICWSM 2014), from the ``vaderSentiment`` package.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..resources import sha256_file, templates_dir
from .base import check_pairs
from .measures import Measure, measure_dicts, names

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)


def count_words(text: str) -> int:
    """Words in ``text``: runs of letters or digits; an apostrophe inside a word keeps it whole."""
    return len(_WORD.findall(text or ""))


class LengthScorer:
    """Reply length in words."""

    name = "length"
    declared_measures = (Measure("words", "reply length (words)", kind="continuous", higher_is="longer", short="words",
                                 decimals=0),)
    measures = names(declared_measures)
    reads_post = False  # depends on the reply alone: invariant to the post by construction
    parallel_safe = True  # a pure function of the pair: may score in worker processes

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": "1", "definition": "runs of letters/digits (apostrophes inside kept)",
                "measures": measure_dicts(self.declared_measures)}

    def score(self, posts: list[str], replies: list[str]) -> pd.DataFrame:
        check_pairs(posts, replies, self.name)
        return pd.DataFrame({"words": [float(count_words(r)) for r in replies]})


# --------------------------------------------------------------------------- refusals


def refusal_patterns_path() -> Path:
    return templates_dir() / "refusal" / "patterns.yaml"


def load_refusal_patterns(path: str | Path | None = None) -> dict[str, Any]:
    """Read and validate a refusal pattern file; returns ``{version, patterns: [{id, regex, source,
    examples, compiled}], counter_examples}``. Bad files raise one AuditError naming the pattern."""
    from ..spec import read_yaml

    p = Path(path) if path else refusal_patterns_path()
    data, _ = read_yaml(p, "refusal pattern")
    if not isinstance(data, dict) or not isinstance(data.get("patterns"), list) or not data["patterns"]:
        raise AuditError("a refusal pattern file needs a non-empty list 'patterns'", where=str(p),
                         fix="follow the layout of templates/refusal/patterns.yaml")
    seen: set[str] = set()
    out = []
    for i, pat in enumerate(data["patterns"]):
        where = f"{p}, patterns[{i}]"
        if not isinstance(pat, dict) or not all(isinstance(pat.get(k), str) and pat.get(k) for k in ("id", "regex", "source")):
            raise AuditError("each pattern needs text fields 'id', 'regex' and 'source'", where=where,
                             fix="add the missing field (every pattern must say where it comes from)")
        if pat["id"] in seen:
            raise AuditError(f"pattern id {pat['id']!r} is used twice", where=where, fix="give each pattern its own id")
        seen.add(pat["id"])
        try:
            compiled = re.compile(pat["regex"], re.IGNORECASE)
        except re.error as exc:
            raise AuditError(f"pattern {pat['id']!r} is not a valid regular expression: {exc}", where=where,
                             fix="fix the regex (Python syntax; backslashes doubled inside double quotes)") from None
        out.append({**pat, "examples": list(pat.get("examples") or []), "compiled": compiled})
    return {"version": data.get("version", 1), "patterns": out,
            "counter_examples": list(data.get("counter_examples") or []), "path": p}


_SPACE = re.compile(r"\s+")


def _normalise(text: str) -> str:
    """Curly apostrophes to ', any run of whitespace to one space (patterns are written that way)."""
    return _SPACE.sub(" ", (text or "").replace("’", "'").replace("‘", "'"))


class RefusalScorer:
    """Pattern-based refusal detection (1 = refusal, 0 = not); ``detail`` names the matching pattern."""

    name = "refusal"
    # a rate: its gap is a difference in proportions (percentage points)
    declared_measures = (Measure("refusal", "refusal rate", kind="binary", range=(0, 1), higher_is="more refusing",
                                 short="refusal"),)
    measures = names(declared_measures)
    reads_post = False  # depends on the reply alone: invariant to the post by construction
    parallel_safe = True  # a pure function of the pair: may score in worker processes

    def __init__(self, patterns_path: str | Path | None = None):
        self.patterns_path = Path(patterns_path) if patterns_path else refusal_patterns_path()

    @cached_property
    def _patterns(self) -> dict[str, Any]:
        return load_refusal_patterns(self.patterns_path)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": str(self._patterns["version"]),
            "patterns_sha256": sha256_file(self.patterns_path),
            "patterns": [p["id"] for p in self._patterns["patterns"]],
            "definition": "declines to engage (see templates/refusal/patterns.yaml); content_filter counts as refusal",
            "measures": measure_dicts(self.declared_measures),
        }

    def match(self, reply: str) -> str | None:
        """The id of the first pattern matching ``reply``, or None."""
        text = _normalise(reply)
        for p in self._patterns["patterns"]:
            if p["compiled"].search(text):
                return p["id"]
        return None

    def score(self, posts: list[str], replies: list[str]) -> pd.DataFrame:
        check_pairs(posts, replies, self.name)
        hits = [self.match(r) for r in replies]
        return pd.DataFrame({"refusal": [1.0 if h else 0.0 for h in hits], "detail": hits})


# --------------------------------------------------------------------------- sentiment


VADER_CHUNK = 5000  # characters; see SentimentScorer.compound


def _chunks(text: str, size: int) -> list[str]:
    """``text`` cut into consecutive pieces of at most ``size`` characters, at sentence ends where
    there are any (a piece without one is cut at ``size``)."""
    out, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(m, start, end) for m in (". ", "! ", "? ", "\n"))
            if cut > start:
                end = cut + 1
        out.append(text[start:end])
        start = end
    return out


class SentimentScorer:
    """VADER compound sentiment of the reply (-1 most negative .. 1 most positive)."""

    name = "sentiment"
    # centred near 0: a gap relative to the control mean would mislead, so it is stated in points
    declared_measures = (Measure("compound", "sentiment (VADER compound)", kind="continuous", range=(-1, 1),
                                 higher_is="more positive", gap_unit="points"),)
    measures = names(declared_measures)
    reads_post = False  # depends on the reply alone: invariant to the post by construction
    parallel_safe = True  # a pure function of the pair: may score in worker processes

    @cached_property
    def _analyzer(self) -> Any:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        return SentimentIntensityAnalyzer()

    def compound(self, reply: str) -> float:
        """VADER's compound score of ``reply``; NaN for an empty reply.

        VADER's own cost grows faster than linearly with the length of one text (it looks words up by
        list position), so a reply longer than :data:`VADER_CHUNK` characters is scored in chunks of
        whole sentences of at most that length, and its compound is the length-weighted mean of the
        chunks' compounds. Every reply a model returns for a usual ``max_tokens`` is shorter than
        that and is scored whole, exactly as VADER scores it.
        """
        if not reply.strip():
            return np.nan
        if len(reply) <= VADER_CHUNK:
            return float(self._analyzer.polarity_scores(reply)["compound"])
        chunks = [c for c in _chunks(reply, VADER_CHUNK) if c.strip()]
        weights = np.array([len(c) for c in chunks], dtype=float)
        values = np.array([self._analyzer.polarity_scores(c)["compound"] for c in chunks], dtype=float)
        return float(np.dot(weights, values) / weights.sum())

    def info(self) -> dict[str, Any]:
        try:
            from importlib.metadata import version

            v = version("vaderSentiment")
        except Exception:  # pragma: no cover
            v = "unknown"
        return {"name": self.name, "version": f"vaderSentiment {v}", "definition": "VADER compound score of the reply",
                "measures": measure_dicts(self.declared_measures)}

    def score(self, posts: list[str], replies: list[str]) -> pd.DataFrame:
        check_pairs(posts, replies, self.name)
        return pd.DataFrame({"compound": [self.compound(r) for r in replies]})
