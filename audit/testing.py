"""A fake OpenAI-compatible chat server for your own tests and CI: fast, local, and failing on purpose.

Point an audit spec's ``base_url`` at it to test a pipeline, a wrapper or a CI job without a model,
a key or a network, and script the failures a real endpoint has (rate limits, overload, timeouts,
dropped connections, content filters, rejected keys). The toolkit's own tests and
``benchmarks/bench_generate.py`` (the toolkit's request overhead) use it too. Replies are an echo of
the prompt by default, or whatever ``reply`` returns: a test double, never a model.

>>> from openai import OpenAI
>>> from audit.testing import StubServer
>>> with StubServer(default=["503"]) as srv:     # the first request fails, the retry gets a reply
...     client = OpenAI(base_url=srv.base_url, api_key="unused", max_retries=1)
...     answer = client.chat.completions.create(model="stub-model", messages=[{"role": "user", "content": "hi"}])
>>> answer.choices[0].message.content
'echo[None|None]: hi'
>>> [fault for _time, _message, _seed, fault in srv.log]
['503', 'ok']

In an audit spec: ``models: [{label: fake, base_url: <srv.base_url>, model: stub-model}]``.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length) for ``openai``/``httpx`` clients:
``GET /v1/models`` and ``POST /v1/chat/completions``. What each request gets is scripted:

- ``fault``: ``callable(request dict, last user message) -> fault or None``, asked first for every
  request (None: the script below decides);
- ``script``: ``{substring: [fault, fault, ...]}``: the n-th request whose last user message
  contains ``substring`` gets the n-th fault of the list, then ``ok`` once the list is used up;
- ``default``: the same for every other request.

Faults (:data:`FAULTS`): ``ok``, ``429`` (with ``Retry-After: retry_after``), ``429-quota``, ``500``,
``503``, ``timeout`` (answers after ``hang_s``), ``drop`` (closes the connection), ``malformed`` (200
with a body that is not a chat completion), ``html`` (200 with an HTML page), ``content_filter`` (200
with ``finish_reason: content_filter``), ``filter400`` (Azure's 400 ``content_filter``), ``400``,
``401`` (its message echoes the key, masked like OpenAI's), ``404``.

Every request is logged in ``server.log`` as ``(monotonic time, last user message, seed, fault)``;
``server.count`` is the number of chat requests received.

Batch service. With ``batch=BatchOptions(...)`` the same server also speaks OpenAI's files and batches
API (``POST /v1/files``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches``,
``GET /v1/batches/{id}``, ``POST /v1/batches/{id}/cancel``): each line of a batch gets the reply the
same request would get online (``reply``, ``fault`` and ``script`` apply), so a batch run and an
online run of the same spec store the same replies. :class:`BatchOptions` scripts what a real batch
service does: a delay before a batch completes, failed lines, expiry, output in another order than
the input, duplicated output lines, 429s on ``batches.create`` and a create that hangs (to kill a
client between the provider creating a batch and the client learning its id).

Run standalone: ``python -m audit.testing --port 8099 [--latency 0.0]`` (prints its base URL as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["FAULTS", "BatchOptions", "StubServer"]

#: What a scripted request can get.
FAULTS = ("ok", "429", "429-quota", "500", "503", "timeout", "drop", "malformed", "html", "content_filter",
          "filter400", "400", "401", "404")


def _check_faults(faults: list[str], where: str) -> list[str]:
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {unknown} in {where}; choose from {', '.join(FAULTS)}")
    return list(faults)


@dataclass
class BatchOptions:
    """How the fake batch service behaves (see the module docstring)."""

    delay_s: float = 0.0          # a batch is in_progress for this long after it is created
    fail_every: int = 0           # every n-th input line (1-based) gets a 500 answer (in the error file)
    expire_after: int | None = None  # the batch expires after answering this many lines; the rest
                                     # get error batch_expired (as OpenAI writes them)
    shuffle_seed: int | None = None  # output lines in a shuffled order
    duplicate_every: int = 0      # every n-th output line is written twice
    create_429: int = 0           # the first n calls of batches.create get a 429 (Retry-After: 0)
    create_hang_s: float = 0.0    # batches.create records the batch, then waits this long before answering
    unknown_lines: int = 0        # each output file gets this many extra lines whose custom_id no request has


class StubServer:
    """The fake server; ``start()``/``stop()`` or a ``with`` block serve it from a background thread."""

    def __init__(self, script: dict[str, list[str]] | None = None, default: list[str] | None = None,
                 latency_s: float = 0.0, retry_after: float | None = 0.05, hang_s: float = 30.0,
                 model: str = "stub-model", port: int = 0, log: bool = True,
                 reply: Callable[[dict[str, Any], str], str] | None = None,
                 fault: Callable[[dict[str, Any], str], str | None] | None = None,
                 batch: BatchOptions | None = None):
        self.reply = reply  # callable(request dict, last user message) -> reply text; None: the echo
        self.fault = fault  # callable(request dict, last user message) -> fault, None: the script decides
        self.script = {sub: _check_faults(faults, f"script[{sub!r}]") for sub, faults in (script or {}).items()}
        self.default = _check_faults(list(default or []), "default")
        self.latency_s = latency_s
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.model = model
        self.port = port
        self.keep_log = log
        self.log: list[tuple[float, str, Any, str]] = []
        self.count = 0
        self._seen: dict[str, int] = defaultdict(int)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self.batch = batch
        self.files: dict[str, dict[str, Any]] = {}     # file id -> {bytes, filename, purpose, created_at}
        self.batches: dict[str, dict[str, Any]] = {}   # batch id -> the Batch object (plus private keys)
        self.batch_lines = 0                           # batch input lines answered
        self.batch_creates = 0                         # calls of batches.create (429s included)
        self.batch_lists = 0                           # calls of batches.list (one per page)

    # ------------------------------------------------------------------ scripting
    def _fault_for(self, req: dict[str, Any], text: str) -> str:
        if self.fault is not None:
            chosen = self.fault(req, text)
            if chosen is not None:
                return chosen
        for sub, faults in self.script.items():
            if sub in text:
                n = self._seen[sub]
                self._seen[sub] += 1
                return faults[n] if n < len(faults) else "ok"
        n = self._seen["\x00default"]
        self._seen["\x00default"] += 1
        return self.default[n] if n < len(self.default) else "ok"

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(n) if n else b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await self._read_chunked(reader)
                out = await self._respond(method, path, headers, body)
                if out is None:  # drop
                    writer.close()
                    return
                writer.write(out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        except asyncio.CancelledError:  # stop() with a keep-alive connection still open: end quietly
            pass
        finally:
            try:
                writer.close()
            except Exception:  # pragma: no cover
                pass

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        out = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return out
            out += await reader.readexactly(size)
            await reader.readexactly(2)

    @staticmethod
    def _http(status: int, payload: Any, extra: dict[str, str] | None = None, ctype: str = "application/json") -> bytes:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "Status")
        hdr = [f"HTTP/1.1 {status} {reason}", f"content-type: {ctype}", f"content-length: {len(body)}",
               "connection: keep-alive", "server: empathy-audit-stub"]
        hdr += [f"{k}: {v}" for k, v in (extra or {}).items()]
        return ("\r\n".join(hdr) + "\r\n\r\n").encode() + body

    async def _respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes | None:
        path, _, query = path.partition("?")
        self.last_path, self.last_query, self.last_headers = path, query, headers
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return self._http(200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if self.batch is not None and ("/files" in path or "/batches" in path):
            return await self._batch_api(method, path.rstrip("/"), headers, body)
        if not path.rstrip("/").endswith("/chat/completions"):
            return self._http(404, {"error": {"message": f"no route {path}", "code": "not_found"}})
        req = json.loads(body or b"{}")
        msgs = req.get("messages") or [{}]
        text = str(msgs[-1].get("content", ""))
        fault = self._fault_for(req, text)
        self.count += 1
        if self.keep_log:
            self.log.append((time.monotonic(), text, req.get("seed"), fault))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if fault == "ok" or fault == "content_filter":
            return self._http(200, self._completion(req, text, fault))
        if fault == "429":
            extra = {"retry-after": f"{self.retry_after:g}"} if self.retry_after is not None else {}
            return self._http(429, {"error": {"message": "Rate limit reached", "type": "requests",
                                              "code": "rate_limit_exceeded"}}, extra)
        if fault == "429-quota":
            return self._http(429, {"error": {"message": "You exceeded your current quota",
                                              "type": "insufficient_quota", "code": "insufficient_quota"}})
        if fault in ("500", "503"):
            return self._http(int(fault), {"error": {"message": "upstream overloaded", "code": None}})
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
            return self._http(200, self._completion(req, text, "ok"))
        if fault == "drop":
            return None
        if fault == "malformed":
            return self._http(200, {"id": "x", "object": "chat.completion", "choices": []})
        if fault == "html":
            return self._http(200, b"<html><body>Welcome to nginx!</body></html>", ctype="text/html")
        if fault == "filter400":
            return self._http(400, {"error": {"message": "The response was filtered due to the prompt triggering "
                                              "Azure OpenAI's content management policy.", "code": "content_filter"}})
        if fault == "400":
            return self._http(400, {"error": {"message": "max_tokens is too large", "code": "invalid_request"}})
        if fault == "401":
            auth = headers.get("authorization", "") or headers.get("api-key", "")
            key = auth.split(" ", 1)[-1]
            masked = key[:3] + "*" * max(0, len(key) - 7) + key[-4:] if len(key) > 8 else "***"
            return self._http(401, {"error": {"message": f"Incorrect API key provided: {masked}. You can find "
                                              f"your API key at https://example.invalid. (full: {key})",
                                              "code": "invalid_api_key"}})
        if fault == "404":
            return self._http(404, {"error": {"message": f"The model '{req.get('model')}' does not exist",
                                              "code": "model_not_found"}})
        return self._http(500, {"error": {"message": f"unknown fault {fault!r} from the test's fault function; "
                                          f"choose from {', '.join(FAULTS)}"}})

    def _completion(self, req: dict[str, Any], text: str, fault: str) -> dict[str, Any]:
        reply = (self.reply(req, text) if self.reply is not None
                 else f"echo[{req.get('seed')}|{req.get('temperature')}]: {text[:60]}")
        finish = "content_filter" if fault == "content_filter" else "stop"
        return {
            "id": f"chatcmpl-{self.count}", "object": "chat.completion", "created": 0, "model": req.get("model"),
            "system_fingerprint": "stub-1",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": "" if finish != "stop" else reply}}],
            "usage": {"prompt_tokens": len(text) // 4 + 1, "completion_tokens": len(reply) // 4 + 1,
                      "total_tokens": len(text) // 4 + len(reply) // 4 + 2},
        }

    # ------------------------------------------------------------------ the batch service
    async def _batch_api(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        opts = self.batch
        assert opts is not None
        parts = path.split("/")
        if method == "POST" and parts[-1] == "files":
            fields = _multipart(headers.get("content-type", ""), body)
            fid = f"file-{len(self.files) + 1}"
            data, filename = fields.get("file", (b"", "upload.jsonl"))
            purpose = fields.get("purpose", (b"", ""))[0].decode()
            self.files[fid] = {"bytes": data, "filename": filename, "purpose": purpose, "created_at": int(time.time())}
            return self._http(200, self._file_obj(fid))
        if method == "GET" and parts[-1] == "content" and parts[-3] == "files":
            f = self.files.get(parts[-2])
            if f is None:
                return self._http(404, {"error": {"message": "no such file", "code": "not_found"}})
            return self._http(200, f["bytes"], ctype="application/octet-stream")
        if method == "POST" and parts[-1] == "batches":
            self.batch_creates += 1
            if self.batch_creates <= opts.create_429:
                return self._http(429, {"error": {"message": "Too many batch creations",
                                                  "code": "rate_limit_exceeded"}}, {"retry-after": "0"})
            req = json.loads(body or b"{}")
            if req.get("input_file_id") not in self.files:
                return self._http(400, {"error": {"message": "no such input file", "code": "invalid_request"}})
            bid = f"batch_{len(self.batches) + 1}"
            self.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": req.get("endpoint"), "errors": None,
                "input_file_id": req["input_file_id"], "completion_window": req.get("completion_window", "24h"),
                "status": "in_progress", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": req.get("metadata"),
                "request_counts": {"total": 0, "completed": 0, "failed": 0}, "_t0": time.monotonic()}
            if opts.create_hang_s:
                await asyncio.sleep(opts.create_hang_s)
            return self._http(200, self._batch_obj(bid))
        if method == "GET" and parts[-1] == "batches":
            # newest first, ``limit`` a page (default 20, as OpenAI), ``after`` = the last id of the page before
            from urllib.parse import parse_qs

            self.batch_lists += 1
            q = {k: v[-1] for k, v in parse_qs(getattr(self, "last_query", "") or "").items()}
            pos = {b: i for i, b in enumerate(self.batches)}
            order = sorted(self.batches, key=lambda b: (self.batches[b]["created_at"], pos[b]), reverse=True)
            if q.get("after") in self.batches:
                order = order[order.index(q["after"]) + 1:]
            limit = max(1, min(100, int(q.get("limit") or 20)))
            data = [self._batch_obj(b) for b in order[:limit]]
            return self._http(200, {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None, "has_more": len(order) > limit})
        if parts[-2] == "batches" or (parts[-1] == "cancel" and parts[-3] == "batches"):
            bid = parts[-2] if parts[-1] == "cancel" else parts[-1]
            b = self.batches.get(bid)
            if b is None:
                return self._http(404, {"error": {"message": "no such batch", "code": "not_found"}})
            if parts[-1] == "cancel" and b["status"] == "in_progress":
                b["status"] = "cancelled"
            self._advance(b)
            return self._http(200, self._batch_obj(bid))
        return self._http(404, {"error": {"message": f"no route {method} {path}", "code": "not_found"}})

    def _file_obj(self, fid: str) -> dict[str, Any]:
        f = self.files[fid]
        return {"id": fid, "object": "file", "bytes": len(f["bytes"]), "created_at": f["created_at"],
                "filename": f["filename"], "purpose": f["purpose"] or "batch", "status": "processed"}

    def _batch_obj(self, bid: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[bid].items() if not k.startswith("_")}

    def _advance(self, b: dict[str, Any]) -> None:
        """Run a batch whose delay has passed: answer its lines into output and error files."""
        opts = self.batch
        assert opts is not None
        if b["status"] != "in_progress" or time.monotonic() - b["_t0"] < opts.delay_s:
            return
        lines = [json.loads(t) for t in self.files[b["input_file_id"]]["bytes"].decode().splitlines() if t.strip()]
        out, err = [], []
        for i, line in enumerate(lines, 1):
            req = line.get("body") or {}
            rid = f"{b['id']}-req-{i}"
            if opts.expire_after is not None and i > opts.expire_after:
                err.append({"id": rid, "custom_id": line.get("custom_id"), "response": None,
                            "error": {"code": "batch_expired",
                                      "message": "This request could not be executed before the completion window"}})
                continue
            msgs = req.get("messages") or [{}]
            text = str(msgs[-1].get("content", ""))
            fault = "500" if opts.fail_every and i % opts.fail_every == 0 else self._fault_for(req, text)
            self.batch_lines += 1
            if self.keep_log:
                self.log.append((time.monotonic(), text, req.get("seed"), fault))
            if fault in ("ok", "content_filter"):
                resp = {"status_code": 200, "request_id": rid, "body": self._completion(req, text, fault)}
                out.append({"id": rid, "custom_id": line.get("custom_id"), "response": resp, "error": None})
            else:
                code = int(fault[:3]) if fault[:3].isdigit() else 500
                resp = {"status_code": code, "request_id": rid,
                        "body": {"error": {"message": f"fault {fault}", "code": "server_error" if code >= 500 else
                                           ("rate_limit_exceeded" if code == 429 else "invalid_request")}}}
                err.append({"id": rid, "custom_id": line.get("custom_id"), "response": resp, "error": None})
        if opts.shuffle_seed is not None:
            random.Random(opts.shuffle_seed).shuffle(out)
        if opts.duplicate_every:
            out = [x for i, line in enumerate(out, 1)
                   for x in ([line, line] if i % opts.duplicate_every == 0 else [line])]
        for i in range(opts.unknown_lines):
            out.append({"id": f"{b['id']}-stray-{i}", "custom_id": f"not-a-request-{b['id']}-{i}",
                        "response": {"status_code": 200, "request_id": "", "body": self._completion({}, "stray", "ok")},
                        "error": None})
        for kind, rows in (("output", out), ("error", err)):
            if rows:
                fid = f"file-{len(self.files) + 1}"
                self.files[fid] = {"bytes": ("\n".join(json.dumps(r) for r in rows) + "\n").encode(),
                                   "filename": f"{b['id']}_{kind}.jsonl", "purpose": "batch_output",
                                   "created_at": int(time.time())}
                b[f"{kind}_file_id"] = fid
        b["request_counts"] = {"total": len(lines), "completed": len({r["custom_id"] for r in out}),
                               "failed": len(lines) - len({r["custom_id"] for r in out})}
        b["status"] = "expired" if opts.expire_after is not None and opts.expire_after < len(lines) else "completed"

    # ------------------------------------------------------------------ running
    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "StubServer":
        """Serve from a background thread; returns once it listens."""
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks(loop):
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> "StubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str]]:
    """Fields of a multipart/form-data body: name -> (bytes, filename), read with the standard
    library's MIME parser (a test double: no streaming, the body is in memory anyway)."""
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    out: dict[str, tuple[bytes, str]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            out[str(name)] = (part.get_payload(decode=True) or b"", str(part.get_filename() or ""))
    return out


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - used by the benchmark
    ap = argparse.ArgumentParser(prog="python -m audit.testing")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args(argv)
    srv = StubServer(latency_s=args.latency, port=args.port, log=False)

    async def go() -> None:
        await srv.serve()
        print(json.dumps({"base_url": srv.base_url}), flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
