"""Import replies that someone else generated (a paper's data release, a vendor's log export, another
tool's output) into a run store, so that ``score``, ``analyze``, ``report`` and ``export`` work on them
unchanged.

What an import means is written in a small YAML *import spec* (validated like the audit spec: unknown
keys are errors, and every error names the file, line and key), or given as flags of ``empathy-audit
import`` for a single long table::

    name: gabriel-replication          # run name
    match: rows                        # rows: file i's row k is post k; id: a post-id column
    control: control                   # the group label of the unmodified posts
    columns: {variant: post, reply: reply}
    axes: [race]                       # columns that are demographic attributes of a group
    files:
      - {path: control.tsv, header: false, columns: [post, reply], values: {race: control}}
      - {path: black.tsv,   header: false, columns: [post, reply], values: {race: Black}}
    scores:                            # optional: scores that came with the release
      published: {empathy: published_empathy}

:func:`load_import_spec` reads such a file; :func:`import_release` does the import and returns an
:class:`ImportSummary`. The run store it writes is a normal one:

- ``variants``: one row per distinct (post id, group, cue type, text); the control rows get group and
  cue type ``control`` and no attributes; the others ``attributes_json`` from the axis columns.
- ``requests`` (purpose ``reply``): ``endpoint_id`` ``import:<sha256 of the file>``, ``model_label`` from
  the model column (or ``imported``), the variant text as the one user message, ``params_json``
  ``{"import": <file name>}``, the sample index from its column (or the row's occurrence number among
  rows of the same variant, model and style). The request key includes the file's hash and row, so
  every row is one request and a re-import finds the same keys.
- ``replies``: status ``ok``, or ``failed`` for an empty or missing reply or a ``failed_values``
  placeholder (counted, never dropped).
  Text goes through :func:`audit.untrusted.replace_unencodable`.
- ``scores``: the release's own score columns as named scorers (e.g. ``published``), with a
  ``scorer_info`` that says where they came from; a measure named like a built-in scorer's (``ER``,
  ``IP``, ``EX``, ``empathy``) takes over its declaration, so the two can be compared side by side.
- ``specs``: an equivalent audit spec (demographics from the axes, models from the model column,
  ``analysis.reference``, ``analysis.reference_group`` and ``analysis.allow_missing`` from the import
  spec, ``scoring.inference_probe: false``), so that ``score`` and ``report`` read it as usual.
- ``meta``: the run's design (``design_requests``, :mod:`audit.design`) and the import's provenance
  (key ``import``: each file's path, SHA-256, size and rows, the mapping, the counts).

Matching variants to their original posts (``match``):

- ``id``: by the ``post_id`` column. A variant row whose post has a control row but whose text is not
  close to the control's text is *unmatched*.
- ``rows``: by row position: row *k* of every file is post *k* (releases with one file per condition
  and no id column). The files must have equal row counts; where a control is given, every variant
  must be close to the control row at the same position, else the row is unmatched.

"Close" (:func:`texts_match`): after folding case and whitespace, the variant contains the original,
or their :class:`difflib.SequenceMatcher` ratio is at least ``min_similarity`` (0.6 by default; a cue
adds a few words to a post, a misaligned row is another post). Unmatched rows are not imported (they
cannot be attributed to a post) and are counted per file. When their share exceeds ``max_unmatched``
(5% by default) or the row counts differ, the import is refused as implausible unless ``force``.

Posts and samples (``match: rows``): row *k* is post *k*, unless ``rows_per_post: K`` (blocks of K
rows are the K samples of one post), a ``sample`` column or ``repeated_posts: samples`` (runs of rows
with one post text are one post) say otherwise. Identical post texts within one condition that are
not declared so (or as ``repeated_posts: posts``) are an error: samples counted as posts overstate the
effective sample size.

Content checks (:mod:`audit.importer_checks`), before anything is written: one post id, one text;
two conditions with identical post texts or replies (per-column content hashes), or the same file
twice, are an error naming both (a warning with ``force``); so is a condition whose posts lack its
declared cue (``cues``, ``files[i].cue``). Warnings (in the summary and the report): a short reply text
recurring across many rows and posts (a placeholder to declare in ``failed_values``), and a file whose
replies are no more similar to their own posts than to the others (shuffled rows).

Files are read in chunks (:mod:`audit.importer_read`), twice (check, then store), so memory does not
grow with the replies' size.

Re-importing the same files with the same mapping into the same run directory changes nothing; a
different import into a run directory that holds one is refused.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError, field_validator, model_validator

from .errors import AuditError
from .importer_checks import (identical_conditions, missing_cues, one_id_one_text, recurring_replies, relevance,
                              repeated_texts, row_blocks, text_hash)
from .importer_read import FORMATS, file_format, iter_release_file  # noqa: F401 - FORMATS re-exported
from .resources import sha256_file
from .spec import CUE_TYPES, StrictModel, read_yaml, spec_from_dict, spec_where, validation_error
from .store import STORE_FILENAME, RunStore, canonical_json, request_key
from .untrusted import replace_unencodable

__all__ = ["ImportSpec", "ImportFile", "ImportColumns", "ImportSummary", "load_import_spec", "import_spec_from_dict",
           "import_release", "texts_match", "read_release_file"]

DEFAULT_SCORERS = ["epitome", "length", "refusal", "sentiment"]
_LABEL_OK = re.compile(r"[^A-Za-z0-9_.:-]+")


# --------------------------------------------------------------------------- the import spec


class ImportFile(StrictModel):
    """One file of a release."""

    path: str = Field(..., description="The file (relative to the import spec).")
    format: Literal["csv", "tsv", "jsonl", "parquet"] | None = Field(
        None, description="csv, tsv, jsonl or parquet; default from the file's suffix (.txt is tsv).")
    header: bool = Field(True, description="csv/tsv: the first row names the columns; false: name them in columns.")
    columns: list[str] | None = Field(
        None, min_length=1, description="Names of the columns of a headerless csv/tsv file, in order.")
    values: dict[str, str | int | float] = Field(
        default_factory=dict, description="Columns with one value for every row of this file (e.g. {race: Black}).")
    quoting: Literal["csv", "none"] | None = Field(
        None, description="csv: fields may be quoted (default for csv); none: quotes are text (default for tsv).")
    encoding: str | None = Field(None, description="Text encoding of a csv/tsv/jsonl file (default utf-8, with or "
                                                   "without a byte-order mark), e.g. utf-16, cp1252.")
    cue: str | None = Field(None, description="Cue text that every post text of this file's (non-control) rows "
                                              "contains, e.g. 'As a Black woman'; checked.")

    @model_validator(mode="after")
    def _header_or_names(self) -> "ImportFile":
        if not self.header and not self.columns:
            raise ValueError("a headerless file (header: false) needs its column names in 'columns'")
        if self.columns and len(set(self.columns)) != len(self.columns):
            raise ValueError(f"column names repeat: {self.columns}")
        return self


class ImportColumns(StrictModel):
    """Which column holds what. Only ``reply`` and one of ``variant``/``post`` are required."""

    post_id: str | None = Field(None, description="Id of the original post (match: id).")
    post: str | None = Field(None, description="Text of the original post (the control's text).")
    variant: str | None = Field(None, description="Text the model replied to (default: the post column).")
    reply: str = Field(..., description="The model's reply.")
    group: str | None = Field(None, description="Group label; default: the axis values joined by spaces.")
    cue_type: str | None = Field(None, description="How the group was signalled (explicit_tag, ...).")
    model: str | None = Field(None, description="Which model replied.")
    style: str | None = Field(None, description="Prompt style.")
    sample: str | None = Field(None, description="Sample index of repeated replies.")

    @model_validator(mode="after")
    def _some_text(self) -> "ImportColumns":
        if not self.variant and not self.post:
            raise ValueError("name the column with the text the model saw: 'variant' (or 'post')")
        return self


class ImportSpec(StrictModel):
    """What an import means (see the module docstring)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name.")
    description: str = ""
    files: list[ImportFile] = Field(..., min_length=1)
    columns: ImportColumns
    axes: list[str] = Field(default_factory=list, description="Columns that are demographic axes (race, gender).")
    control: str | None = Field("control", description="Group label of the unmodified posts; null: none.")
    reference: str | None = Field(None, description="Reference group of the gaps when the release has no control.")
    reference_group: str | None = Field(None, description="analysis.reference_group of the audit spec.")
    allow_missing: bool = Field(False, description="analysis.allow_missing of the audit spec.")
    match: Literal["id", "rows"] = Field("id", description="id: by the post_id column; rows: row k of each file.")
    cue_type: str = Field("unspecified_cue", description="Cue type of the non-control rows without a cue_type column.")
    model: str = Field("imported", description="Model name of the rows without a model column.")
    scores: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Scores in the release: {scorer: {measure: column}}.")
    scorers: list[str] = Field(default_factory=lambda: list(DEFAULT_SCORERS), min_length=1,
                               description="scoring.scorers of the audit spec (what `score RUN_DIR` runs).")
    rows_per_post: int | None = Field(
        None, ge=1, le=100_000, description="match: rows: each post has this many consecutive rows in every file "
                                            "(its samples); row k of a file is then post ceil(k / rows_per_post).")
    repeated_posts: Literal["samples", "posts"] | None = Field(
        None, description="Identical post texts within one condition: samples (match: rows: consecutive rows with "
                          "one text are samples of one post) or posts (different posts that share a text). "
                          "Undeclared repeats are an error.")
    failed_values: list[str] = Field(
        default_factory=list, description="Reply texts that mean the request failed (placeholders such as "
                                          "'ERROR', 'N/A'): stored as failed replies, counted as missing.")
    cues: dict[str, str] = Field(
        default_factory=dict, description="{group label: cue text}: every post text of the group contains its cue "
                                          "(checked: a mislabelled file is an error).")
    min_similarity: float = Field(0.6, ge=0, le=1)
    max_unmatched: float = Field(0.05, ge=0, le=1, description="Share of unmatched rows above which to refuse.")
    force: bool = Field(False, description="Import even when the alignment looks implausible.")

    @field_validator("scores")
    @classmethod
    def _scorer_names(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for scorer, measures in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", scorer):
                raise ValueError(f"scorer name {scorer!r}: use letters, digits, '_' or '-'")
            if not measures:
                raise ValueError(f"scorer {scorer!r} maps no measure to a column")
            for m in measures:
                if not re.fullmatch(r"[A-Za-z0-9_]+", m):
                    raise ValueError(f"measure name {m!r} of scorer {scorer!r}: use letters, digits or '_'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ImportSpec":
        from .scorers.registry import builtin_names

        taken = sorted(set(self.scores) & set(builtin_names()))
        if taken:
            raise ValueError(f"imported scores may not take the name of a built-in scorer ({', '.join(taken)}): "
                             "name them e.g. 'published', and give their measures the built-in measure names")
        clash = sorted(set(self.scores) & set(self.scorers))
        if clash:
            raise ValueError(f"'scorers' (what `score` runs) lists the imported scorer(s) {', '.join(clash)}; "
                             "imported scores are stored as they are and never rerun")
        if self.control is None and self.reference is None:
            raise ValueError("a release without a control (control: null) needs the reference group in 'reference'")
        if self.match == "id" and not self.columns.post_id:
            raise ValueError("match: id needs columns.post_id; for files whose row k is post k use match: rows")
        if self.match == "rows" and len(self.files) < 2 and self.control is not None:
            raise ValueError("match: rows aligns several files (one per condition): give them all under 'files'; "
                             "for one long file, name its post-id column (columns.post_id, --post-id) instead")
        if self.match != "rows" and self.rows_per_post:
            raise ValueError("rows_per_post describes match: rows; with match: id the rows of one post share its "
                             "post id (and become its samples)")
        if self.match != "rows" and self.repeated_posts == "samples":
            raise ValueError("repeated_posts: samples describes match: rows; with match: id give the rows of one "
                             "post one post id (they become its samples)")
        if self.rows_per_post and self.columns.sample:
            raise ValueError("give rows_per_post or columns.sample, not both")
        if any(not v.strip() for v in self.failed_values):
            raise ValueError("failed_values holds an empty text (empty replies are failed replies already)")
        if "group" in self.axes:
            raise ValueError("an axis may not be called 'group' (the group label is built from the axes); rename it")
        return self

    _source_path: Path | None = None
    _source_text: str = ""

    @property
    def source_path(self) -> Path | None:
        """The import spec file (None for one made from flags or a mapping): errors name it and the line."""
        return self._source_path

    @property
    def source_dir(self) -> Path:
        return self._source_path.parent if self._source_path else Path.cwd()

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.source_dir / p


def load_import_spec(path: str | Path) -> ImportSpec:
    """Read and validate an import spec (YAML); errors name the file, line and key."""
    p = Path(path)
    data, text = read_yaml(p, "import spec")
    if not isinstance(data, dict):
        raise AuditError("the import spec must be a YAML mapping", where=str(p), fix="see docs/replication.md")
    try:
        spec = ImportSpec.model_validate(data)
    except ValidationError as err:
        raise _spec_error(p, text, err) from None
    spec._source_path = p.resolve()
    spec._source_text = text
    return spec


def import_spec_from_dict(data: dict[str, Any], where: str = "import spec") -> ImportSpec:
    """Validate an import spec given as a mapping (flags, notebooks); relative file paths are taken
    from the current directory."""
    try:
        return ImportSpec.model_validate(data)
    except ValidationError as err:
        raise _spec_error(where, "", err) from None


def _spec_error(where: Path | str, text: str, err: ValidationError) -> AuditError:
    """:func:`audit.spec.validation_error`, pointing at the import spec's reference (docs/replication.md)."""
    exc = validation_error(where, text, err, what_file="import spec")
    exc.what = exc.what.replace("Value error, ", "")
    exc.fix = (exc.fix or "").replace("reference in docs/guide/specs.md", "reference in docs/replication.md")
    return exc


# --------------------------------------------------------------------------- reading


@dataclass
class FileRecord:
    """One input file as the provenance records it."""

    path: str
    name: str
    sha256: str
    bytes: int
    rows: int
    format: str
    header: bool


def read_release_file(f: ImportFile, path: Path) -> tuple[pd.DataFrame, str]:
    """One file of a release as a DataFrame of text cells (empty cells missing) and its format.

    csv/tsv cells are read as the text the file holds (no number or ``NA`` guessing); a headerless
    file must have exactly as many fields per row as ``columns`` names. The import itself reads files
    in chunks (:func:`audit.importer_read.iter_release_file`); this is the whole file at once.
    """
    parts = list(iter_release_file(f, path))
    return pd.concat(parts, ignore_index=True), file_format(f, path)


def _text(v: Any) -> str | None:
    """A cell as text, or None when missing/empty; integral floats read from jsonl/parquet as ints."""
    if v is None:
        return None
    if isinstance(v, float):
        if v != v:
            return None
        if v.is_integer():
            return str(int(v))
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)) and getattr(v, "ndim", 0):
        v = v.tolist()  # a parquet list cell
    if isinstance(v, (dict, list, tuple)):  # a JSON value (JSON Lines): JSON text, never a Python repr
        s = json.dumps(v, ensure_ascii=False, default=str)
    else:
        s = str(v)
    return s if s.strip() else None


