"""The run store: content-addressed keys, resume after kill -9, SIGTERM or Ctrl-C, key hygiene, export."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from audit.cli import main as cli_main
from audit.engine import complete, request_params
from audit.generate import generate
from audit.spec import DecodingSpec, ModelSpec, load_spec
from audit.store import RunStore, request_key
from audit.testing import StubServer

DEC = DecodingSpec(temperature=0.7, max_tokens=16, seed=11)


def _items(n: int, prefix: str = "post"):
    return [{"purpose": "reply", "messages": [{"role": "user", "content": f"{prefix} {i}"}], "variant_id": f"v{i}",
             "style": "plain", "style_hash": "h", "sample_index": 0} for i in range(n)]


def test_request_key_covers_endpoint_model_messages_params_and_sample():
    msgs = [{"role": "user", "content": "hi"}]
    p = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 5, "seed": 1}
    k = request_key("http://a/v1", "m", msgs, p, 0)
    assert k == request_key("http://a/v1", "m", [dict(msgs[0])], dict(reversed(list(p.items()))), 0)
    others = {
        request_key("http://b/v1", "m", msgs, p, 0), request_key("http://a/v1", "m2", msgs, p, 0),
        request_key("http://a/v1", "m", [{"role": "user", "content": "hi!"}], p, 0),
        request_key("http://a/v1", "m", msgs, {**p, "temperature": 0.8}, 0), request_key("http://a/v1", "m", msgs, p, 1),
    }
    assert k not in others and len(others) == 5


def test_request_params_seed_is_per_sample_and_reproducible():
    m = ModelSpec(label="x", base_url="http://h/v1", model="m", extra_body={"top_k": 20})
    a, b = request_params(DEC, m, 0), request_params(DEC, m, 1)
    assert a["seed"] != b["seed"] and a == request_params(DEC, m, 0)
    assert a["extra_body"] == {"top_k": 20} and a["temperature"] == 0.7
    # without a decoding seed the base seed (the spec's seed in the generate stage) decides
    d = DecodingSpec(seed=None)
    assert request_params(d, m, 0, base_seed=5)["seed"] != request_params(d, m, 0, base_seed=6)["seed"]


def test_second_run_sends_nothing_and_keys_follow_items(tmp_path):
    with StubServer() as srv, RunStore(tmp_path / "r") as st:
        m = ModelSpec(label="s", base_url=srv.base_url, model="stub-model")
        items = _items(6) + _items(2)  # the last two repeat the first two: sent once
        s1 = complete(st, m, DEC, items, progress=False)
        assert (s1.total, s1.sent, s1.cached) == (8, 6, 2) and srv.count == 6
        assert s1.request_keys[:2] == s1.request_keys[6:]
        s2 = complete(st, m, DEC, iter(_items(6)), progress=False)  # any iterable works
        assert (s2.sent, s2.cached) == (0, 6) and srv.count == 6
        assert s2.request_keys == s1.request_keys[:6]
        df = st.replies_df()
        assert len(df) == 6 and set(df["status"]) == {"ok"}
        assert (df["runtime"] == "empathy-audit-stub").all() and (df["runtime_version"] == "stub-1").all()
        assert (df["model_label"] == "s").all() and df["completion_tokens"].notna().all()


CHILD = r"""
import sys
from audit.engine import complete
from audit.spec import DecodingSpec, ModelSpec
from audit.store import RunStore
url, run_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
items = [{"purpose": "reply", "messages": [{"role": "user", "content": f"post {i}"}], "variant_id": f"v{i}",
          "style": "plain", "style_hash": "h", "sample_index": 0} for i in range(n)]
with RunStore(run_dir) as st:
    complete(st, ModelSpec(label="s", base_url=url, model="stub-model", max_in_flight=3),
             DecodingSpec(temperature=0.7, max_tokens=16, seed=11), items, progress=False)
