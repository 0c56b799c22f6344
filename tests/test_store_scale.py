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
