"""The ``empathy-audit`` command: parse arguments, call the library, print.

Each group of subcommands lives in ``audit/commands/<area>.py`` and exposes ``register(subparsers)``;
a handler receives the parsed ``argparse.Namespace`` and returns an exit status. Everything a handler
does is a library function a notebook can call. An :class:`~audit.errors.AuditError` is printed as one
message (exit status 2), never as a traceback. Ctrl-C (SIGINT) and SIGTERM stop the command the same
way: what is finished is already stored, and the exit status is 128 + the signal number (130, 143).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys

from . import __version__
from .commands import (analysis, appropriateness, batch, compare, costs, generate, importing, pcsa, ratings, run,
                       scoring, stigma, variants)
from .cliargs import AuditArgumentParser
from .errors import AuditError

# Modules under audit.commands that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES = (
    run,        # run, report
    costs,      # plan
    variants,   # variants
    generate,   # generate, export, model
    scoring,    # score, scorers
    analysis,   # analyze, power
    ratings,    # ratings packet|import|agreement
    importing,  # import
    stigma,     # stigma reanalyze
    batch,      # batch status|submit|poll|collect|cancel|run-local
    compare,    # compare
    appropriateness,  # judge validate, appropriateness reanalyze
    pcsa,       # pcsa validation-table
)


def build_parser() -> argparse.ArgumentParser:
    parser = AuditArgumentParser(
        prog="empathy-audit",
        description="Audit LLM mental-health support replies for demographic gaps in empathy.",
    )
    parser.add_argument("--version", action="version", version=f"empathy-audit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMAND_MODULES:
        mod.register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same clean-up runs (the store commits per reply)."""


# The stop signal received while the command ran (None: none). The exit status is taken from here,
# not from whichever exception reaches main(): asyncio's own SIGINT handling turns Ctrl-C into a
# cancellation of the main task, and a cancellation that library code absorbs would otherwise let
# the command finish "normally" with exit status 0 after a Ctrl-C.
_received: signal.Signals | None = None


def _on_stop_signal(signum: int, frame: object) -> None:
    global _received
    _received = signal.Signals(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def _stop_signals_as_interrupt():
    """While a command runs (main thread only), SIGINT and SIGTERM both record themselves and raise a
    KeyboardInterrupt where the program is, so the same clean-up runs for both. Installing our own
    SIGINT handler also keeps ``asyncio.run`` from installing its cancel-the-main-task handler, whose
    outcome depends on where the cancellation lands."""
    global _received
    _received = None
    try:
        previous = {s: signal.signal(s, _on_stop_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (main() called from a worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _stopped(signum: signal.Signals) -> int:
    print(f"empathy-audit: stopped by {signum.name}; everything finished so far is stored, "
          "and the same command resumes from there.", file=sys.stderr)
    return 128 + int(signum)


def _os_error_advice(exc: OSError) -> str | None:
    """One true line for an OSError a user can act on, or None (then it is a bug: the traceback shows)."""
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{where}the disk is full (or the quota is used up) while writing this file; everything stored in "
                "the run store before is kept. Free disk space and run the same command again")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (f"{where}cannot write here (read-only or no permission); nothing stored was changed. Make the "
                "folder writable, or write somewhere else (--out)")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad command line (already printed as one line)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        with _stop_signals_as_interrupt():
            status = int(args.func(args) or 0)
        if _received is not None and not getattr(args, "stop_is_normal", False):
            return _stopped(_received)  # the interrupt was absorbed on its way up: the command did not finish
        return status
    except AuditError as exc:
        if _received is not None:
            return _stopped(_received)
        print(f"empathy-audit: error: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `empathy-audit variants ... | head`: the reader went away
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a full disk or a read-only place while writing a file (reports, tables, exports)
        advice = _os_error_advice(exc)
        if advice is None:
            raise
        print(f"empathy-audit: error: {advice}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = _received or (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
        return _stopped(signum)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
