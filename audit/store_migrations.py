"""Numbered migrations of the run store's schema, applied when a store is opened.

The idea is Simon Willison's ``llm`` (``llm/migrations.py``): an ordered list of functions, each
applied once and recorded in a table. Here:

- :data:`MIGRATIONS` is the ordered list; migration *n* is ``MIGRATIONS[n - 1]`` and
  :data:`SCHEMA_VERSION` (= ``len(MIGRATIONS)``) is the newest version this code knows.
- :func:`migrate` runs in one ``BEGIN IMMEDIATE`` transaction: it applies every migration whose
  number is not recorded yet, in order, records each as a row of table ``_migrations(version, name,
  applied_at)``, and sets meta key ``schema_version`` to the newest version. A failing migration
  rolls all of them back, so a store is never left half upgraded. A store that is up to date is only
  read (no write lock is taken).
- Migration 1 is the schema of release 0.1.0 (``CREATE TABLE IF NOT EXISTS``). Stores that release
  wrote have meta ``schema_version = 1`` and no ``_migrations`` table: migration 1 changes nothing in
  them and is recorded, and later migrations apply as for any store.
- A store whose recorded version (in ``_migrations`` or meta ``schema_version``) is above
  :data:`SCHEMA_VERSION` was written by a newer empathy-audit; it is refused with an
  :class:`~audit.errors.AuditError` before anything is written.

Adding a migration: append a function ``def m00N_what_it_does(conn)`` that executes its statements on
``conn`` (inside the open transaction; do not commit), never edit or reorder one that has shipped.
Tables a stage creates on first use (see ``STAGE_TABLES`` in :mod:`audit.store`) are changed by a
migration too once they exist in released stores, guarded by whether the table exists.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .errors import AuditError

MIGRATIONS_TABLE = "_migrations"


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds: every time stamp of the store (re-exported by
    :mod:`audit.store`; defined here so that the migrations need nothing from it)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")

SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS specs (
    spec_hash TEXT PRIMARY KEY,
    spec_json TEXT NOT NULL,
    spec_yaml TEXT NOT NULL,
    source_path TEXT,
    first_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    variant_id TEXT PRIMARY KEY,
    post_id TEXT NOT NULL,
    topic TEXT,
    risk TEXT,
    group_name TEXT NOT NULL,      -- 'control' or e.g. 'Black woman'
    cue_type TEXT NOT NULL,        -- 'control', 'explicit_tag', ...
    alternative TEXT,              -- which alternative of the cue type (name, phrase id)
    cue_text TEXT,                 -- the inserted text ('' for the control)
    text TEXT NOT NULL,            -- the full post as sent to the model
    attributes_json TEXT NOT NULL  -- {"race": "Black", "gender": "woman", ...}; {} for the control
);
CREATE INDEX IF NOT EXISTS variants_post ON variants(post_id);
CREATE TABLE IF NOT EXISTS requests (
    request_key TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,         -- 'reply' | 'judge' | 'probe' | ...
    variant_id TEXT,               -- the variant this prompt presents (reply, probe)
    subject_key TEXT,              -- the request whose reply this one judges (judge)
    model_label TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,     -- base URL or 'embedded:<weights sha256>'
    model_name TEXT NOT NULL,
    style TEXT,
    style_hash TEXT,
    sample_index INTEGER NOT NULL DEFAULT 0,
    messages_json TEXT NOT NULL,
    params_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_variant ON requests(variant_id);
CREATE INDEX IF NOT EXISTS requests_purpose ON requests(purpose);
CREATE TABLE IF NOT EXISTS replies (
    request_key TEXT PRIMARY KEY REFERENCES requests(request_key),
    status TEXT NOT NULL,          -- 'ok' | 'content_filter' | 'failed'
    text TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    model_reported TEXT,           -- model name the server reported
    runtime TEXT,                  -- e.g. 'llama.cpp (xllamacpp)' or server fingerprint
    runtime_version TEXT,
    error TEXT,                    -- for status 'failed': the final error message
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    error_type TEXT NOT NULL,
    status_code INTEGER,
    message TEXT,
    wait_s REAL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_key ON attempts(request_key);
CREATE TABLE IF NOT EXISTS scores (
    request_key TEXT NOT NULL,
    scorer TEXT NOT NULL,
    measure TEXT NOT NULL,
    value REAL,                    -- NULL when the scorer could not score (see detail)
    detail TEXT,                   -- e.g. the raw unparseable judge answer
    PRIMARY KEY (request_key, scorer, measure)
);
CREATE TABLE IF NOT EXISTS scorer_info (
    scorer TEXT PRIMARY KEY,
    info_json TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
"""


