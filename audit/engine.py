"""The request engine: send prompts to a model, concurrently, and keep every answer in the run store.

:func:`complete` is the one way any stage talks to a model (replies, the llm-judge, the inference
probe, and turn by turn a multi-turn dialogue): every request is content-addressed
(:func:`audit.store.request_key`), recorded before it is sent, and its reply committed the moment it
arrives, so a run killed at any point (``kill -9`` included) resumes where it stopped and never pays
twice for a stored reply. The reply stage that uses it for the audited model's replies is
:mod:`audit.generate`.

Seeds: a request's seed is derived from the base seed (``decoding.seed``, else the spec's ``seed``
in :func:`generate`, else 0) and its sample index, ``seed_i = sha256("<base>:<i>")[:8] & 0x7fffffff``.
All variants of a post share the seed of a sample index (common random numbers: the paired
comparison of a cue variant with its control is then not blurred by sampling noise), and
different samples get different seeds.

Failures: 429/5xx/timeouts/connection errors are retried with exponential backoff and jitter
(Retry-After honoured, and a 429 pauses every worker); a request that still fails is stored with
status ``failed`` and sent again by the next run. A content-filter refusal is stored with status
``content_filter`` and not retried. A rejected key, an unknown model or an exhausted quota stops the
run at once with an :class:`~audit.errors.AuditError`; so do 10 failures in a row with no success
between them (the endpoint is down). Nothing stored is ever lost.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any, Iterable, Iterator

from .backends.openai_backend import CallError, ChatBackend
from .backends.ratelimit import RateLimiter, RetryPolicy
from .errors import AuditError
from .store import RunStore, now_iso, request_key
from .untrusted import redact_secrets, replace_unencodable, reply_char_limit, secrets_from_env, truncate_reply

CHUNK = 512
BREAKER_THRESHOLD = 10
#: The error kind of a reply with no text (empty, null or whitespace only): stored as failed.
EMPTY_REPLY = "empty reply"
#: Purposes whose empty answers are failed replies (the audited model's replies).
EMPTY_IS_MISSING = frozenset({"reply"})


# ---------------------------------------------------------------------------- summary


@dataclass
class GenerationSummary:
    """What a call of :func:`complete` (or :func:`generate`) did."""

    total: int = 0
    cached: int = 0           # already answered in the store: not sent
    sent: int = 0             # sent in this call (each once, retries not counted)
    ok: int = 0
    content_filter: int = 0   # refusals by the endpoint's content filter
    failed: int = 0           # failed after retries (sent again by the next run)
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)   # failed attempts by kind
    flags: dict[str, int] = field(default_factory=dict)    # answers changed before storing, by kind
                                                           # (redacted, unencodable, truncated)
    request_keys: list[str] = field(default_factory=list)  # one per item, in order
    in_batches: int = 0       # execution: batch: requests still out in open batches (audit/batch.py)
    open_batches: int = 0
    batch_note: str = ""      # what the batch step did, for the user ("submitted N requests in K batches; ...")

    def __iadd__(self, other: "GenerationSummary") -> "GenerationSummary":
        for f in ("total", "cached", "sent", "ok", "content_filter", "failed", "retries", "prompt_tokens",
                  "completion_tokens", "elapsed_s"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.errors = dict(Counter(self.errors) + Counter(other.errors))
        self.flags = dict(Counter(self.flags) + Counter(other.flags))
        self.request_keys = self.request_keys + other.request_keys
        self.in_batches += other.in_batches
        self.open_batches += other.open_batches
        self.batch_note = "; ".join(n for n in (self.batch_note, other.batch_note) if n)
        return self

    @property
    def replies_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("request_keys")
        if not self.in_batches and not self.open_batches and not self.batch_note:
            for k in ("in_batches", "open_batches", "batch_note"):  # online runs: as before batch execution
                d.pop(k)
        return d

    def line(self) -> str:
        """One line for the pipeline's stage log."""
        return (f"sent {self.sent}, cached {self.cached}, failed {self.failed}, refusals {self.content_filter}, "
                f"retries {self.retries}, tokens {self.prompt_tokens}+{self.completion_tokens}"
                + "".join(f", {k} {v}" for k, v in sorted(self.flags.items())))

    def format(self) -> str:
        lines = [
            f"requests: {self.total} total, {self.cached} already stored, {self.sent} sent "
            f"({self.ok} ok, {self.content_filter} content-filter refusals, {self.failed} failed)",
            f"retries: {self.retries}" + (
                " (" + ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) + ")" if self.errors else ""),
            f"tokens: {self.prompt_tokens} prompt, {self.completion_tokens} completion; "
            f"{self.elapsed_s:.1f} s" + (f", {self.replies_per_s:.2f} replies/s" if self.sent else ""),
        ]
        if self.flags:
            lines.append("answers changed before storing (flagged with the reply): "
                         + ", ".join(f"{k} {v}" for k, v in sorted(self.flags.items())))
        if self.failed:
            lines.append("failed requests are stored with their error; run the same command again to retry them")
        if self.batch_note:
            lines.append(self.batch_note)
        return "\n".join(lines)


