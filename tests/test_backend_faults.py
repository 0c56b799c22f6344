"""Retries, backoff, fail-fast and content-filter handling, against a local server that fails on purpose.

The server (audit.testing, the public fake server) is a real HTTP server on 127.0.0.1 spoken to by the real ``openai``
client; only its answers are scripted.
"""

from __future__ import annotations

import doctest
import random
import socket

import pytest

import audit.testing
from audit.backends.ratelimit import RetryPolicy
from audit.errors import AuditError
from audit.engine import complete
from audit.spec import DecodingSpec, ModelSpec
from audit.store import RunStore
from audit.testing import StubServer

FAST = RetryPolicy(max_retries=4, base_s=0.01, cap_s=0.05, rng=random.Random(0))
DEC = DecodingSpec(temperature=0.5, max_tokens=16, seed=3)


def _model(url: str, **kw) -> ModelSpec:
    base = dict(label="stub", base_url=url, model="stub-model", max_in_flight=2, timeout_s=5, max_retries=4)
    base.update(kw)
    return ModelSpec(**base)


def _items(*texts: str):
    return [{"purpose": "reply", "messages": [{"role": "user", "content": t}], "variant_id": f"v{i}",
             "style": "plain", "sample_index": 0} for i, t in enumerate(texts)]


def _rows(st: RunStore, sql: str, params=()):
    return [dict(r) for r in st.conn.execute(sql, params).fetchall()]


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "run") as st:
        yield st


def test_429_then_ok_honours_retry_after(store):
    with StubServer(script={"alpha": ["429", "429"]}, retry_after=0.2) as srv:
        s = complete(store, _model(srv.base_url), DEC, _items("alpha post", "beta post"), progress=False, retry=FAST)
        alpha = [t for t, text, _, _ in srv.log if "alpha" in text]
    assert (s.ok, s.failed, s.retries) == (2, 0, 2)
    assert s.errors == {"rate_limit": 2}
    # the server said "retry after 0.2 s": the attempts are at least that far apart
    assert len(alpha) == 3 and all(b - a >= 0.2 for a, b in zip(alpha, alpha[1:]))
    att = _rows(store, "SELECT * FROM attempts ORDER BY attempt")
    assert [a["status_code"] for a in att] == [429, 429] and all(a["wait_s"] >= 0.2 for a in att)
    rep = _rows(store, "SELECT status, attempts, text FROM replies r JOIN requests q USING(request_key) "
                       "JOIN prompts p ON p.prompt_sha256 = q.prompt_sha256 WHERE p.messages_json LIKE '%alpha%'")[0]
    assert rep["status"] == "ok" and rep["attempts"] == 3 and rep["text"].endswith("alpha post")


def test_server_errors_timeouts_and_dropped_connections_are_retried(store):
    script = {"five": ["500", "503"], "slow": ["timeout"], "drop": ["drop", "drop"]}
    with StubServer(script=script, hang_s=3.0) as srv:
        s = complete(store, _model(srv.base_url, timeout_s=0.4), DEC, _items("five", "slow", "drop"),
                     progress=False, retry=FAST)
    assert s.ok == 3 and s.failed == 0
    assert s.errors == {"server": 2, "timeout": 1, "connection": 2}
    kinds = {r["error_type"] for r in _rows(store, "SELECT error_type FROM attempts")}
    assert kinds == {"server", "timeout", "connection"}


def test_exhausted_retries_store_failed_and_next_run_retries_them(store):
    with StubServer(script={"bad": ["500"] * 3}) as srv:
        m = _model(srv.base_url, max_retries=2)
        pol = RetryPolicy(max_retries=2, base_s=0.01, cap_s=0.02)
        s1 = complete(store, m, DEC, _items("bad", "good"), progress=False, retry=pol)
        assert (s1.ok, s1.failed, s1.retries) == (1, 1, 2)
        failed = _rows(store, "SELECT status, error, attempts FROM replies WHERE status='failed'")
        assert len(failed) == 1 and failed[0]["attempts"] == 3 and "500" in failed[0]["error"]
        n_before = srv.count
        s2 = complete(store, m, DEC, _items("bad", "good"), progress=False, retry=pol)
        assert (s2.cached, s2.sent, s2.ok) == (1, 1, 1)
        assert srv.count - n_before == 1  # only the failed one was sent again
    assert _rows(store, "SELECT COUNT(*) n FROM replies WHERE status='ok'")[0]["n"] == 2
    assert _rows(store, "SELECT COUNT(*) n FROM attempts")[0]["n"] == 3  # the record of the failures is kept


