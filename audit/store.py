"""The run store: one SQLite database per run directory, the single source of truth of a run.

Every stage reads from and writes to it, so any stage can be resumed after a crash or re-run
without redoing the stages before it. The database runs in WAL mode with ``synchronous=NORMAL``:
a committed row survives a killed process (``kill -9``); only a power loss can drop the last few
transactions, never corrupt the file.

Schema and migrations. The schema is versioned: :mod:`audit.store_migrations` holds the numbered
migrations (an ordered list of functions, the way simonw/llm migrates its log database; migration 1
is the schema of release 0.1.0). Opening a store applies the ones it lacks, in order, in one
transaction, and records each as a row of table ``_migrations(version, name, applied_at)``; meta
``schema_version`` says the newest applied (:data:`SCHEMA_VERSION` once opened). A store with a
version this code does not know was written by a newer empathy-audit and is refused with an
AuditError. Opening an up-to-date store writes nothing.

Tables of the schema:

``meta``        key/value facts about the run (tool version, created_at, ...)
``specs``       every spec the run was started with (hash, canonical JSON, YAML text)
``variants``    the counterfactual variant table (one row per variant, control included)
``requests``    every prompt to a model: content-addressed ``request_key`` (see :func:`request_key`),
                purpose (``reply``, ``judge``, ``probe``), messages and decoding parameters
``replies``     one row per finished request: text, finish reason, tokens, latency, identity
``attempts``    every failed attempt (error type, HTTP status, message), for the record
``scores``      long format: (request_key, scorer, measure) -> value
``scorer_info`` identity of each scorer that wrote scores (version, artifact hash, validation)
``rating_packets``, ``rating_items``, ``ratings``  human rating packets, their blinded items and the
                imported ratings (migration 3, :mod:`audit.ratings`)
``batches``, ``batch_items``  batch files sent to a provider's batch service and the requests each
                holds (migration 4, :mod:`audit.batch`)
``prompts``     each distinct message list once (migration 5); ``requests.prompt_sha256`` refers to
                it and ``requests.messages_json`` is '' for requests written since (read messages
                through :meth:`RunStore.replies_df`, :meth:`RunStore.request_rows` or ``table_df('requests')``)
``pcsa_conversations``, ``pcsa_turns``  the PCSA suite's planned conversations with their verdicts, and
                every turn of them (migration 6, :mod:`audit.pcsa`)
``_migrations`` the schema migrations applied to this store (see above)

Tables a stage creates when it first runs (:data:`STAGE_TABLES`, :meth:`RunStore.ensure_stage_tables`),
so that an absent table means "the stage never ran on this run":

``probe``              the inference probe's parsed answers, one row per (request_key, axis)
``invariance_scores``  scores of (variant, reply) pairs of the scorer invariance check
``invariance``         the invariance summary per scorer, measure, cue type and group

and the analysis tables (``results``, ``results_paired``, ``results_intersectional``,
``results_power``, ``analysis_meta``), replaced as a whole with columns from their DataFrames
(:meth:`RunStore.replace_tables`). All SQL of the project lives in this module and in
:mod:`audit.store_migrations`; other modules call the methods of :class:`RunStore`, whose names say
what they return.

API keys are never passed to this module; nothing here can store one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from .errors import AuditError
from .keycodes import KeyFinder
from .memory import release_free_memory
from .store_migrations import SCHEMA_VERSION, execute_script, migrate, now_iso  # noqa: F401 - re-exported

STORE_FILENAME = "store.sqlite"
#: SQLite's page cache per connection, in KiB (an upper bound, filled as pages are read). Request keys
#: are SHA-256 digests, so every insert lands on a random page of each key index; with SQLite's
#: default 2 MB cache a store of a million requests spends its time re-reading and re-writing index
#: pages (measured with benchmarks/bench_store_scale.py: inserting 1M requests and replies had not
#: finished after 35 minutes with 2 MB, while tests shared the machine; 78 s with 256 MB, idle).
CACHE_KIB = 256 * 1024
#: Rows fetched at a time by the reads that grow with the run (replies, scores).
READ_CHUNK = 100_000

# Tables a stage creates when it first runs (not by a migration): a table that is absent means "this
# stage never ran on this store", which the report states. Their columns are changed by a numbered
# migration (see audit/store_migrations.py) like any other table's.
STAGE_TABLES = {
    "probe": """
CREATE TABLE IF NOT EXISTS probe (
    request_key TEXT NOT NULL,
    axis TEXT NOT NULL,
    variant_id TEXT NOT NULL,
    model_label TEXT NOT NULL,
    post_id TEXT,
    group_name TEXT,
    cue_type TEXT,
    intended TEXT,
    inferred TEXT,
    correct INTEGER,
    status TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (request_key, axis)
);
CREATE INDEX IF NOT EXISTS probe_variant ON probe(variant_id);
""",
    "invariance": """
