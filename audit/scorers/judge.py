"""``llm-judge``: EPITOME rubric scoring by any OpenAI-compatible judge model.

The judge model (``scoring.judge`` in the spec; default: the embedded model at temperature 0) gets the
rubric in ``templates/judge/epitome.yaml`` and one (seeker post, response) pair per request, and must
answer with one JSON object::

    {"ER": {"rationale": "...", "level": 2}, "IP": {"rationale": "...", "level": 1},
     "EX": {"rationale": "...", "level": 0}}

Calls go through :func:`audit.engine.complete` with purpose ``'judge'`` and ``subject_key`` = the
judged reply's request key, so they are stored in the run store, cached and resumable like replies.
Where the endpoint supports it, the request asks for JSON output (``response_format``; llama.cpp and
vLLM then constrain decoding to the schema).

Parsing is strict (:func:`parse_judge_answer`): the answer must be exactly that object, optionally
wrapped in a single Markdown code fence and nothing else. Prose around it, missing, extra or duplicate
keys, levels other than the integers 0, 1, 2, or a truncated answer make the answer *unparseable*: its
scores are NaN and the ``detail`` holds the reason and the raw answer. An answer is never guessed.

Measures: ``ER``, ``IP``, ``EX`` (levels 0/1/2) and ``empathy`` (their mean), as for ``epitome``, so
the two can be compared (:func:`audit.scorers.agreement.scorer_agreement`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..resources import sha256_file, templates_dir
from .base import check_pairs
from .epitome import EPITOME_MEASURES
from .measures import measure_dicts, names

MECHANISMS = ("ER", "IP", "EX")
LEVELS = (0, 1, 2)

#: JSON schema of the answer; sent as ``response_format`` where the endpoint supports it.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        m: {
            "type": "object",
            "properties": {"rationale": {"type": "string"}, "level": {"type": "integer", "enum": list(LEVELS)}},
            "required": ["rationale", "level"],
            "additionalProperties": False,
        }
        for m in MECHANISMS
    },
    "required": list(MECHANISMS),
    "additionalProperties": False,
}


# --------------------------------------------------------------------------- parsing


@dataclass
class JudgeVerdict:
    """A parsed judge answer: ``levels`` per mechanism, or ``error`` (and no levels) when unparseable."""

    levels: dict[str, int] | None
    rationales: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    raw: str | None = None

    @property
    def ok(self) -> bool:
        return self.levels is not None

    @property
    def empathy(self) -> float:
        return float(np.mean([self.levels[m] for m in MECHANISMS])) if self.levels else float("nan")


_FENCE = re.compile(r"\A```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?[ \t]*```\Z", re.S)


class _Unparseable(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise _Unparseable(f"duplicate key(s) {dup}")
    return dict(pairs)


def _bad_constant(name: str) -> Any:
    raise _Unparseable(f"non-standard JSON constant {name}")


def _unclosed(body: str) -> bool:
    """True when ``body`` ends inside a string or with brackets still open (a cut-off answer)."""
    depth, in_str, esc = 0, False, False
    for ch in body:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return in_str or depth > 0


def load_json_object(text: str | None, finish_reason: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Strictly read one JSON object from a model's answer: ``(object, None)`` or ``(None, reason)``.

    Accepted: the whole (stripped) answer is one JSON object, or one Markdown code fence holding it.
    Rejected with a reason: empty answers, text before or after the object, unclosed fences,
    duplicate keys, NaN/Infinity, invalid JSON, truncation. Never raises, never guesses."""
    if text is None or not text.strip():
        return None, "empty answer"
    body = text.strip()
    if body.startswith("```"):
        m = _FENCE.match(body)
        if not m:
            return None, "code fence not closed, or text outside the fence"
        body = m.group(1).strip()
    if not body.startswith("{"):
        return None, "answer does not start with a JSON object (text before it?)"
    try:
        obj = json.loads(body, object_pairs_hook=_no_duplicates, parse_constant=_bad_constant)
    except _Unparseable as exc:
        return None, str(exc)
    except json.JSONDecodeError as exc:
        if finish_reason == "length" or _unclosed(body):
            return None, "truncated JSON" + (" (the model hit max_tokens)" if finish_reason == "length" else "")
        if exc.msg == "Extra data":
            return None, "text after the JSON object"
        return None, f"invalid JSON: {exc.msg} at character {exc.pos}"
    return obj, None