def _fold(s: str) -> str:
    return " ".join(s.casefold().split())


def texts_match(original: str, variant: str, min_similarity: float = 0.6) -> bool:
    """Whether ``variant`` is plausibly ``original`` with a cue added: after folding case and
    whitespace the variant contains the original, or :class:`difflib.SequenceMatcher`'s ratio
    ``2 M / (len(a) + len(b))`` (M matched characters) is at least ``min_similarity``.

    >>> texts_match("I can't sleep.", "As a Black woman, I can't  sleep.")
    True
    >>> texts_match("I can't sleep.", "My dog died last week and I miss him.")
    False
    """
    a, b = _fold(original), _fold(variant)
    if a in b:
        return True
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return sm.real_quick_ratio() >= min_similarity and sm.quick_ratio() >= min_similarity \
        and sm.ratio() >= min_similarity


# --------------------------------------------------------------------------- the import


@dataclass
class ImportSummary:
    """What an import did; ``lines()`` for the command line, ``as_dict()`` for JSON."""

    run_dir: str
    files: list[dict[str, Any]]
    rows: int                     # rows in all files
    imported: int                 # rows imported (one request and reply each)
    replies_ok: int
    replies_missing: int          # empty or missing reply, or a declared placeholder: stored as failed
    unmatched: int                # rows not imported: no post they could be matched to
    unmatched_by_file: dict[str, int]
    no_control: int               # imported rows whose post has no control row
    posts: int
    groups: list[str]
    models: list[str]
    scores: dict[str, list[str]]  # scorer -> measures imported
    scores_missing: int           # score cells that were empty
    design: str                   # counterfactual | observational | mixed
    design_statement: str
    already: bool = False         # the same import was already in the run directory
    examples_unmatched: list[str] = field(default_factory=list)
    replies_placeholder: int = 0  # of replies_missing: a failed_values placeholder
    samples_max: int = 1          # most replies of one post under one condition (model, style)
    samples_median: float = 1.0
    conditions: int = 0           # variants: (post, group, cue type, text)
    recurring: list[dict[str, Any]] = field(default_factory=list)   # recurring reply texts (placeholders?)
    relevance: list[dict[str, Any]] = field(default_factory=list)   # reply-post similarity per file and condition
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        if self.already:
            head = f"already imported into {self.run_dir} (same files, same mapping): nothing changed"
        else:
            head = f"imported {self.imported} of {self.rows} rows from {len(self.files)} file(s) into {self.run_dir}"
        ph = f", of which {self.replies_placeholder} failure placeholder(s) (failed_values)" if self.replies_placeholder \
            else ""
        out = [head,
               f"  replies: {self.replies_ok} ok, {self.replies_missing} failed: empty, missing or a placeholder{ph} "
               f"(stored as failed, counted as missing outcomes)",
               f"  posts: {self.posts}; samples: {_samples_phrase(self.samples_max, self.samples_median)}; "
               f"effective sample size: {self.posts} posts ({self.imported} rows)",
               f"  groups: {', '.join(self.groups)}; models: {', '.join(self.models)}"]
        if self.unmatched:
            per = ", ".join(f"{k} {v}" for k, v in self.unmatched_by_file.items() if v)
            out.append(f"  unmatched rows (not imported): {self.unmatched} ({per})")
            out += [f"    e.g. {e}" for e in self.examples_unmatched[:3]]
        if self.no_control:
            out.append(f"  rows whose post has no control row: {self.no_control}")
        long = [r for r in self.recurring if not r.get("short")]
        if long:
            top = max(long, key=lambda r: r["rows"])
            out.append(f"  recurring replies: {len(long)} longer reply text(s) recur word for word across posts (the "
                       f"most: {top['rows']} rows, {top['posts']} posts; a template answer?)")
        for s, ms in self.scores.items():
            out.append(f"  scores of '{s}': {', '.join(ms)}" + (f" ({self.scores_missing} empty cells stored as "
                                                                 "missing)" if self.scores_missing else ""))
        out.append(f"  design: {self.design_statement}")
        for f in self.files:
            out.append(f"  {f['name']}: {f['rows']} rows, sha256 {f['sha256'][:16]}...")
        out += [f"  WARNING: {w}" for w in self.warnings]
        out.append(f"next: empathy-audit score {self.run_dir}; empathy-audit analyze {self.run_dir}; "
                   f"empathy-audit report {self.run_dir}")
        return out


