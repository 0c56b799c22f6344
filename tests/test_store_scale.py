"""The store at scale: prompts stored once per distinct text (migration 5), old rows still read, and
requests written in batches of thousands per transaction."""

from __future__ import annotations

import json
import sqlite3

from audit.store import RunStore, request_key
from audit.store_migrations import MIGRATIONS, now_iso


def _rows(n_prompts: int, samples: int, models: int) -> list[dict]:
    rows = []
    for i in range(n_prompts):
        messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": f"post {i} " + "x" * 500}]
        for m in range(models):
            for s in range(samples):
                params = {"temperature": 0.7, "seed": s}
                rows.append({"request_key": request_key(f"http://m{m}/v1", "m", messages, params, s), "purpose": "reply",
                             "variant_id": f"v{i}", "model_label": f"m{m}", "endpoint_id": f"http://m{m}/v1",
                             "model_name": "m", "sample_index": s, "messages": messages, "params": params})
    return rows


def test_each_distinct_prompt_is_stored_once_and_every_request_reads_its_messages(tmp_path):
    rows = _rows(20, samples=3, models=5)
    with RunStore(tmp_path) as st:
        st.put_requests(rows)
        st.put_requests(rows)                              # idempotent
        assert st.count_rows("requests") == 300 and st.count_rows("prompts") == 20
        assert st.conn.execute("SELECT COUNT(*) FROM requests WHERE messages_json != ''").fetchone()[0] == 0
        got = st.request_rows([r["request_key"] for r in rows])
        assert all(got[r["request_key"]]["messages"] == r["messages"] for r in rows)
        df = st.table_df("requests")
        assert sorted(json.loads(m)[1]["content"].split()[1] for m in df["messages_json"].unique()) == \
            sorted(str(i) for i in range(20))
        stored = st.replies_df("reply", all_designs=True)
        assert stored["messages_json"].map(lambda m: json.loads(m)[1]["content"]).str.startswith("post ").all()


def test_requests_written_before_migration_5_keep_their_messages(tmp_path):
    path = tmp_path / "store.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    for n, fn in enumerate(MIGRATIONS[:4], 1):
        fn(conn)
        conn.execute("INSERT INTO _migrations VALUES (?, ?, ?)", (n, fn.__name__, now_iso()))
    conn.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    old = [{"role": "user", "content": "an old prompt"}]
    conn.execute("INSERT INTO requests(request_key, purpose, model_label, endpoint_id, model_name, sample_index,"
                 " messages_json, params_json, created_at) VALUES ('k-old','reply','m','e','m',0,?,'{}',?)",
                 (json.dumps(old), now_iso()))
    conn.close()
    with RunStore(tmp_path) as st:
        assert 5 in st.migrated
        st.put_requests(_rows(1, samples=1, models=1))
        got = st.request_rows(["k-old"])
        assert got["k-old"]["messages"] == old
        df = st.table_df("requests").set_index("request_key")
        assert json.loads(df.loc["k-old", "messages_json"]) == old and df["messages_json"].ne("").all()
        assert list(st.pending_batch_requests("e", "m"))[0][1] == json.dumps(old)


def test_chunked_reads_give_the_frames_one_read_gives(tmp_path, monkeypatch):
    """Replies and scores are fetched 100,000 rows at a time; chunks that are all NULL in a column must
    not change its dtype or values (tested with chunks of 7 rows)."""
    import pandas as pd

    import audit.store as store_module

    rows = _rows(6, samples=2, models=2)
    with RunStore(tmp_path) as st:
        st.put_requests(rows)
        reps = [({"request_key": r["request_key"], "status": "ok" if i % 9 else "failed",
                  "text": f"reply {i}" if i % 9 else None, "finish_reason": "stop",
                  "prompt_tokens": None if i < 10 else 12, "error": "HTTP 500" if i % 9 == 0 else None}, [])
                for i, r in enumerate(rows)]
        st.put_replies(reps)
        st.put_scores([(r["request_key"], "length", "words", None if i < 8 else float(i), None)
                       for i, r in enumerate(rows)])
        whole = st.replies_df(), st.scores_df()
        monkeypatch.setattr(store_module, "READ_CHUNK", 7)
        chunked = st.replies_df(), st.scores_df()
    for a, b in zip(whole, chunked):
        pd.testing.assert_frame_equal(a, b)
    assert chunked[1]["value"].dtype == float and chunked[0]["prompt_tokens"].isna().sum() == 10


def test_a_store_without_tables_is_refused_not_migrated(tmp_path, capsys):
    """A valid but empty database where a run store should be (store.sqlite copied without the
    store.sqlite-wal that held its rows) is one clear error, and nothing is written into it."""
    from audit.cli import main

    with sqlite3.connect(tmp_path / "store.sqlite") as c:
        c.execute("PRAGMA user_version = 0")
        c.execute("CREATE TABLE x (a)")
        c.execute("DROP TABLE x")
    before = (tmp_path / "store.sqlite").read_bytes()
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds no tables" in err and "store.sqlite-wal" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "store.sqlite").read_bytes() == before and not (tmp_path / "report.html").exists()
