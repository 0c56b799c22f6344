"""Advice that is true (issue 28, item 7 and H9).

A healthy store in a read-only place was called "damaged ... restore from a backup"; a full disk said
"the last reply was not stored" when every reply was, whatever was being written. The read-only and the
full-disk conditions are produced here by SQLite and the OS themselves (a read-only connection; a write
that fails with ENOSPC), which also works where the tests run as root."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

import audit.store as store_mod
from audit.cli import main
from synthetic_store import fill_store


@pytest.fixture
def run_dir(tmp_path):
    rd = tmp_path / "run"
    fill_store(rd)
    return rd


def _drop_length_scores(run_dir: Path) -> int:
    from audit.store import RunStore

    with RunStore(run_dir, create=False) as st:
        n = st.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
        st.conn.execute("DELETE FROM scores WHERE scorer = 'length'")
        st.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return n


def test_a_healthy_store_in_a_read_only_place_is_not_called_damaged(run_dir, capsys, monkeypatch):
    _drop_length_scores(run_dir)
    before = (run_dir / "store.sqlite").read_bytes()
    real = sqlite3.connect

    def read_only(path, *a, **k):  # what SQLite does in a read-only folder or mount
        return real(f"file:{path}?mode=ro", *a, uri=True, **k)

    monkeypatch.setattr(store_mod.sqlite3, "connect", read_only)
    assert main(["score", str(run_dir), "--scorers", "length", "--no-probe", "--no-invariance"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "read-only" in err and "not damaged" in err
    assert "backup" not in err and "damaged or not a run store" not in err
    monkeypatch.undo()
    assert (run_dir / "store.sqlite").read_bytes() == before


def test_a_full_disk_during_a_store_write_says_what_is_kept_and_the_rerun_continues(run_dir, capsys, monkeypatch):
    from audit.store import RunStore

    n_before = _drop_length_scores(run_dir)
    real = RunStore.transaction

    def full(self):
        raise store_mod._store_error(sqlite3.OperationalError("database or disk is full"), self.path)

    monkeypatch.setattr(RunStore, "transaction", full)
    assert main(["score", str(run_dir), "--scorers", "length", "--no-probe", "--no-invariance"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk is full" in err and "everything stored before it is kept" in err
    assert "last reply was not stored" not in err
    monkeypatch.setattr(RunStore, "transaction", real)
    assert main(["score", str(run_dir), "--scorers", "length", "--no-probe", "--no-invariance"]) == 0
    with RunStore(run_dir, create=False) as st:
        assert st.conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == n_before


def test_a_full_disk_while_writing_the_report_is_one_line_and_keeps_the_store(run_dir, capsys, monkeypatch):
    import audit.report.build as build

    before = (run_dir / "store.sqlite").read_bytes()

    def no_space(path: Path, text: str) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(build, "_write", no_space)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "disk is full" in err and "Traceback" not in err
    assert (run_dir / "store.sqlite").read_bytes() == before
