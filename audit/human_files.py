"""Never overwrite human work.

A command that writes a file a person may have filled (a labelling table, a rating packet) calls
:func:`guard_human_files` before any work: an existing non-empty file is refused with one
:class:`~audit.errors.AuditError` unless ``force``, and with ``force`` it is first copied to a backup
beside it (``<name>.bak-<UTC time>``), so that human labels are never lost, not even on purpose.

>>> guard_human_files([], force=False)
[]
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from .errors import AuditError

__all__ = ["guard_human_files"]


def _filled(p: Path) -> bool:
    return p.is_file() and p.stat().st_size > 0


def guard_human_files(paths: Iterable[str | Path], *, force: bool, what: str = "a table people may have filled",
                      flag: str = "--force") -> list[Path]:
    """Refuse (or, with ``force``, back up) every existing non-empty file of ``paths``.

    Returns the backups made (empty when nothing existed). The refusal names the file and the way out."""
    filled = [Path(p) for p in paths if _filled(Path(p))]
    if filled and not force:
        raise AuditError(f"{filled[0]} exists and is not empty ({what}); it is not overwritten",
                         where=str(filled[0]),
                         fix=f"write to another file, or pass {flag} to replace it (a backup is kept beside it)")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    backups = []
    for p in filled:
        b = p.with_name(f"{p.name}.bak-{stamp}")
        shutil.copy2(p, b)
        backups.append(b)
    return backups