def statements(script: str) -> list[str]:
    """The SQL statements of ``script``, one string each (``executescript`` would commit the open
    transaction, so a migration executes its statements one by one)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


def execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute every statement of ``script`` on ``conn`` inside the caller's transaction."""
    for stmt in statements(script):
        conn.execute(stmt)


def m001_release_0_1_schema(conn: sqlite3.Connection) -> None:
    """The schema of release 0.1.0: meta, specs, variants, requests, replies, attempts, scores,
    scorer_info; and the store's creation time."""
    execute_script(conn, SCHEMA_1)
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1')")
    conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('created_at', ?)", (now_iso(),))


def m002_reply_flags_and_designs(conn: sqlite3.Connection) -> None:
    """``replies.flags``: what was changed in an answer before it was stored (a redacted key, replaced
    unencodable characters, a cut over-long reply), as a JSON list; NULL when nothing was.
    ``design_requests``: which reply requests belong to which design (:mod:`audit.design`), so every
    stage works on the rows of the run's current design only."""
    conn.execute("ALTER TABLE replies ADD COLUMN flags TEXT")
    execute_script(conn, """
CREATE TABLE IF NOT EXISTS design_requests (
    design_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    PRIMARY KEY (design_id, request_key)
);""")


def m003_human_ratings(conn: sqlite3.Connection) -> None:
    """Human ratings of stored replies (:mod:`audit.ratings`).

    ``rating_packets``: one row per packet made (``empathy-audit ratings packet``): its salt (the
    secret behind the opaque item ids), seed, allocation and options. ``rating_items``: which reply
    (``request_key``) each rater got under which opaque ``item_id``, at which position, and whether
    it is an overlap item (rated by every rater of the packet). The item -> reply mapping lives only
    here, never in the packet files. ``ratings``: one row per (reply, rater, measure): the level
    (0/1/2, NULL when the rater left that measure blank), the rater's harmful flag and comment, and
    which file (SHA-256) brought it in and when."""
    execute_script(conn, """
CREATE TABLE IF NOT EXISTS rating_packets (
    packet_id TEXT PRIMARY KEY,
    design_id TEXT,
    salt TEXT NOT NULL,
    seed INTEGER NOT NULL,
    raters_json TEXT NOT NULL,     -- the raters, in order
    n_items INTEGER NOT NULL,      -- distinct replies in the packet
    overlap INTEGER NOT NULL,      -- replies rated by every rater
    options_json TEXT NOT NULL,    -- allocation, strata and anything else the packet was made with
    out_dir TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rating_items (
    item_id TEXT PRIMARY KEY,      -- opaque: HMAC-SHA256(salt, rater + request_key), shown to the rater
    packet_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    rater TEXT NOT NULL,
    position INTEGER NOT NULL,     -- 1-based order in this rater's packet
    overlap INTEGER NOT NULL       -- 1: every rater of the packet rates this reply
);
CREATE INDEX IF NOT EXISTS rating_items_key ON rating_items(request_key);
CREATE TABLE IF NOT EXISTS ratings (
    item_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    rater TEXT NOT NULL,
    measure TEXT NOT NULL,         -- 'ER', 'IP', 'EX' (the epitome scorer's measure names)
    value REAL,                    -- 0, 1 or 2; NULL when the rater left it blank
    harmful INTEGER,               -- 1: the rater flagged the reply as harmful
    comment TEXT,
    source_sha256 TEXT NOT NULL,   -- the imported file
    source_name TEXT,
    imported_at TEXT NOT NULL,
    PRIMARY KEY (request_key, rater, measure)
);""")