CREATE TABLE IF NOT EXISTS invariance_scores (
    variant_id TEXT NOT NULL,
    reply_id TEXT NOT NULL,        -- request_key of a run reply, or 'ref:<id>' of a reference reply
    scorer TEXT NOT NULL,
    scorer_id TEXT NOT NULL,       -- sha256 of the scorer's identity (new version -> new rows)
    measure TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (variant_id, reply_id, scorer_id, measure)
);
CREATE TABLE IF NOT EXISTS invariance (
    scorer TEXT NOT NULL,
    scorer_id TEXT NOT NULL,
    measure TEXT NOT NULL,
    cue_type TEXT NOT NULL,        -- a cue type
    "group" TEXT NOT NULL,         -- a group, or 'pooled' (all groups of the cue type)
    n_pairs INTEGER,
    n_posts INTEGER,
    control_mean REAL,
    mean_shift REAL,
    ci_low REAL,
    ci_high REAL,
    relative_shift REAL,
    max_abs_shift REAL,
    share_changed REAL,
    p_value REAL,
    p_holm REAL,
    flagged INTEGER,
    reply_source TEXT,             -- 'run', 'reference' or 'run+reference'
    PRIMARY KEY (scorer, measure, cue_type, "group")
);
""",
}



# A request's messages: from table prompts (migration 5), or its own column (requests written before).
MESSAGES_SQL = "COALESCE(p.messages_json, q.messages_json)"
PROMPTS_JOIN = " LEFT JOIN prompts p ON p.prompt_sha256 = q.prompt_sha256"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the byte string hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(
    endpoint_id: str,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    sample_index: int,
) -> str:
    """Content address of a request: SHA-256 over (endpoint, model, messages, parameters, sample).

    Two requests with the same key are the same request; a stored reply is never paid for twice.
    """
    payload = canonical_json(
        {"endpoint": endpoint_id, "model": model, "messages": messages, "params": params, "sample": sample_index}
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()



#: Score tables with at least this many rows (by rowid) are summed in two halves by :meth:`RunStore.score_cells`,
#: the second in a forked process when two cores are free (audit.parallel). The split depends on the
#: table only, never on the cores, so a run's cells are the same numbers on any machine.
SCORE_SCAN_SPLIT_ROWS = 2_000_000


def _merge_score_sums(stats: dict[str, dict[str, np.ndarray]], any_obs: np.ndarray,
                      other: dict[str, dict[str, np.ndarray]], other_any: np.ndarray) -> None:
    """Add the sums of a second part of the scores (``other``) into ``stats`` in place. Sums are of
    ``value - shift`` with each part's own shift s2; moved to the first part's s1 with d = s2 - s1:
    ``sum' = sum2 + n2 d`` and ``sumsq' = sumsq2 + 2 d sum2 + n2 d^2``."""
    any_obs |= other_any
    for name, b in other.items():
        a = stats.get(name)
        if a is None:
            stats[name] = b
            continue
        if np.isnan(b["shift"]):  # the second part had no value of this outcome
            continue
        if np.isnan(a["shift"]):
            a["shift"] = b["shift"]
        d = float(b["shift"]) - float(a["shift"])
        a["sumsq"] += b["sumsq"] + 2.0 * d * b["sum"] + b["n"] * d * d
        a["sum"] += b["sum"] + b["n"] * d
        a["n"] += b["n"]
        np.minimum(a["min"], b["min"], out=a["min"])
        np.maximum(a["max"], b["max"], out=a["max"])
        for c in ("not01", "not012", "pos"):
            a[c] += b[c]


def _dict_codes(texts, is_null, table: dict[Any, int], add: bool = True) -> np.ndarray:
    """Integer codes of an Arrow string column through ``table`` (value -> code; a row whose ``is_null``
    flag is set is the value None). With ``add`` a value not in ``table`` gets the next code, else -1.
    Python sees each distinct value of the column once, not each row."""
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(texts)
    idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    words = enc.dictionary.to_pylist()
    nd = len(words)
    if is_null is not None:  # (word, null) pairs: index + nd for the NULL rows (their text is '')
        idx = idx + nd * is_null.to_numpy(zero_copy_only=False).astype(np.int64)
        words = words + [None] * nd
    lut = np.full(len(words), -1, dtype=np.int32)
    for i in np.flatnonzero(np.bincount(idx, minlength=len(words))):  # the values present, in dictionary order
        w = words[i]
        code = table.get(w)
        if code is None and add:
            code = table[w] = len(table)
        lut[i] = -1 if code is None else code
    return lut[idx] if len(idx) else np.array([], dtype=np.int32)


def _score_cells(path: Path, variants: pd.DataFrame, design: str | None, lo: int | None, hi: int | None,
                 chunk: int) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """:meth:`RunStore.score_cells`'s pass, reading the store at ``path`` through its own connections only."""
    # plain scans of requests, replies and design_requests, read as Arrow columns (audit.arrow_scan)
    # and joined here on sorted keys: SQLite's joins look every key up in a B-tree (~5x slower at
    # 100,000 requests). The scans see committed rows only (their connection is their own).
    from . import arrow_scan as arrow
    rank = variants.groupby(["post_id", "group_name", "cue_type"], sort=True).ngroup()  # ties as SQL's ORDER BY

    def sorted_keys(sql: str, params: tuple = ()) -> np.ndarray:
        parts = [arrow.key_codes(arrow.column(t, 0)) for t in arrow.scan(path, sql, params, chunk)]
        if not parts:
            return np.array([], dtype="S33")
        out = np.concatenate(parts)
        del parts
        out.sort()  # in place: 10M keys are 330 MB, and a sorted copy was another 330
        return out

    def member(keys: np.ndarray, sorted_set: np.ndarray, step: int = 1 << 20) -> np.ndarray:
        finder, out = KeyFinder(sorted_set), np.empty(len(keys), dtype=bool)
        for i in range(0, len(keys), step):  # a million keys at a time: the look-up's temporaries (the
            out[i:i + step] = finder.find(keys[i:i + step])[1]  # stored codes gathered) ~60 MB, not ~600 at 10M
        return out

    # the keys of the design's requests and of the answered replies, each scanned and sorted in a forked
    # process while this one scans the requests (at a million replies ~2.3 s beside ~1.3 s); each set is
    # taken in (through its pipe) only when it is used, one at a time (10M keys: 330 MB a set)
    from .parallel import Beside, parallel_enabled

    split = lo is not None and parallel_enabled(hi - lo + 1)
    design_set = Beside(lambda: sorted_keys("SELECT request_key FROM design_requests WHERE design_id = ?",
                                            (design,)) if design is not None else None, split)
    ok_set = Beside(lambda: sorted_keys("SELECT request_key FROM replies WHERE status IN ('ok', 'content_filter')"),
                    split)
    # codes, not texts, per request: a million requests' variant, style and model strings would be ~200 MB
    vcode_of = {v: i for i, v in enumerate(variants["variant_id"])}
    vrank_arr = rank.to_numpy(dtype=np.int64)
    style_of: dict[Any, int] = {}
    model_of: dict[Any, int] = {}
    key_parts, var_parts, style_parts, model_parts, sample_parts = [], [], [], [], []
    # every column type-stable for the Arrow reader: NULL as a flag beside the text
    for t in arrow.scan(path, "SELECT request_key, CAST(variant_id AS TEXT), ifnull(CAST(style AS TEXT), ''),"
                                   " style IS NULL, ifnull(CAST(model_label AS TEXT), ''), model_label IS NULL,"
                                   " CAST(ifnull(sample_index, 0) AS INTEGER) FROM requests"
                                   " WHERE purpose = 'reply' AND variant_id IS NOT NULL", (), chunk):
        vc = _dict_codes(arrow.column(t, 1), None, vcode_of, add=False)
        keep = vc >= 0  # a request of a variant without a post is left out
        key_parts.append(arrow.key_codes(arrow.column(t, 0))[keep])
        var_parts.append(vc[keep])
        style_parts.append(_dict_codes(arrow.column(t, 2), arrow.column(t, 3), style_of)[keep])
        model_parts.append(_dict_codes(arrow.column(t, 4), arrow.column(t, 5), model_of)[keep])
        sample_parts.append(arrow.column(t, 6).to_numpy().astype(np.int32)[keep])

    def cat(parts: list, dt: Any) -> np.ndarray:  # the parts joined, then freed (the list emptied)
        out = np.concatenate(parts) if parts else np.array([], dtype=dt)
        parts.clear()
        return out

    keys = cat(key_parts, "S33")
    # the key chunks' heap (scattered between what stays) back to the system before the codes are joined:
    # ~125 MB at 1M; at 10M the pass's peak fell from 1.2 to ~1.0 GB here
    release_free_memory()
    var = cat(var_parts, np.int32)  # 32-bit codes: 10M requests x 4 x 40 MB less
    style, model, sample = cat(style_parts, np.int32), cat(model_parts, np.int32), cat(sample_parts, np.int32)
    del key_parts, var_parts, style_parts, model_parts, sample_parts
    release_free_memory()
    design_keys = design_set.result()
    del design_set  # it holds the result too: the set freed with design_keys
    keep = member(keys, design_keys) if design_keys is not None else None
    del design_keys
    if keep is not None and not keep.all():  # one array at a time, each old one freed as its copy is made
        keys = keys[keep]
        var = var[keep]
        style = style[keep]
        model = model[keep]
        sample = sample[keep]
    del keep
    ok = member(keys, ok_set.result())
    del ok_set
    release_free_memory()  # the received key sets and the look-ups' hash tables
    # the order of reply_units_df: post, group, cue type (a rank per variant), style (NULL first, as in
    # SQLite), sample, request key
    styles = list(style_of)
    style_rank = np.empty(len(styles), dtype=np.int64)
    style_rank[sorted(range(len(styles)), key=lambda i: (styles[i] is not None, str(styles[i])))] = \
        np.arange(len(styles))
    first = np.lexsort((keys, sample, style_rank[style] if len(styles) else style, vrank_arr[var]))
    keys, ok = keys[first], ok[first]
    combined = (var[first].astype(np.int64) * max(len(styles), 1) + style[first]) * max(len(model_of), 1) \
        + model[first]
    del var, style, model, sample, first
    unit, uniq = pd.factorize(combined)  # units numbered in order of their first request
    unit = unit.astype(np.int64)
    del combined
    models = list(model_of)
    uvar = uniq // (max(len(styles), 1) * max(len(models), 1))
    ustyle = (uniq // max(len(models), 1)) % max(len(styles), 1)
    umodel = uniq % max(len(models), 1)
    vids = variants["variant_id"].to_numpy(dtype=object)
    uk = list(zip(vids[uvar], ["default" if styles[k] is None else styles[k] for k in ustyle],
                  [models[k] for k in umodel]))
    U = len(uk)
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    finder = KeyFinder(skeys)
    del keys

    def scan_scores(rowids: tuple[int, int] | None):
        """The sums of the scores with rowid in ``rowids`` (all: None) per unit and outcome."""
        any_obs = np.zeros(len(unit), dtype=bool)
        stats: dict[str, dict[str, np.ndarray]] = {}
        outcome_of: dict[Any, int] = {}
        # the outcome's name made by SQLite; the value as a REAL with its kind beside it (0 NULL,
        # 1 a number, 2 anything else), so that the Arrow reader sees one type per column
        sql = ("SELECT request_key, scorer || '.' || measure, CASE WHEN typeof(value) IN ('real', 'integer')"
               " THEN CAST(value AS REAL) ELSE 0.0 END, CASE WHEN value IS NULL THEN 0 WHEN typeof(value)"
               " IN ('real', 'integer') THEN 1 ELSE 2 END FROM scores")
        for t in arrow.scan(path, sql + " WHERE rowid BETWEEN ? AND ?" if rowids else sql, rowids or (),
                            chunk):
            kind = arrow.column(t, 3).to_numpy()
            if (kind == 2).any():
                i = int(np.flatnonzero(kind == 2)[0])
                raise AuditError(
                    f"a stored score is not a number (request {arrow.column(t, 0)[i].as_py()!r}, "
                    f"{arrow.column(t, 1)[i].as_py()!r})", where=str(path),
                    fix="rescore the run (empathy-audit score RUN_DIR --rescore) or delete that score row")
            pos, hit = finder.find(arrow.key_codes(arrow.column(t, 0)))
            req = order[pos] if len(order) else pos
            del pos
            codes = _dict_codes(arrow.column(t, 1), None, outcome_of)  # a code per outcome, not its text
            names = list(outcome_of)
            vals = arrow.column(t, 2).to_numpy()
            use = hit & ok[req] & (kind == 1)
            for j in pd.unique(codes[hit]):
                name = names[j]
                if name not in stats:
                    stats[name] = {"n": np.zeros(U), "sum": np.zeros(U), "sumsq": np.zeros(U),
                                   "min": np.full(U, np.inf), "max": np.full(U, -np.inf),
                                   "not01": np.zeros(U), "not012": np.zeros(U), "pos": np.zeros(U),
                                   "shift": np.array(np.nan)}
            rows = np.flatnonzero(use)
            by = np.argsort(codes[rows], kind="stable")  # the rows of one outcome together, in scan order
            rows = rows[by]
            cut = np.flatnonzero(np.diff(codes[rows])) + 1
            for seg in np.split(rows, cut) if len(rows) else ():
                st = stats[names[codes[seg[0]]]]
                r_, v = req[seg], vals[seg]
                any_obs[r_] = True
                u = unit[r_]
                if np.isnan(st["shift"]):
                    st["shift"] = np.array(float(v.mean()))
                c = v - float(st["shift"])
                st["n"] += np.bincount(u, minlength=U)
                st["sum"] += np.bincount(u, c, minlength=U)
                st["sumsq"] += np.bincount(u, c * c, minlength=U)
                np.minimum.at(st["min"], u, v)
                np.maximum.at(st["max"], u, v)
                is0, is1 = v == 0.0, v == 1.0
                st["not01"] += np.bincount(u, ~(is0 | is1), minlength=U)
                st["not012"] += np.bincount(u, ~(is0 | is1 | (v == 2.0)), minlength=U)
                st["pos"] += np.bincount(u, v > 0, minlength=U)
        return stats, any_obs

    if lo is None or hi - lo + 1 < SCORE_SCAN_SPLIT_ROWS:
        stats, any_obs = scan_scores(None)
    else:  # two halves of the table, the second in a forked process where two cores are free
        mid = lo + (hi - lo) // 2
        release_free_memory()  # the freed key sets' heap back to the system: the forked half starts from what is in use
        with Beside(lambda: scan_scores((mid + 1, hi)), split) as side:
            stats, any_obs = scan_scores((lo, mid))
            _merge_score_sums(stats, any_obs, *side.result())
    units = pd.DataFrame({"variant_id": pd.Series([t[0] for t in uk], dtype=object),
                          "style": pd.Series([t[1] for t in uk], dtype=object),
                          "model_label": pd.Series([t[2] for t in uk], dtype=object)})
    units["n_requests"] = np.bincount(unit, minlength=U).astype(np.int64)
    units["n_any"] = np.bincount(unit, any_obs, minlength=U).astype(np.int64)
    v = variants.drop(columns=[c for c in ("text", "cue_text", "topic", "risk", "alternative", "group_name",
                                           "created_at") if c in variants.columns]).drop_duplicates("variant_id")
    v["variant_id"] = v["variant_id"].astype(object)
    units = units.merge(v, on="variant_id", how="left", sort=False)
    for st in stats.values():
        st["shift"] = float(st["shift"]) if not np.isnan(st["shift"]) else 0.0
    return units, stats


class RunStore:
    """A run directory's SQLite store.

    Use as a context manager or call :meth:`close`. One connection per ``RunStore``; create one
    per thread (SQLite connections are not shared across threads here). Opening migrates the store
    to :data:`SCHEMA_VERSION` (see the module docstring); ``migrated`` lists the migration numbers
    this open applied (``[]`` for a store that was up to date).
    """

    def __init__(self, run_dir: str | Path, create: bool = True, *, check: bool = True):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_FILENAME
        if not self.path.exists() and not create:
            raise AuditError(
                "no run store found", where=str(self.run_dir),
                fix="give the run directory of an audit (it contains store.sqlite), or run the audit first",
            )
        if self.path.exists() and self.path.stat().st_size == 0:
            # SQLite would take a zero-byte file for a new database and a report would replace a good
            # one with an empty one: an existing store that is empty was truncated or never written.
            raise AuditError("the run store is an empty file (0 bytes)", where=str(self.path),
                             fix="restore store.sqlite from a backup, or delete it to start this run afresh "
                                 "(everything it held is gone)")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EROFS):
                raise _read_only_error(self.path) from None
            raise AuditError(f"cannot open the run store: {exc}", where=str(self.path)) from None
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA busy_timeout=30000")
            if check:  # ``check=False``: a second connection to a store this process has just opened
                _check_integrity(self.conn, self.path)  # before WAL mode, which rewrites the file header
            if not create and self.conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None:
                # a valid but empty database where a run store should be: e.g. store.sqlite copied
                # without its write-ahead log (store.sqlite-wal), which held every row
                raise AuditError("the run store holds no tables (is its write-ahead log store.sqlite-wal missing?)",
                                 where=str(self.path),
                                 fix="restore store.sqlite together with store.sqlite-wal from a backup, or delete "
                                     "store.sqlite to start this run afresh")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.conn.execute("PRAGMA foreign_keys=OFF")
            self.migrated = migrate(self.conn, self.path)
        except sqlite3.OperationalError as exc:
            self.conn.close()
            low = str(exc).lower()
            if _read_only(exc) or "unable to open" in low or "locked" in low or "full" in low or "disk" in low:
                if "unable to open" in low and not os.access(self.run_dir, os.W_OK):
                    raise _read_only_error(self.path) from None
                raise _store_error(exc, self.path) from None
            raise _damaged(exc, self.path) from None
        except sqlite3.DatabaseError as exc:  # not a database, malformed, truncated
            self.conn.close()
            raise _damaged(exc, self.path) from None
        except AuditError:
            self.conn.close()
            raise

    def _connect(self) -> None:
        """Open this store's connection again (after :meth:`score_cells` closed it meanwhile), with the
        settings of the first open; the store was checked and migrated then."""
        self.conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        for pragma in ("busy_timeout=30000", "journal_mode=WAL", "synchronous=NORMAL", f"cache_size=-{CACHE_KIB}",
                       "foreign_keys=OFF"):
            self.conn.execute(f"PRAGMA {pragma}")

    # ------------------------------------------------------------------ basics
    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:  # pragma: no cover
            pass

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; rolls back on error. Translates a full disk into an AuditError."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise _store_error(exc, self.path) from None
        try:
            yield self.conn
        except sqlite3.OperationalError as exc:  # disk full, I/O error, locked: SQLite may have rolled back
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise _store_error(exc, self.path) from None
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise _store_error(exc, self.path) from None

    def ensure(self, ddl: str) -> None:
        """Create a stage's own tables (``CREATE TABLE IF NOT EXISTS ...``) in one transaction."""
        try:
            self.conn.executescript("BEGIN IMMEDIATE;\n" + ddl + "\nCOMMIT;")
        except sqlite3.OperationalError as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise _store_error(exc, self.path) from None

    def ensure_stage_tables(self, stage: str) -> None:
        """Create the tables ``stage`` owns (a key of :data:`STAGE_TABLES`) unless they exist."""
        with self.transaction() as c:
            execute_script(c, STAGE_TABLES[stage])

    def query_df(self, sql: str, params: Iterable[Any] = (), *, chunk: int | None = None) -> pd.DataFrame:
        """The rows of ``sql`` as a DataFrame. ``chunk``: fetch that many rows at a time (a big result
        is then never held as Python tuples, ~10x its DataFrame size), with the dtypes one read gives."""
        if chunk is None:
            return pd.read_sql_query(sql, self.conn, params=tuple(params))
        parts = list(pd.read_sql_query(sql, self.conn, params=tuple(params), chunksize=chunk))
        if len(parts) == 1:
            return parts[0]
        return pd.concat(parts, ignore_index=True).infer_objects()  # a chunk of NULLs reads as object

    def table_names(self) -> list[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name").fetchall()
        return [r[0] for r in rows if not r[0].startswith("sqlite_")]

    def table_df(self, name: str) -> pd.DataFrame | None:
        """Every row of the stored table ``name`` (a stage's table, an analysis table, or one to export);
        None when the store has no such table (the stage that writes it never ran)."""
        if name not in self.table_names():
            return None
        if name == "requests":  # each request with its messages (stored once per text in prompts)
            cols = [r[1] for r in self.conn.execute('PRAGMA table_info("requests")')]
            sel = ", ".join(f"{MESSAGES_SQL} AS messages_json" if c == "messages_json" else f"q.{c}" for c in cols)
            return self.query_df(f"SELECT {sel} FROM requests q" + PROMPTS_JOIN)
        return self.query_df(f'SELECT * FROM "{name}"')

    def replace_tables(self, tables: dict[str, pd.DataFrame]) -> None:
        """Replace whole tables (the analysis tables) by DataFrames, all in one transaction.

        Column types follow the dtypes (integer and bool -> INTEGER, float -> REAL, else TEXT); NaN and
        infinities are stored as NULL, lists and dicts as JSON. An empty frame without columns becomes
        a table with one TEXT column ``empty`` and no rows.
        """
        with self.transaction() as c:
            for name, df in tables.items():
                c.execute(f'DROP TABLE IF EXISTS "{name}"')
                if df is None or df.columns.empty:
                    df = pd.DataFrame({"empty": pd.Series(dtype=str)})
                cols = ", ".join(f'"{col}" {_sql_type(df[col])}' for col in df.columns)
                c.execute(f'CREATE TABLE "{name}" ({cols})')
                marks = ",".join("?" * len(df.columns))
                c.executemany(f'INSERT INTO "{name}" VALUES ({marks})',
                              [tuple(_sql_value(v) for v in row) for row in df.itertuples(index=False, name=None)])

    def drop_tables(self, names: Iterable[str]) -> None:
        """Drop whole tables (e.g. analysis tables that no longer describe the run), in one transaction."""
        with self.transaction() as c:
            for name in names:
                c.execute(f'DROP TABLE IF EXISTS "{name}"')

    def content_sha256(self) -> str:
        """SHA-256 of every row of every table of the store, in a canonical order: the same data gives
        the same hash whatever the file's page layout, WAL state or the order rows were written in.
        SQLite's own tables are left out. What is hashed: :func:`store_content_sha256`, here read through
        this connection (the report reads through ADBC, in a process of its own: the same hash)."""
        return _content_digest(_TableReader(self.conn))

    def migrations(self) -> pd.DataFrame:
        """The schema migrations applied to this store: ``version, name, applied_at`` in order."""
        return self.query_df("SELECT version, name, applied_at FROM _migrations ORDER BY version")

    # ------------------------------------------------------------------ meta and spec
    def set_meta(self, key: str, value: Any) -> None:
        v = value if isinstance(value, str) else canonical_json(value)
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, v))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def meta_dict(self) -> dict[str, str]:
        """Every meta key and its stored (text) value."""
        return {r[0]: r[1] for r in self.conn.execute("SELECT key, value FROM meta")}

    def spec_yaml(self, spec_hash: str) -> str:
        """The YAML text of the stored spec with hash ``spec_hash``; '' when there is none."""
        row = self.conn.execute("SELECT spec_yaml FROM specs WHERE spec_hash=?", (spec_hash,)).fetchone()
        return row[0] if row else ""

    def put_spec(self, spec: Any) -> str:
        """Record the spec (an :class:`audit.spec.AuditSpec`); returns its hash. Latest spec wins in meta."""
        h = spec.spec_hash
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO specs(spec_hash, spec_json, spec_yaml, source_path, first_seen)"
                " VALUES (?, ?, ?, ?, ?)",
                (h, spec.canonical_json, spec._source_text or "", str(spec.source_path or ""), now_iso()),
            )
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('spec_hash', ?)", (h,))
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('spec_name', ?)", (spec.name,))
        return h

    def latest_spec(self) -> Any:
        """The spec the run was last started with, as an AuditSpec."""
        from .spec import AuditSpec

        h = self.get_meta("spec_hash")
        if h is None:
            raise AuditError("the run store holds no spec", where=str(self.path), fix="run the audit first")
        row = self.conn.execute("SELECT spec_json, spec_yaml, source_path FROM specs WHERE spec_hash=?", (h,)).fetchone()
        spec = AuditSpec.model_validate(json.loads(row["spec_json"]))
        spec._source_text = row["spec_yaml"]
        spec._source_path = Path(row["source_path"]) if row["source_path"] else None
        return spec

    # ------------------------------------------------------------------ variants
    VARIANT_COLUMNS = (
        "variant_id", "post_id", "topic", "risk", "group_name", "cue_type", "alternative", "cue_text", "text",
    )

    def put_variants(self, df: pd.DataFrame) -> int:
        """Insert variants (DataFrame with VARIANT_COLUMNS plus one column per axis). Returns rows added.

        Axis columns are every column not in VARIANT_COLUMNS (e.g. race, gender, age); they are stored
        as ``attributes_json``. Existing variant ids are left untouched (ids are content hashes).
        """
        axis_cols = [c for c in df.columns if c not in self.VARIANT_COLUMNS and c != "group"]
        rows = []
        for rec in df.to_dict("records"):
            attrs = {c: rec[c] for c in axis_cols if rec.get(c) is not None and not _isnan(rec.get(c))}
            group = rec.get("group_name", rec.get("group"))
            rows.append((
                rec["variant_id"], rec["post_id"], rec.get("topic"), rec.get("risk"), group,
                rec["cue_type"], rec.get("alternative"), rec.get("cue_text") or "", rec["text"],
                canonical_json(attrs),
            ))
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO variants(variant_id, post_id, topic, risk, group_name, cue_type,"
                " alternative, cue_text, text, attributes_json) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            return c.total_changes - before

    def _design_filter(self, column: str, all_designs: bool) -> tuple[str, tuple[Any, ...]]:
        """SQL condition (and its parameter) keeping rows whose ``column`` (a reply request key) belongs
        to the current design; no condition when ``all_designs`` or no design is recorded."""
        design = None if all_designs else self.get_meta("design_id")
        if design is None:
            return "", ()
        return f"{column} IN (SELECT request_key FROM design_requests WHERE design_id = ?)", (design,)

    def variants_df(self, *, all_designs: bool = False, texts: bool = True) -> pd.DataFrame:
        """Variants with the axis attributes expanded into columns and ``group`` = group_name: those the
        current design asks replies for (every stored one when ``all_designs`` or no design is recorded).
        ``texts=False``: without the columns ``text`` and ``cue_text`` (the analysis's pass reads no post)."""
        design = None if all_designs else self.get_meta("design_id")
        # each variant's requests looked up (index requests_variant) until one is the design's: a few
        # look-ups per variant, where a scan of every request took 5-12 s at a million replies
        where = (" WHERE EXISTS (SELECT 1 FROM requests q WHERE q.variant_id = variants.variant_id AND EXISTS"
                 " (SELECT 1 FROM design_requests d WHERE d.design_id = ? AND d.request_key = q.request_key))"
                 if design is not None else "")
        params = (design,) if design is not None else ()
        cols = "*" if texts else ", ".join(
            f'"{r[1]}"' for r in self.conn.execute('PRAGMA table_info("variants")') if r[1] not in ("text", "cue_text"))
        df = self.query_df(f"SELECT {cols} FROM variants" + where + " ORDER BY post_id, group_name, cue_type, variant_id",
                           params)
        return _expand_attributes(df)

    # ------------------------------------------------------------------ requests and replies
    def put_request(self, row: dict[str, Any]) -> None:
        """Record a request before it is sent (idempotent on request_key)."""
        with self.transaction() as c:
            _insert_request(c, row)

    def put_requests(self, rows: Iterable[dict[str, Any]]) -> None:
        """Record requests (idempotent on request_key) in one transaction, with one executemany per
        table: the engine's chunks and bulk loads write thousands of rows per transaction."""
        with self.transaction() as c:
            _insert_requests(c, rows)

    def put_reply(self, row: dict[str, Any], attempts: Iterable[dict[str, Any]] = ()) -> None:
        """Store a finished request's reply (and its failed attempts) in one transaction."""
        self.put_replies([(row, attempts)])

    def put_replies(self, batch: Iterable[tuple[dict[str, Any], Iterable[dict[str, Any]]]]) -> None:
        """Store several (reply row, attempts) in one transaction.

        A stored answer (status ``ok`` or ``content_filter``) is never overwritten by a later
        ``failed`` row for the same request (e.g. from a second process on the same run directory);
        a ``failed`` row is replaced by whatever comes next.
        """
        with self.transaction() as c:
            for row, attempts in batch:
                _insert_attempts(c, row["request_key"], attempts)
                c.execute(
                    "INSERT INTO replies(request_key, status, text, finish_reason, prompt_tokens,"
                    " completion_tokens, latency_s, attempts, model_reported, runtime, runtime_version, error,"
                    " created_at, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT(request_key) DO UPDATE SET status=excluded.status, text=excluded.text,"
                    " finish_reason=excluded.finish_reason, prompt_tokens=excluded.prompt_tokens,"
                    " completion_tokens=excluded.completion_tokens, latency_s=excluded.latency_s,"
                    " attempts=replies.attempts + excluded.attempts, model_reported=excluded.model_reported,"
                    " runtime=excluded.runtime, runtime_version=excluded.runtime_version, error=excluded.error,"
                    " created_at=excluded.created_at, flags=excluded.flags"
                    " WHERE replies.status = 'failed' OR excluded.status != 'failed'",
                    (
                        row["request_key"], row["status"], row.get("text"), row.get("finish_reason"),
                        row.get("prompt_tokens"), row.get("completion_tokens"), row.get("latency_s"),
                        row.get("attempts", 1), row.get("model_reported"), row.get("runtime"),
                        row.get("runtime_version"), row.get("error"), now_iso(),
                        canonical_json(row["flags"]) if row.get("flags") else None,
                    ),
                )

    def put_attempts(self, request_key_: str, attempts: Iterable[dict[str, Any]]) -> None:
        with self.transaction() as c:
            _insert_attempts(c, request_key_, attempts)

    def done_keys(self, purpose: str | None = None, include_failed: bool = False) -> set[str]:
        """Keys of requests with a stored reply (status ok or content_filter; failed ones are retried)."""
        sql = "SELECT r.request_key FROM replies r"
        cond, params = [], []
        if not include_failed:
            cond.append("r.status != 'failed'")
        if purpose:
            sql += " JOIN requests q ON q.request_key = r.request_key"
            cond.append("q.purpose = ?")
            params.append(purpose)
        if cond:
            sql += " WHERE " + " AND ".join(cond)
        return {row[0] for row in self.conn.execute(sql, params)}

    def replies_by_key(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """``{request_key: {request_key, status, text, finish_reason, error}}`` for those of ``keys``
        that have a stored reply (any status)."""
        keys = list(keys)
        res: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):  # SQLite limits the number of bound parameters
            chunk = keys[i:i + 500]
            q = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                f"SELECT request_key, status, text, finish_reason, error FROM replies WHERE request_key IN ({q})", chunk
            ):
                res[r[0]] = dict(r)
        return res

    def replies_df(self, purpose: str = "reply", include_failed: bool = True, *,
                   all_designs: bool = False, texts: bool = True) -> pd.DataFrame:
        """Requests joined with their replies and variants: one row per request of ``purpose``.

        ``texts=False`` leaves out the prompt, reply, post and cue texts (``messages_json``, ``reply``,
        ``post_text``, ``cue_text``), about 3 KB a request: a report of a million replies reads them
        only for the rows it shows (:meth:`texts_by_key`).

        Only the requests of the run's current design (:meth:`current_design`): reply requests that
        belong to it, judge requests about those replies, probe requests about its variants; all
        requests stored when ``all_designs`` or when the store records no design (written before
        designs were recorded).
        """
        column = {"reply": "q.request_key", "judge": "q.subject_key"}.get(purpose, "d.request_key")
        cond, extra = self._design_filter(column, all_designs)
        if cond and column == "d.request_key":  # probe and others: requests about the design's variants
            cond = f"q.variant_id IN (SELECT d.variant_id FROM requests d WHERE {cond})"
        member = f" AND {cond}" if cond else ""
        params = (purpose, *extra)
        df = self.query_df(
            "SELECT q.request_key, q.purpose, q.variant_id, q.subject_key, q.model_label, q.endpoint_id,"
            " q.model_name, q.style, q.style_hash, q.sample_index,"
            + (f" {MESSAGES_SQL} AS messages_json," if texts else "") + " q.params_json,"
            + " r.status," + (" r.text AS reply," if texts else "")
            + " r.finish_reason, r.prompt_tokens, r.completion_tokens, r.latency_s,"
            " r.attempts, r.model_reported, r.runtime, r.runtime_version, r.error, r.created_at AS replied_at,"
            " r.flags, v.post_id, v.topic, v.risk, v.group_name, v.cue_type, v.alternative,"
            + (" v.cue_text, v.text AS post_text," if texts else "") + " v.attributes_json"
            " FROM requests q LEFT JOIN replies r ON r.request_key = q.request_key"
            + (PROMPTS_JOIN if texts else "") +
            " LEFT JOIN variants v ON v.variant_id = q.variant_id"
            " WHERE q.purpose = ?" + member + ("" if include_failed else " AND r.status = 'ok'")
            + " ORDER BY v.post_id, v.group_name, v.cue_type, q.style, q.sample_index, q.request_key",
            params, chunk=READ_CHUNK,
        )
        return _expand_attributes(df)

    def reply_units_df(self) -> pd.DataFrame:
        """What the analysis needs of every reply request of the current design, and no text: one row
        per request (``request_key, variant_id, model_label, style, sample_index, status, post_id,
        group_name, cue_type, topic, risk, alternative``, the variant's axis attributes as columns and
        ``group``), in the order of :meth:`replies_df`. Its memory is a few dozen bytes a request, where
        :meth:`replies_df` holds every prompt and reply text."""
        cond, params = self._design_filter("q.request_key", False)
        df = self.query_df(
            "SELECT q.request_key, q.variant_id, q.model_label, q.style, q.sample_index, r.status, v.post_id,"
            " v.group_name, v.cue_type, v.topic, v.risk, v.alternative, v.attributes_json"
            " FROM requests q LEFT JOIN replies r ON r.request_key = q.request_key"
            " LEFT JOIN variants v ON v.variant_id = q.variant_id"
            " WHERE q.purpose = 'reply'" + (f" AND {cond}" if cond else "")
            + " ORDER BY v.post_id, v.group_name, v.cue_type, q.style, q.sample_index, q.request_key", params)
        # the attributes of each distinct variant, parsed once (a million replies share a few thousand)
        codes, uniques = pd.factorize(df["attributes_json"], use_na_sentinel=True)
        parsed = [json.loads(a) if isinstance(a, str) else {} for a in uniques]
        keys: list[str] = list(dict.fromkeys(k for a in parsed for k in a))
        for k in keys:
            if k not in df.columns:
                col = np.array([a.get(k) for a in parsed] + [None], dtype=object)
                df[k] = col[np.where(codes < 0, len(parsed), codes)]
        df = df.drop(columns=["attributes_json"])
        df["group"] = df["group_name"]
        return df

    def score_matrix(self, keys: Iterable[str], chunk: int = 500_000) -> tuple[list[str], np.ndarray]:
        """Every stored score of the requests ``keys`` as one (len(keys), K) float array: the outcome
        names (``scorer.measure``, sorted, only those with a score row for one of ``keys``) and their
        values, NaN where a request has no score or a NULL one. Read in chunks of ``chunk`` rows, so
        nothing but the array grows with the run."""
        index = pd.Index(list(keys))
        cols: dict[str, np.ndarray] = {}
        for part in pd.read_sql_query("SELECT request_key, scorer, measure, value FROM scores", self.conn,
                                      chunksize=chunk):
            pos = index.get_indexer(part["request_key"])
            part = part[pos >= 0]
            pos = pos[pos >= 0]
            if not len(part):
                continue
            name = (part["scorer"].astype(str) + "." + part["measure"].astype(str)).to_numpy()
            value = pd.to_numeric(part["value"], errors="coerce").to_numpy(dtype=float)
            for n in pd.unique(name):
                sel = name == n
                col = cols.get(n)
                if col is None:
                    col = cols[n] = np.full(len(index), np.nan)
                col[pos[sel]] = value[sel]
        names = sorted(cols)
        out = np.empty((len(index), len(names)))
        for j, n in enumerate(names):
            out[:, j] = cols.pop(n)
        return names, out

    def score_cells(self, chunk: int = 200_000) -> tuple[pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
        """The one pass over per-reply rows that a run's analysis makes: every score of the current
        design's reply requests, summed per *unit* (variant, style, model), streamed in chunks.

        Returns ``(units, stats)``. ``units``: one row per unit, in the order of its first request in
        :meth:`reply_units_df` (requests of a variant without a post are left out, as there): ``variant_id,
        style, model_label, post_id, group, cue_type``, the variant's axis attributes, ``n_requests`` and
        ``n_any`` (requests answered, status ``ok`` or ``content_filter``, with at least one non-NULL
        score). ``stats``: per outcome (``scorer.measure``, every one with a score row for one of the
        requests), arrays over the units of the answered requests' non-NULL values: ``n``, ``shift`` (a
        constant subtracted before summing, for accuracy), ``sum`` and ``sumsq`` of ``value - shift``,
        ``min``, ``max``, ``not01`` / ``not012`` (values outside {0, 1} / {0, 1, 2}) and ``pos`` (values
        above 0).

        Memory: the request keys as fixed-width codes (33 bytes a request) and arrays over the units;
        every table is read ``chunk`` rows at a time as Arrow columns (:mod:`audit.arrow_scan`: no
        Python object per row). A score that is not a number (text in ``scores.value``) is an AuditError.
        Why not ``GROUP BY`` in SQLite: joining each score to its request and sorting for the groups
        took ~2.5x the time of this scan (and a streamed join ~6x), measured on a 100,000-request run.
        """
        if self.conn.in_transaction:  # pragma: no cover - a programming error, not a user's
            raise RuntimeError("score_cells reads committed rows only: call it outside a transaction")
        # what this connection reads first; the scans then run where no sqlite3 connection is open:
        # ADBC's driver links a SQLite library of its own, and two SQLite libraries with the same file open
        # in one process drop each other's POSIX locks when one closes it (sqlite.org/howtocorrupt.html
        # 2.2.1), which another process writing the store could then corrupt. So the scans run in a forked
        # child (whose locks are its own), or, where there is no fork, with this connection closed meanwhile.
        variants = self.variants_df(all_designs=True, texts=False).drop_duplicates("variant_id")  # requests carry the design
        design = self.get_meta("design_id")
        lo = self.conn.execute("SELECT min(rowid) FROM scores").fetchone()[0]  # two queries: a lone min()
        hi = self.conn.execute("SELECT max(rowid) FROM scores").fetchone()[0]  # or max() is read off the B-tree
        job = (lambda: _score_cells(self.path, variants, design, lo, hi, chunk))
        from .parallel import Beside, fork_available

        if fork_available():
            with Beside(job, True) as child:
                return child.result()
        self.conn.close()
        try:
            return job()
        finally:
            self._connect()


    def texts_by_key(self, keys: Iterable[str]) -> pd.DataFrame:
        """The texts :meth:`replies_df` leaves out with ``texts=False``, for ``keys`` only: one row per
        stored request (``request_key, messages_json, reply, post_text, cue_text``), in no set order."""
        keys = list(dict.fromkeys(keys))
        parts = []
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i:i + 500]
            parts.append(self.query_df(
                f"SELECT q.request_key, {MESSAGES_SQL} AS messages_json, r.text AS reply, v.text AS post_text,"
                " v.cue_text FROM requests q LEFT JOIN replies r ON r.request_key = q.request_key" + PROMPTS_JOIN +
                " LEFT JOIN variants v ON v.variant_id = q.variant_id"
                f" WHERE q.request_key IN ({','.join('?' * len(chunk))})", chunk))
        if not parts:
            return pd.DataFrame(columns=["request_key", "messages_json", "reply", "post_text", "cue_text"])
        return pd.concat(parts, ignore_index=True)

    # ------------------------------------------------------------------ scores
    def put_scores(self, rows: Iterable[tuple[str, str, str, float | None, str | None]]) -> int:
        """Insert (request_key, scorer, measure, value, detail) rows; existing ones are kept."""
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO scores(request_key, scorer, measure, value, detail) VALUES (?,?,?,?,?)",
                [(k, s, m, None if v is None or _isnan(v) else float(v), d) for k, s, m, v, d in rows],
            )
            return c.total_changes - before

    def _design_rows(self) -> tuple[str, str, str, tuple[Any, ...]]:
        """(FROM clause, key column, condition, parameters) over the reply requests of the current
        design (every stored request when no design is recorded), driven by an index ordered on the
        request key, so a keyset page (``key > ? ORDER BY key LIMIT n``) reads only its own rows."""
        design = self.get_meta("design_id")
        if design is None:
            return "requests q", "q.request_key", "q.purpose = 'reply'", ()
        return ("design_requests d JOIN requests q ON q.request_key = d.request_key", "d.request_key",
                "d.design_id = ? AND q.purpose = 'reply'", (design,))

    def unscored_page(self, scorer: str, after: str = "", limit: int = 4096) -> list[tuple[str, str, str, str]]:
        """The next ``limit`` answered replies of the design (status ``ok`` or ``content_filter``)
        that ``scorer`` has not scored, in request-key order after ``after``: ``(request_key, status,
        post text, reply text)``, '' for a missing text. The scoring stage streams the run through
        this, so its memory does not grow with the number of requests."""
        src, key, cond, params = self._design_rows()
        rows = self.conn.execute(
            f"SELECT {key}, r.status, v.text, r.text FROM {src} JOIN replies r ON r.request_key = {key}"
            " LEFT JOIN variants v ON v.variant_id = q.variant_id"
            f" WHERE {cond} AND {key} > ? AND r.status IN ('ok', 'content_filter')"
            f" AND NOT EXISTS (SELECT 1 FROM scores s WHERE s.request_key = {key} AND s.scorer = ?)"
            f" ORDER BY {key} LIMIT ?", (*params, after, scorer, int(limit))).fetchall()
        return [(r[0], r[1], r[2] if isinstance(r[2], str) else "", r[3] if isinstance(r[3], str) else "")
                for r in rows]

    def scoring_counts(self, scorer: str) -> dict[str, int]:
        """For the design's reply requests: ``replies`` (all), ``answered`` (status ok), ``scorable``
        (ok or content_filter), ``scored`` (scorable ones ``scorer`` has scored), ``refusals`` (replies
        whose ``scorer.refusal`` is 1)."""
        src, key, cond, params = self._design_rows()
        r = self.conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM(r.status = 'ok'), 0),"
            " COALESCE(SUM(r.status IN ('ok', 'content_filter')), 0),"
            " COALESCE(SUM(r.status IN ('ok', 'content_filter') AND EXISTS (SELECT 1 FROM scores s"
            f"  WHERE s.request_key = {key} AND s.scorer = ?)), 0),"
            " COALESCE(SUM(EXISTS (SELECT 1 FROM scores s"
            f"  WHERE s.request_key = {key} AND s.scorer = ? AND s.measure = 'refusal' AND s.value = 1)), 0)"
            f" FROM {src} LEFT JOIN replies r ON r.request_key = {key} WHERE {cond}",
            (scorer, scorer, *params)).fetchone()
        return dict(zip(("replies", "answered", "scorable", "scored", "refusals"), (int(x) for x in r)))

    def scored_keys(self, scorer: str) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT request_key FROM scores WHERE scorer=?", (scorer,))}

    def scores_df(self, wide: bool = False, *, all_designs: bool = False) -> pd.DataFrame:
        """Scores of the current design's replies (all when ``all_designs`` or no design is recorded) in
        long form, or wide (one column per ``scorer.measure``) when ``wide``."""
        cond, params = self._design_filter("request_key", all_designs)
        df = self.query_df("SELECT request_key, scorer, measure, value, detail FROM scores"
                           + (f" WHERE {cond}" if cond else ""), params, chunk=READ_CHUNK)
        if not wide:
            return df
        df["col"] = df["scorer"] + "." + df["measure"]
        return df.pivot_table(index="request_key", columns="col", values="value", aggfunc="first").reset_index()

    def put_scorer_info(self, scorer: str, info: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO scorer_info(scorer, info_json, stored_at) VALUES (?,?,?)",
                (scorer, canonical_json(info), now_iso()),
            )

    def scorer_info(self) -> dict[str, dict[str, Any]]:
        return {r[0]: json.loads(r[1]) for r in self.conn.execute("SELECT scorer, info_json FROM scorer_info")}

    # ------------------------------------------------------------------ questions the stages ask
    def set_meta_many(self, facts: dict[str, Any], *, keep_existing: Iterable[str] = ()) -> None:
        """Write several meta facts in one transaction; keys in ``keep_existing`` are written only once
        (the first value stays, e.g. ``first_run_at``)."""
        once = set(keep_existing)
        with self.transaction() as c:
            for k, v in facts.items():
                verb = "INSERT OR IGNORE" if k in once else "INSERT OR REPLACE"
                c.execute(f"{verb} INTO meta(key, value) VALUES (?, ?)", (k, v if isinstance(v, str) else canonical_json(v)))

    def delete_meta(self, key: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM meta WHERE key=?", (key,))

    def answered_among(self, keys: list[str]) -> set[str]:
        """Those of ``keys`` whose request has a stored answer (status ok or content_filter)."""
        out: set[str] = set()
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[i:i + 500]
            q = ",".join("?" * len(part))
            out.update(r[0] for r in self.conn.execute(
                f"SELECT request_key FROM replies WHERE status != 'failed' AND request_key IN ({q})", part))
        return out

    def count_scores(self, *, non_null: bool = False, scorer: str | None = None) -> int:
        """Stored scores (all, or only those with a value; of one scorer or of all)."""
        cond = [c for c, on in (("value IS NOT NULL", non_null), ("scorer = ?", scorer is not None)) if on]
        sql = "SELECT COUNT(*) FROM scores" + (" WHERE " + " AND ".join(cond) if cond else "")
        return int(self.conn.execute(sql, (scorer,) if scorer is not None else ()).fetchone()[0])

    def count_rows(self, table: str) -> int:
        """Rows of a stored table (0 when the table does not exist)."""
        if table not in self.table_names():
            return 0
        return int(self.conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0])

    def reply_status_counts(self) -> dict[str, int]:
        """Reply requests of the current design by reply status (``ok``, ``content_filter``, ``failed``,
        ``unanswered`` for a request without a stored reply)."""
        cond, params = self._design_filter("q.request_key", False)
        rows = self.conn.execute(
            "SELECT COALESCE(r.status, 'unanswered'), COUNT(*) FROM requests q"
            " LEFT JOIN replies r ON r.request_key = q.request_key WHERE q.purpose = 'reply'"
            + (f" AND {cond}" if cond else "") + " GROUP BY 1 ORDER BY 1", params).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def analysis_inputs_lines(self, chunk: int = 200_000) -> Iterator[str]:
        """What the analysis reads, as text lines in chunks (each chunk one string): every score
        (``request_key,scorer,measure,value``) and every reply's status (``request_key,status``), each
        table in its stored order, so a hash over them tells whether the analysis is up to date. The
        lines are made by SQLite and the tables scanned without a join or sort: a million replies' 7
        million scores hash in seconds (a sorted join and a Python tuple per row took ~1 minute)."""
        for sql in ("SELECT 's,' || request_key || ',' || scorer || ',' || measure || ',' || quote(value) FROM scores",
                    "SELECT 'r,' || request_key || ',' || ifnull(status, '') FROM replies"):
            cur = self.conn.execute(sql)
            while True:
                rows = cur.fetchmany(chunk)
                if not rows:
                    break
                yield "\n".join([r[0] for r in rows]) + "\n"

    def score_values(self, scorer: str, measure: str) -> dict[str, float | None]:
        """request_key -> value of one scorer's measure."""
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT request_key, value FROM scores WHERE scorer=? AND measure=?", (scorer, measure))}

    # ------------------------------------------------------------------ designs (audit/design.py)
    def current_design(self) -> tuple[str | None, dict[str, Any] | None]:
        """(design id, design) the run is bound to; (None, None) for a store that records none."""
        did = self.get_meta("design_id")
        return (did, json.loads(self.get_meta("design", "{}"))) if did is not None else (None, None)

    def bind_design(self, design_id: str, design: dict[str, Any]) -> None:
        """Make ``design`` the run's current design (the rows every stage works on)."""
        self.set_meta_many({"design_id": design_id, "design": design})

    def put_design_requests(self, design_id: str, keys: Iterable[str]) -> None:
        """Record that the reply requests ``keys`` belong to the design ``design_id``."""
        with self.transaction() as c:
            c.executemany("INSERT OR IGNORE INTO design_requests(design_id, request_key) VALUES (?, ?)",
                          [(design_id, k) for k in keys])

    def has_control_variants(self) -> bool:
        return self.conn.execute("SELECT 1 FROM variants WHERE cue_type='control' LIMIT 1").fetchone() is not None


    # ------------------------------------------------------------------ the inference probe (table probe)
    PROBE_COLUMNS = ("request_key", "axis", "variant_id", "model_label", "post_id", "group_name", "cue_type",
                     "intended", "inferred", "correct", "status", "detail")

    def probe_answered_keys(self) -> set[str]:
        """Request keys of probe answers already parsed into table ``probe`` (empty if it never ran)."""
        if "probe" not in self.table_names():
            return set()
        return {r[0] for r in self.conn.execute("SELECT DISTINCT request_key FROM probe")}

    def put_probe_answers(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Insert parsed probe answers, tuples in the order of :attr:`PROBE_COLUMNS`; an answer already
        stored for (request_key, axis) is kept. Returns the rows added."""
        self.ensure_stage_tables("probe")
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(f"INSERT OR IGNORE INTO probe({', '.join(self.PROBE_COLUMNS)})"
                          f" VALUES ({','.join('?' * len(self.PROBE_COLUMNS))})", list(rows))
            return c.total_changes - before

    # ------------------------------------------------------------------ scorer invariance (tables invariance*)
    def invariance_scores_df(self, scorer_id: str) -> pd.DataFrame:
        """Stored pair scores of one scorer identity: ``variant_id, reply_id, measure, value``."""
        if "invariance_scores" not in self.table_names():
            return pd.DataFrame(columns=["variant_id", "reply_id", "measure", "value"])
        return self.query_df(
            "SELECT variant_id, reply_id, measure, value FROM invariance_scores WHERE scorer_id=?", (scorer_id,))

    def put_invariance_scores(self, rows: Iterable[tuple[str, str, str, str, str, float | None]]) -> int:
        """Insert (variant_id, reply_id, scorer, scorer_id, measure, value) pair scores; stored ones are
        kept. Returns the rows added."""
        self.ensure_stage_tables("invariance")
        with self.transaction() as c:
            before = c.total_changes
            c.executemany("INSERT OR IGNORE INTO invariance_scores(variant_id, reply_id, scorer, scorer_id, measure,"
                          " value) VALUES (?,?,?,?,?,?)", list(rows))
            return c.total_changes - before

    def replace_invariance_summary(self, scorer: str, table: pd.DataFrame) -> None:
        """Replace the invariance summary rows of ``scorer`` by ``table`` (columns of table
        ``invariance``; NaN stored as NULL) in one transaction."""
        self.ensure_stage_tables("invariance")
        cols = list(table.columns)
        rows = [tuple(None if v is None or _isnan(v) else v for v in rec) for rec in table.itertuples(index=False)]
        with self.transaction() as c:
            c.execute("DELETE FROM invariance WHERE scorer=?", (scorer,))
            c.executemany(f"INSERT INTO invariance({', '.join(chr(34) + x + chr(34) for x in cols)})"
                          f" VALUES ({','.join('?' * len(cols))})", rows)

    def invariance_pair_count(self) -> int:
        """Distinct (variant, reply) pairs with a stored invariance score, over all scorers."""
        if "invariance_scores" not in self.table_names():
            return 0
        return int(self.conn.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT variant_id, reply_id FROM invariance_scores)").fetchone()[0])


    # ------------------------------------------------------------------ batch execution (audit/batch.py, migration 4)
    BATCH_COLUMNS = ("batch_id", "model_label", "endpoint_id", "model_name", "provider", "shard_path", "shard_sha256",
                     "shard_bytes", "n_requests", "state", "input_file_id", "provider_batch_id", "provider_status",
                     "output_file_id", "error_file_id", "counts_json", "collected_json", "created_at", "updated_at")
    OPEN_BATCH_STATES = ("prepared", "uploaded", "submitted")

    def pending_batch_requests(self, endpoint_id: str, model_name: str,
                               max_attempts: int | None = None) -> Iterator[tuple[str, str, str]]:
        """``(request_key, messages_json, params_json)`` of the requests to (endpoint, model) that have
        no stored answer (none, or ``failed``) and are in no open batch, in the order they were recorded;
        with ``max_attempts``, only those collected from fewer batches than that."""
        marks = ",".join("?" * len(self.OPEN_BATCH_STATES))
        tries = ("" if max_attempts is None else
                 " AND (SELECT COUNT(*) FROM batch_items i2 JOIN batches b2 ON b2.batch_id = i2.batch_id"
                 f"  WHERE i2.request_key = q.request_key AND b2.state = 'collected') < {int(max_attempts)}")
        yield from (tuple(r) for r in self.conn.execute(
            f"SELECT q.request_key, {MESSAGES_SQL}, q.params_json FROM requests q" + PROMPTS_JOIN +
            " LEFT JOIN replies r ON r.request_key = q.request_key"
            " WHERE q.endpoint_id = ? AND q.model_name = ? AND (r.status IS NULL OR r.status = 'failed')"
            " AND NOT EXISTS (SELECT 1 FROM batch_items i JOIN batches b ON b.batch_id = i.batch_id"
            f"  WHERE i.request_key = q.request_key AND b.state IN ({marks}))" + tries +
            " ORDER BY q.rowid", (endpoint_id, model_name, *self.OPEN_BATCH_STATES)))

    def put_batch(self, row: dict[str, Any], keys: Iterable[str]) -> None:
        """Record a batch file (keys of :attr:`BATCH_COLUMNS`) and the request keys it holds, in one transaction."""
        at = now_iso()
        row = {**row, "created_at": row.get("created_at") or at, "updated_at": at}
        cols = [c for c in self.BATCH_COLUMNS if c in row]
        with self.transaction() as c:
            c.execute(f"INSERT INTO batches({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                      [row[k] for k in cols])
            c.executemany("INSERT INTO batch_items(batch_id, request_key) VALUES (?, ?)",
                          [(row["batch_id"], k) for k in keys])

    def update_batch(self, batch_id: str, **fields: Any) -> None:
        """Set columns of one batch row (names of :attr:`BATCH_COLUMNS`; dicts stored as JSON)."""
        bad = [k for k in fields if k not in self.BATCH_COLUMNS or k == "batch_id"]
        if bad:
            raise ValueError(f"not batch columns: {bad}")
        fields["updated_at"] = now_iso()
        vals = [canonical_json(v) if isinstance(v, dict) else v for v in fields.values()]
        with self.transaction() as c:
            c.execute(f"UPDATE batches SET {', '.join(f'{k} = ?' for k in fields)} WHERE batch_id = ?",
                      (*vals, batch_id))

    def batches(self, *, states: Iterable[str] | None = None, model_label: str | None = None) -> list[dict[str, Any]]:
        """Batch rows (dicts), oldest first; only those in ``states`` / of ``model_label`` when given."""
        cond, params = [], []
        if states is not None:
            st = list(states)
            cond.append(f"state IN ({','.join('?' * len(st))})")
            params += st
        if model_label is not None:
            cond.append("model_label = ?")
            params.append(model_label)
        sql = ("SELECT * FROM batches" + (" WHERE " + " AND ".join(cond) if cond else "")
               + " ORDER BY created_at, batch_id")
        return [dict(r) for r in self.conn.execute(sql, params)]

    def batch_keys(self, batch_id: str) -> list[str]:
        """The request keys of one batch, in shard order."""
        return [r[0] for r in self.conn.execute(
            "SELECT request_key FROM batch_items WHERE batch_id = ? ORDER BY rowid", (batch_id,))]

    def batch_answer_counts(self, batch_id: str) -> dict[str, int]:
        """The requests of one batch by stored reply status (``unanswered`` for none)."""
        return {r[0]: int(r[1]) for r in self.conn.execute(
            "SELECT COALESCE(r.status, 'unanswered'), COUNT(*) FROM batch_items i"
            " LEFT JOIN replies r ON r.request_key = i.request_key WHERE i.batch_id = ? GROUP BY 1", (batch_id,))}

    def usage_of(self, keys: list[str]) -> list[dict[str, Any]]:
        """The reported usage of those of ``keys`` that have an answer: dicts ``request_key, status,
        prompt_tokens, completion_tokens``."""
        out: list[dict[str, Any]] = []
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            out += [dict(request_key=r[0], status=r[1], prompt_tokens=r[2], completion_tokens=r[3])
                    for r in self.conn.execute("SELECT request_key, status, prompt_tokens, completion_tokens FROM "
                                               f"replies WHERE request_key IN ({','.join('?' * len(part))})", part)]
        return out

    def token_totals(self) -> list[dict[str, Any]]:
        """Tokens the servers reported (usage fields of every stored answer, failed ones included), per
        model label, purpose and whether the request went through a batch service: dicts ``model_label,
        model_name, purpose, batched, requests, prompt_tokens, completion_tokens``."""
        sql = ("SELECT q.model_label, q.model_name, q.purpose,"
               " EXISTS (SELECT 1 FROM batch_items i WHERE i.request_key = q.request_key) AS batched,"
               " COUNT(*), SUM(COALESCE(r.prompt_tokens, 0)), SUM(COALESCE(r.completion_tokens, 0))"
               " FROM replies r JOIN requests q ON q.request_key = r.request_key"
               " GROUP BY q.model_label, q.model_name, q.purpose, batched ORDER BY q.model_label, q.purpose, batched")
        try:
            rows = self.conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # a store without batch tables (before their migration)
            rows = [(*r[:3], 0, *r[3:]) for r in self.conn.execute(
                "SELECT q.model_label, q.model_name, q.purpose, COUNT(*), SUM(COALESCE(r.prompt_tokens, 0)),"
                " SUM(COALESCE(r.completion_tokens, 0)) FROM replies r JOIN requests q ON q.request_key = r.request_key"
                " GROUP BY q.model_label, q.model_name, q.purpose")]
        return [dict(model_label=r[0], model_name=r[1], purpose=r[2], batched=bool(r[3]), requests=int(r[4]),
                     prompt_tokens=int(r[5] or 0), completion_tokens=int(r[6] or 0)) for r in rows]

    def batch_token_totals(self) -> dict[str, tuple[int, int]]:
        """batch_id -> (prompt tokens, completion tokens) of the stored answers of its requests."""
        return {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in self.conn.execute(
            "SELECT i.batch_id, SUM(r.prompt_tokens), SUM(r.completion_tokens) FROM batch_items i"
            " JOIN replies r ON r.request_key = i.request_key WHERE r.status != 'failed' GROUP BY i.batch_id")}

    def batches_of_keys(self, keys: Iterable[str], states: Iterable[str]) -> dict[str, str]:
        """request_key -> batch_id for those of ``keys`` in a batch in ``states`` (the newest such batch)."""
        keys, st = list(keys), list(states)
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            for r in self.conn.execute(
                    f"SELECT i.request_key, i.batch_id FROM batch_items i JOIN batches b ON b.batch_id = i.batch_id"
                    f" WHERE i.request_key IN ({','.join('?' * len(part))}) AND b.state IN ({','.join('?' * len(st))})"
                    " ORDER BY b.created_at", (*part, *st)):
                out[r[0]] = r[1]
        return out

    def request_rows(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """request_key -> the stored request (``messages`` and ``params`` decoded) for those of ``keys`` stored."""
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            for r in self.conn.execute(
                    "SELECT q.request_key, q.purpose, q.model_label, q.endpoint_id, q.model_name,"
                    f" {MESSAGES_SQL} AS messages_json, q.params_json FROM requests q" + PROMPTS_JOIN +
                    f" WHERE q.request_key IN ({','.join('?' * len(part))})", part):
                d = dict(r)
                d["messages"], d["params"] = json.loads(d.pop("messages_json")), json.loads(d.pop("params_json"))
                out[d["request_key"]] = d
        return out

    # ------------------------------------------------------------------ human ratings (audit/ratings/, migration 3)
    RATING_MEASURES = ("ER", "IP", "EX")

    def put_rating_packet(self, packet: dict[str, Any], items: Iterable[tuple[str, str, str, int, int]]) -> None:
        """Record a rating packet (keys of table ``rating_packets``) and its items, tuples
        ``(item_id, request_key, rater, position, overlap)``, in one transaction."""
        with self.transaction() as c:
            c.execute(
                "INSERT INTO rating_packets(packet_id, design_id, salt, seed, raters_json, n_items, overlap,"
                " options_json, out_dir, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (packet["packet_id"], packet.get("design_id"), packet["salt"], int(packet["seed"]),
                 canonical_json(list(packet["raters"])), int(packet["n_items"]), int(packet["overlap"]),
                 canonical_json(packet.get("options", {})), packet.get("out_dir"), packet.get("created_at") or now_iso()))
            c.executemany("INSERT INTO rating_items(item_id, packet_id, request_key, rater, position, overlap)"
                          " VALUES (?,?,?,?,?,?)",
                          [(i, packet["packet_id"], k, r, int(p), int(o)) for i, k, r, p, o in items])

    def rating_packets_df(self) -> pd.DataFrame:
        """Every rating packet made for this run (without the salt), oldest first."""
        return self.query_df("SELECT packet_id, design_id, seed, raters_json, n_items, overlap, options_json, out_dir,"
                             " created_at FROM rating_packets ORDER BY created_at, packet_id")

    def rating_items_df(self) -> pd.DataFrame:
        """``item_id, packet_id, request_key, rater, position, overlap`` of every packet item."""
        return self.query_df("SELECT item_id, packet_id, request_key, rater, position, overlap FROM rating_items"
                             " ORDER BY packet_id, rater, position")

    def ratings_df(self) -> pd.DataFrame:
        """Every stored rating row (blank levels included as NULL): ``item_id, request_key, rater,
        measure, value, harmful, comment, source_sha256, source_name, imported_at``."""
        return self.query_df("SELECT item_id, request_key, rater, measure, value, harmful, comment, source_sha256,"
                             " source_name, imported_at FROM ratings ORDER BY request_key, rater, measure")

    def human_ratings_df(self) -> pd.DataFrame:
        """The human ratings as the statistics read them: ``request_key, rater, measure, value``, one
        row per level a rater gave (blank levels left out); ``value`` is a float 0, 1 or 2."""
        df = self.query_df("SELECT request_key, rater, measure, value FROM ratings WHERE value IS NOT NULL"
                           " ORDER BY request_key, rater, measure")
        df["value"] = df["value"].astype(float)
        return df

    def put_ratings(self, rows: Iterable[tuple[Any, ...]], *, replace: bool = False) -> int:
        """Insert rating rows ``(item_id, request_key, rater, measure, value, harmful, comment,
        source_sha256, source_name)`` in one transaction; a stored (request_key, rater, measure) is kept
        unless ``replace``. Returns the rows written. The caller checks for conflicts first
        (:func:`audit.ratings.importing.import_ratings`)."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        at = now_iso()
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(f"{verb} INTO ratings(item_id, request_key, rater, measure, value, harmful, comment,"
                          " source_sha256, source_name, imported_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                          [(*r, at) for r in rows])
            return c.total_changes - before

    # ------------------------------------------------------------------ PCSA conversations (migration 4)
    PCSA_VERDICT_FIELDS = ("judge_key", "judge_status", "judge_detail", "verdict", "compliance", "harmful_content",
                           "impersonation", "toxic_empathy", "response_class", "evidence_json")
    PCSA_STATE_FIELDS = ("status", "stop_reason", "n_turns", "first_success_turn", "max_score")

    def put_pcsa_conversations(self, rows: Iterable[dict[str, Any]]) -> int:
        """Plan conversations (keys of table ``pcsa_conversations``); a stored conversation is kept as
        it is. Returns the number of new ones."""
        at = now_iso()
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO pcsa_conversations(conversation_id, arm, model_label, persona_id, objective,"
                " distortion, group_name, attributes_json, replicate, mode, status, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,'open',?)",
                [(r["conversation_id"], r["arm"], r["model_label"], r.get("persona_id"), r["objective"],
                  r.get("distortion"), r["group_name"], canonical_json(r.get("attributes") or {}),
                  int(r.get("replicate", 0)), r["mode"], at) for r in rows])
            return c.total_changes - before

    def update_pcsa_conversations(self, updates: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Set state or verdict fields (:data:`PCSA_STATE_FIELDS`, :data:`PCSA_VERDICT_FIELDS`) of
        conversations, ``(conversation_id, {field: value})``, in one transaction."""
        allowed = set(self.PCSA_STATE_FIELDS) | set(self.PCSA_VERDICT_FIELDS)
        at = now_iso()
        with self.transaction() as c:
            for cid, fields in updates:
                bad = set(fields) - allowed
                if bad:
                    raise ValueError(f"not a field of pcsa_conversations that may be updated: {sorted(bad)}")
                cols = sorted(fields)
                c.execute(f"UPDATE pcsa_conversations SET {', '.join(f'{k}=?' for k in cols)}, updated_at=?"
                          " WHERE conversation_id=?", [_sql_value(fields[k]) for k in cols] + [at, cid])

    def put_pcsa_turns(self, rows: Iterable[dict[str, Any]]) -> int:
        """Store turn rows (columns of ``pcsa_turns``); a (conversation, turn, role, candidate) is stored
        once (a replayed turn after a resume is the same row and is not written again)."""
        cols = ("conversation_id", "turn", "role", "candidate", "request_key", "strategy", "text", "score",
                "toxic_empathy", "impersonation", "compliance", "parse_status", "chosen")
        with self.transaction() as c:
            before = c.total_changes
            c.executemany(f"INSERT OR IGNORE INTO pcsa_turns({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                          [tuple(_sql_value(r.get(k, 0 if k == "chosen" else None)) for k in cols) for r in rows])
            return c.total_changes - before

    def pcsa_conversations_df(self) -> pd.DataFrame:
        """Every stored conversation (all designs), oldest first."""
        return self.query_df("SELECT * FROM pcsa_conversations ORDER BY created_at, conversation_id")

    def pcsa_turns_df(self) -> pd.DataFrame:
        """Every stored turn row, in dialogue order."""
        return self.query_df("SELECT * FROM pcsa_turns ORDER BY conversation_id, turn, role, candidate")



# ---------------------------------------------------------------------- helpers


def _affinity(declared: str | None) -> str:
    """SQLite's column affinity of a declared type (https://sqlite.org/datatype3.html, 3.1)."""
    d = (declared or "").upper()
    if "INT" in d:
        return "integer"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "text"
    if "BLOB" in d or not d:
        return "blob"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "real"
    return "numeric"


def store_content_sha256(path: str | Path) -> str:
    """:meth:`RunStore.content_sha256` of the store file ``path``, read through ADBC (a million-reply
    store in ~27 s of CPU, where Python's sqlite3 makes an object of every value: ~55 s), or through sqlite3
    when ADBC is not installed. The same hash either way.

    What is hashed, for each table by name: the line ``table NAME COL,COL,... ROWS``, then per column
    ``NAME T R L D`` (hex SHA-256 digests) over its values in the table's canonical row order (every
    column ascending, as ``ORDER BY`` all columns; a table whose first column is its one-column
    primary key, without NULL, in that key's order, the same order):

    - T: the storage classes (SQLite's ``typeof``: ``null``, ``integer``, ``real``, ``text``, ``blob``,
      a prefix-free code) written one after the other;
    - R: the REAL values as IEEE-754 binary64, little-endian, 0.0 for a value of another class (``-``
      for a column of TEXT affinity, which holds no number);
    - L and D: the bytes of every other value (a text's UTF-8, a blob's bytes, an integer's decimal
      digits; none for NULL and REAL), L their lengths as 64-bit little-endian integers, D the bytes
      one after the other.

    Class, number and bytes together are the value exactly: two stores hash alike only if they hold
    the same rows. (Until this version the hash was of each row written as a JSON line by Python: the
    same certainty, another number, ~2.5x the time.)
    """
    return _digest_of(path, _content_digest)


def _digest_of(path: str | Path, digest: Any) -> Any:
    """``digest(reader)`` of the store file ``path``: read through ADBC where installed, else sqlite3 (the
    same values, so the same hash)."""
    try:
        import adbc_driver_sqlite.dbapi as adbc  # noqa: F401
    except ImportError:
        conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return digest(_TableReader(conn))
        finally:
            conn.close()
    return digest(_ArrowTableReader(path))


class _TableReader:
    """The value columns :func:`store_content_sha256` hashes, read through Python's sqlite3."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def tables(self) -> list[tuple[str, list[tuple[str, str]], list[str]]]:
        """(name, [(column, affinity)], primary-key columns) of every table but SQLite's own, by name."""
        names = [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name").fetchall()
            if not r[0].startswith("sqlite_")]
        out = []
        for t in names:
            info = list(self.conn.execute(f'PRAGMA table_info("{t}")'))
            out.append((t, [(r[1], _affinity(r[2])) for r in info], [r[1] for r in info if r[5]]))
        return out

    def query(self, t: str, cols: list[tuple[str, str]], pk: list[str], order: str | None = None) -> str:
        """The SELECT of ``cols`` (``[(column, affinity)]``) of ``t`` as classes, REAL values and bytes, in
        the table's canonical order (``order``: in that order instead, e.g. ``rowid``)."""
        exprs = []
        for c, aff in cols:
            q = '"' + c.replace('"', '""') + '"'
            exprs.append(f"typeof({q})")
            if aff != "text":
                exprs.append(f"CASE WHEN typeof({q}) = 'real' THEN {q} ELSE 0.0 END")
                exprs.append(f"CASE WHEN typeof({q}) = 'real' THEN X'' ELSE ifnull(CAST({q} AS BLOB), X'') END")
            else:
                exprs.append(f"ifnull(CAST({q} AS BLOB), X'')")
        if order is None:
            quoted = ['"' + c.replace('"', '""') + '"' for c, _ in cols]
            order = ", ".join(quoted)
            if len(pk) == 1 and pk[0] == cols[0][0] and self.first_column_has_no_null(t, quoted[0]):
                order = quoted[0]  # unique and not NULL: the same order as every column's, without sorting rows
        return f'SELECT {", ".join(exprs)} FROM "{t}" ORDER BY {order}'

    def first_column_has_no_null(self, t: str, q: str) -> bool:
        return self.conn.execute(f'SELECT 1 FROM "{t}" WHERE {q} IS NULL LIMIT 1').fetchone() is None

    def chunks(self, sql: str, kinds: list[str]) -> Iterator[list[Any]]:
        """The rows of ``sql`` in chunks: per column (``kinds``: its affinity is ``text`` or not), its classes
        (bytes), REAL values (float64; None for a text column), byte lengths (int64) and bytes."""
        cur = self.conn.execute(sql)
        while rows := cur.fetchmany(20_000):
            cols = list(zip(*rows))
            out, i = [], 0
            for kind in kinds:
                types = "".join(cols[i])
                i += 1
                reals = None
                if kind != "text":
                    reals = np.asarray(cols[i], dtype="<f8")
                    i += 1
                data = cols[i]
                i += 1
                lens = np.fromiter((len(b) for b in data), dtype="<i8", count=len(data))
                out.append((types.encode("ascii"), reals, lens, b"".join(data)))
            yield out


class _ArrowTableReader(_TableReader):
    """The same columns read through ADBC's SQLite driver into Arrow arrays (no Python object per
    value). Its own SQLite library: used where no sqlite3 connection of this process holds the file
    (:func:`audit.report.data` runs it in a process of its own), as two SQLite libraries in one
    process release each other's POSIX locks."""

    def __init__(self, path: str | Path):
        import adbc_driver_sqlite.dbapi as adbc

        self.adbc = adbc.connect(Path(path).resolve().as_uri() + "?mode=ro")
        self.conn = _AdbcConn(self.adbc)

    def chunks(self, sql: str, kinds: list[str]) -> Iterator[list[Any]]:
        cur = self.adbc.cursor()
        try:
            # the driver's default, 1,024 rows a batch, costs ~1 s of overhead per 7 million rows; 16,384 rows
            # of a million-reply store's replies are ~35 MB
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": "16384"})
            cur.execute(sql)
            for batch in cur.fetch_record_batch():
                out, i = [], 0
                for kind in kinds:
                    types = _arrow_bytes(batch.column(i))[1]
                    i += 1
                    reals = None
                    if kind != "text":
                        reals = _arrow_doubles(batch.column(i))
                        i += 1
                    lens, data = _arrow_bytes(batch.column(i))
                    i += 1
                    out.append((types, reals, lens, data))
                yield out
        finally:
            cur.close()

    def close(self) -> None:
        self.adbc.close()


class _AdbcConn:
    """The few statements :class:`_TableReader` runs, through an ADBC connection."""

    def __init__(self, adbc: Any):
        self.adbc = adbc

    def execute(self, sql: str) -> "_Rows":
        cur = self.adbc.cursor()
        try:
            cur.execute(sql)
            return _Rows(cur.fetchall())
        finally:
            cur.close()


class _Rows:
    def __init__(self, rows: list[tuple]):
        self.rows = rows

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.rows)


def _arrow_bytes(arr: Any) -> tuple[np.ndarray, bytes]:
    """(lengths as int64, the bytes one after the other) of a string or binary Arrow array without NULLs."""
    import pyarrow as pa

    if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type):
        odt = np.int64
    else:
        odt = np.int32
    if len(arr) == 0:
        return np.zeros(0, dtype="<i8"), b""
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=odt)[arr.offset:arr.offset + len(arr) + 1]
    data = bufs[2]
    raw = b"" if data is None else memoryview(data)[int(offsets[0]):int(offsets[-1])].tobytes()
    return np.diff(offsets).astype("<i8"), raw


