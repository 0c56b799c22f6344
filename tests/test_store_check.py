"""Opening a run store checks it: PRAGMA quick_check for small stores, the O(1) structural check above
QUICK_CHECK_MAX_BYTES, and once per process for an unchanged file."""

import pytest

import audit.store as store_mod
from audit.errors import AuditError
from audit.store import RunStore


def _store(tmp_path, rows=3000):
    run = tmp_path / "run"
    with RunStore(run) as st:
        st.conn.execute("CREATE TABLE filler (x TEXT)")
        st.conn.executemany("INSERT INTO filler VALUES (?)", [("y" * 200,) for _ in range(rows)])
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return run


@pytest.fixture
def large(monkeypatch):
    """Every store counts as large; the process-wide memo starts empty."""
    monkeypatch.setattr(store_mod, "QUICK_CHECK_MAX_BYTES", 0)
    monkeypatch.setattr(store_mod, "_CHECKED", set())


def test_a_truncated_large_store_is_refused_by_the_structural_check(tmp_path, large):
    run = _store(tmp_path)
    path = run / "store.sqlite"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AuditError) as e:
        RunStore(run, create=False)
    assert "truncated" in e.value.message and path.read_bytes() == data[: len(data) // 2]


def test_a_large_file_that_is_not_a_database_is_refused(tmp_path, large):
    run = _store(tmp_path)
    path = run / "store.sqlite"
    path.write_bytes(b"\x00" * path.stat().st_size)
    with pytest.raises(AuditError) as e:
        RunStore(run, create=False)
    assert "damaged" in e.value.message or "not a database" in e.value.message


def test_an_unchanged_store_is_checked_once_per_process(tmp_path, large, monkeypatch):
    run = _store(tmp_path)
    calls = []
    real = store_mod._check_structure
    monkeypatch.setattr(store_mod, "_check_structure", lambda p: (calls.append(p), real(p)))
    for _ in range(3):
        RunStore(run, create=False).close()
    assert len(calls) == 1
    with RunStore(run, create=False) as st:  # a write changes the file: checked again at the next open
        st.conn.execute("INSERT INTO filler VALUES ('z')")
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    RunStore(run, create=False).close()
    assert len(calls) == 2


def test_a_small_store_still_gets_quick_check(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "_CHECKED", set())
    run = _store(tmp_path)
    monkeypatch.setattr(store_mod, "_check_structure", lambda p: pytest.fail("structural check on a small store"))
    RunStore(run, create=False).close()
