"""Run store migrations: a store written by the release before numbered migrations opens, upgrades and
still reads and renders; a store from a newer release is refused; migrations apply in order, all or
none. The release store is tests/data/store-schema1-release.sqlite (see tests/data/README.md)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from audit import store_migrations
from audit.cli import main as cli_main
from audit.errors import AuditError
from audit.scorers.invariance import invariance_summary
from audit.scorers.probe import probe_summary
from audit.store import SCHEMA_VERSION, RunStore

RELEASE_STORE = Path(__file__).parent / "data" / "store-schema1-release.sqlite"


@pytest.fixture
def release_run(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(RELEASE_STORE, run / "store.sqlite")
    return run


def _rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def test_the_release_store_is_what_the_release_wrote():
    tables = {r[0] for r in _rows(RELEASE_STORE, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert "_migrations" not in tables
    assert {"variants", "requests", "replies", "scores", "probe", "invariance", "results"} <= tables
    assert _rows(RELEASE_STORE, "SELECT value FROM meta WHERE key IN ('schema_version', 'tool_version') ORDER BY key") \
        == [("1",), ("0.1.0",)]
    assert RELEASE_STORE.stat().st_size < 1_000_000


def test_a_release_store_upgrades_and_every_reader_works_on_it(release_run):
    path = release_run / "store.sqlite"
    replies_before = _rows(path, "SELECT r.request_key, r.status, r.text FROM replies r JOIN requests q"
                                 " ON q.request_key = r.request_key WHERE q.purpose = 'reply' ORDER BY r.request_key")
    with RunStore(release_run, create=False) as st:
        assert st.migrated == list(range(1, SCHEMA_VERSION + 1))
        applied = st.migrations()
        assert applied["version"].tolist() == list(range(1, SCHEMA_VERSION + 1))
        assert applied["name"].iloc[0] == "m001_release_0_1_schema"
        assert st.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert st.get_meta("tool_version") == "0.1.0"  # the record of who wrote the run is kept

        variants = st.variants_df()
        assert len(variants) == 45 and {"race", "gender", "group"} <= set(variants.columns)
        assert (variants["cue_type"] == "control").sum() == 5
        replies = st.replies_df()
        assert len(replies) == 45 and (replies["status"] == "ok").all()
        assert sorted(zip(replies["request_key"], replies["status"], replies["reply"])) == replies_before
        scores = st.scores_df(wide=True)
        assert len(scores) == 45 and "epitome.ER" in scores.columns and "length.words" in scores.columns
        assert set(st.scorer_info()) == {"epitome", "length", "refusal", "sentiment"}
        assert st.latest_spec().name == "release-store"
        leak = probe_summary(st)
        assert leak is not None and set(leak["cue_type"]) == {"explicit_tag"}
        inv = invariance_summary(st)
        assert inv is not None and set(inv.table["scorer"]) == {"epitome"} and inv.pairs > 0
        assert len(st.table_df("results")) > 0

    with RunStore(release_run, create=False) as st:
        assert st.migrated == []  # recorded once, never applied again
        assert len(st.migrations()) == SCHEMA_VERSION


def test_report_renders_from_an_upgraded_release_store(release_run, capsys):
    assert cli_main(["report", str(release_run)]) == 0
    data = json.loads((release_run / "results.json").read_text(encoding="utf-8"))
    n_results = _rows(release_run / "store.sqlite", "SELECT COUNT(*) FROM results")[0][0]
    assert n_results > 0 and len(data["results"]) == n_results
    assert "release-store" in (release_run / "report.md").read_text(encoding="utf-8")
    assert (release_run / "report.html").stat().st_size > 0


def _future_by_migration(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO _migrations(version, name, applied_at) VALUES (?, 'm_from_the_future', 'x')",
                     (SCHEMA_VERSION + 1,))


def _future_by_meta(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))


@pytest.mark.parametrize("make_future", [_future_by_migration, _future_by_meta])
def test_a_store_from_a_newer_release_is_refused_with_one_clear_message(tmp_path, capsys, make_future):
    RunStore(tmp_path).close()
    make_future(tmp_path / "store.sqlite")
    before = _rows(tmp_path / "store.sqlite", "SELECT * FROM meta ORDER BY key")
    with pytest.raises(AuditError) as err:
        RunStore(tmp_path, create=False)
    assert f"schema version {SCHEMA_VERSION + 1}" in err.value.what and "newer" in err.value.what
    assert err.value.where == str(tmp_path / "store.sqlite")
    assert "upgrade empathy-audit" in err.value.fix
    assert _rows(tmp_path / "store.sqlite", "SELECT * FROM meta ORDER BY key") == before  # nothing written

    assert cli_main(["report", str(tmp_path)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and "newer empathy-audit wrote it" in err_lines[0]
    assert "upgrade empathy-audit" in err_lines[0].lower()


def test_a_new_store_records_every_migration(tmp_path):
    with RunStore(tmp_path) as st:
        assert st.migrated == list(range(1, SCHEMA_VERSION + 1))
        assert st.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert st.get_meta("created_at")
        assert {"meta", "variants", "requests", "replies", "attempts", "scores", "scorer_info", "_migrations"} \
            <= set(st.table_names())


def test_later_migrations_apply_in_order_all_or_none(release_run, monkeypatch):
    def m002_add_a(conn):
        conn.execute("CREATE TABLE a (x)")

    def m003_breaks(conn):
        conn.execute("CREATE TABLE b (x)")
        raise RuntimeError("migration 3 failed")

    monkeypatch.setattr(store_migrations, "MIGRATIONS", (store_migrations.m001_release_0_1_schema, m002_add_a, m003_breaks))
    monkeypatch.setattr(store_migrations, "SCHEMA_VERSION", 3)
    with pytest.raises(RuntimeError, match="migration 3 failed"):
        RunStore(release_run, create=False)
    path = release_run / "store.sqlite"
    tables = {r[0] for r in _rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert not {"a", "b", "_migrations"} & tables  # rolled back: the store is as the release left it
    assert _rows(path, "SELECT value FROM meta WHERE key='schema_version'") == [("1",)]

    def m003_add_b(conn):
        conn.execute("CREATE TABLE b (x)")

    monkeypatch.setattr(store_migrations, "MIGRATIONS", (store_migrations.m001_release_0_1_schema, m002_add_a, m003_add_b))
    with RunStore(release_run, create=False) as st:
        assert st.migrated == [1, 2, 3]
        assert st.migrations()["name"].tolist() == ["m001_release_0_1_schema", "m002_add_a", "m003_add_b"]
        assert st.get_meta("schema_version") == "3"
        assert {"a", "b"} <= set(st.table_names())


def test_opening_an_up_to_date_store_takes_no_write_lock(tmp_path):
    RunStore(tmp_path).close()
    writer = sqlite3.connect(tmp_path / "store.sqlite", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process is in the middle of a write
    opened = threading.Event()

    def open_store():
        with RunStore(tmp_path, create=False) as st:
            st.get_meta("schema_version")
        opened.set()

    t = threading.Thread(target=open_store, daemon=True)
    t.start()
    try:
        assert opened.wait(5), "opening the store waited for the writer's lock"
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        t.join(35)


def test_migration_3_adds_the_human_rating_tables_to_a_store_of_version_2(release_run):
    """A store that stopped at migration 2 gets m003's empty rating tables and keeps every reply; the
    readers of the ratings work on it."""
    path = release_run / "store.sqlite"
    with RunStore(release_run, create=False):
        pass
    with sqlite3.connect(path) as conn:  # take it back to what migration 2 left
        for t in ("ratings", "rating_items", "rating_packets"):
            conn.execute(f"DROP TABLE {t}")
        conn.execute("DELETE FROM _migrations WHERE version >= 3")
        conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    replies_before = _rows(path, "SELECT request_key, status, text FROM replies ORDER BY request_key")
    with RunStore(release_run, create=False) as st:
        assert st.migrated == list(range(3, SCHEMA_VERSION + 1))
        assert st.migrations()["name"].iloc[2] == "m003_human_ratings"
        assert {"ratings", "rating_items", "rating_packets"} <= set(st.table_names())
        human = st.human_ratings_df()
        assert human.empty and list(human.columns) == ["request_key", "rater", "measure", "value"]
        assert st.rating_items_df().empty and st.ratings_df().empty
    assert _rows(path, "SELECT request_key, status, text FROM replies ORDER BY request_key") == replies_before
    cols = [r[1] for r in _rows(path, "PRAGMA table_info(ratings)")]
    assert cols == ["item_id", "request_key", "rater", "measure", "value", "harmful", "comment", "source_sha256",
                    "source_name", "imported_at"]
    pk = [r[1] for r in sorted(_rows(path, "PRAGMA table_info(ratings)"), key=lambda r: r[5]) if r[5]]
    assert pk == ["request_key", "rater", "measure"]
