"""Locate the built-in data: templates/, analyses/ and the package's own data files.

In a wheel, ``templates/`` and ``analyses/`` are shipped as ``audit/_builtin/{templates,analyses}``
(see ``pyproject.toml``); in a source checkout or editable install they are read from the
repository root. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"


def builtin_dir(name: str) -> Path:
    """Return the directory of the built-in ``templates`` or ``analyses``."""
    if name not in ("templates", "analyses"):
        raise ValueError(f"unknown built-in directory {name!r}")
    shipped = PACKAGE_DIR / "_builtin" / name
    if shipped.is_dir():
        return shipped
    return PACKAGE_DIR.parent / name


def templates_dir() -> Path:
    return builtin_dir("templates")


def analyses_dir() -> Path:
    return builtin_dir("analyses")


def resolve_spec_path(name_or_path: str | Path) -> Path:
    """A spec given as a path, or as the name of a built-in audit (``demo`` -> analyses/demo.yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    candidate = analyses_dir() / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
    if candidate.exists():
        return candidate
    return p  # let the caller report the missing file with its own context


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks: the project's one file hasher."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