"""


def _count(db: Path) -> int:
    try:
        c = sqlite3.connect(db, timeout=5)
        try:
            return c.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


def test_kill_9_mid_run_loses_nothing_and_resume_sends_no_duplicate(tmp_path):
    n = 60
    run_dir = tmp_path / "run"
    with StubServer(latency_s=0.03) as srv:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, srv.base_url, str(run_dir), str(n)])
        try:
            deadline = time.monotonic() + 120
            while _count(run_dir / "store.sqlite") < 12 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        with RunStore(run_dir) as st:
            before = {r[0]: r[1] for r in st.conn.execute("SELECT request_key, text FROM replies")}
            assert 12 <= len(before) < n
            sent_before = srv.count
            s = complete(st, ModelSpec(label="s", base_url=srv.base_url, model="stub-model", max_in_flight=3), DEC,
                         _items(n), progress=False)
            after = {r[0]: r[1] for r in st.conn.execute("SELECT request_key, text FROM replies")}
            n_requests = st.conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        resent = [text for _, text, _, _ in srv.log[sent_before:]]
    # nothing finished was lost, each stored reply is unchanged, and none of them was asked for again
    assert s.cached == len(before) and s.sent == n - len(before)
    assert all(after[k] == v for k, v in before.items())
    stored_prompts = {v.split(": ", 1)[1] for v in before.values()}
    assert not stored_prompts & set(resent)
    assert len(resent) == n - len(before)
    # one request row and one reply per item: no duplicates
    assert len(after) == n and n_requests == n


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_generate_exits_128_plus_signal_and_resumes_without_resending(tmp_path, sig):
    run_dir = tmp_path / "run"
    spec_path = tmp_path / "spec.yaml"
    with StubServer(latency_s=0.05) as srv:
        spec_path.write_text(
            "name: signal-test\nposts: {source: builtin, limit: 4}\n"
            "demographics: {axes: [race], cue_types: [explicit_tag], alternatives: 1}\n"
            f"models: [{{label: stub, base_url: '{srv.base_url}', model: stub-model, max_in_flight: 2}}]\n"
            "decoding: {max_tokens: 8, seed: 1}\nsamples: 3\n")
        proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "generate", str(spec_path), "--out", str(run_dir),
                                 "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while _count(run_dir / "store.sqlite") < 6 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be stopped"
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 128 + int(sig), err
        assert f"stopped by {sig.name}" in err and "Traceback" not in err
        stored = _count(run_dir / "store.sqlite")
        sent_before = srv.count
        s = generate(load_spec(spec_path), run_dir, progress=False)
    assert 6 <= stored < s.total
    assert s.cached == stored and s.sent == s.total - stored == srv.count - sent_before


def test_api_key_appears_in_no_file_of_the_run_directory(tmp_path, monkeypatch):
    key = "sk-live-THISISTHEKEY-abcdef0123456789"
    monkeypatch.setenv("AUDIT_TEST_KEY", key)
    run_dir = tmp_path / "run"
    # one normal run, then a run where the server rejects the key and echoes it back (masked and whole)
    with StubServer(script={"post 9": ["401"] * 5}) as srv:
        m = ModelSpec(label="s", base_url=srv.base_url, model="stub-model", api_key_env="AUDIT_TEST_KEY",
                      max_in_flight=1)
        with RunStore(run_dir) as st:
            complete(st, m, DEC, _items(9), progress=False)
            with pytest.raises(Exception) as ei:
                complete(st, m, DEC, _items(10), progress=False)
            stored_errors = [r[0] for r in st.conn.execute("SELECT message FROM attempts")]
            cli_main(["export", str(run_dir), "--table", "replies", "--out", str(run_dir / "replies.jsonl")])
            cli_main(["export", str(run_dir), "--table", "attempts", "--out", str(run_dir / "attempts.csv")])
    assert any("401" in (e or "") for e in stored_errors)  # the failure itself is on record
    assert key not in str(ei.value) and "THISISTHEKEY" not in str(ei.value)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("store.sqlite") for p in files) and len(files) >= 3
    for p in files:
        data = p.read_bytes()
        for i in range(len(key) - 7):
            assert key[i:i + 8].encode() not in data, f"{p.name} holds part of the key"


def test_export_formats_round_trip(tmp_path, capsys):
    run_dir = tmp_path / "run"
    with StubServer() as srv, RunStore(run_dir) as st:
        complete(st, ModelSpec(label="s", base_url=srv.base_url, model="stub-model"), DEC, _items(5), progress=False)
    frames = {}
    for ext in ("parquet", "csv", "jsonl"):
        out = tmp_path / f"replies.{ext}"
        assert cli_main(["export", str(run_dir), "--table", "replies", "--out", str(out)]) == 0
        frames[ext] = {"parquet": pd.read_parquet, "csv": pd.read_csv,
                       "jsonl": lambda p: pd.read_json(p, lines=True)}[ext](out)
    for df in frames.values():
        assert len(df) == 5 and {"request_key", "reply", "status", "style", "model_label"} <= set(df.columns)
        assert sorted(df["reply"]) == sorted(frames["parquet"]["reply"])
    assert cli_main(["export", str(run_dir), "--table", "nope", "--out", str(tmp_path / "x.csv")]) == 2
    assert cli_main(["export", str(run_dir), "--out", str(tmp_path / "x.xlsx")]) == 2
    assert cli_main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "no table 'nope'" in err and "'.xlsx'; use .parquet, .csv, .jsonl" in err and "no run store found" in err


def test_full_disk_is_a_clear_error_and_keeps_stored_replies(tmp_path):
    from audit.errors import AuditError

    run_dir = tmp_path / "run"
    with StubServer() as srv, RunStore(run_dir) as st:
        m = ModelSpec(label="s", base_url=srv.base_url, model="stub-model", max_in_flight=1)
        complete(st, m, DEC, _items(3), progress=False)
        before = {r[0]: r[1] for r in st.conn.execute("SELECT request_key, text FROM replies")}
        # a real SQLITE_FULL: the database may not grow by a single page
        pages = st.conn.execute("PRAGMA page_count").fetchone()[0]
        st.conn.execute(f"PRAGMA max_page_count = {pages}")
        big = [{"purpose": "reply", "messages": [{"role": "user", "content": f"post {i} " + "x" * 3000}],
                "sample_index": 0} for i in range(40)]
        with pytest.raises(AuditError) as ei:
            complete(st, m, DEC, _items(3) + big, progress=False)
        assert "disk is full" in str(ei.value) and "resumes" in str(ei.value)
        assert {r[0]: r[1] for r in st.conn.execute("SELECT request_key, text FROM replies")} == before
        st.conn.execute("PRAGMA max_page_count = 1073741823")
        s = complete(st, m, DEC, _items(3) + big, progress=False)
        assert s.cached == 3 and s.ok == 40
    with RunStore(run_dir) as st:
        assert st.conn.execute("SELECT COUNT(*) FROM replies WHERE status='ok'").fetchone()[0] == 43


def test_a_second_sender_on_the_same_run_and_model_is_refused(tmp_path):
    """Two processes sending the same run's requests would pay twice: the second one stops."""
    import fcntl
    import hashlib

    from audit.errors import AuditError

    run_dir = tmp_path / "run"
    with StubServer() as srv, RunStore(run_dir) as st:
        m = ModelSpec(label="s", base_url=srv.base_url, model="stub-model")
        tag = hashlib.sha256(f"{srv.base_url}\x00stub-model".encode()).hexdigest()[:12]
        with open(run_dir / f".send-{tag}.lock", "a+") as held:  # as another process would hold it
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(AuditError) as ei:
                complete(st, m, DEC, _items(3), progress=False)
            assert "already sending" in str(ei.value) and srv.count == 0
        s = complete(st, m, DEC, _items(3), progress=False)  # released: it goes ahead
        assert s.ok == 3
