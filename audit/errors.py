"""One error type for everything a user can fix.

An :class:`AuditError` says *what* was wrong, *where* (file, key path, line, row) and *what to do*.
The CLI prints it as one message and exits with status 2; no traceback, nothing stored is lost.
"""

from __future__ import annotations


class AuditError(Exception):
    """A problem in the user's input or environment that the user can act on."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.where:
            parts.append(f"{self.where}: ")
        parts.append(self.what.rstrip("."))
        parts.append(".")
        if self.fix:
            fix = self.fix.rstrip(".")
            parts.append(f" {fix[:1].upper()}{fix[1:]}.")
        return "".join(parts)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message

    def __reduce__(self):  # pickled whole (an analysis part in a forked process, audit.parallel)
        return (type(self), (self.what, self.where, self.fix))
