"""Batch execution (audit/batch.py) against the fake batch service of audit.testing (StubServer with
BatchOptions), whose lines get the same deterministic replies as online requests (golden_reply).

The reference of every test is an online run of the same spec against the same server: a batch run
must end with the same requests (keys, messages, parameters) and the same replies (status, text,
finish reason, token usage), with no request answered twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from audit import batch
from audit.cli import main as cli_main
from audit.store import RunStore
from audit.testing import BatchOptions, StubServer
from golden_server import golden_reply

ROOT = Path(__file__).resolve().parents[1]
REQ = ("SELECT q.request_key, q.purpose, q.variant_id, q.model_label, q.endpoint_id, q.model_name, q.style,"
       " q.sample_index, p.messages_json, q.params_json FROM requests q JOIN prompts p USING (prompt_sha256)"
       " ORDER BY q.request_key")
REP = ("SELECT request_key, status, text, finish_reason, prompt_tokens, completion_tokens, attempts FROM replies"
       " ORDER BY request_key")


def _server(**opts) -> StubServer:
    return StubServer(reply=golden_reply, model="golden-model", batch=BatchOptions(**opts))


def _spec(tmp: Path, srv: StubServer, name: str, **model) -> Path:
    spec = {"name": "batch", "posts": {"limit": 5},
            "demographics": {"axes": ["race"], "cue_types": ["explicit_tag"], "alternatives": 1},
            "models": [{"label": "golden", "base_url": srv.base_url, "model": "golden-model", **model}],
            "decoding": {"max_tokens": 64, "seed": 3},
            "scoring": {"scorers": ["length"], "inference_probe": False}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _rows(run: Path, sql: str) -> list[tuple]:
    with RunStore(run, create=False) as st:
        return [tuple(r) for r in st.conn.execute(sql)]


def _online(tmp: Path, srv: StubServer) -> Path:
    assert cli_main(["run", str(_spec(tmp, srv, "online")), "--out", str(tmp / "online"), "--no-progress"]) == 0
    return tmp / "online"


def _same_as_online(run: Path, online: Path, *, retried: bool = False) -> None:
    """Same requests and replies; ``retried``: requests that failed in a batch were tried again, so
    their ``attempts`` differ (the last column) and the rest must match."""
    assert _rows(run, REQ) == _rows(online, REQ)
    replies = _rows(run, REP)
    cut = (lambda rows: [r[:-1] for r in rows]) if retried else (lambda rows: rows)
    assert cut(replies) == cut(_rows(online, REP))
    assert len({r[0] for r in replies}) == len(replies) == len(_rows(run, REQ))


def test_batch_run_submits_then_collects_into_the_store_an_online_run_makes(tmp_path, capsys):
    with _server(shuffle_seed=7, duplicate_every=3) as srv:
        online = _online(tmp_path, srv)
        n = len(_rows(online, REQ))
        spec = _spec(tmp_path, srv, "batch", execution="batch", batch={"max_requests": 10})
        run = tmp_path / "batch"
        capsys.readouterr()
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        out = capsys.readouterr().out
        k = -(-n // 10)
        assert f"submitted {n} requests in {k} batches; run again to collect" in out
        assert _rows(run, REP) == [] and _rows(run, "SELECT * FROM scores") == []   # nothing scored yet
        assert not (run / "report.html").exists()
        shards = sorted((run / "batches" / "golden").glob("*.jsonl"))
        assert len(shards) == k
        lines = [json.loads(t) for p in shards for t in p.read_text().splitlines()]
        assert sorted(x["custom_id"] for x in lines) == sorted(r[0] for r in _rows(online, REQ))

        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        _same_as_online(run, online)
        assert srv.batch_lines == n                       # every request answered once by the service
        assert _rows(run, "SELECT COUNT(*) FROM scores") == _rows(online, "SELECT COUNT(*) FROM scores")
        a = json.loads((run / "results.json").read_text())["results"]
        b = json.loads((online / "results.json").read_text())["results"]
        assert [(r["outcome"], r["group"], r["estimate"]) for r in a] == [(r["outcome"], r["group"], r["estimate"])
                                                                           for r in b]
        with RunStore(run) as st:
            dup = sum(json.loads(b["collected_json"]).get("duplicate", 0) for b in st.batches())
            assert dup > 0                                 # the service wrote duplicate lines; none was stored twice
            before = st.content_sha256()
        assert batch.collect(run).collected_batches == 0   # collecting again: nothing to do
        out_files = sorted((run / "batches" / "golden").glob("*.output.jsonl"))
        with RunStore(run) as st:                          # re-reading the output files stores nothing
            got = batch.ingest(st, batch.spec_models(st.latest_spec()), batch._lines(out_files), runtime="again")
            assert got.stored.get("already_answered") == n and "ok" not in got.stored
            assert st.content_sha256() == before
        creates = srv.batch_creates
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        assert srv.batch_creates == creates                # a finished run submits nothing
        _same_as_online(run, online)
        capsys.readouterr()
        assert cli_main(["batch", "status", str(run), "--price-in", "1", "--price-out", "1"]) == 0
        status = capsys.readouterr().out
        tokens = _rows(run, "SELECT SUM(prompt_tokens) + SUM(completion_tokens) FROM replies")[0][0]
        assert f"requests by state: collected {n}" in status
        assert f"about ${tokens / 1e6 / 2:,.2f} saved of ${tokens / 1e6:,.2f}" in status


def test_failed_and_expired_items_stay_pending_and_a_429_on_create_is_retried(tmp_path):
    with _server(fail_every=4, expire_after=8, create_429=1) as srv:
        online = _online(tmp_path, srv)
        n = len(_rows(online, REQ))
        spec = _spec(tmp_path, srv, "batch", execution="batch", batch={"max_requests": 10})
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        k = -(-n // 10)
        assert srv.batch_creates == k + 1                  # the 429 was retried, no batch lost or doubled
        assert len(srv.batches) == k
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0   # collects, resubmits
        with RunStore(run) as st:
            first = st.batches(states=("collected",))
            assert len(first) == k
            failed = sum(json.loads(b["collected_json"]).get("failed", 0) for b in first)
            not_run = sum(json.loads(b["collected_json"]).get("not_run", 0) for b in first)
            # per batch of 10: lines 4 and 8 fail (500), lines 9-10 expire
            assert failed == sum(len([i for i in range(1, min(10, n - 10 * j) + 1) if i <= 8 and i % 4 == 0])
                                 for j in range(k))
            assert not_run == sum(max(0, min(10, n - 10 * j) - 8) for j in range(k))
            assert st.reply_status_counts().get("failed") == failed
            att = st.conn.execute("SELECT COUNT(*), MIN(status_code) FROM attempts").fetchone()
            assert tuple(att) == (failed, 500)
            second = st.batches(states=("submitted",))
            assert sum(b["n_requests"] for b in second) == failed + not_run   # exactly the pending ones again
        srv.batch = BatchOptions()                         # the service recovers
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        _same_as_online(run, online, retried=True)
        assert max(r[-1] for r in _rows(run, REP)) == 2    # a failed line and its retry


def test_kill_9_after_the_service_created_a_batch_then_resume_loses_and_duplicates_nothing(tmp_path):
    with _server(create_hang_s=60) as srv:
        online = _online(tmp_path, srv)
        spec = _spec(tmp_path, srv, "batch", execution="batch", batch={"max_requests": 100})
        run = tmp_path / "batch"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "audit", "run", str(spec), "--out", str(run), "--no-progress"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while not srv.batches and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        assert len(srv.batches) == 1                       # created at the service; the client has no answer yet
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        with RunStore(run) as st:
            (b,) = st.batches()
            assert b["state"] == "uploaded" and b["provider_batch_id"] is None
        srv.batch.create_hang_s = 0
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0  # finds it, does not create
        assert len(srv.batches) == 1 and srv.batch_creates == 1
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0  # collects
        _same_as_online(run, online)
        assert srv.batch_lines == len(_rows(online, REQ))


def test_run_local_sends_the_shards_to_any_endpoint_and_collects_them(tmp_path, capsys):
    with _server() as srv:
        online = _online(tmp_path, srv)
        spec = _spec(tmp_path, srv, "local", execution="batch", batch={"provider": "local", "max_requests": 7})
        run = tmp_path / "local"
        capsys.readouterr()
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        assert "batch run-local" in capsys.readouterr().out
        assert srv.batch_creates == 0 and not srv.files    # provider local: nothing uploaded
        count = srv.count
        # the same model served elsewhere (another process of the same deterministic server)
        with StubServer(reply=golden_reply, model="golden-model") as other:
            assert cli_main(["batch", "run-local", str(run), "--base-url", other.base_url]) == 0
            assert other.count == len(_rows(online, REQ))
        assert srv.count == count
        outs = sorted((run / "batches" / "golden").glob("*.local-output.jsonl"))
        assert outs and all(json.loads(t)["response"]["status_code"] == 200
                            for p in outs for t in p.read_text().splitlines())
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        _same_as_online(run, online)
        assert (run / "report.html").exists()


def test_collect_from_a_vllm_style_output_file(tmp_path):
    """The output of ``vllm run-batch`` (the same line format) is collected with ``collect --from``;
    a request missing from the file is pending again, a line for an unknown request is ignored."""
    with _server() as srv:
        online = _online(tmp_path, srv)
        spec = _spec(tmp_path, srv, "local", execution="batch", batch={"provider": "local"})
        run = tmp_path / "local"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        (shard,) = (run / "batches" / "golden").glob("*.jsonl")
        lines = [json.loads(t) for t in shard.read_text().splitlines()]
        out = tmp_path / "out.jsonl"
        rows = []
        for i, x in enumerate(lines[1:]):                  # the first request is missing
            text = x["body"]["messages"][-1]["content"]
            body = srv._completion(x["body"], text, "ok")
            rows.append({"id": f"vllm-{i}", "custom_id": x["custom_id"],
                         "response": {"status_code": 200, "request_id": "", "body": body}, "error": None})
        rows.append({"id": "x", "custom_id": "0" * 64, "response": {"status_code": 200, "body": {}}, "error": None})
        out.write_text("\n".join(json.dumps(r) for r in rows[::-1]) + "\n")
        assert cli_main(["batch", "collect", str(run), "--from", str(out)]) == 0
        assert set(_rows(run, REP)) < set(_rows(online, REP))   # the replies read are the online ones
        with RunStore(run) as st:
            (b,) = st.batches()
            assert b["state"] == "collected"
            col = json.loads(b["collected_json"])
            assert col["ok"] == len(lines) - 1 and col["unknown"] == 1 and col["pending_again"] == 1
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0   # the missing one again
        with RunStore(run) as st:
            assert [b["n_requests"] for b in st.batches(states=("prepared",))] == [1]


def test_wait_polls_until_the_batches_are_in(tmp_path, capsys):
    with _server(delay_s=0.6) as srv:
        online = _online(tmp_path, srv)
        spec = _spec(tmp_path, srv, "batch", execution="batch", batch={"poll_interval_s": 0.2})
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--wait"]) == 0
        assert "waiting for" in capsys.readouterr().err
        _same_as_online(run, online)
        assert (run / "report.html").exists()


def test_cancel_leaves_the_requests_pending(tmp_path):
    with _server(delay_s=3600) as srv:
        spec = _spec(tmp_path, srv, "batch", execution="batch")
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        assert cli_main(["batch", "cancel", str(run)]) == 0
        assert cli_main(["batch", "collect", str(run)]) == 0
        with RunStore(run) as st:
            (b,) = st.batches()
            assert (b["state"], b["provider_status"]) == ("collected", "cancelled")
            assert json.loads(b["collected_json"])["pending_again"] == b["n_requests"]
        assert cli_main(["batch", "submit", str(run)]) == 0
        with RunStore(run) as st:
            assert [x["state"] for x in st.batches()] == ["collected", "submitted"]


def test_judge_requests_in_batch_mode(tmp_path):
    """The judge's and the probe's way to a model (judge.run_items -> batch.complete_requests) with a
    batch model: the first call submits and stores no reply, a later call collects, and a third finds
    everything answered (no batch submitted twice). engine.complete refuses a batch model."""
    from audit.engine import complete
    from audit.errors import AuditError
    from audit.scorers.judge import run_items
    from audit.spec import DecodingSpec, ModelSpec

    with _server() as srv:
        model = ModelSpec(label="judge", base_url=srv.base_url, model="golden-model", execution="batch")
        items = [{"purpose": "judge", "subject_key": f"s{i}", "messages": [{"role": "user", "content": f"rate {i}"}]}
                 for i in range(5)]
        with RunStore(tmp_path / "run") as st:
            with pytest.raises(AuditError, match="execution: batch"):
                complete(st, model, DecodingSpec(temperature=0), items, progress=False)
            assert run_items(st, model, DecodingSpec(temperature=0), items) == [None] * 5   # submitted
            assert len(srv.batches) == 1 and st.count_rows("replies") == 0
            assert sum(b["n_requests"] for b in st.batches(states=("submitted",))) == 5
            second = batch.complete_requests(st, model, DecodingSpec(temperature=0), items, progress=False)
            assert second.ok == 5 and second.in_batches == 0
            got = st.replies_by_key(second.request_keys)
            assert [got[k]["text"] for k in second.request_keys] == [golden_reply({"seed": json.loads(
                st.conn.execute("SELECT params_json FROM requests WHERE request_key=?", (k,)).fetchone()[0])["seed"]},
                f"rate {i}") for i, k in enumerate(second.request_keys)]
            third = batch.complete_requests(st, model, DecodingSpec(temperature=0), items, progress=False)
            assert third.cached == 5 and third.sent == 0 and len(srv.batches) == 1


def test_spec_batch_execution_rules_and_unchanged_hash_of_online_specs():
    from audit.spec import ModelSpec

    with pytest.raises(ValueError, match="execution: batch needs an endpoint"):
        ModelSpec(execution="batch")
    online = ModelSpec(base_url="http://h/v1", model="m")
    assert "execution" not in online.model_dump() and "batch" not in online.model_dump()
    m = ModelSpec(base_url="http://h/v1", model="m", execution="batch")
    assert m.batch.limits(m) == ("openai", 50_000, 200_000_000)
    az = ModelSpec(azure={"endpoint": "https://x.openai.azure.com", "api_version": "2024-10-21", "deployment": "d"},
                   execution="batch")
    assert az.batch.limits(az)[0] == "azure"


def test_shards_respect_the_byte_limit(tmp_path):
    with _server() as srv:
        spec = _spec(tmp_path, srv, "batch", execution="batch", batch={"max_bytes": 5000})
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        with RunStore(run) as st:
            rows = st.batches()
            assert len(rows) > 1 and all(b["shard_bytes"] <= 5000 for b in rows)
            for b in rows:
                p = run / b["shard_path"]
                assert p.stat().st_size == b["shard_bytes"]
                assert len(p.read_text().splitlines()) == b["n_requests"] == len(st.batch_keys(b["batch_id"]))


def test_the_batch_steps_are_in_the_notebook_api():
    import audit

    assert (audit.batch_submit, audit.batch_poll, audit.batch_collect, audit.batch_cancel, audit.batch_run_local) == (
        batch.submit, batch.poll, batch.collect, batch.cancel, batch.run_local)


def test_migration_4_adds_the_batch_tables_to_a_version_3_store(tmp_path):
    import sqlite3

    from audit.store_migrations import MIGRATIONS, now_iso

    path = tmp_path / "store.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    for n, fn in enumerate(MIGRATIONS[:3], 1):
        fn(conn)
        conn.execute("INSERT INTO _migrations VALUES (?, ?, ?)", (n, fn.__name__, now_iso()))
    conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    conn.close()
    with RunStore(tmp_path) as st:
        assert 4 in st.migrated and {"batches", "batch_items"} <= set(st.table_names())
        assert list(st.pending_batch_requests("e", "m")) == [] and st.batches() == []


def test_a_request_that_keeps_failing_stops_being_resubmitted_and_the_run_goes_on(tmp_path):
    """The endpoint refuses (400) every post with an explicit Asian tag. With max_attempts 2 those
    requests are resubmitted once, then left failed, and the run continues to the report (exit 1:
    some requests failed), as an online run does."""
    def refuse(req, text):
        return "400" if "Asian" in text else None

    with _server() as srv:
        srv.fault = refuse
        spec = _spec(tmp_path, srv, "batch", execution="batch", batch={"max_attempts": 2})
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0     # submits
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0     # collects, resubmits
        with RunStore(run) as st:
            refused = st.reply_status_counts()["failed"]
            assert refused == 5                                                      # one per post
            assert [b["n_requests"] for b in st.batches(states=("submitted",))] == [refused]
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 1     # left failed: goes on
        assert (run / "report.html").exists()
        with RunStore(run) as st:
            assert st.batches(states=st.OPEN_BATCH_STATES) == []
            rows = st.conn.execute("SELECT attempts, error FROM replies WHERE status='failed'").fetchall()
            assert len(rows) == refused and all(r[0] == 2 and r[1].startswith("bad_request: HTTP 400") for r in rows)
        assert cli_main(["batch", "submit", str(run)]) == 0
        with RunStore(run) as st:                                                    # not resubmitted by itself
            assert st.batches(states=st.OPEN_BATCH_STATES) == []


def _other_batch(srv: StubServer, n: int, created_at: int) -> None:
    """A batch of someone else's on the same account (another run, another person)."""
    bid = f"batch_other_{n}"
    srv.batches[bid] = {"id": bid, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                        "input_file_id": "file-x", "completion_window": "24h", "status": "completed",
                        "output_file_id": None, "error_file_id": None, "created_at": created_at,
                        "metadata": {"empathy_audit_batch": f"someone-else-{n}"},
                        "request_counts": {"total": 1, "completed": 1, "failed": 0}, "_t0": 0.0}


