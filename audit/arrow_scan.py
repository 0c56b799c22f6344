"""Columnar reads of large SQLite queries, for the analysis's one pass over per-reply rows.

Why not :mod:`sqlite3`: it hands over every row as a Python tuple of Python objects (a str per
request key, a float per value); at a million replies the pass read 7 million score rows, and making
and unpacking those objects was most of its time (``fetchmany`` alone ~12 s of ~27 s). The Apache
Arrow project's ADBC SQLite driver (``adbc-driver-sqlite``) steps the same SQLite statement in C and
fills Arrow arrays: the same scan is ~1.8 s (measured on ``benchmarks/bench_run_scale.py``'s 1M run).

The driver infers each column's Arrow type from the first rows it reads and refuses a later row of
another type; the queries given here must therefore make every column type-stable in SQL (``ifnull``
with an ``IS NULL`` flag, ``CAST``). :func:`key_codes` turns a column of request keys into the
fixed-width codes :func:`audit.keycodes.key_bytes` makes from Python strings, without a Python object
per key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from .keycodes import key_bytes

#: Rows the driver puts in one Arrow batch (its default, 1,024, costs ~1 s of per-batch overhead on a
#: 7-million-row scan).
BATCH_ROWS = 65_536

def _pair_table() -> np.ndarray:
    """Two hex digits (as the little-endian uint16 of their two bytes) -> their byte value; 0xFFFF where
    either is not one of ``0-9a-f``. One 128 KB table look-up per output byte (3.4x faster than
    decoding digit by digit)."""
    digit = np.full(256, -1, dtype=np.int32)
    digit[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16)
    pair = np.arange(65536)
    first, second = digit[pair & 0xFF], digit[pair >> 8]
    return np.where((first >= 0) & (second >= 0), first * 16 + second, 0xFFFF).astype(np.uint16)


_PAIRS = _pair_table()


def read_only_uri(path: Path) -> str:
    """The SQLite URI that opens ``path`` read-only (percent-encoded, so any file name works)."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def scan(path: Path, sql: str, params: tuple = (), rows: int = 500_000) -> Iterator[pa.Table]:
    """Run ``sql`` (with ``?`` parameters ``params``) on the store at ``path``, read-only, and yield its
    result in tables of about ``rows`` rows, in the statement's order. The connection is this
    function's own (so it may run in a forked process) and is closed when the iteration ends."""
    import adbc_driver_sqlite.dbapi as adbc

    conn = adbc.connect(read_only_uri(path))
    try:
        cur = conn.cursor()
        # wait for a lock as the store's own connections do (RunStore: busy_timeout=30000) instead of
        # failing at once: two connections opening a WAL store that no connection holds open race to
        # rebuild its index, and the loser gets SQLITE_BUSY ("database is locked")
        cur.execute("PRAGMA busy_timeout = 30000")
        cur.fetchall()
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        cur.execute(sql, params if params else None)
        reader = cur.fetch_record_batch()
        held: list[pa.RecordBatch] = []
        n = 0
        for batch in reader:
            held.append(batch)
            n += batch.num_rows
            if n >= rows:
                yield pa.Table.from_batches(held)
                held, n = [], 0
        if held:
            yield pa.Table.from_batches(held)
        cur.close()
    finally:
        conn.close()


def column(table: pa.Table, i: int) -> pa.Array:
    """Column ``i`` of ``table`` as one array (its chunks joined)."""
    col = table.column(i)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def key_codes(keys: pa.Array) -> np.ndarray:
    """Request keys as the fixed-width codes of :func:`audit.keycodes.key_bytes` (``b"\\x01"`` + 32 raw
    bytes for a key of 64 lowercase hex digits, ``b"\\x02"`` + UTF-8 bytes for any other): decoded
    from the Arrow string buffers in numpy when every key is 64 lowercase hex digits, else key by key."""
    n = len(keys)
    if not n:
        return np.array([], dtype="S33")
    if keys.null_count == 0 and (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
        off_type = np.int64 if pa.types.is_large_string(keys.type) else np.int32
        bufs = keys.buffers()
        offsets = np.frombuffer(bufs[1], dtype=off_type, count=n + 1, offset=keys.offset * off_type().itemsize)
        start, stop = int(offsets[0]), int(offsets[-1])
        if bufs[2] is not None and stop - start == 64 * n and np.all(np.diff(offsets) == 64) and start % 2 == 0:
            pairs = np.frombuffer(bufs[2], dtype="<u2", count=stop // 2)[start // 2:]
            val = _PAIRS[pairs]
            if not (val == 0xFFFF).any():
                out = np.empty(n, dtype="S33")
                v = out.view(np.uint8).reshape(n, 33)
                v[:, 0] = 1
                v[:, 1:] = val.reshape(n, 32).astype(np.uint8)
                return out
    return key_bytes(keys.to_pylist())