def parse_judge_answer(text: str | None, finish_reason: str | None = None) -> JudgeVerdict:
    """Parse a judge answer strictly (see the module docstring). Never raises; never guesses."""
    obj, why = load_json_object(text, finish_reason)
    if obj is None:
        return JudgeVerdict(None, error=why, raw=text)
    if not isinstance(obj, dict):
        return JudgeVerdict(None, error="answer is not a JSON object", raw=text)
    keys = set(obj)
    if keys != set(MECHANISMS):
        missing = [m for m in MECHANISMS if m not in keys]
        extra = sorted(keys - set(MECHANISMS))
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        return JudgeVerdict(None, error="wrong keys: " + ", ".join(parts), raw=text)
    levels: dict[str, int] = {}
    rationales: dict[str, str] = {}
    for m in MECHANISMS:
        v = obj[m]
        if not isinstance(v, dict):
            return JudgeVerdict(None, error=f"{m} is not an object with 'level' and 'rationale'", raw=text)
        extra = sorted(set(v) - {"level", "rationale"})
        if extra or "level" not in v:
            why = f"{m}: unexpected key(s) {extra}" if extra else f"{m}: missing 'level'"
            return JudgeVerdict(None, error=why, raw=text)
        lv = v["level"]
        if isinstance(lv, bool) or not isinstance(lv, int):
            return JudgeVerdict(None, error=f"{m}: level {lv!r} is not an integer 0, 1 or 2", raw=text)
        if lv not in LEVELS:
            return JudgeVerdict(None, error=f"{m}: level {lv} is out of range (0, 1 or 2)", raw=text)
        r = v.get("rationale", "")
        if not isinstance(r, str):
            return JudgeVerdict(None, error=f"{m}: rationale is not text", raw=text)
        levels[m] = lv
        rationales[m] = r
    return JudgeVerdict(levels, rationales, raw=text)


# --------------------------------------------------------------------------- rubric


@dataclass(frozen=True)
class Rubric:
    name: str
    version: str
    system: str
    user: str
    sha256: str
    path: Path

    def messages(self, post: str, reply: str) -> list[dict[str, str]]:
        user = self.user.replace("{{seeker_post}}", post).replace("{{response_post}}", reply)
        return [{"role": "system", "content": self.system.strip()}, {"role": "user", "content": user.strip()}]


def load_rubric(path: str | Path | None = None) -> Rubric:
    from ..spec import read_yaml

    p = Path(path) if path else templates_dir() / "judge" / "epitome.yaml"
    data, _ = read_yaml(p, "judge rubric")
    if not isinstance(data, dict):
        raise AuditError("a judge rubric must be a YAML mapping", where=str(p), fix="follow templates/judge/epitome.yaml")
    for k in ("name", "version", "system", "user"):
        if k not in data or not str(data[k]).strip():
            raise AuditError(f"judge rubric key '{k}' is missing or empty", where=str(p),
                             fix="follow templates/judge/epitome.yaml")
    for ph in ("{{seeker_post}}", "{{response_post}}"):
        if ph not in data["user"]:
            raise AuditError(f"the judge rubric's 'user' text lacks the placeholder {ph}", where=f"{p}, key 'user'",
                             fix=f"put {ph} where the text belongs")
    return Rubric(str(data["name"]), str(data["version"]), str(data["system"]), str(data["user"]),
                  sha256_file(p), p)


# --------------------------------------------------------------------------- model calls


def default_cache_dir() -> Path:
    """Where judge calls made outside a run (e.g. ``scorers validate``) are stored: the toolkit's cache
    directory (``$EMPATHY_AUDIT_CACHE``, default ``~/.cache/empathy-audit``)."""
    from ..backends.weights import cache_dir

    return cache_dir()


def with_response_format(model: Any, response_format: str, schema: dict[str, Any], name: str) -> Any:
    """The model spec with a JSON ``response_format`` added to its request body (unless 'none')."""
    if response_format == "none" or "response_format" in (model.extra_body or {}):
        return model
    if response_format == "json_object":
        rf: dict[str, Any] = {"type": "json_object"}
    else:
        rf = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    return model.model_copy(update={"extra_body": {**(model.extra_body or {}), "response_format": rf}})


def run_items(store: Any, model: Any, decoding: Any, items: list[dict[str, Any]], progress: bool = False,
              description: str | None = None) -> list[dict[str, Any] | None]:
    """Send ``items`` through :func:`audit.batch.complete_requests` (:func:`audit.engine.complete`, or the
    batch service of a model with ``execution: batch``) and return, per item, the stored reply
    (``{request_key, status, text, finish_reason, error}``) or None when it has none yet."""
    from ..batch import complete_requests

    if not items:
        return []
    summary = complete_requests(store, model, decoding, items, progress=progress, description=description)
    keys = summary.request_keys
    rows = store.replies_by_key(dict.fromkeys(keys))
    return [rows.get(k) for k in keys]