def test_content_filter_is_recorded_not_retried(store):
    with StubServer(script={"filtered": ["content_filter"], "azure": ["filter400"]}) as srv:
        s = complete(store, _model(srv.base_url), DEC, _items("filtered", "azure", "fine"), progress=False,
                     retry=FAST)
        assert srv.count == 3
    assert (s.ok, s.content_filter, s.failed, s.retries) == (1, 2, 0, 0)
    st = {r["status"] for r in _rows(store, "SELECT status FROM replies")}
    assert st == {"ok", "content_filter"}
    # a stored refusal counts as answered: it is not sent again
    with StubServer() as srv2:
        s2 = complete(store, _model(srv.base_url), DEC, _items("filtered", "azure", "fine"), progress=False)
        assert s2.cached == 3 and srv2.count == 0


def test_bad_request_fails_that_request_only_without_retry(store):
    with StubServer(script={"huge": ["400"]}) as srv:
        s = complete(store, _model(srv.base_url), DEC, _items("huge", "ok1", "ok2"), progress=False, retry=FAST)
        assert srv.count == 3
    assert (s.ok, s.failed, s.retries) == (2, 1, 0)


@pytest.mark.parametrize("fault,words", [("401", "rejected the credentials"), ("404", "does not know model"),
                                         ("429-quota", "quota is exhausted")])
def test_permanent_errors_stop_the_run_with_a_clear_message(store, fault, words, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "sk-test-VERYSECRET-0123456789")
    # the first request succeeds and is stored; then every request gets the permanent error
    with StubServer(script={"first": []}, default=[fault] * 50) as srv:
        m = _model(srv.base_url, api_key_env="STUB_KEY", max_in_flight=1)
        complete(store, m, DEC, _items("first"), progress=False, retry=FAST)
        with pytest.raises(AuditError) as ei:
            complete(store, m, DEC, _items("first", "second", "third", "fourth"), progress=False, retry=FAST)
        assert srv.count <= 3  # fails fast: no retries of a permanent error
    msg = str(ei.value)
    assert words in msg and "models[label=stub]" in msg
    assert "VERYSECRET" not in msg and "0123456789" not in msg
    assert _rows(store, "SELECT COUNT(*) n FROM replies WHERE status='ok'")[0]["n"] == 1  # stored work kept


def test_unreachable_endpoint_is_a_clear_error(store):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(AuditError) as ei:
        complete(store, _model(f"http://127.0.0.1:{port}/v1"), DEC, _items("x"), progress=False, retry=FAST)
    assert "cannot reach the endpoint" in str(ei.value) and str(port) in str(ei.value)