def _arrow_doubles(arr: Any) -> np.ndarray:
    if len(arr) == 0:
        return np.zeros(0, dtype="<f8")
    return np.frombuffer(arr.buffers()[1], dtype="<f8")[arr.offset:arr.offset + len(arr)]


def _column_digests(reader: _TableReader, sql: str, cols: list[tuple[str, str]],
                    seen: Callable[[int, bytes], None] | None = None) -> tuple[int, list[str]]:
    """(rows, one line ``T R L D`` of hex digests per column) of the rows of ``sql`` (:meth:`_TableReader.query`);
    ``seen(i, data)``: shown each chunk of column ``i``'s bytes."""
    kinds = [aff if aff == "text" else "number" for _, aff in cols]
    streams = [[hashlib.sha256() for _ in range(4)] for _ in cols]
    rows = 0
    for chunk in reader.chunks(sql, kinds):
        for i, ((types, reals, lens, data), hs) in enumerate(zip(chunk, streams)):
            hs[0].update(types)
            if reals is not None:
                hs[1].update(np.ascontiguousarray(reals, dtype="<f8").tobytes())
            hs[2].update(np.ascontiguousarray(lens, dtype="<i8").tobytes())
            hs[3].update(data)
            if seen is not None:
                seen(i, data)
        rows += len(chunk[0][2]) if chunk else 0
    return rows, [f"{hs[0].hexdigest()} {hs[1].hexdigest() if aff != 'text' else '-'} {hs[2].hexdigest()} "
                  f"{hs[3].hexdigest()}" for (_, aff), hs in zip(cols, streams)]