# ---------------------------------------------------------------------------- seeds and params


def derive_seed(base: int, sample_index: int) -> int:
    h = hashlib.sha256(f"{base}:{sample_index}".encode()).hexdigest()
    return int(h[:8], 16) & 0x7FFFFFFF


def request_params(decoding: Any, model: Any, sample_index: int, base_seed: int | None = None) -> dict[str, Any]:
    """The decoding parameters of one request (they go into its key)."""
    base = decoding.seed if decoding.seed is not None else (base_seed if base_seed is not None else 0)
    params: dict[str, Any] = {
        "temperature": decoding.temperature, "top_p": decoding.top_p, "max_tokens": decoding.max_tokens,
        "seed": derive_seed(int(base), int(sample_index)),
    }
    if model.extra_body:
        params["extra_body"] = dict(model.extra_body)
    return params


def planned_keys(model: Any, decoding: Any, items: Iterable[dict[str, Any]], *, base_seed: int | None,
                 identity: tuple[str, str]) -> Iterator[str]:
    """The request key each item will have when :func:`complete` sends it to ``model`` (whose
    ``identity`` is (endpoint_id, model name)), without sending or storing anything."""
    for it in items:
        yield _keyed(identity, model, decoding, it, base_seed)[0]


def _keyed(identity: tuple[str, str], model: Any, decoding: Any, item: dict[str, Any],
           base_seed: int | None) -> tuple[str, dict[str, Any], int]:
    """(request key, decoding parameters, sample index) of one item sent to ``model``."""
    sample = int(item.get("sample_index", 0) or 0)
    params = request_params(decoding, model, sample, base_seed)
    return request_key(identity[0], identity[1], item["messages"], params, sample), params, sample


def _estimate_tokens(messages: list[dict[str, Any]], max_tokens: int) -> int:
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 4 + 8 * len(messages) + int(max_tokens)


# ---------------------------------------------------------------------------- complete()


def complete(
    store: RunStore,
    model: Any,
    decoding: Any,
    items: Iterable[dict[str, Any]],
    *,
    progress: bool = True,
    base_seed: int | None = None,
    retry: RetryPolicy | None = None,
    description: str | None = None,
    identity: tuple[str, str] | None = None,
) -> GenerationSummary:
    """Send every item whose request has no stored reply; store requests, replies and attempts.

    ``items``: dicts with ``purpose`` and ``messages`` and optionally ``variant_id``, ``subject_key``,
    ``style``, ``style_hash``, ``sample_index``. Any iterable works (a generator keeps memory flat);
    a list also gives the progress bar its total. Returns a :class:`GenerationSummary` whose
    ``request_keys`` are the items' keys in order. ``identity``: (endpoint id, model name) to key the
    requests by instead of the endpoint's URL and model, for a server the toolkit starts itself on a
    free port (the PCSA suite's local rule-based judge): its keys then survive a restart.
    """
    run = functools.partial(acomplete, model=model, decoding=decoding, items=items, progress=progress,
                            base_seed=base_seed, retry=retry, description=description, identity=identity)
    return run_sync(run, store)


