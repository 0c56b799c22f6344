"""The embedded default model: SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1.

It exists so that the whole pipeline runs offline on any machine, with no API key. It is **not a
model worth auditing**; every run and report that uses it says so.

The server runs in a child process (``python -m audit.backends.embedded_server``), not in this
process: a crash in native code cannot take the run with it, and the child dies with its parent
whatever way the parent ends (it watches its stdin pipe and the parent's pid, so even ``kill -9`` of
the audit stops it). It listens on a free port chosen by the operating system; the toolkit talks to
it through the same :class:`~audit.backends.openai_backend.ChatBackend` as to any other endpoint.

Determinism: every request is sent with ``cache_prompt: false`` and its own seed, so the same spec
and seed give byte-identical replies (checked by ``tests/test_embedded.py``, also with several
requests in flight at once).

Use :func:`embedded_session` to keep one server up across several stages (generate, judge, probe);
:func:`audit.engine.complete` starts one (or reuses the one a session holds) by itself.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import AuditError
from .weights import cache_dir, ensure_weights, model_card

EMBEDDED_RUNTIME = "llama.cpp (xllamacpp)"


def embedded_identity() -> tuple[str, str]:
    """(endpoint_id, model name) of the embedded model: stable across ports and machines."""
    card = model_card()
    return f"embedded:{card['sha256']}", f"{card['name']}.{card['quantization']}"


MAX_THREADS = 4
"""At most this many llama.cpp threads by default: a 135 M-parameter model gains little beyond it."""

THREADS_ENV = "EMPATHY_AUDIT_THREADS"


def _cores() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def default_threads() -> int:
    """llama.cpp threads of the embedded server: ``EMPATHY_AUDIT_THREADS`` when set, else what is free.

    Free cores are the usable cores minus the 1-minute load average (at least 1, at most
    :data:`MAX_THREADS`); when the load average exceeds the cores, 1. Why: under CPU contention
    llama.cpp's worker threads wait on each other, and a reply took 31 s with 2 threads on a busy
    2-core machine against ~6 s with 1 (issue 29); busy polling is off as well
    (``embedded_server``: ``poll = 0``).

    The thread count changes llama.cpp's floating-point path (1 and 2 threads give different replies
    for the same seed), so byte-identical replies need the same count: it is recorded with every reply
    (``runtime_version``: ``threads=N``); set ``EMPATHY_AUDIT_THREADS`` to reproduce a run exactly.
    A stored reply is never re-requested whatever the count (it is not part of the request key).
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if env.isdigit() and int(env) > 0:
            return int(env)
        raise AuditError(f"{THREADS_ENV}={env!r} is not a positive whole number", where=f"environment {THREADS_ENV}",
                         fix=f"set {THREADS_ENV} to the number of llama.cpp threads (e.g. 1 or 2), or unset it")
    cores = _cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    if load > cores:
        return 1
    return max(1, min(MAX_THREADS, int(cores - load)))