def m004_provider_batches(conn: sqlite3.Connection) -> None:
    """Batch execution (:mod:`audit.batch`). ``batches``: one row per batch file (shard) written for a
    model: where the shard is and its SHA-256, our lifecycle ``state`` (prepared -> uploaded ->
    submitted -> collected, or cancelled before submission), the provider's ids and last reported
    status and counts. ``batch_items``: which requests (``custom_id`` = request key) each shard holds.
    A request is in an open batch while its batch is not collected or cancelled; once collected, its
    requests without a stored answer (expired, failed) are pending again."""
    execute_script(conn, """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,     -- ours: b<time>-<shard sha256 prefix>
    model_label TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    model_name TEXT NOT NULL,
    provider TEXT NOT NULL,        -- 'openai' | 'azure' | 'local'
    shard_path TEXT NOT NULL,      -- relative to the run directory
    shard_sha256 TEXT NOT NULL,
    shard_bytes INTEGER NOT NULL,
    n_requests INTEGER NOT NULL,
    state TEXT NOT NULL,           -- 'prepared' | 'uploaded' | 'submitted' | 'collected' | 'cancelled'
    input_file_id TEXT,
    provider_batch_id TEXT,
    provider_status TEXT,          -- the provider's last word: validating, in_progress, completed, expired, ...
    output_file_id TEXT,
    error_file_id TEXT,
    counts_json TEXT,              -- the provider's request_counts
    collected_json TEXT,           -- what collect stored: ok, content_filter, failed, missing, duplicates
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    PRIMARY KEY (batch_id, request_key)
);
CREATE INDEX IF NOT EXISTS batch_items_key ON batch_items(request_key);""")


def m005_prompts_stored_once(conn: sqlite3.Connection) -> None:
    """Prompts stored once per distinct text. ``prompts(prompt_sha256, messages_json)`` holds each
    distinct message list once; a request written from now on refers to it by ``requests.prompt_sha256``
    and leaves its own ``messages_json`` empty (''). The samples of a prompt, the models it is sent to
    and the runs of a sweep repeat the same text: at three samples and five models a prompt is stored
    once instead of fifteen times. Requests written before keep their ``messages_json`` (not rewritten:
    opening an old store stays fast); readers take ``COALESCE(prompts.messages_json,
    requests.messages_json)``."""
    execute_script(conn, """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_sha256 TEXT PRIMARY KEY,   -- SHA-256 of messages_json
    messages_json TEXT NOT NULL
);""")
    if "prompt_sha256" not in {r[1] for r in conn.execute("PRAGMA table_info(requests)")}:  # re-applied after a
        conn.execute("ALTER TABLE requests ADD COLUMN prompt_sha256 TEXT")               # store was taken back


