"""Hashes that pin down what a run was made from: spec, templates, corpus, scorer artifacts, store.

``hash_tree`` hashes a directory as the sorted list of (relative path, file SHA-256) pairs, so the
same files give the same hash on any machine. The run store's hash is
:meth:`audit.store.RunStore.content_sha256`: its *rows*, not the SQLite file's bytes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

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


def jsonable(obj: Any) -> Any:
    """NaN and infinities to None, numpy scalars to Python: strict JSON."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    try:
        import pandas as pd

        if obj is pd.NA or obj is pd.NaT:
            return None
        if isinstance(obj, pd.Timestamp):
            return obj.isoformat()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)