def _samples_phrase(most: int, median: float) -> str:
    if most <= 1:
        return "one reply per post and condition"
    return (f"up to {most} replies per post and condition (median {median:g}), analysed as repeated replies to one "
            "post, not as posts")


def _column_error(col: str, key: str, path: Path, df: pd.DataFrame) -> AuditError:
    cols = ", ".join(map(str, list(df.columns)[:20]))
    return AuditError(f"column '{col}' ({key}) not found (columns are: {cols})", where=str(path),
                      fix=f"correct {key} in the import spec (or the flag), or give the file's column names")


def _label(text: str) -> str:
    return _LABEL_OK.sub("-", text).strip("-") or "imported"


_PREVIEW_CHARS = 200      # replies this short keep a preview (for naming a recurring text)
_PREVIEW_MAX = 100_000    # previews kept at most
_RELEVANCE_SAMPLE = 2000  # replies per file kept for the reply-post relevance check (reservoir sample)


@dataclass
class _Pass1:
    """What the first pass over the files keeps: one row of metadata per file row (the reply texts are
    not kept: only their hash and state), previews of short replies, and a sample of replies per file."""

    rows: pd.DataFrame
    records: list[FileRecord]
    previews: dict[int, str]
    sample: dict[int, dict[int, str]]  # file -> {row: reply text}