def pair_key(post: str, reply: str) -> str:
    """Subject key for a pair judged outside a run store (e.g. validation data)."""
    return "pair:" + hashlib.sha256((post + "\x00" + reply).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- the scorer


class JudgeScorer:
    """EPITOME levels from an LLM judge. ``judge`` is a :class:`audit.spec.JudgeSpec` (None: default)."""

    name = "llm-judge"
    declared_measures = EPITOME_MEASURES
    measures = names(EPITOME_MEASURES)
    uses_store = True
    batch_size = 256

    def __init__(self, judge: Any = None, rubric_path: str | Path | None = None, cache_dir: str | Path | None = None,
                 progress: bool = False):
        from ..spec import JudgeSpec

        self.judge = judge if judge is not None else JudgeSpec()
        self.rubric_path = rubric_path
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.progress = progress

    @cached_property
    def rubric(self) -> Rubric:
        return load_rubric(self.rubric_path)

    @property
    def model(self) -> Any:
        return with_response_format(self.judge.model, getattr(self.judge, "response_format", "json_schema"),
                                    ANSWER_SCHEMA, "epitome_levels")

    def info(self) -> dict[str, Any]:
        m = self.judge.model
        return {
            "name": self.name, "version": "1", "rubric": self.rubric.name, "rubric_version": self.rubric.version,
            "rubric_sha256": self.rubric.sha256,
            "model": m.model or "embedded-default", "model_label": m.label,
            "endpoint": m.base_url or (m.azure.endpoint if m.azure else "embedded"),
            "decoding": self.judge.decoding.model_dump(mode="json"),
            "response_format": getattr(self.judge, "response_format", "json_schema"),
            "measures": measure_dicts(self.declared_measures),
        }

    def items(self, posts: list[str], replies: list[str], keys: list[str]) -> list[dict[str, Any]]:
        return [{"purpose": "judge", "messages": self.rubric.messages(p, r), "subject_key": k}
                for p, r, k in zip(posts, replies, keys)]

    def score(self, posts: list[str], replies: list[str], *, store: Any = None, keys: list[str] | None = None) -> pd.DataFrame:
        """Judge each pair. With ``store``/``keys`` (from :func:`audit.scoring.score_run`) the calls are
        stored in that run store with subject_key = the judged reply's request key; otherwise in a
        cache store under :func:`default_cache_dir` keyed by the pair's content."""
        check_pairs(posts, replies, self.name)
        if keys is None:
            keys = [pair_key(p, r) for p, r in zip(posts, replies)]
        own = store is None
        if own:
            from ..store import RunStore

            store = RunStore((self.cache_dir or default_cache_dir()) / "judge")
        try:
            answers = run_items(store, self.model, self.judge.decoding, self.items(posts, replies, keys), self.progress,
                                "llm-judge")
        finally:
            if own:
                store.close()
        return verdict_frame(answers)


def verdict_frame(answers: list[dict[str, Any] | None]) -> pd.DataFrame:
    """Scores from stored judge replies: levels, empathy, details; ``pending`` where no final answer
    exists yet (no reply or a failed call: not stored, tried again next time)."""
    rows = []
    for a in answers:
        row: dict[str, Any] = {m: np.nan for m in (*MECHANISMS, "empathy")}
        row.update(detail=None, pending=False, judge_key=a["request_key"] if a else None)
        if a is None or a["status"] in (None, "failed"):
            row["pending"] = True
            row["detail"] = json.dumps({"judge_failed": (a or {}).get("error") or "no answer"})
        elif a["status"] == "content_filter":
            row["detail"] = json.dumps({"judge_content_filter": True, "judge_key": a["request_key"]})
        else:
            v = parse_judge_answer(a["text"], a.get("finish_reason"))
            if v.ok:
                row.update({m: float(v.levels[m]) for m in MECHANISMS})
                row["empathy"] = v.empathy
                for m in MECHANISMS:
                    row[f"detail_{m}"] = v.rationales.get(m) or None
            else:
                row["detail"] = json.dumps({"unparseable": v.error, "raw": v.raw, "judge_key": a["request_key"]},
                                           ensure_ascii=False)
        rows.append(row)
    df = pd.DataFrame(rows)
    for m in MECHANISMS:
        if f"detail_{m}" not in df.columns:
            df[f"detail_{m}"] = None
    return df
