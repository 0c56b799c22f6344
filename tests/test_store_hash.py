"""The store's content hash (``RunStore.content_sha256`` / ``store_content_sha256``): what it certifies.

Every value is hashed as its storage class, its binary64 number (a REAL) or its bytes, so two stores
hash alike only when they hold the same rows; the order rows were written in, the file's pages and
its write-ahead log do not matter; read through Python's sqlite3 or through ADBC (the report's way,
in a process of its own) it is the same hash.
"""

from __future__ import annotations

import math
import sqlite3

import pytest

from audit.store import STORE_FILENAME, RunStore, _content_digest, _TableReader, store_content_sha256

ROWS = [  # (k TEXT PRIMARY KEY, t TEXT, i INTEGER, r REAL, b BLOB-affinity, n NUMERIC)
    ("a", "plain", 1, 0.5, b"\x00\x01", 3),
    ("b", "quotes \" and \\ and\nnew\tline\x00nul \u2028 ünï \U0001f600", -2**62, 0.1 + 0.2, "text in a blob column", 2.5),
    ("c", "", None, -0.0, None, "12abc"),
    ("d", None, 7, 1e-310, 4.25, None),
    ("e", "1", 0, 1e16, b"", 10**18),
    ("f", "x", 3, float("inf"), 1, -1.5),
]


def _make(path, rows, *, wal=True, extra_sql=""):
    path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path / STORE_FILENAME, isolation_level=None)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, t TEXT, i INTEGER, r REAL, b, n NUMERIC)")
    conn.execute("CREATE TABLE pairs (x TEXT, y REAL, PRIMARY KEY (x, y))")  # a two-column key: sorted by every column
    conn.execute("CREATE TABLE nullkey (k TEXT PRIMARY KEY, v INTEGER)")  # NULL keys: sorted by every column
    conn.executemany("INSERT INTO t VALUES (?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO pairs VALUES (?,?)", [("p", 2.0), ("p", 1.0), ("o", 3.0)])
    conn.executemany("INSERT INTO nullkey VALUES (?,?)", [(None, 2), ("z", 1), (None, 1)])
    if extra_sql:
        conn.execute(extra_sql)
    return conn


def _both(path):
    conn = sqlite3.connect((path / STORE_FILENAME).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        by_sqlite3 = _content_digest(_TableReader(conn))
    finally:
        conn.close()
    return by_sqlite3, store_content_sha256(path / STORE_FILENAME)


def test_sqlite3_and_adbc_give_the_same_hash_of_messy_values(tmp_path):
    pytest.importorskip("adbc_driver_sqlite")
    _make(tmp_path / "s", ROWS).close()
    a, b = _both(tmp_path / "s")
    assert a == b and len(a) == 64


def test_the_hash_ignores_row_order_and_file_layout(tmp_path):
    c1 = _make(tmp_path / "one", ROWS)
    c1.close()
    c2 = _make(tmp_path / "two", list(reversed(ROWS)), wal=False)
    c2.execute("VACUUM")
    c2.close()
    assert _both(tmp_path / "one")[0] == _both(tmp_path / "two")[0]
    with RunStore(tmp_path / "one", create=False, check=False) as st:  # the method: the same hash
        assert st.content_sha256() == store_content_sha256(tmp_path / "one" / STORE_FILENAME)


@pytest.mark.parametrize("change", [
    "UPDATE t SET r = 0.3 WHERE k = 'b'",                        # one ulp from 0.1 + 0.2
    f"UPDATE t SET r = {math.nextafter(0.5, 1)!r} WHERE k = 'a'",  # one ulp
    "UPDATE t SET i = '1' WHERE k = 'a'",                        # INTEGER affinity keeps 1: no change ...
    "UPDATE t SET t = CAST('plain' AS BLOB) WHERE k = 'a'",      # the same bytes as a blob
    "UPDATE t SET t = '' WHERE k = 'd'",                         # NULL -> empty text
    "UPDATE t SET b = '1' WHERE k = 'f'",                        # integer 1 -> text '1'
    "UPDATE t SET t = 'x ' WHERE k = 'f'",                       # a trailing space
    "UPDATE t SET n = 2.5000000000000004 WHERE k = 'b'",
    "INSERT INTO nullkey VALUES (NULL, 1)",                      # a duplicated row
])
def test_any_change_of_a_value_changes_the_hash(tmp_path, change):
    _make(tmp_path / "base", ROWS).close()
    _make(tmp_path / "changed", ROWS, extra_sql=change).close()
    base, changed = _both(tmp_path / "base")[0], _both(tmp_path / "changed")[0]
    if change.startswith("UPDATE t SET i = '1'"):
        assert changed == base  # the same value stored: affinity made '1' the integer 1
    else:
        assert changed != base


def test_the_inputs_hash_covers_scores_and_statuses_and_agrees_across_readers(tmp_path, monkeypatch):
    """store_inputs_sha256 (what the stored per-group summary is checked against): the same through
    sqlite3, through ADBC in a process of its own (StoreDigests) and in a thread where no process can
    start; a changed score or status changes it, a changed reply text does not; it tells whether a reply
    was withheld by a content filter."""
    import subprocess

    from audit.store import StoreDigests, _inputs_digest

    run = tmp_path / "run"
    with RunStore(run) as st:
        st.put_request(dict(request_key="k1", purpose="reply", variant_id="v", model_label="m", endpoint_id="e",
                            model_name="m", messages=[{"role": "user", "content": "x"}], params={}))
        st.put_reply(dict(request_key="k1", status="ok", text="a reply"))
        st.put_scores([("k1", "s", "m", 0.1 + 0.2, None), ("k1", "s", "n", None, "unparseable")])
    path = run / STORE_FILENAME

    def by_sqlite3():
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            return _inputs_digest(_TableReader(conn))
        finally:
            conn.close()

    first = by_sqlite3()
    assert first[1] is False
    digests = StoreDigests(path, inputs=True, content=True)
    try:
        assert digests.inputs() == first
        assert digests.content() == store_content_sha256(path)
    finally:
        digests.close()

    def no_process(*args, **kwargs):
        raise OSError("no interpreter")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    in_thread = StoreDigests(path, inputs=True, content=False)
    try:
        assert in_thread.proc is None and in_thread.inputs() == first
    finally:
        in_thread.close()
    monkeypatch.undo()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE replies SET text = 'another reply'")
    assert by_sqlite3() == first
    conn.execute("UPDATE scores SET value = 0.3 WHERE measure = 'm'")
    changed = by_sqlite3()
    assert changed != first
    conn.execute("UPDATE replies SET status = 'content_filter'")
    conn.close()
    assert by_sqlite3()[0] != changed[0] and by_sqlite3()[1] is True