def _reply_state(spec: ImportSpec) -> Any:
    failed = {v.strip() for v in spec.failed_values}

    def state(v: Any) -> tuple[int, str | None]:
        t = _text(v)
        if t is None:
            return 1, None
        if t.strip() in failed:
            return 2, t
        return 0, t
    return state


def _build_rows(spec: ImportSpec) -> _Pass1:
    """Read every file, chunk by chunk, into one table with canonical columns (one row per file row).

    Reply texts are not kept (a release is mostly replies): each row keeps the reply's state (0 answered,
    1 empty or missing, 2 a ``failed_values`` placeholder) and a 63-bit hash; the second pass
    (:func:`_write_replies`) reads the texts again.
    """
    c = spec.columns
    parts, records = [], []
    seen_axes: set[str] = set()
    interned: dict[str, str] = {}
    previews: dict[int, str] = {}
    sample: dict[int, dict[int, str]] = {}
    state = _reply_state(spec)
    for i, f in enumerate(spec.files):
        path = spec.resolve(f.path)
        fmt = file_format(f, path)
        n = 0
        rng = random.Random(i)
        keep: list[tuple[int, str]] = []
        answered = 0
        for df in iter_release_file(f, path):
            if n == 0:
                need = {f"columns.{k}": v for k, v in c.model_dump().items() if v}
                for scorer, ms in spec.scores.items():
                    need.update({f"scores.{scorer}.{m}": col for m, col in ms.items()})
                for key, col in need.items():
                    if col not in df.columns:
                        raise _column_error(col, key, path, df)
            m = len(df)
            out = pd.DataFrame({"_file": np.full(m, i, dtype=np.int32), "_row": np.arange(n + 1, n + m + 1),
                                "_unencodable": df["_unencodable"].to_numpy(dtype=np.int64) if "_unencodable" in df
                                else np.zeros(m, dtype=np.int64)})
            for k in ("post_id", "post", "variant", "group", "cue_type", "model", "style", "sample"):
                col = getattr(c, k)
                # one object per distinct text (posts, ids and labels repeat over samples, models, groups)
                vals = [interned.setdefault(t, t) if (t := _text(v)) is not None else None
                        for v in df[col].tolist()] if col else [None] * m
                out[k] = pd.Series(vals, dtype=object)
            for k in ("model", "style", "sample"):  # a mapped column must be filled (H7): no silent default
                col = getattr(c, k)
                if col:
                    empty = out[k].isna().to_numpy()
                    if empty.any():
                        r = n + int(empty.nonzero()[0][0]) + 1
                        raise AuditError(f"empty {k} cell in {path.name} row {r}, column '{col}'", where=str(path),
                                         fix=f"fill the {k} of every row (or leave columns.{k} out)")
            if c.sample:
                bad = [j for j, v in enumerate(out["sample"]) if not re.fullmatch(r"\d+", v.strip())]
                if bad:
                    raise AuditError(f"sample index is not a whole number in {path.name} row {n + bad[0] + 1} "
                                     f"({out['sample'].iloc[bad[0]]!r})", where=f"column '{c.sample}'",
                                     fix="map a column of 0, 1, 2, ... or leave columns.sample out")
                out["sample"] = pd.Series([int(v) for v in out["sample"]], dtype=object)
            if out["variant"].isna().all() and c.variant is None:
                out["variant"] = out["post"]
            for a in spec.axes:  # a file may lack an axis (the control file); one that no file has is an error below
                out[f"ax:{a}"] = pd.Series([_text(v) for v in df[a].tolist()] if a in df.columns else [None] * m,
                                           dtype=object)
            seen_axes.update(a for a in spec.axes if a in df.columns)
            states, hashes = np.zeros(m, dtype=np.int8), np.zeros(m, dtype=np.int64)
            for j, v in enumerate(df[c.reply].tolist()):
                st, t = state(v)
                states[j] = st
                if t is None:
                    continue
                h = hashes[j] = text_hash(t)
                if len(t) <= _PREVIEW_CHARS and len(previews) < _PREVIEW_MAX:
                    previews.setdefault(int(h), t)
                if st == 0:  # reservoir sample (Vitter's algorithm R) of answered replies, for the relevance check
                    answered += 1
                    if len(keep) < _RELEVANCE_SAMPLE:
                        keep.append((n + j + 1, t))
                    else:
                        x = rng.randrange(answered)
                        if x < _RELEVANCE_SAMPLE:
                            keep[x] = (n + j + 1, t)
            out["_rstate"], out["_rhash"] = states, hashes
            for scorer, ms in spec.scores.items():
                for mname, col in ms.items():
                    raw = df[col]
                    num = pd.to_numeric(raw, errors="coerce")
                    bad = raw.notna() & raw.astype(str).str.strip().ne("") & num.isna()
                    if bad.any():
                        r = int(bad.to_numpy().nonzero()[0][0])
                        raise AuditError(f"score column '{col}' (scores.{scorer}.{mname}) is not numeric: row "
                                         f"{n + r + 1} holds {str(raw.iloc[r])[:40]!r}", where=str(path),
                                         fix="map a numeric column, or clean the values (empty cells are missing)")
                    out[f"score:{scorer}:{mname}"] = num.to_numpy(dtype=float)
            parts.append(out)
            n += m
        sample[i] = dict(keep)
        records.append(FileRecord(str(path), path.name, sha256_file(path), path.stat().st_size, n, fmt, f.header))
    for j, a in enumerate(spec.axes):
        if a not in seen_axes:
            raise AuditError(f"axis column '{a}' (axes[{j}]) is in none of the files", where=spec_where(spec, ("axes", j)),
                             fix="name a column the files have, or give it per file in files[i].values")
    rows = pd.concat(parts, ignore_index=True)
    return _Pass1(rows, records, previews, sample)


