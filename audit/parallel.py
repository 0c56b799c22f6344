"""Independent parts of one analysis (and of its pass over the scores) side by side in a forked process.

Why not :mod:`concurrent.futures` / :mod:`multiprocessing` pools: they pickle the work's arguments to
the worker, and the analysis's argument is the cell table (a few hundred MB at a million replies). A
forked child already has the table (its pages are shared until written), so only the result (a few
small tables) is pickled back, through a pipe. Each part is a pure function of the table with its own
seed, so the results are those of running the parts one after the other, number for number
(``tests/test_stats_parallel.py``).

Used only where it pays and is safe: on POSIX systems with ``os.fork`` (not macOS) and at least two
usable cores (``EMPATHY_AUDIT_WORKERS`` when set, as for scoring, else the cores this process may use),
and for tables of at least :data:`MIN_CELLS` cells (``EMPATHY_AUDIT_PARALLEL_MIN_CELLS``); otherwise
the part runs in this process.
The child never touches the parent's open run store (it only computes) and leaves by ``os._exit``.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import Any, Callable

__all__ = ["MIN_CELLS", "Beside", "SharedTasks", "beside", "fork_available", "parallel_enabled", "run_parts",
           "part_result"]

#: Smallest cell table whose analysis is split over two processes (a fork costs ~10-50 ms; a small run
#: is analysed in a second anyway).
MIN_CELLS = 200_000


def fork_available() -> bool:
    """Whether this system forks safely: POSIX with ``os.fork``, not macOS (fork after Accelerate/ObjC is unsafe)."""
    return hasattr(os, "fork") and sys.platform != "darwin"


def parallel_enabled(n_cells: int) -> bool:
    """Whether an analysis of ``n_cells`` cells runs its independent parts in a forked process."""
    if not fork_available():
        return False

    def cpu_count() -> int:  # as audit.scoring.cpu_count (not imported: the store imports this module)
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - macOS, Windows
            return os.cpu_count() or 1

    def env_int(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, "").strip() or default)
        except ValueError:
            return default

    workers = env_int("EMPATHY_AUDIT_WORKERS", 0) or cpu_count()  # 0 or unset: one per core, as for scoring
    return workers >= 2 and n_cells >= env_int("EMPATHY_AUDIT_PARALLEL_MIN_CELLS", MIN_CELLS)


class Beside:
    """The result of a function run in a forked child (or, when not forked, here and now)."""

    def __init__(self, fn: Callable[[], Any], fork: bool):
        self._pid = None
        self._value: Any = None
        self._error: BaseException | None = None
        if not fork:
            try:
                self._value = fn()
            except BaseException as exc:  # noqa: BLE001 - raised where the result is asked for
                self._error = exc
            return
        sys.stdout.flush()
        sys.stderr.flush()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, send, leave without running the parent's exit handlers
            code = 0
            try:
                os.close(r)
                buffers: list[pickle.PickleBuffer] = []
                try:
                    payload = pickle.dumps(("ok", fn()), protocol=5, buffer_callback=buffers.append)
                except BaseException as exc:  # noqa: BLE001 - sent to the parent, which raises it
                    buffers = []
                    try:
                        payload = pickle.dumps(("error", exc))
                    except Exception:  # noqa: BLE001 - an exception that does not pickle
                        payload = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
                with os.fdopen(w, "wb") as fh:
                    _send(fh, payload, buffers)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        self._pid, self._fd = pid, r

    def __enter__(self) -> "Beside":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Stop the child if its result was never asked for (the parent failed first)."""
        if self._pid is not None:
            import signal

            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self._pid, 0)
            os.close(self._fd)
            self._pid = None

    def result(self) -> Any:
        """Wait for the child (when forked) and return what the function returned, or raise what it raised."""
        if self._pid is not None:
            with os.fdopen(self._fd, "rb") as fh:
                got = _receive(fh)
            _, status = os.waitpid(self._pid, 0)
            self._pid = None
            if got is None:
                raise RuntimeError(f"the analysis worker process ended without a result (wait status {status})")
            kind, value = pickle.loads(got[0], buffers=got[1])
            if kind == "error":
                self._error = value
            else:
                self._value = value
        if self._error is not None:
            raise self._error
        return self._value


def _send(fh, payload: bytes, buffers: list) -> None:
    """Write a pickle and its out-of-band buffers (protocol 5): a header of lengths, then each part's
    bytes as they are. Large numpy arrays go through the pipe straight from their memory, and the parent
    reads each into a buffer of its own: no second copy of the result as one bytes object (the score
    sums of half a million-reply table are ~170 MB)."""
    views = [b.raw() for b in buffers]
    head = [len(payload)] + [v.nbytes for v in views]
    fh.write(struct.pack(f"<Q{len(head)}Q", len(head), *head))
    fh.write(payload)
    for v in views:
        fh.write(v)


def _receive(fh) -> tuple[bytes, list[bytearray]] | None:
    """What :func:`_send` wrote, or None when the pipe closed before a whole result came."""
    first = fh.read(8)
    if len(first) < 8:
        return None
    (n,) = struct.unpack("<Q", first)
    raw = fh.read(8 * n)
    if len(raw) < 8 * n:
        return None
    sizes = struct.unpack(f"<{n}Q", raw)
    payload = fh.read(sizes[0])
    if len(payload) < sizes[0]:
        return None
    buffers = []
    for size in sizes[1:]:
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:
            k = fh.readinto(view[got:])
            if not k:
                return None
            got += k
        buffers.append(buf)
    return payload, buffers


def beside(fn: Callable[[], Any], n_cells: int) -> Beside:
    """Start ``fn()`` beside this process when :func:`parallel_enabled` (``n_cells``), else run it now."""
    return Beside(fn, parallel_enabled(n_cells))


class SharedTasks:
    """Tasks ``0 .. n-1`` handed out one at a time, in order, to whichever process asks first: made before
    a fork, the counter lives in shared memory, so the parent and the forked child split the tasks between
    them as each is free (the parent after its own part). A task is done by exactly one of them. Each task
    is a pure function of its number, so who computes it changes no number."""

    def __init__(self, n: int):
        import multiprocessing

        self.n = n
        self._next = multiprocessing.get_context("fork" if hasattr(os, "fork") else None).Value("q", 0)

    def take(self) -> int | None:
        """The next task's number, or None when every task has been handed out."""
        with self._next.get_lock():
            i = self._next.value
            if i >= self.n:
                return None
            self._next.value = i + 1
        return i


def run_parts(parts: list[Callable[[], Any]], take: Callable[[], int | None] | None = None) -> dict[int, tuple]:
    """Run the parts ``take()`` hands out (every part, in order, when ``take`` is None): ``{i: ("ok", value)}``,
    or ``{i: ("error", exception)}`` for a part that raised, so that the caller raises the errors in the
    parts' order (:func:`part_result`) whichever process met them first."""
    out: dict[int, tuple] = {}
    while (i := (take() if take is not None else (len(out) if len(out) < len(parts) else None))) is not None:
        try:
            out[i] = ("ok", parts[i]())
        except Exception as exc:  # noqa: BLE001 - raised by part_result, in order
            out[i] = ("error", exc)
    return out


def part_result(done: dict[int, tuple], i: int) -> Any:
    """Part ``i``'s value from :func:`run_parts`' results, or the exception it raised, raised here."""
    kind, value = done[i]
    if kind == "error":
        raise value
    return value