def test_missing_key_variable_is_a_clear_error(store, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(AuditError) as ei:
        complete(store, _model("http://127.0.0.1:9/v1", api_key_env="NO_SUCH_KEY_VAR"), DEC, _items("x"),
                 progress=False)
    assert "NO_SUCH_KEY_VAR" in str(ei.value) and "export" in str(ei.value).lower()


def test_malformed_answers_are_retried_briefly_then_failed(store):
    with StubServer(script={"mal": ["malformed"] * 5, "html": ["html", "html", "html"]}) as srv:
        s = complete(store, _model(srv.base_url), DEC, _items("mal", "html", "fine"), progress=False, retry=FAST)
    assert (s.ok, s.failed) == (1, 2)
    assert s.errors == {"malformed": 6}  # 1 try + 2 retries each
    errs = [r["error"] for r in _rows(store, "SELECT error FROM replies WHERE status='failed'")]
    assert all(e.startswith("malformed") for e in errs)


def test_a_dead_endpoint_mid_run_stops_after_consecutive_failures(store):
    with StubServer(script={"p0": []}, default=["503"] * 1000) as srv:
        m = _model(srv.base_url, max_retries=0, max_in_flight=1)
        items = _items(*[f"p{i}" for i in range(40)])
        with pytest.raises(AuditError) as ei:
            complete(store, m, DEC, items, progress=False, retry=RetryPolicy(max_retries=0))
        assert srv.count < 40
    assert "failed in a row" in str(ei.value)
    assert _rows(store, "SELECT COUNT(*) n FROM replies WHERE status='ok'")[0]["n"] == 1
    assert _rows(store, "SELECT COUNT(*) n FROM replies WHERE status='failed'")[0]["n"] == 10


def test_requests_per_minute_limit_spaces_requests(store):
    with StubServer() as srv:
        m = _model(srv.base_url, requests_per_minute=600, max_in_flight=8)  # 10/s, burst 10
        complete(store, m, DEC, _items(*[f"r{i}" for i in range(20)]), progress=False)
        times = sorted(t for t, *_ in srv.log)
    assert len(times) == 20 and times[-1] - times[0] >= 0.9  # 10 past the burst at 10/s


def test_decoding_parameters_and_per_sample_seeds_reach_the_server(store):
    items = [{"purpose": "reply", "messages": [{"role": "user", "content": "same"}], "sample_index": i}
             for i in range(3)]
    with StubServer() as srv:
        s = complete(store, _model(srv.base_url), DEC, items, progress=False)
        seeds = [seed for _, _, seed, _ in srv.log]
    assert len(set(s.request_keys)) == 3 and len(set(seeds)) == 3
    texts = [r["text"] for r in _rows(store, "SELECT text FROM replies")]
    assert all("|0.5]" in t for t in texts)  # the temperature was sent


def test_a_fatal_answer_still_stores_the_replies_already_in_flight(store, monkeypatch):
    """A 401 stops new requests, but the three requests sent before it were paid for: their answers,
    which arrive after the 401, are stored (issue 12 N)."""
    monkeypatch.setenv("FAULT_TEST_KEY", "sk-test-0123456789abcdef")
    slow = {f"slow {i}": ["timeout"] for i in range(3)}        # 'timeout' with hang_s < timeout_s: a slow 200
    with StubServer(script={**slow, "rejected": ["401"]}, hang_s=0.6) as srv:
        m = _model(srv.base_url, max_in_flight=4, api_key_env="FAULT_TEST_KEY")
        with pytest.raises(AuditError, match="key"):
            complete(store, m, DEC, _items("slow 0", "slow 1", "slow 2", "rejected", "later 0", "later 1"),
                     progress=False, retry=FAST)
        answered = sorted(text for _, text, _, fault in srv.log if fault == "timeout")
    stored = sorted(r["content"] for r in _rows(
        store, "SELECT json_extract(p.messages_json, '$[0].content') AS content FROM replies r "
               "JOIN requests q USING (request_key) JOIN prompts p ON p.prompt_sha256 = q.prompt_sha256"
               " WHERE r.status = 'ok'"))
    assert answered == ["slow 0", "slow 1", "slow 2"] and stored == answered
    assert not any(text.startswith("later") for _, text, _, _ in srv.log)   # nothing new was sent


def test_a_fault_function_decides_per_request_and_none_leaves_it_to_the_script(store):
    def fault(req, text):
        return "400" if "reject" in text else None

    with StubServer(fault=fault, script={"alpha": ["500"]}) as srv:
        s = complete(store, _model(srv.base_url), DEC, _items("reject me", "alpha post", "beta post"),
                     progress=False, retry=FAST)
        faults = {text: [f for _, t, _, f in srv.log if t == text] for text in ("reject me", "alpha post", "beta post")}
    assert faults == {"reject me": ["400"], "alpha post": ["500", "ok"], "beta post": ["ok"]}
    assert (s.ok, s.failed) == (2, 1)


def test_an_unknown_fault_is_refused_when_the_server_is_made():
    with pytest.raises(ValueError, match=r"unknown fault\(s\) \['502'\] in script\['x'\]; choose from ok, 429"):
        StubServer(script={"x": ["502"]})
    with pytest.raises(ValueError, match="in default"):
        StubServer(default=["ok", "boom"])


def test_the_fake_servers_documented_example_runs():
    result = doctest.testmod(audit.testing, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0