def _clean_group_labels(rows: pd.DataFrame, spec: ImportSpec, records: list[FileRecord],
                        fold_case: bool) -> tuple[pd.Series, list[str]]:
    """The group column (or the axis columns) cleaned by :func:`audit.labels.clean_labels`, then the
    group labels; and the warnings of folded spellings."""
    from .labels import clean_labels

    warns: list[str] = []
    where = ", ".join(r.name for r in records)
    for c, name in ([("group", spec.columns.group)] if spec.columns.group else
                    [(f"ax:{a}", a) for a in spec.axes]):
        if c in rows:
            rows[c], w = clean_labels(rows[c], where=where, column=str(name), fold_case=fold_case)
            warns += w
    return _group_labels(rows, spec), warns


def _group_labels(rows: pd.DataFrame, spec: ImportSpec) -> pd.Series:
    if spec.columns.group:
        return rows["group"]
    if not spec.axes:
        raise AuditError("the import names neither a group column nor axes", where=spec_where(spec, ("columns",)),
                         fix="give columns.group, or the axis columns in 'axes' (per-file constants go in "
                             "files[i].values)")
    cols = [rows[f"ax:{a}"].tolist() for a in spec.axes]
    joined = [" ".join(str(x) for x in r if x is not None) or None for r in zip(*cols)]
    return pd.Series(joined, index=rows.index, dtype=object)


def _where(records: list[FileRecord], rows: pd.DataFrame, i: int) -> str:
    r = rows.iloc[i]
    return f"{records[int(r['_file'])].name} row {int(r['_row'])}"


def _row_posts(spec: ImportSpec, rows: pd.DataFrame, records: list[FileRecord]) -> bool:
    """``match: rows``: the post number of every row (column ``_block``) and its post id (``row-k`` when
    every row is a post, ``post-k`` for blocks of samples; :func:`audit.importer_checks.row_blocks`).
    Returns whether rows were grouped into posts."""
    runs = bool(spec.columns.sample) or spec.repeated_posts == "samples"
    blocks = np.zeros(len(rows), dtype=np.int64)
    texts, smp = rows["variant"].to_numpy(), rows["sample"].to_numpy()
    for fi, idx in rows.groupby("_file", sort=True).indices.items():
        b, _ = row_blocks(texts[idx].tolist(), smp[idx].tolist() if spec.columns.sample else None,
                          spec.rows_per_post, runs, where=records[int(fi)].path)
        blocks[idx] = b
    rows["_block"] = blocks
    blocked = bool(spec.rows_per_post) or runs
    rows["post_id"] = [f"{'post' if blocked else 'row'}-{b}" for b in blocks]
    return blocked


