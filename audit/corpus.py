"""Support posts: the built-in corpus and users' own post files.

``load_posts(spec)`` returns one row per post with columns ``post_id, text, topic, risk`` (risk in
``low``/``moderate``/``high``; ``unrated`` for a user file without a risk column). The built-in
corpus (``audit/data/corpus/posts.yaml``) is original writing for this project: help-seeking posts
in peer-support forum style, written to be demographically neutral (see ``REVIEW.md`` beside it).

User files: CSV (``.csv``/``.tsv``), JSON Lines (``.jsonl``/``.ndjson``) or parquet, with an
optional column mapping ``posts.columns: {text: body, id: post_id, topic: ..., risk: ...}``.
Nothing is dropped silently: every row that is not kept is counted with its reason in the
:class:`LoadReport` that :func:`read_posts` returns beside the frame, and the ``variants`` command
prints it. Bad input (missing columns, empty texts, duplicate ids, bad risk
levels, undecodable files) raises one :class:`~audit.errors.AuditError` naming the file and rows.

Post texts are data: they are read and passed on, never evaluated.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import AuditError
from .untrusted import replace_unencodable
from .resources import DATA_DIR, sha256_text
from .spec import RiskLevel, read_yaml, spec_where, validation_error

CORPUS_DIR = DATA_DIR / "corpus"
BUILTIN_POSTS = CORPUS_DIR / "posts.yaml"
NEUTRALITY_LEXICON = CORPUS_DIR / "neutrality_lexicon.yaml"
POST_COLUMNS = ["post_id", "text", "topic", "risk"]
RISK_LEVELS = ("low", "moderate", "high")
UNRATED = "unrated"
UNSPECIFIED_TOPIC = "unspecified"
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_MAX_LISTED = 5


# --------------------------------------------------------------------------- report


@dataclass
class LoadReport:
    """What happened to every row of a post source."""

    source: str
    rows_read: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    notes: list[str] = field(default_factory=list)          # facts a user should see (not drops)

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)

    def lines(self) -> list[str]:
        out = [f"posts: {self.kept} kept of {self.rows_read} read from {self.source}"]
        for reason, n in self.dropped.items():
            out.append(f"  dropped {n}: {reason}")
        out.extend(f"  note: {n}" for n in self.notes)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows_read": self.rows_read, "kept": self.kept,
                "dropped": dict(self.dropped), "notes": list(self.notes)}


# --------------------------------------------------------------------------- built-in corpus


class CorpusPost(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(..., pattern=r"^[a-z][a-z0-9_]*-[0-9]{2,3}$")
    topic: str = Field(..., pattern=r"^[a-z][a-z_]*$")
    risk: RiskLevel
    text: str = Field(..., min_length=1)

    @field_validator("text")
    @classmethod
    def _words(cls, v: str) -> str:
        n = len(v.split())
        if not 60 <= n <= 250:
            raise ValueError(f"a built-in post has 60-250 words; this one has {n}")
        return v


class CorpusFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    corpus: dict[str, Any] = Field(default_factory=dict)
    posts: list[CorpusPost] = Field(..., min_length=1)


@lru_cache(maxsize=1)
def _builtin_frame() -> pd.DataFrame:
    data, text = read_yaml(BUILTIN_POSTS, "corpus")
    try:
        cf = CorpusFile.model_validate(data)
    except ValidationError as err:
        raise validation_error(BUILTIN_POSTS, text, err, what_file="corpus format") from None
    ids = [p.id for p in cf.posts]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise AuditError(f"duplicate post ids {dup}", where=str(BUILTIN_POSTS), fix="give every post its own id")
    rows = [{"post_id": p.id, "text": _normalise_text(p.text), "topic": p.topic, "risk": p.risk} for p in cf.posts]
    return pd.DataFrame(rows, columns=POST_COLUMNS)


def builtin_posts() -> pd.DataFrame:
    """The built-in corpus: ``post_id, text, topic, risk`` (a fresh copy)."""
    return _builtin_frame().copy()


def corpus_info() -> dict[str, Any]:
    """The corpus file's metadata block (version, authorship, review) and its sha256."""
    data, text = read_yaml(BUILTIN_POSTS, "corpus")
    info = dict(data.get("corpus", {})) if isinstance(data, dict) else {}
    info["sha256"] = sha256_text(text)
    return info


# --------------------------------------------------------------------------- user files


def _normalise_text(t: str) -> str:
    """Unify line endings and trim surrounding whitespace; the words are left as written."""
    return t.replace("\r\n", "\n").replace("\r", "\n").strip()