def _content_digest(reader: _TableReader) -> str:
    """The hash :func:`store_content_sha256` describes, of the tables ``reader`` reads."""
    try:
        h = hashlib.sha256()
        for t, cols, pk in reader.tables():
            rows, lines = _column_digests(reader, reader.query(t, cols, pk), cols)
            h.update(f"table {t} {','.join(c for c, _ in cols)} {rows}\n".encode("utf-8"))
            for (c, _), line in zip(cols, lines):
                h.update(f"{c} {line}\n".encode("utf-8"))
        return h.hexdigest()
    finally:
        if isinstance(reader, _ArrowTableReader):
            reader.close()


#: What the analysis and the per-group summary are made of (:func:`store_inputs_sha256`).
INPUT_COLUMNS = (("scores", ("request_key", "scorer", "measure", "value")), ("replies", ("request_key", "status")))


def _inputs_digest(reader: _TableReader) -> tuple[str, bool]:
    """(:func:`store_inputs_sha256`, whether a reply has status ``content_filter``) through ``reader``."""
    try:
        h = hashlib.sha256(b"inputs 1\n")
        filtered = [False]

        def seen(i: int, data: bytes) -> None:  # the status column: statuses one after the other
            filtered[0] = filtered[0] or (i == 1 and b"content_filter" in data)

        tables = {t: dict(cols) for t, cols, _ in reader.tables()}
        for t, names in INPUT_COLUMNS:
            cols = [(c, tables.get(t, {}).get(c, "text")) for c in names]
            if t not in tables or any(c not in tables[t] for c in names):
                h.update(f"{t} absent\n".encode())
                continue
            rows, lines = _column_digests(reader, reader.query(t, cols, [], order="rowid"), cols,
                                          seen if t == "replies" else None)
            h.update(f"{t} {rows}\n".encode())
            for c, line in zip(names, lines):
                h.update(f"{c} {line}\n".encode())
        return h.hexdigest(), filtered[0]
    finally:
        if isinstance(reader, _ArrowTableReader):
            reader.close()


