"""Client-side rate limits and retry timing for model endpoints.

Hand-rolled rather than taken from a library (tenacity, aiolimiter) because the three pieces have to
share state: a 429 with ``Retry-After`` pauses *every* worker, not just the one that was told, and the
token budget is charged with an estimate before a request and settled with the real usage after it.
Each piece is small and tested on its own.

:class:`RateLimiter` enforces requests-per-minute and tokens-per-minute with two token buckets
that refill continuously (burst: one second's worth, at least one request). The token bucket may go
into debt for a request bigger than its burst, so the long-run rate is exact.

:class:`RetryPolicy` gives the wait before attempt ``n + 1``: exponential backoff with jitter,
``uniform(0.5, 1) * min(cap, base * 2**(n-1))``, or the server's ``Retry-After`` (plus up to 10%
jitter) when it sent one.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping


class _Bucket:
    def __init__(self, per_minute: float, clock: Callable[[], float]):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.clock = clock
        self.t = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def wait_time(self, amount: float) -> float:
        """Seconds until ``amount`` can be taken (the bucket must hold min(amount, capacity))."""
        self._refill()
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, amount: float) -> None:
        self._refill()
        self.level -= amount

    def give(self, amount: float) -> None:
        self._refill()
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits shared by all workers of one endpoint."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.clock = clock
        self.rpm = _Bucket(requests_per_minute, clock) if requests_per_minute else None
        self.tpm = _Bucket(tokens_per_minute, clock) if tokens_per_minute else None
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every worker back for ``seconds`` (after a 429)."""
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    def delay(self, tokens: float = 0.0) -> float:
        """Seconds to wait before a request of ``tokens`` may start (0 when it may start now)."""
        d = max(0.0, self.paused_until - self.clock())
        if self.rpm:
            d = max(d, self.rpm.wait_time(1.0))
        if self.tpm and tokens:
            d = max(d, self.tpm.wait_time(tokens))
        return d

    async def acquire(self, tokens: float = 0.0) -> float:
        """Wait until a request of (estimated) ``tokens`` may be sent, then charge it. Returns the wait."""
        if not self.rpm and not self.tpm and self.paused_until <= 0:
            return 0.0
        waited = 0.0
        async with self._lock:  # FIFO: one waiter at a time takes from the buckets
            while True:
                d = self.delay(tokens)
                if d <= 0:
                    break
                await asyncio.sleep(d)
                waited += d
            if self.rpm:
                self.rpm.take(1.0)
            if self.tpm and tokens:
                self.tpm.take(tokens)
        return waited

    def settle(self, estimated: float, actual: float | None) -> None:
        """Correct the token charge of a finished request with its real usage."""
        if self.tpm and actual is not None:
            diff = estimated - actual
            if diff > 0:
                self.tpm.give(diff)
            elif diff < 0:
                self.tpm.take(-diff)


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), or None."""
    if not headers:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            v = float(ms) / 1000.0
            return v if v >= 0 else None
    except (TypeError, ValueError):
        pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        v = float(ra)
        return v if v >= 0 else None
    except (TypeError, ValueError):
        pass
    try:
        dt = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))


@dataclass
class RetryPolicy:
    """How long to wait between attempts. ``max_retries`` comes from the model spec."""

    max_retries: int = 6
    base_s: float = 1.0
    cap_s: float = 60.0
    max_retry_after_s: float = 600.0
    malformed_retries: int = 2  # a malformed answer rarely fixes itself: retry it only this often
    rng: random.Random = field(default_factory=random.Random)

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait before the attempt after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            ra = min(retry_after, self.max_retry_after_s)
            return ra + self.rng.uniform(0.0, 0.1 * ra if ra > 0 else 0.0)
        w = min(self.cap_s, self.base_s * (2 ** (attempt - 1)))
        return w * self.rng.uniform(0.5, 1.0)

    def retries_for(self, kind: str) -> int:
        return min(self.max_retries, self.malformed_retries) if kind == "malformed" else self.max_retries
