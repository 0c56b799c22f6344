"""Unit tests of the backend's pieces: retry timing, Retry-After parsing, rate limits, key redaction."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time

import pytest

from audit.backends.openai_backend import endpoint_identity, redact
from audit.backends.ratelimit import RateLimiter, RetryPolicy, parse_retry_after
from audit.spec import ModelSpec


def test_backoff_grows_exponentially_with_jitter_and_caps():
    pol = RetryPolicy(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    for attempt, hi in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        waits = [pol.wait(attempt) for _ in range(200)]
        assert min(waits) >= 0.5 * hi - 1e-9 and max(waits) <= hi + 1e-9
        assert len(set(waits)) > 150  # jittered, not constant


def test_retry_after_is_honoured_and_capped():
    pol = RetryPolicy(max_retry_after_s=30, rng=random.Random(2))
    w = [pol.wait(1, retry_after=7.0) for _ in range(100)]
    assert min(w) >= 7.0 and max(w) <= 7.7
    assert 30.0 <= pol.wait(1, retry_after=5000) <= 33.0
    assert pol.retries_for("malformed") == 2 and pol.retries_for("server") == 6


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 17 <= parse_retry_after({"retry-after": date}) <= 21
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_rate_limiter_requests_per_minute_paces_after_the_burst():
    clock = FakeClock()
    lim = RateLimiter(requests_per_minute=120, clock=clock)  # 2/s, burst 2
    assert lim.delay() == 0
    lim.rpm.take(1)
    lim.rpm.take(1)
    assert lim.delay() == pytest.approx(0.5)
    clock.t += 0.5
    assert lim.delay() == pytest.approx(0.0)


def test_rate_limiter_tokens_per_minute_with_debt_and_settle():
    clock = FakeClock()
    lim = RateLimiter(tokens_per_minute=6000, clock=clock)  # 100 tokens/s, burst 100
    assert lim.delay(500) == 0  # bigger than the burst: allowed when full, then in debt
    lim.tpm.take(500)
    assert lim.delay(50) == pytest.approx(4.5)  # back from -400 to +50 at 100/s
    lim.settle(500, 100)  # the request used only 100: 400 given back (level 0)
    assert lim.delay(50) == pytest.approx(0.5)


def test_rate_limiter_pause_holds_everyone():
    clock = FakeClock()
    lim = RateLimiter(clock=clock)
    lim.pause(3.0)
    assert lim.delay() == pytest.approx(3.0)
    clock.t = 2.0
    assert lim.delay() == pytest.approx(1.0)


def test_acquire_really_waits_for_the_rate():
    async def go():
        lim = RateLimiter(requests_per_minute=1200)  # 20/s, burst 20
        t0 = time.monotonic()
        for _ in range(30):
            await lim.acquire()
        return time.monotonic() - t0

    assert asyncio.run(go()) >= 0.45  # the 10 requests past the burst need 0.5 s


def test_redact_removes_key_and_its_fragments():
    key = "sk-proj-Abc123XYZsecretTAIL9876"
    msg = f"Incorrect API key provided: sk-pro**************9876. full: {key}; tail {key[-10:]}"
    out = redact(msg, key)
    assert key not in out and key[-10:] not in out and "secretTAIL" not in out
    assert "Incorrect API key provided" in out
    for i in range(len(key) - 5):
        assert key[i:i + 6] not in out
    assert redact("nothing here", key) == "nothing here"
    assert redact("x marks", "x") == "x marks"  # a non-secret placeholder key is left alone


def test_endpoint_identity_has_no_secret_and_no_trailing_slash():
    m = ModelSpec(label="a", base_url="http://h:8000/v1/", model="m", api_key_env="K")
    assert endpoint_identity(m) == ("http://h:8000/v1", "m")
    az = ModelSpec(label="b", azure={"endpoint": "https://x.openai.azure.com/", "api_version": "2024-06-01",
                                    "deployment": "gpt4o"})
    eid, name = endpoint_identity(az)
    assert eid == "azure:https://x.openai.azure.com/deployments/gpt4o?api-version=2024-06-01" and name == "gpt4o"


# ----------------------------------------------------------------------------- embedded threads (issue 29)

@pytest.mark.parametrize("cores, load, expected", [(2, 0.1, 1), (2, 3.5, 1), (8, 0.5, 4), (8, 5.2, 2), (4, 4.0, 1),
                                                   (1, 0.0, 1), (16, 20.0, 1)])
def test_embedded_threads_follow_the_free_cores(monkeypatch, cores, load, expected):
    """What is free: cores minus the load average (1..4); 1 whenever the load exceeds the cores."""
    import audit.backends.embedded as emb

    monkeypatch.delenv(emb.THREADS_ENV, raising=False)
    monkeypatch.setattr(emb, "_cores", lambda: cores)
    monkeypatch.setattr(emb.os, "getloadavg", lambda: (load, load, load))
    assert emb.default_threads() == expected


def test_embedded_threads_env_overrides_and_a_bad_value_is_one_clear_error(monkeypatch):
    import audit.backends.embedded as emb
    from audit.errors import AuditError

    monkeypatch.setattr(emb.os, "getloadavg", lambda: (50.0, 50.0, 50.0))
    monkeypatch.setenv(emb.THREADS_ENV, "3")
    assert emb.default_threads() == 3
    monkeypatch.setenv(emb.THREADS_ENV, "two")
    with pytest.raises(AuditError, match="EMPATHY_AUDIT_THREADS"):
        emb.default_threads()


def test_embedded_server_turns_busy_polling_off():
    """The binding exposes llama.cpp's poll level; the server sets it to 0 for both thread pools."""
    import inspect

    import xllamacpp

    from audit.backends import embedded_server

    assert hasattr(xllamacpp.CommonParams().cpuparams, "poll")
    src = inspect.getsource(embedded_server.main)
    assert "p.cpuparams.poll = 0" in src and "p.cpuparams_batch.poll = 0" in src