def run_sync(run: Any, store: RunStore) -> Any:
    """``asyncio.run(run(store=store))``, also from inside a running event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run(store=store))
    # Called from inside a running event loop (a notebook): run in a thread with its own loop and
    # its own store connection (SQLite connections stay in the thread that made them).
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with RunStore(store.run_dir) as st:
                box["r"] = asyncio.run(run(store=st))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["r"]


async def acomplete(
    store: RunStore,
    model: Any,
    decoding: Any,
    items: Iterable[dict[str, Any]],
    *,
    progress: bool = True,
    base_seed: int | None = None,
    retry: RetryPolicy | None = None,
    description: str | None = None,
    identity: tuple[str, str] | None = None,
) -> GenerationSummary:
    """The async form of :func:`complete` (same arguments)."""
    if getattr(model, "execution", "online") == "batch":
        raise AuditError(f"model '{model.label}' has execution: batch; complete() sends online",
                         where=f"models[label={model.label}].execution",
                         fix="call audit.batch.complete_requests (it sends online models online and batch models "
                             "through their batch service)")
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    if model.is_embedded:
        from .backends.embedded import acquire, embedded_identity

        endpoint_id, model_name = embedded_identity()
        runner = _Runner(store, model, decoding, endpoint_id, model_name, base_seed, retry, progress, total,
                         description)
        try:
            if not runner.plan(items):
                return runner.finish()
            # One slot: llama.cpp batches concurrent sequences together, and a reply then depends on
            # what it was batched with (measured: 5 of 6 replies identical across two runs with 4
            # slots, 6 of 6 with one). Requests in flight still queue at the server.
            with acquire(parallel=1, progress=progress) as srv:
                backend = srv.backend(model)
                try:
                    await runner.run(backend)
                finally:
                    await backend.aclose()
        finally:
            runner.finish()
        return runner.summary
    backend = ChatBackend(model, endpoint_id=identity[0], model_name=identity[1]) if identity else ChatBackend(model)
    runner = _Runner(store, model, decoding, backend.endpoint_id, backend.model_name, base_seed, retry, progress,
                     total, description)
    try:
        if not runner.plan(items):
            return runner.summary
        await backend.preflight()
        await runner.run(backend)
    finally:
        await backend.aclose()
        runner.finish()
    return runner.summary


class _Abort(Exception):
    def __init__(self, error: AuditError):
        self.error = error


@dataclass
class _Job:
    key: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    est_tokens: int
    purpose: str = "reply"


class _Runner:
    """One pass over the items for one model: plan (keys, cache check), then send concurrently."""

    def __init__(self, store: RunStore, model: Any, decoding: Any, endpoint_id: str, model_name: str,
                 base_seed: int | None, retry: RetryPolicy | None, progress: bool, total: int | None,
                 description: str | None):
        self.store = store
        self.model = model
        self.decoding = decoding
        self.endpoint_id = endpoint_id
        self.model_name = model_name
        self.base_seed = base_seed
        self.retry = retry or RetryPolicy(max_retries=model.max_retries)
        self.progress = progress
        self.summary = GenerationSummary()
        self.total_hint = total
        self.description = description or f"{model.label}"
        self.t0 = time.monotonic()
        self._items: Iterator[dict[str, Any]] | None = None
        self._first: list[_Job] = []
        self._seen: set[str] = set()
        self._bar: Any = None
        self._consecutive_failures = 0
        self._last_failure = ""
        self._buf: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self._wake: asyncio.Event | None = None   # the writer task's signal while sending (None otherwise)
        self.secrets = secrets_from_env([model.api_key_env])
        from .budget import BudgetGuard

        self.budget = BudgetGuard.from_store(store, model.label)  # None: the run has no budget

    # ------------------------------------------------------------------ planning
    def plan(self, items: Iterable[dict[str, Any]]) -> bool:
        """Start walking the items; True when at least one needs sending (so a server is needed)."""
        self._items = iter(items)
        self._open_bar()
        while True:
            jobs = self._next_chunk()
            if jobs is None:
                return False
            if jobs:
                self._first = jobs
                return True

    def _next_chunk(self) -> list[_Job] | None:
        """The next chunk's jobs to send (cached ones counted and skipped); None when items are done."""
        assert self._items is not None
        chunk = list(islice(self._items, CHUNK))
        if not chunk:
            return None
        rows, keys = [], []
        for it in chunk:
            row = self._request_row(it)
            rows.append(row)
            keys.append(row["request_key"])
        self.summary.request_keys.extend(keys)
        self.summary.total += len(chunk)
        done = self._done(keys)
        new_rows, jobs = [], []
        for row in rows:
            k = row["request_key"]
            if k in done or k in self._seen:
                self.summary.cached += 1
                continue
            self._seen.add(k)
            new_rows.append(row)
            jobs.append(_Job(k, row["messages"], row["params"],
                             _estimate_tokens(row["messages"], int(row["params"]["max_tokens"])), row["purpose"]))
        if new_rows:
            self.store.put_requests(new_rows)
        if self._bar is not None:
            if self.total_hint is None:
                self._bar.total = self.summary.total
            self._bar.update(len(chunk) - len(jobs))
        return jobs

    def _request_row(self, it: dict[str, Any]) -> dict[str, Any]:
        try:
            messages = it["messages"]
            purpose = it["purpose"]
        except (KeyError, TypeError):
            raise AuditError("an item given to complete() lacks 'purpose' or 'messages'", where="complete(items)",
                             fix="give each item a dict with purpose and messages") from None
        key, params, sample = _keyed((self.endpoint_id, self.model_name), self.model, self.decoding, it,
                                     self.base_seed)
        return {
            "request_key": key, "purpose": purpose, "variant_id": it.get("variant_id"),
            "subject_key": it.get("subject_key"), "model_label": self.model.label, "endpoint_id": self.endpoint_id,
            "model_name": self.model_name, "style": it.get("style"), "style_hash": it.get("style_hash"),
            "sample_index": sample, "messages": messages, "params": params,
        }

    def _done(self, keys: list[str]) -> set[str]:
        return self.store.answered_among(keys)

    # ------------------------------------------------------------------ progress
    def _open_bar(self) -> None:
        if not self.progress:
            return
        from tqdm.auto import tqdm

        # smoothing=0: the rate and the ETA are averaged from the start, so they do not jump with
        # each reply's length; done / total, the rate and the ETA are always shown
        self._bar = tqdm(total=self.total_hint, desc=self.description, unit="req", file=sys.stderr,
                         dynamic_ncols=True, smoothing=0, mininterval=0.5,
                         bar_format="{desc}: {n_fmt}/{total_fmt} done [{elapsed} elapsed, {rate_fmt}, "
                                    "ETA {remaining}]{postfix}")
        self._postfix_t = 0.0

    def _tick(self, n: int = 1) -> None:
        if self._bar is None:
            return
        self._bar.update(n)
        now = time.monotonic()
        if now - self._postfix_t > 0.5:
            self._postfix_t = now
            s = self.summary
            self._bar.set_postfix_str(f"sent={s.sent} cached={s.cached} err={s.failed} retries={s.retries}",
                                      refresh=False)

    # ------------------------------------------------------------------ sending
    async def run(self, backend: ChatBackend) -> None:
        with _send_lock(self.store, self.endpoint_id, self.model_name, self.model.label):
            await self._run(backend)

    async def _run(self, backend: ChatBackend) -> None:
        self.backend = backend
        self.limiter = RateLimiter(self.model.requests_per_minute, self.model.tokens_per_minute)
        n_workers = self.model.max_in_flight
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(2 * n_workers, 16))

        async def producer() -> None:
            for job in self._first:
                await queue.put(job)
            self._first = []
            while True:
                jobs = self._next_chunk()
                if jobs is None:
                    break
                for job in jobs:
                    await queue.put(job)
            for _ in range(n_workers):
                await queue.put(None)

        busy: set[asyncio.Task] = set()

        async def worker() -> None:
            me = asyncio.current_task()
            while True:
                job = await queue.get()
                if job is None or self._stopping:
                    return
                busy.add(me)
                try:
                    await self._send(job)
                finally:
                    busy.discard(me)

        async def writer() -> None:
            # Commits whatever replies have arrived since it last ran, in one transaction: under load
            # several per commit, at idle one (a reply waits at most one turn of the event loop).
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._flush()
                if self._closing:
                    return

        async def closer() -> None:
            await asyncio.gather(prod, *workers)
            self._closing = True
            self._wake.set()

        self._wake = asyncio.Event()
        self._closing = False
        self._stopping = False
        prod = asyncio.ensure_future(producer())
        workers = [asyncio.ensure_future(worker()) for _ in range(n_workers)]
        tasks = [prod, *workers, asyncio.ensure_future(writer()), asyncio.ensure_future(closer())]
        failing = False
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()
        except _Abort as ab:
            failing = True
            # A fatal answer (rejected key, unknown model, exhausted quota) stops new requests, but the
            # requests already in flight were paid for: wait for their answers (up to one request
            # timeout) so that they are stored, then stop.
            self._stopping = True
            prod.cancel()
            still = [w for w in workers if w in busy and not w.done()]
            for w in workers:
                if w not in still:
                    w.cancel()
            if still:
                await asyncio.wait(still, timeout=self.model.timeout_s)
            raise ab.error from None
        except BaseException:
            failing = True
            raise
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # store what arrived before an error or interruption; an error here is secondary to the first
            try:
                self._flush()
            except AuditError:
                if not failing:
                    raise

    def _emit(self, row: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
        self._buf.append((row, attempts))
        if self._wake is not None:  # None: not sending (a batch output being stored), the caller flushes
            self._wake.set()

    def _flush(self) -> None:
        if self._buf:
            batch, self._buf = self._buf, []
            try:
                self.store.put_replies(batch)
            except BaseException:
                self._buf = batch + self._buf  # not stored: keep them for the final attempt
                raise

    async def _send(self, job: _Job) -> None:
        reserved = 0.0
        if self.budget is not None:  # a run with a budget: not a request that could pass it (audit.costs)
            max_tokens = int(job.params.get("max_tokens") or 0)
            reserved = self.budget.worst_case(max(job.est_tokens - max_tokens, 0), max_tokens)
            if not self.budget.acquire(reserved):
                raise _Abort(self.budget.error(self.summary.sent))
        usage: list[Any] = []
        try:
            await self._send_job(job, usage)
        finally:
            if self.budget is not None:
                self.budget.settle(reserved, *(usage or [None, None]))

    async def _send_job(self, job: _Job, usage: list[Any]) -> None:
        attempts: list[dict[str, Any]] = []
        self.summary.sent += 1
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire(job.est_tokens)
            try:
                res = await self.backend.chat(job.messages, job.params)
            except CallError as err:
                err.text = self._safe(err.text)[0]  # stored in attempts and shown: no key, no bad bytes
                self.summary.errors[err.kind] = self.summary.errors.get(err.kind, 0) + 1
                rec = {"attempt": attempt, "error_type": err.kind, "status_code": err.status_code,
                       "message": err.text, "wait_s": None, "at": now_iso()}
                attempts.append(rec)
                if err.fatal:
                    self._store_failure(job, attempts, err)
                    raise _Abort(self.backend.fatal_error(err))
                if err.kind == "content_filter":
                    self.record_content_filter(job, attempts, err)
                    return
                if err.retryable and attempt <= self.retry.retries_for(err.kind):
                    wait = self.retry.wait(attempt, err.retry_after)
                    rec["wait_s"] = round(wait, 4)
                    if err.kind == "rate_limit":
                        self.limiter.pause(wait)
                    self.summary.retries += 1
                    await asyncio.sleep(wait)
                    if not self._stopping:
                        continue
                self.record_failure(job, attempts, err)
                if self._consecutive_failures >= BREAKER_THRESHOLD:
                    raise _Abort(AuditError(
                        f"{self._consecutive_failures} requests to model '{self.model.label}' failed in a row "
                        f"(last: {err.text})", where=f"models[label={self.model.label}]",
                        fix="check the endpoint; everything finished is stored and the same command resumes"))
                return
            self.limiter.settle(job.est_tokens, (res.prompt_tokens or 0) + (res.completion_tokens or 0)
                                if res.prompt_tokens is not None else None)
            usage[:] = [res.prompt_tokens, res.completion_tokens]
            self.record_result(job, res, attempt, attempts)
            return

    # ------------------------------------------------------------------ storing an answer
    # One place that turns an answer into a stored reply, for online calls and for batch output
    # lines alike (audit/batch.py), so both store exactly the same rows.

    def record_failure(self, job: _Job, attempts: list[dict[str, Any]], err: CallError) -> None:
        """Store a request that failed for good (it is sent again by the next run) and count it."""
        self._store_failure(job, attempts, err)
        self.summary.failed += 1
        self._consecutive_failures += 1
        self._last_failure = err.text
        self._tick()

    def record_content_filter(self, job: _Job, attempts: list[dict[str, Any]], err: CallError) -> None:
        """Store a content-filter refusal given as an error answer (never retried) and count it."""
        self._store(job, attempts, status="content_filter", error=err.text, status_code=err.status_code)
        self.summary.content_filter += 1
        self._consecutive_failures = 0
        self._tick()

    def record_result(self, job: _Job, res: Any, attempt: int, attempts: list[dict[str, Any]]) -> str:
        """Store an answer (a :class:`~audit.backends.openai_backend.CallResult`): key redacted,
        unencodable characters replaced, an over-long reply cut, each change flagged; count it.
        Returns the stored status.

        Empty is missing: an audited model's reply (purpose ``reply``) whose text is empty, null or
        whitespace only is stored as a *failed* reply with the reason (never as an answered reply that
        scorers would score 0), so it is counted per group and goes through the analysis'
        differential-missingness check. It is not counted towards the consecutive-failure breaker (the
        endpoint did answer). A judge's or probe's empty answer is left to its parser, which calls it
        unanswered or unparseable as the suite's method says."""
        if job.purpose in EMPTY_IS_MISSING and res.status != "content_filter" and not (res.text or "").strip():
            kind = "whitespace only" if res.text else "empty or null"
            self._emit({
                "request_key": job.key, "status": "failed", "text": None, "finish_reason": res.finish_reason,
                "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
                "latency_s": round(res.latency_s, 4) if res.latency_s is not None else None, "attempts": attempt,
                "model_reported": res.model_reported, "runtime": res.runtime, "runtime_version": res.runtime_version,
                "error": f"{EMPTY_REPLY}: the endpoint answered with no text ({kind})",
            }, attempts)
            self.summary.failed += 1
            self.summary.errors[EMPTY_REPLY] = self.summary.errors.get(EMPTY_REPLY, 0) + 1
            self._tick()
            return "failed"
        text, flags = self._safe(res.text)
        text, cut = truncate_reply(text, int(job.params["max_tokens"]))
        if cut:
            flags.append(f"truncated: {len(res.text or '')} characters, over the "
                         f"{reply_char_limit(int(job.params['max_tokens']))} that max_tokens "
                         f"{job.params['max_tokens']} allows")
        for f in flags:
            self.summary.flags[f.split(":")[0]] = self.summary.flags.get(f.split(":")[0], 0) + 1
        self._emit({
            "request_key": job.key, "status": res.status, "text": text, "finish_reason": res.finish_reason,
            "prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens,
            "latency_s": round(res.latency_s, 4) if res.latency_s is not None else None, "attempts": attempt,
            "model_reported": res.model_reported,
            "runtime": res.runtime, "runtime_version": res.runtime_version, "error": None,
            "flags": flags,
        }, attempts)
        if res.status == "content_filter":
            self.summary.content_filter += 1
        else:
            self.summary.ok += 1
        self.summary.prompt_tokens += res.prompt_tokens or 0
        self.summary.completion_tokens += res.completion_tokens or 0
        self._consecutive_failures = 0
        self._tick()
        return res.status

    def _safe(self, text: str | None) -> tuple[str | None, list[str]]:
        """``text`` with the model's API key redacted and unencodable characters replaced; the flags
        that say what was done (stored with the reply and counted in the summary)."""
        flags: list[str] = []
        text, found = redact_secrets(text, self.secrets)
        flags += [f"redacted: the value of {name} appeared in the answer" for name in found]
        if text:
            text, n = replace_unencodable(text)
            if n:
                flags.append(f"unencodable: {n} lone surrogate(s) replaced by U+FFFD")
        return text, flags

    def _store(self, job: _Job, attempts: list[dict[str, Any]], *, status: str, error: str | None,
               status_code: int | None = None) -> None:
        self._emit({
            "request_key": job.key, "status": status, "text": None, "finish_reason": status if status ==
            "content_filter" else None, "attempts": len(attempts), "error": error,
            "runtime": self.backend.runtime, "runtime_version": self.backend.runtime_version,
        }, attempts)

    def _store_failure(self, job: _Job, attempts: list[dict[str, Any]], err: CallError) -> None:
        self._store(job, attempts, status="failed", error=f"{err.kind}: {err.text}")

    def finish(self) -> GenerationSummary:
        """Close the progress bar and stamp the elapsed time (safe to call twice)."""
        if self._bar is not None:
            s = self.summary
            self._bar.set_postfix_str(f"sent={s.sent} cached={s.cached} err={s.failed} retries={s.retries}",
                                      refresh=False)
            self._bar.close()
            self._bar = None
        self.summary.elapsed_s = time.monotonic() - self.t0
        return self.summary


@contextmanager
def _send_lock(store: RunStore, endpoint_id: str, model_name: str, label: str) -> Iterator[None]:
    """One process at a time sends requests for a (run directory, endpoint, model): two processes on
    the same run would pay twice for the same replies. The lock (flock) goes away with its process,
    ``kill -9`` included."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    tag = hashlib.sha256(f"{endpoint_id}\x00{model_name}".encode()).hexdigest()[:12]
    path = store.run_dir / f".send-{tag}.lock"
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AuditError(
                f"another process is already sending the requests of model '{label}' for this run",
                where=str(store.run_dir), fix="wait for it to finish (or stop it); then run the command again",
            ) from None
        yield
    finally:
        fh.close()


__all__ = ["GenerationSummary", "acomplete", "complete", "derive_seed", "request_params"]