def _read_utf8(path: Path) -> str:
    """The file's text (UTF-8, a leading BOM allowed); an undecodable byte is an error naming its line."""
    try:
        raw = path.read_bytes()
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise AuditError(
            f"the file is not valid UTF-8 (byte {exc.start}, line {line})", where=str(path),
            fix="re-save it as UTF-8 (e.g. in a spreadsheet: 'CSV UTF-8')",
        ) from None
    except OSError as exc:
        raise AuditError(f"cannot read the post file: {exc.strerror}", where=str(path)) from None


def _clean_strings(obj: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A JSON object with every lone surrogate in its keys and string values replaced by U+FFFD
    (``json.loads`` accepts ``"\\udc80"``; nothing downstream can encode it), and how many."""
    out, n = {}, 0
    for k, v in obj.items():
        k, a = replace_unencodable(k)
        if isinstance(v, str):
            v, b = replace_unencodable(v)
            a += b
        out[k] = v
        n += a
    return out, n


def _read_table(path: Path) -> tuple[pd.DataFrame, int, int]:
    """Read a post file into a DataFrame of strings/objects. Returns (frame, first data line number,
    unencodable characters replaced)."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise AuditError(
            f"unsupported post file type '{path.suffix or '(none)'}'", where=str(path),
            fix=f"use one of {sorted(SUFFIXES)} (or posts.source: builtin)",
        )
    if not path.is_file():
        raise AuditError("post file not found", where=str(path),
                         fix="check posts.source in the spec (relative paths are relative to the spec file)")
    if kind == "csv":
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        text = _read_utf8(path)
        import io

        try:
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise AuditError("the post file is empty", where=str(path), fix="add a header row and posts") from None
        except pd.errors.ParserError as exc:
            raise AuditError(f"cannot parse the CSV: {exc}", where=str(path),
                             fix="check quoting: texts with commas or line breaks must be in double quotes") from None
        return df, 2, 0
    if kind == "jsonl":
        rows: list[dict[str, Any]] = []
        text = _read_utf8(path)
        blank = replaced = 0
        for n, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                blank += 1
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AuditError(f"invalid JSON: {exc.msg}", where=f"{path}, line {n}, column {exc.colno}",
                                 fix="each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise AuditError(f"expected a JSON object, got {type(obj).__name__}", where=f"{path}, line {n}",
                                 fix="each line must be one JSON object such as {\"id\": \"p1\", \"text\": \"...\"}")
            obj, k = _clean_strings(obj)
            replaced += k
            obj["__line__"] = n
            rows.append(obj)
        if not rows:
            raise AuditError("the post file has no JSON objects", where=str(path), fix="add one post per line")
        return pd.DataFrame(rows), 1, replaced
    try:
        df = pd.read_parquet(path)  # pyarrow, a dependency, is pandas' parquet engine
    except (OSError, ValueError) as exc:
        raise AuditError(f"cannot read the parquet file: {exc}", where=str(path),
                         fix="check that it is a parquet file (not renamed CSV) and not truncated") from None
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise AuditError(f"cannot read the parquet file: {type(exc).__name__}: {exc}", where=str(path),
                         fix="check that it is a parquet file and not truncated") from None
    return df, 1, 0


def _rows_label(rows: Iterable[int], first_line: int, jsonl_lines: pd.Series | None = None) -> str:
    rows = list(rows)
    if jsonl_lines is not None:
        labels = [f"line {int(jsonl_lines.iloc[r])}" for r in rows[:_MAX_LISTED]]
    elif first_line == 2:
        labels = [f"line {r + first_line}" for r in rows[:_MAX_LISTED]]
    else:
        labels = [f"row {r + 1}" for r in rows[:_MAX_LISTED]]
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return ", ".join(labels) + more


