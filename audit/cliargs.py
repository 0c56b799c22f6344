"""One validation layer for every command-line number and path.

Every numeric flag of every command is declared with a range (``type=bounded_int(...)`` /
``type=bounded_float(...)``), and every output path with what it must be (``type=output_file(...)`` /
``type=output_dir(...)``). The checks run while the command line is parsed, so a bad value is refused
before any work (no request sent, no file written), as one line and exit status 2:

    empathy-audit power: error: argument --sims: 1000000000 is above the cap of 100000 ...

Two kinds of bound:

* a **domain** (``lo``/``hi``): what the number means allows nothing else (a probability in (0, 1), a
  count of at least 1, a finite number). There is no way past it.
* a **cap** (``cap``): a sane limit on cost or memory (``--sims``, ``--posts``, ``--n-boot``). Setting
  the environment variable ``EMPATHY_AUDIT_LIFT_CAPS=1`` lifts every cap; each refusal says so.

:class:`AuditArgumentParser` makes every argparse error (a bad value, a missing option, an option given
twice with different values) one line instead of a usage block. Other engineers' new flags use the same
factories; ``tests/test_cli_validation.py`` fails on any numeric flag declared with a bare ``type=int`` or
``type=float``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn

LIFT_CAPS_ENV = "EMPATHY_AUDIT_LIFT_CAPS"
SEED_MAX = 2**63 - 1


def caps_lifted() -> bool:
    return os.environ.get(LIFT_CAPS_ENV, "").strip().lower() in {"1", "true", "yes"}


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


class Bounded:
    """An argparse ``type=`` that parses a number and checks it against its declared range.

    ``lo``/``hi`` are the domain (inclusive unless ``lo_open``/``hi_open``); ``cap`` is an upper limit that
    ``EMPATHY_AUDIT_LIFT_CAPS=1`` lifts. The bounds are attributes so that tests can drive every flag."""

    def __init__(self, kind: type, lo: float | None, hi: float | None, *, cap: float | None = None,
                 lo_open: bool = False, hi_open: bool = False, what: str = "", name: str = ""):
        self.kind, self.lo, self.hi, self.cap = kind, lo, hi, cap
        self.lo_open, self.hi_open, self.what, self.name = lo_open, hi_open, what, name
        self.__name__ = "whole number" if kind is int else "number"  # argparse names the type in its messages

    def describe(self) -> str:
        if self.name and self.lo is not None and self.hi is not None:
            ends = "exclusive" if self.lo_open and self.hi_open else "inclusive" if not (
                self.lo_open or self.hi_open) else "as stated"
            return f"a number: {self.name} must be between {_num(self.lo)} and {_num(self.hi)} ({ends})"
        lo = "" if self.lo is None else ("> " if self.lo_open else ">= ") + _num(self.lo)
        hi = "" if self.hi is None else ("< " if self.hi_open else "<= ") + _num(self.hi)
        parts = [p for p in (lo, hi) if p]
        rng = " and ".join(parts) if parts else "any finite value"
        return f"a {self.__name__} {rng}" + (f" ({self.what})" if self.what else "")

    def out_of_range(self) -> list[str]:
        """Values outside the domain or above the cap, as typed on a command line (for tests)."""
        bad = ["inf", "nan", "1e400"] if self.kind is float else ["1e23", "2.5", "inf"]
        if self.lo is not None:
            bad.append(_num(self.lo) if self.lo_open else _num(self.lo - 1))
        if self.hi is not None:
            bad.append(_num(self.hi) if self.hi_open else _num(self.hi * 2 + 1))
        if self.cap is not None:
            bad.append(_num(self.kind(self.cap * 10)))
        return bad

    def __call__(self, text: str):
        raw = str(text).strip()
        try:
            value = float(raw) if self.kind is float else int(raw.replace("_", ""))
        except ValueError:
            if self.kind is int:
                try:
                    f = float(raw)
                except ValueError:
                    f = None
                if f is not None and math.isfinite(f) and f == int(f) and abs(f) < 2**63:
                    value = int(f)  # "1e3" means 1000; the range check below still applies
                else:
                    raise argparse.ArgumentTypeError(f"{raw!r} is not {self.describe()}") from None
            else:
                raise argparse.ArgumentTypeError(f"{raw!r} is not {self.describe()}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{raw!r} is not finite; give {self.describe()}")
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            raise argparse.ArgumentTypeError(f"{raw} is out of range; give {self.describe()}")
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            raise argparse.ArgumentTypeError(f"{raw} is out of range; give {self.describe()}")
        if self.cap is not None and value > self.cap and not caps_lifted():
            raise argparse.ArgumentTypeError(
                f"{raw} is above the cap of {_num(self.cap)} (a guard against runs that exhaust time or memory); "
                f"set {LIFT_CAPS_ENV}=1 to go past it")
        return value


def bounded_int(lo: int | None = None, hi: int | None = None, *, cap: int | None = None, what: str = "") -> Bounded:
    """A whole number in [lo, hi], at most ``cap`` unless caps are lifted."""
    return Bounded(int, lo, hi, cap=cap, what=what)


def bounded_float(lo: float | None = None, hi: float | None = None, *, cap: float | None = None,
                  lo_open: bool = False, hi_open: bool = False, what: str = "") -> Bounded:
    """A finite number in the declared range (``inf``, ``nan`` and ``1e400`` are refused)."""
    return Bounded(float, lo, hi, cap=cap, lo_open=lo_open, hi_open=hi_open, what=what)


def probability(name: str = "the value") -> Bounded:
    """A level or probability strictly between 0 and 1 (``--alpha``, ``--power``); ``name`` names it in
    the refusal ("alpha must be between 0 and 1")."""
    return Bounded(float, 0.0, 1.0, lo_open=True, hi_open=True, name=name)


def seed() -> Bounded:
    """A random seed: a whole number in [0, 2**63 - 1]."""
    return bounded_int(0, SEED_MAX)


def count(lo: int = 1, cap: int | None = None, what: str = "") -> Bounded:
    return bounded_int(lo, None, cap=cap, what=what)


class OutputPath:
    """An argparse ``type=`` for an output file or directory, checked before any work.

    ``kind="file"``: not an existing directory, its folder exists, its extension one of ``exts``.
    ``kind="dir"``: not an existing file; with ``new=True`` not an existing non-empty folder either;
    with ``parent_must_exist`` its parent folder exists."""

    def __init__(self, kind: str, exts: tuple[str, ...] = (), *, new: bool = False,
                 parent_must_exist: bool = True):
        self.kind, self.exts, self.new, self.parent_must_exist = kind, tuple(e.lower() for e in exts), new, \
            parent_must_exist
        self.__name__ = "output " + kind

    def __call__(self, text: str) -> str:
        raw = str(text)
        if not raw.strip():
            raise argparse.ArgumentTypeError("the path is empty")
        p = Path(raw).expanduser()
        if self.kind == "file":
            if p.is_dir() or raw.endswith(("/", os.sep)):
                raise argparse.ArgumentTypeError(f"{raw} is a directory; give a file name in it")
            if self.exts and not raw.lower().endswith(self.exts):
                raise argparse.ArgumentTypeError(
                    f"{raw}: unsupported extension {p.suffix or '(none)'!r}; use {', '.join(self.exts)}")
            if not p.parent.exists():
                raise argparse.ArgumentTypeError(f"the folder {p.parent} does not exist; create it first")
            if not p.parent.is_dir():
                raise argparse.ArgumentTypeError(f"{p.parent} is a file, not a folder")
        else:
            if p.exists() and not p.is_dir():
                raise argparse.ArgumentTypeError(f"{raw} is an existing file, not a folder; give a folder")
            if self.new and p.is_dir() and any(p.iterdir()):
                raise argparse.ArgumentTypeError(f"{raw} already exists and is not empty; give a new folder")
            parent = p.parent
            if self.parent_must_exist and not parent.exists():
                raise argparse.ArgumentTypeError(f"the folder {parent} does not exist; create it first")
            if parent.exists() and not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{parent} is a file, not a folder")
        return raw


def output_file(*exts: str) -> OutputPath:
    return OutputPath("file", exts)


def output_dir(*, new: bool = False, parent_must_exist: bool = False) -> OutputPath:
    return OutputPath("dir", new=new, parent_must_exist=parent_must_exist)


class _StoreOnce(argparse._StoreAction):
    """``store`` that refuses an option given twice with different values (argparse keeps the last one
    silently: ``--out a --out b`` would write to ``b`` without a word)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_options_seen", {})
        if self.dest in seen and seen[self.dest] != values:
            raise argparse.ArgumentError(
                self, f"given twice ({seen[self.dest]!r} and {values!r}); give it once")
        seen[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


class AuditArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2) and options that refuse to be given twice."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        sys.stderr.write(f"{self.prog}: error: {line}; see {self.prog} --help.\n")
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        ns = super().parse_args(args, namespace)
        ns.__dict__.pop("_options_seen", None)
        return ns


def validator_of(action: argparse.Action) -> Callable | None:
    t = action.type
    return t if isinstance(t, (Bounded, OutputPath)) else None