def test_a_crashed_submit_finds_its_batch_behind_more_than_100_newer_ones(tmp_path):
    """Issue 25 B1: the run was interrupted after the provider created its batch; by the time it is run
    again, the account has 150 newer batches (two pages of batches.list). It pages back until past the
    batch's creation time, finds its own batch and creates no second one; it does not read the 250
    batches older than the run."""
    with _server(delay_s=3600) as srv:
        for i in range(250):
            _other_batch(srv, i, int(time.time()) - 10 * 86400)
        spec = _spec(tmp_path, srv, "batch", execution="batch")
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        assert srv.batch_creates == 1
        with RunStore(run) as st:            # as if killed between batches.create and storing its answer
            (b,) = st.batches()
            st.update_batch(b["batch_id"], state="uploaded", provider_batch_id=None, provider_status=None)
        for i in range(150):
            _other_batch(srv, 1000 + i, int(time.time()) + 1 + i)
        srv.batch_lists = 0
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        assert srv.batch_creates == 1 and len(srv.batches) == 401       # found, not created again
        assert srv.batch_lists == 2                                      # 100 newer, then 50 newer and ours
        with RunStore(run) as st:
            (b,) = st.batches()
            assert b["state"] == "submitted" and b["provider_batch_id"] == "batch_251"
        # the provider never got the create (killed before it arrived): the pages stop at the run's time
        with RunStore(run) as st:
            st.update_batch(b["batch_id"], state="uploaded", provider_batch_id=None, provider_status=None)
        del srv.batches["batch_251"]
        srv.batch_lists = 0
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        assert srv.batch_creates == 2 and srv.batch_lists == 2   # 100 newer, then 50 newer + 50 older: stop (of 4 pages)