def _match(spec: ImportSpec, rows: pd.DataFrame, records: list[FileRecord]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Post ids, control texts and the alignment check; returns the rows to import and the counts."""
    is_ctrl = rows["is_control"].to_numpy()
    if spec.match == "rows":
        blocked = _row_posts(spec, rows, records)
        counts = {rec.name: int(rows.loc[rows["_file"] == i, "_block"].max()) if rec.rows else 0
                  for i, rec in enumerate(records)}
        if len(set(counts.values())) > 1 and not spec.force:
            what = "post (blocks of rows)" if blocked else "row"
            raise AuditError(
                f"match: rows needs files of equal length, but the {what} counts differ ("
                + ", ".join(f"{k} {v}" for k, v in counts.items()) + "): row k is not post k in every file",
                where=spec_where(spec, ("match",)),
                fix="check that no file lost or gained a row (a header row, a blank line), use match: id with a "
                    "post-id column, or set force: true (--force) to import the rows that exist, counting the rest "
                    "as unmatched")
    no_id = rows["post_id"].isna().to_numpy()
    if no_id.any():
        raise AuditError(f"no post id in {_where(records, rows, int(no_id.nonzero()[0][0]))}",
                         where=f"column '{spec.columns.post_id}'", fix="fill the post id of every row, or use match: rows")
    names = [r.name for r in records]
    if spec.repeated_posts != "posts":
        repeated_texts(rows, names, spec.match)
    if spec.match == "id":
        one_id_one_text(rows, names, spec.columns.post_id)
    # the original text of each post: its control row, else the post column
    originals: dict[str, str] = {}
    for pid, text in zip(rows.loc[is_ctrl, "post_id"], rows.loc[is_ctrl, "variant"]):
        if text is not None:
            originals.setdefault(pid, text)
    has_control = bool(is_ctrl.any())
    anchor = np.zeros(len(rows), dtype=bool)
    if spec.match == "rows" and not has_control:
        # no control to compare with: row k of every file must still be the same post as row k of the
        # first file (the same post under another cue)
        anchor = (rows["_file"] == 0).to_numpy()
        originals = {pid: t for pid, t in zip(rows.loc[anchor, "post_id"], rows.loc[anchor, "variant"])
                     if t is not None}
    unmatched = pd.Series(False, index=rows.index)
    reasons: list[str] = []
    no_control = 0
    ref = is_ctrl if has_control else anchor
    if spec.match == "rows" and ref.any():
        n_ref_rows = int(rows.loc[ref, "_block"].max())
        beyond = (~ref) & (rows["_block"] > n_ref_rows)
        for i in beyond.to_numpy().nonzero()[0]:
            reasons.append(f"{_where(records, rows, i)}: beyond the {n_ref_rows} posts of "
                           f"{'the control' if has_control else records[0].name}")
        unmatched |= beyond
    todo = (~is_ctrl & ~anchor & ~unmatched.to_numpy()).nonzero()[0]
    pids, posts, texts = rows["post_id"].to_numpy(), rows["post"].to_numpy(), rows["variant"].to_numpy()
    verdict: dict[tuple[str, str], bool] = {}  # the same (original, variant) pair recurs over models and samples
    for i in todo:
        orig = originals.get(pids[i])
        if orig is None:
            if has_control:
                no_control += 1
            orig = _text(posts[i])
        text = _text(texts[i])
        if orig is None or text is None:
            continue
        ok = verdict.get((orig, text))
        if ok is None:
            ok = verdict[(orig, text)] = texts_match(orig, text, spec.min_similarity)
        if not ok:
            unmatched.iloc[i] = True
            reasons.append(f"{_where(records, rows, i)}: {text[:50]!r} is not close to post {pids[i]} {orig[:50]!r}")
    n_bad = int(unmatched.sum())
    n_checked = int((~ref).sum())  # rows that are checked against a reference row (control or first file)
    share = n_bad / max(n_checked, 1)
    if share > spec.max_unmatched and not spec.force:
        raise AuditError(
            f"{n_bad} of {n_checked} variant rows ({share:.0%}) do not match their original post "
            f"(first: {reasons[0]}); the alignment is implausible", where=spec_where(spec, ("match",)),
            fix="check the file order and row alignment (or the post-id column); set force: true (--force) to "
                "import anyway without the unmatched rows, or raise max_unmatched")
    by_file = {rec.name: 0 for rec in records}
    for fi in rows.loc[unmatched, "_file"]:
        by_file[records[int(fi)].name] += 1
    return rows[~unmatched].copy(), dict(unmatched=n_bad, unmatched_by_file=by_file, no_control=no_control,
                                         examples_unmatched=reasons[:5], originals=originals)


def _measure_declarations(measures: list[str]) -> list[dict[str, Any]]:
    """Declarations for imported measures: a built-in scorer's where the name is the same (so the
    published and the toolkit's own scores are read alike), else a generic continuous one."""
    from .scorers.measures import MeasureCatalog

    cat = MeasureCatalog.from_scorer_info({})
    out = []
    for m in measures:
        d = cat.declared(m)
        # the declaration's meaning, not its validity evidence: that belongs to the scorer it was checked on
        out.append({**asdict(d), "name": m, "evidence": None} if d is not None else
                   {"name": m, "label": m.replace("_", " "), "kind": "continuous"})
    return out


def import_sha256(spec: ImportSpec, records: list[FileRecord]) -> str:
    """What makes an import this import: the files' contents and the mapping (not where the files are)."""
    mapping = spec.model_dump(mode="json", exclude={"force"})
    for f in mapping["files"]:
        f.pop("path", None)
        for k in ("encoding", "cue"):  # keys added later: left out at their defaults, so that an import made
            if f.get(k) is None:       # before they existed keeps its hash (and re-importing it changes nothing)
                f.pop(k, None)
    for k, default in (("rows_per_post", None), ("repeated_posts", None), ("failed_values", []), ("cues", {})):
        if mapping.get(k) == default:
            mapping.pop(k, None)
    return hashlib.sha256(canonical_json({"files": [r.sha256 for r in records], "mapping": mapping}).encode()).hexdigest()


def _audit_spec(spec: ImportSpec, cue_types: list[str], models: dict[str, tuple[str, str]],
                styles: list[str], samples: int, has_control: bool, files: list[FileRecord]) -> Any:
    axes = list(spec.axes) or ["condition"]
    known = [c for c in cue_types if c in CUE_TYPES]
    data = {
        "name": spec.name,
        "description": spec.description or ("Replies imported from " + ", ".join(r.name for r in files)
                                            + " (not generated by this toolkit)."),
        "posts": {"source": "import: " + ", ".join(r.name for r in files)},
        "demographics": {"axes": axes, **({"cue_types": known} if known else {})},
        "styles": styles,
        "models": [{"label": label, "base_url": endpoint, "model": name} for label, (name, endpoint) in models.items()],
        "samples": max(1, min(samples, 1000)),
        "scoring": {"scorers": list(spec.scorers), "inference_probe": False},
        "analysis": {"reference": "control" if has_control else str(spec.reference),
                     "reference_group": spec.reference_group, "allow_missing": spec.allow_missing},
    }
    audit_spec = spec_from_dict(data, where="the audit spec derived from the import spec")
    import yaml

    # What the report shows as "the spec": the equivalent audit spec, then the import spec itself (as
    # comments, so the text stays a valid audit spec)
    given = spec._source_text or yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False,
                                                allow_unicode=True)
    where = f" ({spec._source_path})" if spec._source_path else " (from the command-line flags)"
    audit_spec._source_text = (
        "# The audit spec equivalent to an import (empathy-audit import): the replies were imported, not "
        "generated.\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        + f"\n# The import spec{where}:\n" + "".join(f"#   {line}\n" for line in given.splitlines()))
    return audit_spec


def import_release(spec: ImportSpec, run_dir: str | Path, *, force: bool | None = None,
                   command: str | None = None, chunk_rows: int = 20_000, fold_case: bool = False) -> ImportSummary:
    """Import the release described by ``spec`` into the run store of ``run_dir`` (see the module doc).

    ``force`` overrides ``spec.force``. Group and axis labels are cleaned by :mod:`audit.labels` (NFC,
    whitespace); labels equal up to case are refused unless ``fold_case`` (then folded, with a warning). Raises :class:`~audit.errors.AuditError` for a bad mapping (naming
    the column and file), an implausible alignment, conditions with identical content, or a run
    directory holding something else. The files are read twice, in chunks of ``chunk_rows`` rows: once
    to check everything (nothing is written before the import is known to be good), once to store the
    replies, so memory does not grow with the replies' size.
    """
    from .design import design_id
    from .report.provenance import record_import_provenance
    from .stats.designs import detect_design
    from .labels import clean_level
    from .stats.missing import match_level

    if force is not None:
        spec = spec.model_copy(update={"force": force})
    rd = Path(run_dir)
    p1 = _build_rows(spec)
    rows, records = p1.rows, p1.records
    isha = import_sha256(spec, records)
    stored, complete = None, False
    if (rd / STORE_FILENAME).exists():  # nothing is created before the import is known to be good
        with RunStore(rd, create=False) as store:
            stored, complete = store.get_meta("import_sha256"), store.get_meta("import_complete") is not None
            if stored is None and (store.get_meta("spec_hash") is not None or store.count_rows("requests")):
                raise AuditError("this run directory holds an audit run, not an import", where=str(rd),
                                 fix="import into a new run directory (--out)")
    if stored is not None and stored != isha:
        raise AuditError("this run directory holds another import (other files or another mapping)",
                         where=str(rd), fix="import into a new run directory (--out); an import is never "
                                            "mixed into another one")
    already = stored == isha and complete

    labels, label_warnings = _clean_group_labels(rows, spec, records, fold_case)
    if labels.isna().any():
        i = int(labels.isna().to_numpy().nonzero()[0][0])
        raise AuditError(f"no group in {_where(records, rows, i)}", where=spec_where(spec, ("columns", "group") if spec.columns.group else ("axes",)),
                         fix="fill the group (or axis) column of every row, or set it per file in files[i].values")
    rows["group_label"] = labels
    present = sorted(labels.unique())
    ctrl = None
    if spec.control is not None:
        ctrl = match_level(labels, clean_level(spec.control, labels, fold_case=fold_case))
        if ctrl is None:
            raise AuditError(f"control level '{spec.control}' does not occur (groups: {', '.join(present[:15])})",
                             where=spec_where(spec, ("control",)),
                             fix="give the group label of the unmodified posts, or control: null with a reference")
    else:
        if match_level(labels, spec.reference) is None:
            raise AuditError(f"reference group '{spec.reference}' does not occur (groups: {', '.join(present[:15])})",
                             where=spec_where(spec, ("reference",)), fix="give one of the groups")
    rows["is_control"] = (labels == ctrl).to_numpy() if ctrl is not None else False
    if spec.columns.cue_type:  # H7: an empty cue type of a non-control row is an error, not a silent default
        empty = (rows["cue_type"].isna() & ~rows["is_control"]).to_numpy()
        if empty.any():
            i = int(empty.nonzero()[0][0])
            raise AuditError(f"empty cue_type cell in {_where(records, rows, i)}, column '{spec.columns.cue_type}'",
                             where=records[int(rows['_file'].iloc[i])].path,
                             fix="fill the cue type of every row that is not a control row (or leave columns.cue_type "
                                 "out and give cue_type: for all)")
    rows, counts = _match(spec, rows, records)
    originals = counts.pop("originals")

    # variants
    rows["group_name"] = ["control" if c else g for c, g in zip(rows["is_control"], rows["group_label"])]
    rows["cue"] = ["control" if c else (t or spec.cue_type) for c, t in zip(rows["is_control"], rows["cue_type"])]
    axes = list(spec.axes) or ["condition"]

    def attrs(r: dict[str, Any]) -> dict[str, str]:
        if r["is_control"]:
            return {}
        if spec.axes:
            return {a: r[f"ax:{a}"] for a in spec.axes if r[f"ax:{a}"] is not None}
        return {"condition": r["group_label"]}

    ax_cols = [f"ax:{a}" for a in spec.axes]
    attr_cache: dict[tuple, dict[str, str]] = {}
    attr_list = []
    for r in rows[["is_control", "group_label", *ax_cols]].itertuples(index=False):
        if r not in attr_cache:
            attr_cache[r] = attrs(dict(zip(["is_control", "group_label", *ax_cols], r)))
        attr_list.append(attr_cache[r])
    rows["attrs"] = pd.Series(attr_list, index=rows.index, dtype=object)
    del attr_list
    cache: dict[Any, str] = {}
    texts = []
    for t, p in zip(rows["variant"], rows["post_id"]):
        k = (t, p) if t is None else t
        if k not in cache:
            cache[k] = replace_unencodable(_text(t) or originals.get(p) or "")[0]
        texts.append(cache[k])
    rows["text"] = pd.Series(texts, index=rows.index, dtype=object)
    del texts, cache
    no_text = (rows["text"] == "").to_numpy()
    if no_text.any():
        col = spec.columns.variant or spec.columns.post
        raise AuditError(f"no post text in {_where(records, rows, int(no_text.nonzero()[0][0]))}",
                         where=f"column '{col}'", fix="fill the text the model replied to in every row (a reply "
                                                      "without its post cannot be scored or compared)")
    vid_cache: dict[tuple, str] = {}
    vids = []
    for p, g, c, t, a in zip(rows["post_id"], rows["group_name"], rows["cue"], rows["text"], rows["attrs"]):
        k = (p, g, c, t, tuple(sorted(a.items())))
        if k not in vid_cache:
            vid_cache[k] = hashlib.sha256(canonical_json([p, g, c, t, a]).encode()).hexdigest()[:16]
        vids.append(vid_cache[k])
    rows["variant_id"] = vids
    del vids, vid_cache

    # content checks across conditions (C2, C4) and the declared cues
    names = [r.name for r in records]
    warnings = label_warnings + identical_conditions(rows, names, [r.sha256 for r in records], spec.force)
    warnings += missing_cues(rows, names, dict(spec.cues), {i: f.cue for i, f in enumerate(spec.files) if f.cue},
                             spec.force)

    vdf = rows.drop_duplicates("variant_id")
    variants = pd.DataFrame({
        "variant_id": vdf["variant_id"], "post_id": vdf["post_id"], "topic": None, "risk": None,
        "group_name": vdf["group_name"], "cue_type": vdf["cue"], "alternative": None, "cue_text": "",
        "text": vdf["text"]})
    for a in axes:
        variants[a] = [d.get(a) for d in vdf["attrs"]]

    # requests and replies
    rows["model_name"] = [m or spec.model for m in rows["model"]]
    rows["style_name"] = rows["style"].fillna("imported")
    if spec.columns.sample:
        rows["sample_index"] = rows["sample"].astype(int)
    else:
        rows["sample_index"] = rows.groupby(["variant_id", "model_name", "style_name"]).cumcount()
    endpoints = {i: f"import:{rec.sha256}" for i, rec in enumerate(records)}
    first_of = {}
    for i, rec in enumerate(records):
        first_of.setdefault(rec.sha256, i)
    twin = {i for i, rec in enumerate(records) if first_of[rec.sha256] != i}  # the same file again (with --force)
    models: dict[str, tuple[str, str]] = {}
    labels_of = {}
    for name, fi in rows[["model_name", "_file"]].drop_duplicates().itertuples(index=False):
        if name not in labels_of:
            label = _label(name)
            while label in models and models[label][0] != name:
                label += "_"
            labels_of[name] = label
            models[label] = (name, endpoints[int(fi)])
    keys = []
    for fi, ri, text, model_name, si in zip(rows["_file"], rows["_row"], rows["text"], rows["model_name"],
                                            rows["sample_index"]):
        fi = int(fi)
        params = {"import_row": int(ri), **({"import_file": fi} if fi in twin else {})}
        keys.append(request_key(endpoints[fi], model_name, [{"role": "user", "content": text}], params, int(si)))
    rows["request_key"] = keys
    del keys
    if not rows["request_key"].is_unique:  # cannot happen: the key includes the file's hash, its place and the row
        raise AuditError("two rows gave the same request", where=str(rd))

    state = rows["_rstate"].to_numpy()
    n_ok, n_missing, n_placeholder = int((state == 0).sum()), int((state != 0).sum()), int((state == 2).sum())
    score_cols = [c for c in rows.columns if c.startswith("score:")]
    n_score_missing = int(sum(rows[c].isna().sum() for c in score_cols))

    recurring = recurring_replies(rows, p1.previews)
    for r in recurring:
        if r["short"]:  # a short text given word for word to many posts: a placeholder, most likely
            warnings.append(f"the reply text {r['text']!r} recurs in {r['rows']} rows ({r['share']:.0%}) across "
                            f"{r['posts']} posts: if it is a failure placeholder, declare it in failed_values "
                            "(--failed-value) so that it counts as a failed reply, not as an answer")
    rel = _relevance(rows, p1.sample, names)
    for r in rel:
        if r["warn"]:
            warnings.append(
                f"the replies of {r['file']} (condition {r['condition']}) are no more similar to their own posts than "
                f"to the other posts (own post's mean similarity rank {r['mean_rank']:.2f}; 0.5 is chance, over "
                f"{r['replies']} replies): rows may be shuffled within the file; check the alignment (if the replies never "
                f"echo their posts, this check cannot tell, and the warning can be ignored)")

    sizes = rows.groupby(["variant_id", "model_name", "style_name"]).size()
    samples = int(rows["sample_index"].max()) + 1 if len(rows) else 1
    styles = sorted(set(rows["style_name"]))
    audit_spec = _audit_spec(spec, sorted(set(rows["cue"]) - {"control"}), models,
                             styles, samples, ctrl is not None, records)
    info = detect_design(pd.DataFrame({"g": rows["group_name"], "post_id": rows["post_id"]}), "g", "post_id")
    scorer_measures = {s: list(ms) for s, ms in spec.scores.items()}
    extra = dict(replies_placeholder=n_placeholder, samples_max=int(sizes.max()) if len(sizes) else 1,
                 samples_median=float(sizes.median()) if len(sizes) else 1.0, conditions=int(len(variants)),
                 recurring=recurring, relevance=rel, warnings=warnings)
    counts_out = dict(rows=sum(r.rows for r in records), imported=len(rows), replies_ok=n_ok,
                      replies_missing=n_missing, scores_missing=n_score_missing, **counts)
    # the run's design (audit/design.py): flat keys, as design_of writes them
    design = {"import.sha256": isha, "import.files": [r.sha256 for r in records],
              **{f"analysis.{k}": v for k, v in json.loads(canonical_json(
                  audit_spec.analysis.model_dump(mode="json"))).items()}}
    did = design_id(design)

    with RunStore(rd) as store:
        # Every write is idempotent (stored rows are kept), so an interrupted import resumes and a
        # finished one is left exactly as it is; import_sha256 is written first so that nothing else
        # can be imported into a half-written run directory.
        store.set_meta_many({"import_sha256": isha}, keep_existing=("import_sha256",))
        store.put_spec(audit_spec)
        store.put_variants(variants)
        _write_replies(spec, store, rows, records, endpoints, labels_of, score_cols, chunk_rows)
        known = store.scorer_info()
        for scorer, ms in spec.scores.items():
            if scorer not in known:
                store.put_scorer_info(scorer, {
                    "name": scorer, "version": f"imported:{isha[:16]}", "imported": True,
                    "source": "scores imported with the release (not computed by empathy-audit)",
                    "columns": dict(ms), "files_sha256": {r.name: r.sha256 for r in records},
                    "measures": _measure_declarations(list(ms))})
        store.bind_design(did, design)
        store.put_design_requests(did, rows["request_key"].tolist())
        if not already:
            record_import_provenance(store, rd, records=[asdict(r) for r in records],
                                     mapping=spec.model_dump(mode="json"),
                                     counts={**counts_out, **extra, "posts": int(rows["post_id"].nunique())},
                                     sha256=isha, spec_text=spec._source_text, spec_path=spec._source_path,
                                     command=command)
    return ImportSummary(
        run_dir=str(rd), files=[asdict(r) for r in records], groups=sorted(set(rows["group_name"])),
        models=sorted(models), scores=scorer_measures, posts=int(rows["post_id"].nunique()), design=info.kind,
        design_statement=info.statement(), already=already, **counts_out, **extra)


def _relevance(rows: pd.DataFrame, sample: dict[int, dict[int, str]], names: list[str]) -> list[dict[str, Any]]:
    """The reply-post relevance check (:func:`audit.importer_checks.relevance`) on the sampled replies of
    each file, per condition (group and cue type)."""
    parts = []
    for fi, texts in sample.items():
        if not texts:
            continue
        d = rows[(rows["_file"] == fi) & rows["_row"].isin(list(texts))]
        if d.empty:
            continue
        parts.append(pd.DataFrame({
            "file": names[fi], "condition": [g if c == "control" else f"{g}, {c}" for g, c in zip(d["group_name"], d["cue"])],
            "post_id": d["post_id"].to_numpy(), "post": d["text"].to_numpy(),
            "reply": [texts[int(r)] for r in d["_row"]]}))
    if not parts:
        return []
    return relevance(pd.concat(parts, ignore_index=True))


def _write_replies(spec: ImportSpec, store: RunStore, rows: pd.DataFrame, records: list[FileRecord],
                   endpoints: dict[int, str], labels_of: dict[str, str], score_cols: list[str], chunk_rows: int) -> None:
    """The second pass: read each file again, chunk by chunk, and store the requests, replies and scores of
    its imported rows (``rows``, in file and row order), so no more than one chunk of reply texts is held."""
    failed = {v.strip() for v in spec.failed_values}
    for fi, f in enumerate(spec.files):
        sub = rows[rows["_file"] == fi]
        if sub.empty:
            continue
        rn = sub["_row"].to_numpy()
        start = 0
        for df in iter_release_file(f, spec.resolve(f.path), chunk_rows):
            m = len(df)
            lo, hi = np.searchsorted(rn, start + 1), np.searchsorted(rn, start + m + 1)
            if hi > lo:
                part = sub.iloc[lo:hi]
                cells = df[spec.columns.reply].tolist()
                requests, replies, score_rows = [], [], []
                for r in part.to_dict("records"):
                    key, row = r["request_key"], int(r["_row"])
                    requests.append(dict(request_key=key, purpose="reply", variant_id=r["variant_id"],
                                         model_label=labels_of[r["model_name"]], endpoint_id=endpoints[fi],
                                         model_name=r["model_name"], style=r["style_name"], style_hash=None,
                                         sample_index=int(r["sample_index"]),
                                         messages=[{"role": "user", "content": r["text"]}],
                                         params={"import": records[fi].name}))
                    raw = _text(cells[row - start - 1])
                    text, n_bad = replace_unencodable(raw or "")
                    n_bad += int(r["_unencodable"])  # replaced while reading (JSON Lines), anywhere in the row
                    if r["_rstate"] == 0:
                        flags = [f"unencodable: {n_bad} lone surrogate(s) replaced by U+FFFD"] if n_bad else []
                        replies.append(dict(request_key=key, status="ok", text=text, finish_reason="imported",
                                            runtime="import", flags=flags, attempts=1))
                    elif r["_rstate"] == 2 and raw is not None and raw.strip() in failed:
                        replies.append(dict(request_key=key, status="failed", text=None, runtime="import", attempts=1,
                                            error=f"failure placeholder {raw.strip()[:60]!r} in the release "
                                                  f"({records[fi].name} row {row}; failed_values)"))
                    else:
                        replies.append(dict(request_key=key, status="failed", text=None, runtime="import", attempts=1,
                                            error=f"no reply in the release ({records[fi].name} row {row})"))
                    for col in score_cols:
                        _, scorer, measure = col.split(":", 2)
                        v = r[col]
                        missing = v is None or v != v
                        score_rows.append((key, scorer, measure, None if missing else float(v),
                                           "missing in the release" if missing else None))
                store.put_requests(requests)
                stored = store.replies_by_key([q["request_key"] for q in requests])
                store.put_replies([(rep, ()) for rep in replies if rep["request_key"] not in stored])
                if score_rows:
                    store.put_scores(score_rows)
            start += m
