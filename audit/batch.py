"""Batch execution: a model's requests through a provider's batch service (OpenAI Batch, Azure OpenAI
Global Batch, any service with the same files + batches API), or through any chat endpoint in bulk
(``run-local``, ``vllm run-batch``), with the run store as the record.

A model with ``execution: batch`` in its spec is sent its requests in three idempotent steps, all of
whose state is in the run store (tables ``batches`` and ``batch_items``, migration 4):

- :func:`submit`: the model's requests that have no stored answer and are in no open batch are
  written into JSONL shards (``RUN_DIR/batches/<label>/<batch id>.jsonl``, SHA-256 recorded) of at
  most ``batch.max_requests`` lines and ``batch.max_bytes`` bytes (the provider's limits by default),
  one line ``{custom_id, method, url, body}`` per request with the request key as ``custom_id`` and
  the body the online client would send. Each shard is recorded (state ``prepared``), uploaded
  (``uploaded``, ``files.create``) and created (``submitted``, ``batches.create`` with metadata
  ``empathy_audit_batch = <batch id>``). A process killed between the provider creating a batch and
  the store recording it finds that batch again by its metadata (``batches.list``) instead of
  creating (and paying for) a second one. A request is put into at most ``batch.max_attempts``
  collected batches; after that it stays failed and the run goes on without it (as an online run
  does with a request that failed after its retries).
- :func:`poll`: refresh the provider's status and counts of every submitted batch (safe from cron).
- :func:`collect`: for each batch the provider has finished (completed, expired, failed, cancelled),
  download its output and error files into the run directory and join them on ``custom_id``.
  Every line goes through the request engine's own code that stores an online answer
  (:meth:`audit.engine._Runner.record_result` and friends), so replies, refusals, failures and token
  usage are stored exactly as online ones. Requests without a line (expired, cancelled) and failed
  ones stay pending for the next submit. A batch is collected once; a duplicated line, a line for a
  request already answered, or a second collect stores nothing.

:func:`run_local` sends the prepared shards through the online client to any ``base_url`` (the
embedded model's server, vLLM, llama.cpp) and writes provider-format output files, which are then
collected like a provider's (:func:`collect_file`, also ``empathy-audit batch collect --from``
for the output of ``vllm run-batch``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .backends.openai_backend import CallError, CallResult, ChatBackend
from .engine import GenerationSummary, _Job, _Runner, _estimate_tokens, complete, run_sync
from .errors import AuditError
from .store import RunStore, now_iso

TERMINAL = ("completed", "failed", "expired", "cancelled")
BATCH_DIR = "batches"
FLUSH_EVERY = 2000          # replies per transaction while collecting
META_KEY = "empathy_audit_batch"
# Line-level errors that mean "this request was not run" (leave it pending), not "it failed".
NOT_RUN = ("batch_expired", "batch_cancelled", "expired", "cancelled")


@dataclass
class BatchCounts:
    """What a batch step did."""

    submitted_requests: int = 0
    submitted_batches: int = 0
    prepared_batches: int = 0      # shards written and recorded, not sent to a service (provider local)
    polled: int = 0
    collected_batches: int = 0
    stored: dict[str, int] = field(default_factory=dict)   # ok, content_filter, failed, not_run, duplicate, ...
    open_batches: int = 0
    open_requests: int = 0
    found_again: int = 0           # batches an interrupted earlier call had created, found by their metadata
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, what: str, n: int = 1) -> None:
        self.stored[what] = self.stored.get(what, 0) + n


# ---------------------------------------------------------------------------- models of a run


def spec_models(spec: Any) -> dict[str, Any]:
    """label -> ModelSpec of every model a run's spec names (audited models, judge, probe model)."""
    out = {m.label: m for m in spec.models}
    for js in (spec.scoring.judge, spec.scoring.probe_model):
        if js is not None:
            out.setdefault(js.model.label, js.model)
    return out


def _model(models: dict[str, Any], label: str) -> Any:
    if label not in models:
        raise AuditError(f"the run's spec has no model labelled '{label}' (a batch of the store names it)",
                         where="models", fix="run the batch command with the spec the run was started with")
    return models[label]