class EmbeddedServer:
    """A running embedded llama.cpp server (child process). Use as a context manager."""

    def __init__(self, parallel: int = 1, threads: int | None = None, ctx_per_slot: int = 2048,
                 startup_timeout_s: float = 180.0, progress: bool = True):
        self.parallel = max(1, min(int(parallel), 16))
        self.threads = threads or default_threads()
        self.ctx_per_slot = ctx_per_slot
        self.startup_timeout_s = startup_timeout_s
        self.progress = progress
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self.log_path: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "EmbeddedServer":
        weights = ensure_weights(progress=self.progress)
        logs = cache_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        _tidy_logs(logs)
        fd, name = tempfile.mkstemp(prefix="embedded-server-", suffix=".log", dir=logs)
        self.log_path = Path(name)
        _, alias = embedded_identity()
        cmd = [sys.executable, "-m", "audit.backends.embedded_server", "--model", str(weights), "--alias", alias,
               "--parent-pid", str(os.getpid()), "--threads", str(self.threads), "--parallel", str(self.parallel),
               "--ctx-per-slot", str(self.ctx_per_slot)]
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=fd, start_new_session=True,
            )
        finally:
            os.close(fd)
        _LIVE.add(self)
        line = self._read_ready_line()
        try:
            info = json.loads(line)
            assert info.get("ready")
        except Exception:
            self.stop()
            raise AuditError(
                f"the embedded model server did not start: {self._log_tail() or line.strip() or 'no output'}",
                where=f"embedded server (log: {self.log_path})",
                fix="run `empathy-audit model fetch` to re-check the weights, or set a base_url in the spec",
            ) from None
        self.info = info
        return self

    def _read_ready_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        box: list[str] = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline().decode("utf-8", "replace")),
                             daemon=True)
        t.start()
        t.join(self.startup_timeout_s)
        return box[0] if box else ""

    def _log_tail(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
            errors = [ln for ln in lines if "Error" in ln or "error" in ln]
            return (errors[-1] if errors else " | ".join(lines[-3:]))[-600:]
        except (OSError, AttributeError):
            return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.terminate()
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except OSError:  # pragma: no cover
            pass
        for stream in (proc.stdout,):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        if self.log_path is not None:
            try:
                if proc.returncode in (0, -15) or self.log_path.stat().st_size == 0:
                    self.log_path.unlink()
            except OSError:
                pass

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def base_url(self) -> str:
        return self.info["address"].rstrip("/") + "/v1"

    @property
    def runtime_version(self) -> str:
        # the thread and slot counts change the floating-point path, so they are part of the identity
        return f"{self.info.get('runtime_version', 'unknown')}; threads={self.threads}; slots={self.parallel}"

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ the client side
    def backend(self, model: Any) -> Any:
        """A ChatBackend for ``model`` (an embedded ModelSpec) pointed at this server."""
        from .openai_backend import ChatBackend

        endpoint_id, name = embedded_identity()
        if "timeout_s" not in model.model_fields_set:
            # a small CPU shared with other work can take minutes for a long reply; a timeout here
            # would only make the same work start again
            model = model.model_copy(update={"timeout_s": 900.0})
        return ChatBackend(
            model, base_url=self.base_url, endpoint_id=endpoint_id, model_name=name, api_key="embedded",
            runtime=EMBEDDED_RUNTIME, runtime_version=self.runtime_version,
            send_extra={"cache_prompt": False},
        )


def _tidy_logs(logs: Path, keep_s: float = 7 * 86400) -> None:
    """Remove empty server logs left by runs that were killed, and any log older than a week."""
    import time

    now = time.time()
    for p in logs.glob("embedded-server-*.log"):
        try:
            st = p.stat()
            if (st.st_size == 0 and now - st.st_mtime > 3600) or now - st.st_mtime > keep_s:
                p.unlink()
        except OSError:
            pass


_LIVE: set[EmbeddedServer] = set()
_SESSION: list[EmbeddedServer] = []  # the server an embedded_session() holds, if any


@atexit.register
def _stop_all() -> None:  # pragma: no cover - belt and braces; the child also watches us
    for s in list(_LIVE):
        s.stop()


@contextmanager
def embedded_session(parallel: int = 1, progress: bool = True) -> Iterator[EmbeddedServer]:
    """Keep one embedded server up for the block; :func:`acquire` calls inside it reuse it."""
    if _SESSION and _SESSION[-1].running:
        yield _SESSION[-1]
        return
    srv = EmbeddedServer(parallel=parallel, progress=progress).start()
    _SESSION.append(srv)
    try:
        yield srv
    finally:
        _SESSION.remove(srv)
        srv.stop()


@contextmanager
def acquire(parallel: int = 1, progress: bool = True) -> Iterator[EmbeddedServer]:
    """The session's server if one is up, else a new one for the duration of the block."""
    if _SESSION and _SESSION[-1].running:
        yield _SESSION[-1]
        return
    with EmbeddedServer(parallel=parallel, progress=progress) as srv:
        yield srv