def test_wait_resubmits_failed_and_expired_lines_until_every_reply_is_in(tmp_path, capsys):
    """Issue 25 B2: `run --wait` against a service that fails every 4th line and expires lines after the
    8th: one call loops submit/poll/collect until every request is answered (max_attempts 3 is enough
    here), and writes the report on every reply."""
    with _server(fail_every=4, expire_after=8) as srv:
        online = _online(tmp_path, srv)
        n = len(_rows(online, REQ))
        spec = _spec(tmp_path, srv, "batch", execution="batch",
                     batch={"max_requests": 10, "poll_interval_s": 0.05, "max_attempts": 4})
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--wait"]) == 0
        assert _rows(run, "SELECT COUNT(*) FROM replies WHERE status = 'ok'")[0][0] == n
        assert (run / "report.html").exists()
        with RunStore(run) as st:
            assert st.batches(states=st.OPEN_BATCH_STATES) == [] and len(st.batches()) > -(-n // 10)


def test_wait_stops_when_a_request_has_spent_max_attempts(tmp_path):
    def refuse(req, text):
        return "400" if "Asian" in text else None

    with _server() as srv:
        srv.fault = refuse
        spec = _spec(tmp_path, srv, "batch", execution="batch", batch={"max_attempts": 2, "poll_interval_s": 0.05})
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--wait"]) == 1   # ends: 5 requests failed twice
        with RunStore(run) as st:
            rows = st.conn.execute("SELECT attempts FROM replies WHERE status='failed'").fetchall()
            assert len(rows) == 5 and {r[0] for r in rows} == {2}
            assert st.batches(states=st.OPEN_BATCH_STATES) == []
        assert (run / "report.html").exists()


def test_run_reports_unknown_output_lines_and_counts_only_batches_it_created(tmp_path, capsys):
    """Issue 25 B3: output lines whose custom_id names no request are said by `run` (not only by
    `batch status`); after a crash, the batch found again is not counted as submitted by this call."""
    with _server(unknown_lines=2) as srv:
        spec = _spec(tmp_path, srv, "batch", execution="batch")
        run = tmp_path / "batch"
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
        with RunStore(run) as st:
            (b,) = st.batches()
            st.update_batch(b["batch_id"], state="uploaded", provider_batch_id=None, provider_status=None)
        assert cli_main(["batch", "submit", str(run)]) == 0
        out = capsys.readouterr().out
        assert "submitted 0 requests in 0 batches" in out and "1 batches an interrupted earlier submit" in out
        assert srv.batch_creates == 1
        assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0   # collects
        out = capsys.readouterr().out
        assert "2 batch output lines of 'golden' named no request of this run (unknown custom_id)" in out