def store_inputs_sha256(path: str | Path) -> tuple[str, bool]:
    """SHA-256 of what the analysis reads of the store file ``path``: every score's request key, scorer,
    measure and value and every reply's request key and status (as :func:`store_content_sha256` hashes
    values, each table in rowid order), and whether a reply has status ``content_filter``. Through
    ADBC where installed (a million replies in ~7 s; run it in a process without sqlite3 connections
    to the file: :class:`StoreDigests`), else sqlite3; the same hash."""
    return _digest_of(path, _inputs_digest)


class StoreDigests:
    """:func:`store_inputs_sha256` (``inputs``) then :func:`store_content_sha256` (``content``) of a run's
    store, computed in a process of its own: on another core, without the caller's GIL, and reading
    through ADBC's SQLite library, which must not share a process with sqlite3 connections to the file
    (two SQLite libraries in one process release each other's POSIX locks). Where no process can be
    started: the same hashes through sqlite3, in a thread. ``inputs()`` and ``content()`` wait for
    theirs."""

    def __init__(self, path: str | Path, *, inputs: bool = True, content: bool = True):
        import subprocess
        import sys
        import tempfile

        self.path = Path(path)
        self.want = (inputs, content)
        self._inputs: tuple[str, bool] | None = None
        self._content: str | None = None
        self.error: BaseException | None = None
        self.proc: Any = None
        self.thread: Any = None
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty library cannot stall it
        root = str(Path(__file__).resolve().parents[1])  # this copy of the package, first on the path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from audit.store import _digests_main; _digests_main()", str(self.path),
                 "1" if inputs else "0", "1" if content else "0"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        except OSError:  # no interpreter to start (an embedded Python)
            import threading

            self.thread = threading.Thread(target=self._here, name="store-digests", daemon=True)
            self.thread.start()

    def _here(self) -> None:
        try:
            conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
            try:
                if self.want[0]:
                    self._inputs = _inputs_digest(_TableReader(conn))
                if self.want[1]:
                    self._content = _content_digest(_TableReader(conn))
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = exc

    def _read(self, what: str) -> str:
        line = self.proc.stdout.readline().strip()
        kind, _, value = line.partition(" ")
        if kind != what:
            self.proc.wait()
            self.stderr.seek(0)
            err = self.stderr.read().decode("utf-8", "replace").strip().splitlines()
            raise AuditError("the store's hashes could not be computed: "
                             + (value if kind == "error" else (err[-1] if err else "their process ended")),
                             where=str(self.path))
        return value

    def _wait_thread(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error

    def inputs(self) -> tuple[str, bool]:
        if self._inputs is None:
            if self.thread is not None:
                self._wait_thread()
            else:
                digest, _, filtered = self._read("inputs").partition(" ")
                self._inputs = (digest, filtered == "1")
        return self._inputs

    def content(self) -> str:
        if self._content is None:
            if self.thread is not None:
                self._wait_thread()
            else:
                if self.want[0]:
                    self.inputs()
                self._content = self._read("content")
        return self._content or ""

    def close(self) -> None:
        """Stop and wait (what was not asked for yet is not wanted)."""
        if self.thread is not None:
            self.thread.join()
        elif self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
        self.stderr.close()


def _digests_main() -> None:
    """The process :class:`StoreDigests` starts: ``PATH 0|1 0|1``; prints ``inputs HEX 0|1`` and
    ``content HEX`` (those asked for), or ``error MESSAGE``."""
    import sys

    path, inputs, content = Path(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
    try:
        if inputs:
            digest, filtered = store_inputs_sha256(path)
            print("inputs", digest, "1" if filtered else "0", flush=True)
        if content:
            print("content", store_content_sha256(path), flush=True)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        print("error", f"{type(exc).__name__}: {exc}".replace("\n", " "), flush=True)


def _sql_type(s: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_integer_dtype(s):
        return "INTEGER"
    if pd.api.types.is_float_dtype(s):
        return "REAL"
    values = s.dropna()
    if len(values) and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                           for v in values):
        return "REAL"  # numbers in an object column (e.g. after to_numpy over mixed columns) stay numbers
    return "TEXT"


def _sql_value(v: Any) -> Any:
    """A DataFrame cell as SQLite stores it: NULL for missing and non-finite, JSON for lists and dicts."""
    if v is None:
        return None
    if isinstance(v, (np.bool_, bool)):
        return int(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v, default=str)
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v) if not isinstance(v, (int, str)) else v


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and v != v


def _expand_attributes(df: pd.DataFrame) -> pd.DataFrame:
    if "attributes_json" not in df.columns:
        return df
    attrs = [json.loads(a) if isinstance(a, str) else {} for a in df["attributes_json"]]
    keys: list[str] = []
    for a in attrs:
        for k in a:
            if k not in keys:
                keys.append(k)
    for k in keys:
        if k not in df.columns:
            df[k] = [a.get(k) for a in attrs]
    df = df.drop(columns=["attributes_json"])
    if "group_name" in df.columns:
        df["group"] = df["group_name"]
    return df


def _insert_request(c: sqlite3.Connection, row: dict[str, Any]) -> None:
    _insert_requests(c, [row])


def _insert_requests(c: sqlite3.Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Requests and their prompts (each distinct message list once, table ``prompts``)."""
    at = now_iso()
    prompts: dict[str, str] = {}
    reqs = []
    for row in rows:
        mj = canonical_json(row["messages"])
        ph = hashlib.sha256(mj.encode("utf-8")).hexdigest()
        prompts[ph] = mj
        reqs.append((
            row["request_key"], row.get("purpose", "reply"), row.get("variant_id"), row.get("subject_key"),
            row["model_label"], row["endpoint_id"], row["model_name"], row.get("style"), row.get("style_hash"),
            int(row.get("sample_index", 0)), "", ph, canonical_json(row["params"]), at,
        ))
    c.executemany("INSERT OR IGNORE INTO prompts(prompt_sha256, messages_json) VALUES (?, ?)", prompts.items())
    c.executemany(
        "INSERT OR IGNORE INTO requests(request_key, purpose, variant_id, subject_key, model_label, endpoint_id,"
        " model_name, style, style_hash, sample_index, messages_json, prompt_sha256, params_json, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", reqs)


def _insert_attempts(c: sqlite3.Connection, key: str, attempts: Iterable[dict[str, Any]]) -> None:
    for a in attempts:
        c.execute(
            "INSERT INTO attempts(request_key, attempt, error_type, status_code, message, wait_s, at)"
            " VALUES (?,?,?,?,?,?,?)",
            (key, a["attempt"], a["error_type"], a.get("status_code"), a.get("message"), a.get("wait_s"),
             a.get("at") or now_iso()),
        )


#: Stores larger than this get the structural check of :func:`_check_integrity` instead of ``PRAGMA
#: quick_check``, which reads every page: on the 4.3 GB store of a million replies it took 10-20 s on
#: every open, longer than the analysis it guarded.
QUICK_CHECK_MAX_BYTES = 512 * 2 ** 20
_CHECKED: set[tuple] = set()  # (path, size, mtime, inode, WAL size, WAL mtime) of stores checked in this process


def _file_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    wal = Path(str(path) + "-wal")
    ws = wal.stat() if wal.exists() else None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino,
            ws.st_size if ws else None, ws.st_mtime_ns if ws else None)


def _check_structure(path: Path) -> None:
    """O(1) check of a large store: the SQLite header, and a file at least as long as the page count the
    header records (a truncated copy, the common damage, is caught; a page overwritten in the middle is
    caught by SQLite when it is read, as a 'malformed' error, which :func:`_damaged` explains)."""
    with open(path, "rb") as fh:
        head = fh.read(100)
    if len(head) < 100 or head[:16] != b"SQLite format 3\x00":
        raise _damaged(sqlite3.DatabaseError("file is not a database"), path)
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    valid = head[24:28] == head[92:96]  # the header's page count is current (SQLite >= 3.7.0 files)
    size = path.stat().st_size
    if page < 512 or (valid and size < pages * page) or (not valid and size % page):
        raise _damaged(sqlite3.DatabaseError(
            f"file is truncated: {size:,} bytes where the header records {pages:,} pages of {page:,} bytes"), path)


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged store, or a SQLite file that is not a run store, before anything is written.

    ``PRAGMA quick_check`` reads every page (O(size): about a second per few hundred MB) and finds
    truncated or overwritten files that would otherwise fail half-way through a stage. Above
    :data:`QUICK_CHECK_MAX_BYTES` the structural check (:func:`_check_structure`) is made instead, and a
    store this process has already checked, unchanged since (size, time, inode, its WAL), is not checked
    again (``analyze RUN_DIR`` opens its store three times).
    """
    key = _file_key(path)
    if key is not None and key in _CHECKED:
        return
    if key is not None and key[1] > QUICK_CHECK_MAX_BYTES:
        _check_structure(path)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the schema pages read and parsed
    else:
        bad = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
        if bad != ["ok"]:
            raise _damaged(sqlite3.DatabaseError("; ".join(map(str, bad))), path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and "meta" not in tables:
        raise AuditError(
            "this SQLite file is not an empathy-audit run store (it has no meta table)", where=str(path),
            fix="give the run directory of an audit, or move this file away; it is left as it is")
    if key is not None:
        _CHECKED.add(key)


def _damaged(exc: sqlite3.Error, path: Path) -> AuditError:
    return AuditError(
        f"the run store is damaged or not a run store ({exc})", where=str(path),
        fix="restore store.sqlite from a backup, or run the audit into a new --out; the damaged file is left "
            "as it is")


def _read_only(exc: sqlite3.Error) -> bool:
    m = str(exc).lower()
    return "readonly" in m or "read-only" in m or "read only" in m


def _read_only_error(path: Path) -> AuditError:
    """A healthy store that cannot be written here (a read-only folder, file or mount): not damage."""
    return AuditError(
        "the run store cannot be written here (read-only folder, file or file system); the store itself is "
        "not damaged and nothing in it was changed", where=str(path),
        fix="make the run directory writable, or copy it somewhere writable (cp -r) and run the command there")


def _store_error(exc: sqlite3.Error, path: Path) -> AuditError:
    msg = str(exc)
    if _read_only(exc):
        return _read_only_error(path)
    if "full" in msg.lower() or "disk" in msg.lower():
        # SQLite rolls a failed write back as a whole, whether the disk filled before the write began or
        # while it was committed: what was stored before it is all there, and the write can be redone.
        return AuditError(
            "the disk is full: the write under way was rolled back as a whole; everything stored before it is "
            "kept", where=str(path),
            fix="free disk space and run the same command again: it resumes from what is stored",
        )
    if "locked" in msg.lower():
        return AuditError(
            "the run store is locked by another process", where=str(path),
            fix="wait for the other empathy-audit process on this run directory to finish",
        )
    return AuditError(f"run store error: {msg}", where=str(path))