def _backend(model: Any, runtime: str | None = None, base_url: str | None = None) -> ChatBackend:
    if model.is_embedded:
        raise AuditError(f"model '{model.label}' is the embedded model: it has no batch service",
                         where=f"models[label={model.label}]", fix="use execution: online for it")
    return ChatBackend(model, base_url=base_url, runtime=runtime)


def _runner(store: RunStore, model: Any, backend: ChatBackend) -> _Runner:
    r = _Runner(store, model, None, backend.endpoint_id, backend.model_name, None, None, False, None, None)
    r.backend = backend
    return r


# ---------------------------------------------------------------------------- shards


def _line_url(provider: str) -> str:
    return "/chat/completions" if provider == "azure" else "/v1/chat/completions"


def write_shards(store: RunStore, model: Any, *, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Write the model's pending requests (only those of ``keys`` when given) into shards within its
    batch limits and record each (state ``prepared``); returns the batch rows recorded."""
    provider, max_n, max_bytes = model.batch.limits(model)
    backend = _backend(model)
    wanted = set(keys) if keys is not None else None
    out_dir = store.run_dir / BATCH_DIR / model.label
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    shards: list[tuple[Path, list[str], int]] = []
    fh, part_keys, size, tmp = None, [], 0, None
    url = _line_url(provider)

    def close() -> None:
        nonlocal fh
        if fh is not None:
            fh.close()
            shards.append((tmp, part_keys, size))
            fh = None

    for key, messages_json, params_json in store.pending_batch_requests(backend.endpoint_id, backend.model_name,
                                                                         model.batch.max_attempts):
        if wanted is not None and key not in wanted:
            continue
        body = backend.request_body(json.loads(messages_json), json.loads(params_json))
        if provider == "azure":
            body["model"] = model.azure.deployment if model.azure is not None else body["model"]
        line = (json.dumps({"custom_id": key, "method": "POST", "url": url, "body": body},
                           ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        if len(line) > max_bytes:
            raise AuditError(f"one request is {len(line)} bytes, over the batch file limit of {max_bytes}",
                             where=f"models[label={model.label}].batch.max_bytes",
                             fix="raise batch.max_bytes (within the provider's limit) or send this model online")
        if fh is not None and (len(part_keys) >= max_n or size + len(line) > max_bytes):
            close()
        if fh is None:
            tmp = out_dir / f".writing-{os.getpid()}-{len(shards)}.jsonl"
            fh, part_keys, size = open(tmp, "wb"), [], 0
        fh.write(line)
        part_keys.append(key)
        size += len(line)
    close()
    rows = []
    seq = store.count_rows("batches")   # a shard of the same requests written again gets a new id
    for i, (path, part, nbytes) in enumerate(shards):
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        batch_id = f"b{stamp}-{seq + i:04d}-{sha[:10]}"
        final = out_dir / f"{batch_id}.jsonl"
        path.replace(final)
        row = {"batch_id": batch_id, "model_label": model.label, "endpoint_id": backend.endpoint_id,
               "model_name": backend.model_name, "provider": provider,
               "shard_path": str(final.relative_to(store.run_dir)), "shard_sha256": sha, "shard_bytes": nbytes,
               "n_requests": len(part), "state": "prepared"}
        store.put_batch(row, part)
        rows.append(row)
    return rows


def _check_shard(store: RunStore, b: dict[str, Any]) -> Path:
    path = store.run_dir / b["shard_path"]
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != b["shard_sha256"]:
        raise AuditError(f"the shard of batch {b['batch_id']} is missing or changed since it was written",
                         where=str(path),
                         fix=f"run 'empathy-audit batch cancel {store.run_dir} --batch {b['batch_id']}' and "
                             "submit again")
    return path


# ---------------------------------------------------------------------------- submit / poll / collect


async def asubmit(store: RunStore, models: dict[str, Any], *, labels: Iterable[str] | None = None,
                  keys: Iterable[str] | None = None, upload: bool = True) -> BatchCounts:
    """Write shards of the pending requests of every batch model (of ``labels``), then upload and
    create every recorded batch not yet submitted (provider ``local`` shards stay prepared)."""
    counts = BatchCounts()
    chosen = [models[x] for x in labels] if labels is not None else \
        [m for m in models.values() if m.execution == "batch"]
    keyset = list(keys) if keys is not None else None
    for m in chosen:
        new = write_shards(store, m, keys=keyset)
        counts.prepared_batches += len(new)
    if not upload:
        return counts
    guards: dict[str, Any] = {}
    for b in store.batches(states=("prepared", "uploaded")):
        if b["model_label"] not in {m.label for m in chosen} or b["provider"] == "local":
            continue
        _check_budget(store, b, guards)
        created = await _submit_one(store, _model(models, b["model_label"]), b)
        if created:   # a batch found again after a crash was submitted by an earlier call: not counted here
            counts.submitted_batches += 1
            counts.submitted_requests += int(b["n_requests"])
        else:
            counts.found_again += 1
    return counts


def _shard_worst_case(store: RunStore, b: dict[str, Any], guard: Any) -> float:
    """The most a batch's requests could cost: each line's prompt estimate and its max_tokens at the
    batch prices (:meth:`audit.costs.BudgetGuard.worst_case`)."""
    from .budget import estimate_prompt_tokens

    path = store.run_dir / b["shard_path"] if b.get("shard_path") else None
    if path is None or not path.exists():
        return 0.0
    total = 0.0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            body = json.loads(line).get("body", {})
            total += guard.worst_case(estimate_prompt_tokens(body.get("messages") or []),
                                      int(body.get("max_tokens") or body.get("max_completion_tokens") or 0),
                                      batch=True)
    return total


def _check_budget(store: RunStore, b: dict[str, Any], guards: dict[str, Any]) -> None:
    """Refuse, before upload, a batch whose worst case could take the spend past the run's budget
    (the reported spend plus the worst case of the batches still out; :class:`audit.costs.BudgetGuard`)."""
    from .budget import BudgetGuard

    label = b["model_label"]
    if label not in guards:
        guard = BudgetGuard.from_store(store, label)
        if guard is not None:  # the batches already out count with their worst case
            for o in store.batches(states=("submitted",)):
                if o["model_label"] == label:
                    guard.reserved += _shard_worst_case(store, o, guard)
        guards[label] = guard
    guard = guards[label]
    if guard is None:
        return
    cost = _shard_worst_case(store, b, guard)
    if not guard.acquire(cost):
        raise AuditError(
            f"budget: batch {b['batch_id']} of model '{label}' ({b['n_requests']} requests) could cost up to "
            f"${cost:,.4f} at batch prices; with ${guard.spent:,.4f} spent and ${guard.reserved:,.4f} in batches still "
            f"out that could pass the budget of ${guard.usd:,.4f}, so it was not uploaded", where="budget",
            fix="run the same command with a higher budget (--max-usd, or budget: {usd: ...} in the spec); the "
                "batch is kept prepared and is uploaded then")


def _client(model: Any) -> tuple[ChatBackend, Any]:
    backend = _backend(model)
    # files and batches calls use the client's own retries (429 on create, 5xx), honouring Retry-After
    return backend, backend.client.with_options(max_retries=max(model.max_retries, 2), timeout=600.0)


async def _submit_one(store: RunStore, model: Any, b: dict[str, Any]) -> bool:
    """Upload and create one recorded batch; True when this call created it at the provider, False when
    a batch created by an earlier, interrupted call was found again (:func:`_find_created`)."""
    import openai

    backend, client = _client(model)
    provider, _, _ = model.batch.limits(model)
    try:
        if b["state"] == "uploaded":
            # A process killed after batches.create but before it stored the answer: find that batch
            # by its metadata rather than create (and pay for) a second one.
            found = await _find_created(client, b["batch_id"], since=_epoch(b["created_at"]))
            if found is not None:
                _record_provider(store, b["batch_id"], found, state="submitted")
                return False
            file_id = b["input_file_id"]
        else:
            path = _check_shard(store, b)
            with open(path, "rb") as fh:
                f = await client.files.create(file=(path.name, fh, "application/jsonl"), purpose="batch")
            file_id = f.id
            store.update_batch(b["batch_id"], state="uploaded", input_file_id=file_id)
        created = await client.batches.create(input_file_id=file_id, endpoint=_line_url(provider),
                                              completion_window=model.batch.completion_window,
                                              metadata={META_KEY: b["batch_id"]})
        _record_provider(store, b["batch_id"], created, state="submitted")
        return True
    except openai.APIStatusError as exc:
        err = backend.status_error(exc.status_code, exc.body, None, exc.message or "")
        raise AuditError(f"the batch service of model '{model.label}' refused batch {b['batch_id']}: {err.text}",
                         where=f"models[label={model.label}]",
                         fix="fix the cause and run the same command again: recorded batches are kept and resumed"
                         ) from None
    except openai.APIConnectionError as exc:
        raise AuditError(backend.redact(f"cannot reach the batch service of model '{model.label}' at "
                                        f"{backend.display_url} ({exc})"), where=f"models[label={model.label}]",
                         fix="check base_url and the network; run the same command again to resume") from None
    finally:
        await backend.aclose()


#: How far the provider's clock may be behind ours when paging back through its batch list.
CLOCK_SKEW_S = 3600.0


def _epoch(iso: str | None) -> float | None:
    from datetime import datetime, timezone

    try:
        t = datetime.fromisoformat(str(iso).replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


async def _find_created(client: Any, batch_id: str, since: float | None = None) -> Any:
    """The provider's batch whose metadata names ``batch_id``, or None.

    ``batches.list`` is newest first, 100 a page; an account may have created any number of batches
    since ours (other runs, other people), so the pages are read (``after`` the last id of the page
    before) until one reaches batches created before ``since`` (when we recorded the batch, less
    :data:`CLOCK_SKEW_S`): ours cannot be older than that. Without ``since``, every page is read."""
    cutoff = since - CLOCK_SKEW_S if since is not None else None
    after: str | None = None
    while True:
        page = await client.batches.list(limit=100, **({"after": after} if after else {}))
        data = list(page.data or [])
        for b in data:
            if (getattr(b, "metadata", None) or {}).get(META_KEY) == batch_id:
                return b
        if not data or not getattr(page, "has_more", False):
            return None
        oldest = getattr(data[-1], "created_at", None)
        if cutoff is not None and oldest is not None and float(oldest) < cutoff:
            return None
        after = data[-1].id


def _record_provider(store: RunStore, batch_id: str, pb: Any, *, state: str | None = None) -> None:
    rc = getattr(pb, "request_counts", None)
    fields: dict[str, Any] = {
        "provider_batch_id": pb.id, "provider_status": pb.status, "output_file_id": getattr(pb, "output_file_id", None),
        "error_file_id": getattr(pb, "error_file_id", None),
        "counts_json": json.dumps(rc.model_dump() if rc is not None else {}, sort_keys=True)}
    if state:
        fields["state"] = state
    store.update_batch(batch_id, **fields)


async def apoll(store: RunStore, models: dict[str, Any]) -> BatchCounts:
    """Refresh the provider status of every submitted batch."""
    counts = BatchCounts()
    for b in store.batches(states=("submitted",)):
        if b["provider_status"] in TERMINAL or b["model_label"] not in models:
            continue
        model = _model(models, b["model_label"])
        backend, client = _client(model)
        try:
            pb = await client.batches.retrieve(b["provider_batch_id"])
        finally:
            await backend.aclose()
        _record_provider(store, b["batch_id"], pb)
        counts.polled += 1
    return counts


async def acollect(store: RunStore, models: dict[str, Any]) -> BatchCounts:
    """Download and store the output of every submitted batch the provider has finished."""
    counts = BatchCounts()
    for b in store.batches(states=("submitted",)):
        if b["provider_status"] not in TERMINAL or b["model_label"] not in models:
            continue
        model = _model(models, b["model_label"])
        backend, client = _client(model)
        files = []
        try:
            for kind in ("output", "error"):
                fid = b[f"{kind}_file_id"]
                if not fid:
                    continue
                content = await client.files.content(fid)
                path = store.run_dir / Path(b["shard_path"]).with_suffix(f".{kind}.jsonl")
                path.write_bytes(content.content)
                files.append(path)
        finally:
            await backend.aclose()
        got = ingest(store, models, _lines(files), runtime=f"{b['provider']} batch",
                     batch_ids={b["batch_id"]})
        _close(store, b["batch_id"], got)
        counts.collected_batches += 1
        counts.prompt_tokens += got.prompt_tokens
        counts.completion_tokens += got.completion_tokens
        for k, v in got.stored.items():
            counts.add(k, v)
    return counts


def _close(store: RunStore, batch_id: str, got: BatchCounts) -> None:
    keys = store.batch_keys(batch_id)
    answered = store.answered_among(keys)
    summary = {**got.stored, "answered": len(answered), "pending_again": len(keys) - len(answered)}
    store.update_batch(batch_id, state="collected", collected_json=summary)


def _lines(paths: Iterable[Path]) -> Iterable[tuple[str, int, str]]:
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, 1):
                if line.strip():
                    yield str(p), i, line


def ingest(store: RunStore, models: dict[str, Any], lines: Iterable[tuple[str, int, str]], *, runtime: str,
           batch_ids: set[str] | None = None) -> BatchCounts:
    """Store the answers of provider-format output lines ``(file, line number, text)``, joined on
    ``custom_id`` with the stored requests, through the engine's own storing code. Lines for unknown
    requests, for requests of other batches than ``batch_ids`` (when given), for requests already
    answered, and repeated lines store nothing and are counted."""
    counts = BatchCounts()
    runners: dict[str, _Runner] = {}
    seen: set[str] = set()
    pending: list[tuple[str, int, dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        keys = [p[2]["custom_id"] for p in pending]
        reqs = store.request_rows(keys)
        done = store.answered_among(keys)
        member = store.batches_of_keys(keys, ("prepared", "uploaded", "submitted")) if batch_ids is not None else {}
        for where, n, rec in pending:
            key = rec["custom_id"]
            if key not in reqs:
                counts.add("unknown")
                continue
            if batch_ids is not None and member.get(key) not in batch_ids:
                counts.add("other_batch")
                continue
            if key in done:
                counts.add("already_answered")
                continue
            q = reqs[key]
            label = q["model_label"]
            if label not in runners:
                m = _model(models, label)
                # a parser only (nothing is sent): the key, when set, is there to be redacted from answers
                key = os.environ.get(m.api_key_env) if m.api_key_env else None
                be = ChatBackend(m, endpoint_id=q["endpoint_id"], model_name=q["model_name"], api_key=key or "",
                                 runtime=runtime)
                runners[label] = _runner(store, m, be)
            _store_line(runners[label], q, rec, counts)
        for r in runners.values():
            r._flush()
        pending.clear()

    for where, n, text in lines:
        try:
            rec = json.loads(text)
            key = rec["custom_id"]
            if not isinstance(key, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            counts.add("unreadable")
            continue
        if key in seen:
            counts.add("duplicate")
            continue
        seen.add(key)
        pending.append((where, n, rec))
        if len(pending) >= FLUSH_EVERY:
            flush()
    flush()
    counts.prompt_tokens = sum(r.summary.prompt_tokens for r in runners.values())
    counts.completion_tokens = sum(r.summary.completion_tokens for r in runners.values())
    return counts


def _store_line(runner: _Runner, q: dict[str, Any], rec: dict[str, Any], counts: BatchCounts) -> None:
    job = _Job(q["request_key"], q["messages"], q["params"],
               _estimate_tokens(q["messages"], int(q["params"].get("max_tokens") or 0)), q.get("purpose") or "reply")
    backend = runner.backend
    resp = rec.get("response") or None
    error = rec.get("error") or None
    err: CallError | None = None
    if isinstance(resp, dict) and int(resp.get("status_code") or 0) == 200:
        try:
            res: CallResult = backend.result_from_body(resp.get("body"), None)
        except CallError as e:
            err = e
        else:
            counts.add(runner.record_result(job, res, 1, []))
            return
    elif isinstance(resp, dict) and resp.get("status_code"):
        err = backend.status_error(int(resp["status_code"]), resp.get("body"))
    elif isinstance(error, dict):
        code = str(error.get("code") or "")
        if code in NOT_RUN:
            counts.add("not_run")
            return
        err = CallError("server" if not code else code, backend.redact(f"{code}: {error.get('message', '')}"))
    else:
        counts.add("unreadable")
        return
    err.text = runner._safe(err.text)[0]
    attempts = [{"attempt": 1, "error_type": err.kind, "status_code": err.status_code, "message": err.text,
                 "wait_s": None, "at": now_iso()}]
    if err.kind == "content_filter":
        runner.record_content_filter(job, attempts, err)
        counts.add("content_filter")
    else:
        runner.record_failure(job, attempts, err)
        counts.add("failed")


def collect_file(store: RunStore, models: dict[str, Any], paths: Iterable[str | Path],
                 runtime: str = "batch file") -> BatchCounts:
    """Store the answers of provider-format output files (``vllm run-batch -o``, ``run-local``); every
    open batch with a request among them is then collected (its requests still unanswered pending again)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.exists():
            raise AuditError("no such output file", where=str(p), fix="give the -o file of vllm run-batch or run-local")
    keys = [json.loads(t).get("custom_id") for _, _, t in _lines(paths) if _json_ok(t)]
    touched = set(store.batches_of_keys([k for k in keys if isinstance(k, str)], ("prepared", "uploaded")).values())
    got = ingest(store, models, _lines(paths), runtime=runtime)
    for bid in sorted(touched):
        _close(store, bid, got)
    got.collected_batches = len(touched)
    return got


def _json_ok(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


async def acancel(store: RunStore, models: dict[str, Any], batch_ids: Iterable[str] | None = None) -> int:
    """Cancel open batches (all, or ``batch_ids``): submitted ones at the provider (their finished part
    is still collected), prepared or uploaded ones here. Returns how many were cancelled."""
    n = 0
    want = set(batch_ids) if batch_ids is not None else None
    for b in store.batches(states=store.OPEN_BATCH_STATES):
        if want is not None and b["batch_id"] not in want:
            continue
        if b["state"] == "submitted":
            if b["provider_status"] in TERMINAL:
                continue
            backend, client = _client(_model(models, b["model_label"]))
            try:
                pb = await client.batches.cancel(b["provider_batch_id"])
            finally:
                await backend.aclose()
            _record_provider(store, b["batch_id"], pb)
        else:
            store.update_batch(b["batch_id"], state="cancelled")
        n += 1
    return n


# ---------------------------------------------------------------------------- run-local


async def arun_local(store: RunStore, models: dict[str, Any], *, base_url: str | None = None,
                     echo: Callable[[str], None] | None = None) -> BatchCounts:
    """Write shards of pending batch requests (not uploaded), stream every prepared shard through the
    online client (to ``base_url``, default each model's own), write provider-format output files
    next to the shards and collect them."""
    import openai

    total = BatchCounts()
    await asubmit(store, models, upload=False)
    for b in store.batches(states=("prepared",)):
        model = _model(models, b["model_label"])
        shard = _check_shard(store, b)
        out = shard.with_suffix(".local-output.jsonl")
        backend = _backend(model, base_url=base_url)
        client = backend.client.with_options(max_retries=model.max_retries)
        sem = asyncio.Semaphore(model.max_in_flight)
        lines = [json.loads(t) for _, _, t in _lines([shard])]
        done = 0

        async def one(i: int, rec: dict[str, Any]) -> str:
            nonlocal done
            body = dict(rec["body"])
            known = {k: body.pop(k) for k in ("model", "messages", "temperature", "top_p", "max_tokens", "seed")
                     if k in body}
            async with sem:
                try:
                    raw = await client.chat.completions.with_raw_response.create(**known, extra_body=body or None)
                    resp: Any = {"status_code": 200, "request_id": raw.headers.get("x-request-id", ""),
                                 "body": json.loads(raw.http_response.text)}
                    error = None
                except openai.APIStatusError as exc:
                    resp = {"status_code": exc.status_code, "request_id": "",
                            "body": exc.body if isinstance(exc.body, dict) else {"error": {"message": str(exc.body)}}}
                    error = None
                except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                    resp, error = None, {"code": "connection_error", "message": backend.redact(str(exc))}
            done += 1
            if echo is not None and done % 500 == 0:
                echo(f"  run-local {b['batch_id']}: {done}/{len(lines)}")
            return json.dumps({"id": f"local-{i}", "custom_id": rec["custom_id"], "response": resp, "error": error},
                              ensure_ascii=False)

        try:
            results = await asyncio.gather(*(one(i, r) for i, r in enumerate(lines)))
        finally:
            await backend.aclose()
        out.write_text("\n".join(results) + "\n", encoding="utf-8")
        got = ingest(store, models, _lines([out]), runtime=f"run-local {backend.display_url}",
                     batch_ids={b["batch_id"]})
        _close(store, b["batch_id"], got)
        total.collected_batches += 1
        for k, v in got.stored.items():
            total.add(k, v)
        if echo is not None:
            echo(f"  {b['batch_id']}: {len(lines)} requests -> {out.relative_to(store.run_dir)} "
                 + ", ".join(f"{k} {v}" for k, v in sorted(got.stored.items())))
    return total


# ---------------------------------------------------------------------------- the engine's batch path


def open_counts(store: RunStore, label: str | None = None) -> tuple[int, int]:
    """(open batches, requests in them) of one model (all when ``label`` is None)."""
    rows = store.batches(states=store.OPEN_BATCH_STATES, model_label=label)
    return len(rows), sum(int(r["n_requests"]) for r in rows)


async def acomplete_batch(store: RunStore, model: Any, decoding: Any, items: Iterable[dict[str, Any]], *,
                          base_seed: int | None, models: dict[str, Any] | None = None, wait: bool = False,
                          progress: bool = True) -> GenerationSummary:
    """What :func:`audit.engine.complete` does for a model with ``execution: batch``: record the
    items' requests, collect what the provider has finished, submit what is pending, and (``wait``)
    poll until every batch is in. The summary's ``in_batches`` counts the requests still out."""
    backend = _backend(model)
    await backend.aclose()
    r = _Runner(store, model, decoding, backend.endpoint_id, backend.model_name, base_seed, None, False, None, None)
    r._items = iter(items)
    while r._next_chunk() is not None:   # records the requests (not sent) and counts the answered ones
        pass
    models = dict(models or {})
    models.setdefault(model.label, model)
    # Each round collects what the provider finished and submits what is pending again: a failed or
    # expired line is resubmitted until it is answered or has been in batch.max_attempts collected
    # batches (store.pending_batch_requests leaves it out after that), so --wait ends. Without --wait,
    # one round.
    unknown = found = 0
    while True:
        await apoll(store, models)
        got = await acollect(store, models)
        sub = await asubmit(store, models, labels=[model.label], keys=r.summary.request_keys)
        unknown += got.stored.get("unknown", 0)
        found += sub.found_again
        for k in ("ok", "content_filter", "failed"):
            setattr(r.summary, k, getattr(r.summary, k) + got.stored.get(k, 0))
        r.summary.prompt_tokens += got.prompt_tokens
        r.summary.completion_tokens += got.completion_tokens
        r.summary.sent += sub.submitted_requests
        n_open, n_req = open_counts(store, model.label)
        r.summary.in_batches, r.summary.open_batches = n_req, n_open
        r.summary.batch_note = _note(model, sub, n_open, n_req, store, unknown=unknown, found=found)
        if not wait or not n_open or model.batch.limits(model)[0] == "local":
            break
        if progress:
            print(f"\r  waiting for {n_req} requests in {n_open} batches of '{model.label}' "
                  f"({time.strftime('%H:%M:%S')}; next poll in {model.batch.poll_interval_s:g} s)",
                  end="", file=sys.stderr, flush=True)
        await asyncio.sleep(model.batch.poll_interval_s)
    if wait and progress:
        print(file=sys.stderr)
    r.finish()
    return r.summary


def complete_requests(store: RunStore, model: Any, decoding: Any, items: Iterable[dict[str, Any]], *,
                      progress: bool = True, base_seed: int | None = None, description: str | None = None,
                      models: dict[str, Any] | None = None, wait: bool = False) -> GenerationSummary:
    """:func:`audit.engine.complete` for any model: online models are sent online, a model with
    ``execution: batch`` goes through :func:`acomplete_batch` (a first call submits, a later one
    collects; the summary's ``in_batches`` counts what is still out)."""
    if model.execution != "batch":
        return complete(store, model, decoding, items, progress=progress, base_seed=base_seed,
                        description=description)
    import functools

    return run_sync(functools.partial(acomplete_batch, model=model, decoding=decoding, items=items,
                                      base_seed=base_seed, models=models, wait=wait, progress=progress), store)


def _note(model: Any, sub: BatchCounts, n_open: int, n_req: int, store: RunStore, *, unknown: int = 0,
          found: int = 0) -> str:
    extra = []
    if unknown:
        extra.append(f"{unknown} batch output lines of '{model.label}' named no request of this run (unknown "
                     f"custom_id): nothing was stored from them; 'empathy-audit batch status {store.run_dir}' "
                     "lists them per batch")
    if found:
        extra.append(f"{found} batches an interrupted earlier call had created were found again at the provider "
                     "(not created twice)")
    return "; ".join([x for x in (_open_note(model, sub, n_open, n_req, store),) if x] + extra)


def _open_note(model: Any, sub: BatchCounts, n_open: int, n_req: int, store: RunStore) -> str:
    if not n_open:
        return ""
    if model.batch.limits(model)[0] == "local":
        return (f"wrote {n_req} requests of '{model.label}' in {n_open} batch files under {store.run_dir / BATCH_DIR}; "
                f"run 'empathy-audit batch run-local {store.run_dir}' (or vllm run-batch, then 'empathy-audit batch "
                f"collect {store.run_dir} --from OUT.jsonl'), then run again")
    if sub.submitted_requests:
        return (f"submitted {sub.submitted_requests} requests in {sub.submitted_batches} batches; "
                f"run again to collect")
    return f"{n_req} requests of '{model.label}' are in {n_open} open batches; run again to collect"


# ---------------------------------------------------------------------------- status


def status_rows(store: RunStore) -> list[dict[str, Any]]:
    """One dict per batch: id, model, provider, state, provider status, requests, the provider's counts,
    what collect stored, tokens of its stored answers."""
    out = []
    tokens = store.batch_token_totals()
    for b in store.batches():
        rc = json.loads(b["counts_json"]) if b["counts_json"] else {}
        col = json.loads(b["collected_json"]) if b["collected_json"] else {}
        out.append({"batch_id": b["batch_id"], "model": b["model_label"], "provider": b["provider"],
                    "state": b["state"], "provider_status": b["provider_status"] or "", "requests": b["n_requests"],
                    "provider_counts": rc, "collected": col,
                    "prompt_tokens": tokens.get(b["batch_id"], (0, 0))[0],
                    "completion_tokens": tokens.get(b["batch_id"], (0, 0))[1]})
    return out


def submit(run_dir: str | Path, *, labels: Iterable[str] | None = None) -> BatchCounts:
    """Library form of ``empathy-audit batch submit``."""
    with RunStore(run_dir, create=False) as st:
        return asyncio.run(asubmit(st, spec_models(st.latest_spec()), labels=labels))


def poll(run_dir: str | Path) -> BatchCounts:
    """Library form of ``empathy-audit batch poll``."""
    with RunStore(run_dir, create=False) as st:
        return asyncio.run(apoll(st, spec_models(st.latest_spec())))


def collect(run_dir: str | Path, *, files: Iterable[str | Path] | None = None) -> BatchCounts:
    """Library form of ``empathy-audit batch collect`` (``files``: provider-format output files)."""
    with RunStore(run_dir, create=False) as st:
        models = spec_models(st.latest_spec())
        if files:
            return collect_file(st, models, files)
        asyncio.run(apoll(st, models))
        return asyncio.run(acollect(st, models))


def cancel(run_dir: str | Path, batch_ids: Iterable[str] | None = None) -> int:
    """Library form of ``empathy-audit batch cancel``."""
    with RunStore(run_dir, create=False) as st:
        return asyncio.run(acancel(st, spec_models(st.latest_spec()), batch_ids))


def run_local(run_dir: str | Path, *, base_url: str | None = None,
              echo: Callable[[str], None] | None = None) -> BatchCounts:
    """Library form of ``empathy-audit batch run-local``."""
    with RunStore(run_dir, create=False) as st:
        return asyncio.run(arun_local(st, spec_models(st.latest_spec()), base_url=base_url, echo=echo))


__all__ = ["BatchCounts", "cancel", "collect", "collect_file", "complete_requests", "ingest", "poll", "run_local",
           "spec_models",
           "status_rows", "submit", "write_shards"]