def _is_blank(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and v != v:
        return True
    return isinstance(v, str) and not v.strip()


def read_post_file(
    path: str | Path, columns: dict[str, str] | None = None, *, skip_empty: bool = False
) -> tuple[pd.DataFrame, LoadReport]:
    """Read a user's post file into ``post_id, text, topic, risk`` and a :class:`LoadReport`.

    ``columns`` maps canonical fields (``id``, ``text``, ``topic``, ``risk``) to the file's column
    names; unmapped fields use their canonical name when present. ``text`` is required. Without an
    id column, ids are derived from the text (``p-`` + 12 hex digits of its SHA-256), which is stable.
    Rows with an empty text are an error unless ``skip_empty`` (then they are counted as dropped).
    """
    p = Path(path)
    columns = dict(columns or {})
    df, first_line, replaced = _read_table(p)
    report = LoadReport(source=str(p), rows_read=len(df))
    if replaced:
        report.notes.append(f"{replaced} unencodable character(s) (lone UTF-16 surrogates) replaced by U+FFFD")
    lines = df.pop("__line__") if "__line__" in df.columns else None
    available = [c for c in df.columns]

    def col(field_: str, required: bool) -> str | None:
        name = columns.get(field_, field_)
        if name in df.columns:
            return name
        if field_ in columns or required:
            raise AuditError(
                f"column '{name}' (for {field_}) not found", where=str(p),
                fix=f"the file has columns {available[:20]}; set posts.columns.{field_} to one of them",
            )
        return None

    text_col = col("text", True)
    id_col, topic_col, risk_col = col("id", False), col("topic", False), col("risk", False)
    if df.empty:
        raise AuditError("the post file has a header but no posts", where=str(p), fix="add posts")

    texts = df[text_col]
    blank = [i for i, v in enumerate(texts) if _is_blank(v)]
    if blank:
        if not skip_empty:
            raise AuditError(
                f"{len(blank)} post(s) have an empty text ({_rows_label(blank, first_line, lines)})",
                where=f"{p}, column '{text_col}'",
                fix="fill or remove those rows, or set posts.skip_empty: true to drop them (they are counted)",
            )
        report.drop(f"empty text in column '{text_col}' ({_rows_label(blank, first_line, lines)})", len(blank))
    keep = [i for i in range(len(df)) if i not in set(blank)]
    out = pd.DataFrame({"text": [_normalise_text(str(texts.iloc[i])) for i in keep]})

    if id_col is not None:
        ids = []
        for i in keep:
            v = df[id_col].iloc[i]
            if _is_blank(v):
                raise AuditError(f"empty id ({_rows_label([i], first_line, lines)})", where=f"{p}, column '{id_col}'",
                                 fix="give every post an id, or drop the id mapping to derive ids from the texts")
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            ids.append(str(v).strip())
        out["post_id"] = ids
    else:
        out["post_id"] = ["p-" + sha256_text(t)[:12] for t in out["text"]]
        report.notes.append(f"no id column: ids derived from the post texts (p-<sha256[:12]>)")
    dup_mask = out["post_id"].duplicated(keep=False)
    if dup_mask.any():
        dups = out.loc[dup_mask, "post_id"]
        first = dups.iloc[0]
        rows = [keep[i] for i in out.index[out["post_id"] == first]]
        what = (f"duplicate post id '{first}' ({_rows_label(rows, first_line, lines)})"
                if id_col is not None else f"the same text appears more than once ({_rows_label(rows, first_line, lines)})")
        raise AuditError(
            what + f"; {dups.nunique()} id(s) repeated in all", where=f"{p}" + (f", column '{id_col}'" if id_col else ""),
            fix="give every post its own id (or remove repeated posts)",
        )
    if topic_col is not None:
        out["topic"] = [UNSPECIFIED_TOPIC if _is_blank(df[topic_col].iloc[i]) else str(df[topic_col].iloc[i]).strip()
                        for i in keep]
    else:
        out["topic"] = UNSPECIFIED_TOPIC
    if risk_col is not None:
        risks = []
        bad = []
        for i in keep:
            v = df[risk_col].iloc[i]
            r = UNRATED if _is_blank(v) else str(v).strip().lower()
            if r not in RISK_LEVELS + (UNRATED,):
                bad.append(i)
            risks.append(r)
        if bad:
            raise AuditError(
                f"risk level must be one of {list(RISK_LEVELS)} (or empty); got "
                f"'{df[risk_col].iloc[bad[0]]}' ({_rows_label(bad, first_line, lines)})",
                where=f"{p}, column '{risk_col}'", fix="correct those values",
            )
        out["risk"] = risks
        if UNRATED in risks:
            report.notes.append(f"{risks.count(UNRATED)} post(s) have no risk level: marked '{UNRATED}'")
    else:
        out["risk"] = UNRATED
        report.notes.append(f"no risk column: every post marked '{UNRATED}' (map one with posts.columns.risk)")
    dtext = out["text"].duplicated().sum()
    if dtext:
        report.notes.append(f"{int(dtext)} post(s) repeat the text of another post under a different id")
    report.kept = len(out)
    return out[POST_COLUMNS].reset_index(drop=True), report


# --------------------------------------------------------------------------- selection


def select_posts(df: pd.DataFrame, posts_spec: Any, report: LoadReport, where: Any = None) -> pd.DataFrame:
    """Apply the spec's filters (ids, topics, risk, per_topic, limit), counting what each removes."""
    where = where or (lambda key: f"posts.{key}")
    out = df
    if posts_spec.ids is not None:
        unknown = [i for i in posts_spec.ids if i not in set(df["post_id"])]
        if unknown:
            raise AuditError(f"unknown post id(s) {unknown[:_MAX_LISTED]}", where=where("ids"),
                             fix="use ids from the post source (empathy-audit variants --list-posts shows them)")
        n = len(out)
        order = {pid: k for k, pid in enumerate(posts_spec.ids)}
        out = out[out["post_id"].isin(order)]
        report.drop("not in posts.ids", n - len(out))
    if posts_spec.topics is not None:
        known = set(df["topic"])
        unknown = [t for t in posts_spec.topics if t not in known]
        if unknown:
            raise AuditError(f"unknown topic(s) {unknown}", where=where("topics"),
                             fix=f"use topics of the post source: {sorted(known)}")
        n = len(out)
        out = out[out["topic"].isin(posts_spec.topics)]
        report.drop("topic not in posts.topics", n - len(out))
    if posts_spec.risk is not None:
        n = len(out)
        out = out[out["risk"].isin(posts_spec.risk)]
        report.drop("risk level not in posts.risk", n - len(out))
    if posts_spec.per_topic is not None:
        n = len(out)
        out = out.groupby("topic", sort=False, group_keys=False).head(posts_spec.per_topic)
        report.drop(f"beyond posts.per_topic ({posts_spec.per_topic})", n - len(out))
    if posts_spec.limit is not None:
        n = len(out)
        out = out.head(posts_spec.limit)
        report.drop(f"beyond posts.limit ({posts_spec.limit})", n - len(out))
    if out.empty:
        raise AuditError("no posts left after the filters", where=where("posts"),
                         fix="loosen posts.ids / topics / risk / limit")
    report.kept = len(out)
    return out.reset_index(drop=True)


@dataclass
class PostSet:
    """The posts of an audit (``frame``: ``post_id, text, topic, risk``) and what happened to every row
    of their source (``report``)."""

    frame: pd.DataFrame
    report: LoadReport


def load_posts(spec: Any) -> pd.DataFrame:
    """The posts an audit uses: ``post_id, text, topic, risk`` (:func:`read_posts` also says what was dropped)."""
    return read_posts(spec).frame


def read_posts(spec: Any) -> PostSet:
    """The posts an audit uses, with the :class:`LoadReport` of their source."""
    ps = spec.posts
    if ps.source == "builtin":
        if ps.columns:
            raise AuditError("posts.columns applies to a post file, not to the built-in corpus",
                             where=spec_where(spec, ("posts", "columns")), fix="remove it or set posts.source to your file")
        df = builtin_posts()
        report = LoadReport(source="builtin corpus", rows_read=len(df), kept=len(df))
    else:
        df, report = read_post_file(spec.resolve(ps.source), ps.columns, skip_empty=getattr(ps, "skip_empty", False))
    df = select_posts(df, ps, report, where=lambda key: spec_where(spec, ("posts", key) if key != "posts" else ("posts",)))
    # The built-in corpus is linted by the test suite; user posts are linted here (advisory).
    flagged = [] if ps.source == "builtin" else [
        pid for pid, t in zip(df["post_id"], df["text"]) if neutrality_findings(t)]
    if flagged:
        report.notes.append(
            f"{len(flagged)} post(s) contain words that may signal a demographic group (e.g. {flagged[0]}); "
            "their control is not neutral: check with audit.corpus.neutrality_findings()"
        )
    return PostSet(df, report)


# --------------------------------------------------------------------------- neutrality lint


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, list[re.Pattern[str]]]:
    data, _ = read_yaml(NEUTRALITY_LEXICON, "neutrality lexicon")
    pats: dict[str, list[re.Pattern[str]]] = {}
    for cat, body in (data.get("categories") or {}).items():
        terms = body.get("terms", []) if isinstance(body, dict) else []
        pats[cat] = [re.compile(r"(?<![\w'])" + re.escape(t).replace(r"\ ", r"\s+") + r"(?![\w])", re.IGNORECASE)
                     for t in terms]
        for rx in (body.get("patterns", []) if isinstance(body, dict) else []):
            pats[cat].append(re.compile(rx, re.IGNORECASE))
    return pats


def neutrality_findings(text: str) -> list[tuple[str, str]]:
    """Words in ``text`` that may signal a demographic group: ``[(category, matched text), ...]``.

    Uses the reviewed word lists in ``audit/data/corpus/neutrality_lexicon.yaml`` (names, gendered
    words, partner genders, race and culture markers, ages). A finding is a prompt to review the
    text, not proof of a cue.
    """
    out = []
    for cat, pats in _lexicon().items():
        for pat in pats:
            for m in pat.finditer(text):
                out.append((cat, m.group(0)))
    return out


__all__ = [
    "LoadReport", "builtin_posts", "corpus_info", "load_posts", "neutrality_findings", "read_post_file",
    "select_posts", "BUILTIN_POSTS", "NEUTRALITY_LEXICON", "RISK_LEVELS",
]
