"""Hashes that pin down what a run was made from: spec, templates, corpus, scorer artifacts, store.

``hash_tree`` hashes a directory as the sorted list of (relative path, file SHA-256) pairs, so the
same files give the same hash on any machine. ``store_content_sha256`` hashes the *rows* of the run
store (every table, rows in a canonical order), not the SQLite file's bytes, which change with page
layout and WAL checkpoints while the data stays the same.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sqlite3
import sys
from importlib import metadata
from pathlib import Path

from ..resources import sha256_file

# Tables whose content is hashed; sqlite internals are left out.
SOFTWARE = ("empathy-audit", "numpy", "pandas", "scipy", "statsmodels", "pingouin", "seaborn", "matplotlib",
            "Jinja2", "pydantic", "openai", "httpx", "vaderSentiment", "xllamacpp", "scikit-learn")


def hash_tree(path: str | Path) -> str | None:
    """SHA-256 over (relative path, file sha256) of every file under ``path``; a file's own hash."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        return None
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file() and "__pycache__" not in x.parts):
        h.update(f.relative_to(p).as_posix().encode("utf-8"))
        h.update(b"\0")
        h.update(sha256_file(f).encode("ascii"))
        h.update(b"\n")
    return h.hexdigest()


def store_content_sha256(conn: sqlite3.Connection) -> str:
    """SHA-256 of every row of every table of the store, in a canonical order."""
    h = hashlib.sha256()
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    for t in tables:
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')]
        h.update(f"table {t} {','.join(cols)}\n".encode("utf-8"))
        order = ", ".join(f'"{c}"' for c in cols)
        for row in conn.execute(f'SELECT * FROM "{t}" ORDER BY {order}'):
            h.update(json.dumps(list(row), default=str, ensure_ascii=False).encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()


def software_versions() -> dict[str, str]:
    """Python and the versions of the packages the audit depends on (those installed)."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def command_line() -> str:
    """The command line this process was started with (for the record)."""
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith(("empathy-audit", "__main__.py")):
        argv[0] = "empathy-audit"
    return " ".join(shlex.quote(a) for a in argv)