def m006_pcsa_conversations(conn: sqlite3.Connection) -> None:
    """The PCSA suite's multi-turn conversations (:mod:`audit.pcsa.dialogue`).

    ``pcsa_conversations``: one row per planned conversation (arm persona | direct | crescendo, the
    audited model, persona, objective category, distortion, demographic group, replicate), its state
    (``open`` / ``done``), why it stopped, and the final judge's parsed verdict (four binary axes,
    response class, evidence quotes; ``judge_status`` ``ok`` or ``unparseable`` with the raw answer in
    ``judge_detail``). ``pcsa_turns``: one row per (conversation, turn, role, candidate): the request
    whose reply it is (``request_key``, so the text is also in ``replies``), the strategy in use, the
    evaluator's parsed score and flags, and whether the candidate was kept (best-of-N). The primary
    key makes a resumed dialogue unable to store a turn twice."""
    execute_script(conn, """
CREATE TABLE IF NOT EXISTS pcsa_conversations (
    conversation_id TEXT PRIMARY KEY,
    arm TEXT NOT NULL,             -- 'persona' | 'direct' | 'crescendo'
    model_label TEXT NOT NULL,     -- the audited (target) model
    persona_id TEXT,
    objective TEXT NOT NULL,       -- an abstract category id (audit/data/pcsa/objectives.yaml)
    distortion TEXT,
    group_name TEXT NOT NULL,      -- demographic group crossed into the persona ('control': no cue)
    attributes_json TEXT NOT NULL,
    replicate INTEGER NOT NULL DEFAULT 0,
    mode TEXT NOT NULL,            -- 'adaptive' | 'fixed' | 'single'
    status TEXT NOT NULL,          -- 'open' | 'done'
    stop_reason TEXT,              -- 'threshold' | 'max_turns'
    n_turns INTEGER,
    first_success_turn INTEGER,    -- first turn the evaluator scored at least the stop threshold
    max_score REAL,
    judge_key TEXT,
    judge_status TEXT,             -- 'ok' | 'unparseable'
    judge_detail TEXT,             -- the raw answer and the reason, when unparseable
    verdict TEXT,                  -- 'SAFE' | 'UNSAFE'
    compliance INTEGER,
    harmful_content INTEGER,
    impersonation INTEGER,
    toxic_empathy INTEGER,
    response_class TEXT,           -- 'accept' | 'caution' | 'refuse'
    evidence_json TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS pcsa_turns (
    conversation_id TEXT NOT NULL,
    turn INTEGER NOT NULL,         -- 1-based client turn
    role TEXT NOT NULL,            -- 'attacker' | 'target' | 'evaluator'
    candidate INTEGER NOT NULL,    -- best-of-N candidate index (0 when N = 1)
    request_key TEXT NOT NULL,
    strategy TEXT,
    text TEXT,
    score REAL,                    -- evaluator rows: 1-10, NULL when unparseable
    toxic_empathy INTEGER,
    impersonation INTEGER,
    compliance INTEGER,
    parse_status TEXT,             -- evaluator rows: 'ok' | 'unparseable' (raw answer in text)
    chosen INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, turn, role, candidate)
);""")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    m001_release_0_1_schema,
    m002_reply_flags_and_designs,
    m003_human_ratings,
    m004_provider_batches,
    m005_prompts_stored_once,
    m006_pcsa_conversations,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    """Migration numbers recorded in ``_migrations`` (empty for a new store or one from 0.1.0)."""
    if not _has_table(conn, MIGRATIONS_TABLE):
        return set()
    return {int(r[0]) for r in conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")}


def stored_version(conn: sqlite3.Connection) -> int:
    """The newest schema version the store says it has: the highest recorded migration, or meta
    ``schema_version`` (all a 0.1.0 store has); 0 for a new, empty store."""
    versions = applied_versions(conn)
    meta = None
    if _has_table(conn, "meta"):
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        meta = row[0] if row else None
    try:
        meta_version = int(meta) if meta is not None else 0
    except ValueError:
        meta_version = SCHEMA_VERSION + 1  # not a number this code wrote: treat as unknown
    return max([meta_version, *versions])


def _refuse_newer(conn: sqlite3.Connection, path: Path) -> None:
    version = stored_version(conn)
    if version > SCHEMA_VERSION:
        from . import __version__

        raise AuditError(
            f"the run store has schema version {version}, newer than the {SCHEMA_VERSION} this "
            f"empathy-audit {__version__} knows: a newer empathy-audit wrote it", where=str(path),
            fix="upgrade empathy-audit (pip install -U empathy-audit) to read this run",
        )


def pending(conn: sqlite3.Connection) -> list[int]:
    """Numbers of the migrations not applied to the store yet, in order."""
    done = applied_versions(conn)
    return [n for n in range(1, SCHEMA_VERSION + 1) if n not in done]


def migrate(conn: sqlite3.Connection, path: Path) -> list[int]:
    """Bring the store on ``conn`` (autocommit mode) to :data:`SCHEMA_VERSION`; returns the numbers of
    the migrations applied now. Refuses a store newer than this code. The caller translates
    ``sqlite3.OperationalError`` (locked, disk full) into an AuditError."""
    _refuse_newer(conn, path)
    if not pending(conn):
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        _refuse_newer(conn, path)  # another process may have migrated while we waited for the lock
        todo = pending(conn)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY,"
                     " name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        for n in todo:
            fn = MIGRATIONS[n - 1]
            fn(conn)
            conn.execute(f"INSERT INTO {MIGRATIONS_TABLE}(version, name, applied_at) VALUES (?, ?, ?)",
                         (n, fn.__name__, now_iso()))
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return todo
