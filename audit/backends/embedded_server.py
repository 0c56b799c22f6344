"""Child process that serves the embedded model with llama.cpp (``xllamacpp``) on 127.0.0.1.

Started by :class:`audit.backends.embedded.EmbeddedServer` as
``python -m audit.backends.embedded_server --model GGUF --parent-pid PID ...``. It prints one JSON
line ``{"ready": true, "address": ..., "runtime_version": ...}`` on stdout once the model is loaded
and the HTTP server listens, then stays up until any of:

- its stdin reaches end of file (the parent closed it, or the parent died, even by ``kill -9``),
- the parent process is gone (polled every half second, in case stdin was inherited elsewhere),
- SIGTERM / SIGINT.

llama.cpp's own logging is switched off (``verbosity = -1``); anything it still writes goes to the
stderr the parent chose (a log file in the run directory).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time


def _parent_alive(pid: int) -> bool:
    if os.getppid() != pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m audit.backends.embedded_server")
    ap.add_argument("--model", required=True)
    ap.add_argument("--alias", default="embedded")
    ap.add_argument("--parent-pid", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--ctx-per-slot", type=int, default=2048)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = args.model
    p.model_alias = {args.alias}  # a set of names in this binding
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx_per_slot * args.parallel
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    # no busy polling: llama.cpp's workers spin for work by default (poll 50), which on a shared,
    # loaded machine burns the cores the other workers need (issue 29: 31 s a reply instead of ~1 s)
    p.cpuparams.poll = 0
    p.cpuparams_batch.poll = 0
    p.endpoint_metrics = False
    p.port = args.port
    p.hostnames = ["127.0.0.1"]
    p.verbosity = -1
    p.warmup = False
    server = xlc.Server(p)
    info = {
        "ready": True, "address": server.listening_address, "pid": os.getpid(),
        "runtime": "llama.cpp (xllamacpp)", "runtime_version": f"xllamacpp {xlc.__version__}",
        "build_info": dict(getattr(xlc, "BUILD_INFO", {}) or {}),
    }
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()

    def watch_stdin() -> None:
        try:
            while sys.stdin.buffer.read(1024):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.is_set():
        if args.parent_pid is not None and not _parent_alive(args.parent_pid):
            break
        stop.wait(0.5)
    # The server object has no clean shutdown call we rely on; leaving the process ends it.
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
