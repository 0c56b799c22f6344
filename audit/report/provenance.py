"""Hashes that pin down what a run was made from: spec, templates, corpus, scorer artifacts, store.

``hash_tree`` hashes a directory as the sorted list of (relative path, file SHA-256) pairs, so the
same files give the same hash on any machine. The run store's hash is
:meth:`audit.store.RunStore.content_sha256`: its *rows*, not the SQLite file's bytes.
"""

from __future__ import annotations

import hashlib
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


def record_provenance(store: Any, spec: Any, run_dir: Path, spec_argument: str | None = None) -> None:
    """Write what the run is made of into the store's ``meta`` (hashes, sources, versions, command, times)."""
    from .. import __version__
    from ..corpus import BUILTIN_POSTS
    from ..resources import templates_dir
    from ..store import now_iso

    facts: dict[str, Any] = {
        "tool_version": __version__,
        "run_started_at": now_iso(),
        "run_dir": str(run_dir),
        "command_line": command_line(),
        "software_versions": software_versions(),
    }
    if spec.source_path:
        facts["spec_argument"] = spec_argument or str(spec.source_path)
        if Path(spec.source_path).exists():
            facts["spec_file_sha256"] = sha256_file(spec.source_path)
    tdir = spec.resolve(spec.demographics.templates) if spec.demographics.templates else templates_dir()
    facts["templates_path"] = str(tdir)
    th = hash_tree(tdir)
    if th:
        facts["templates_sha256"] = th
    src = spec.posts.source
    if src == "builtin":
        facts["corpus_source"] = f"builtin ({Path(BUILTIN_POSTS).name})"
        facts["corpus_sha256"] = sha256_file(BUILTIN_POSTS)
    else:
        p = spec.resolve(src)
        facts["corpus_source"] = str(p)
        if p.exists():
            facts["corpus_sha256"] = hash_tree(p)
    sources = cue_sources(tdir)
    if sources:
        facts["cue_sources"] = sources
    store.set_meta_many({**facts, "first_run_at": facts["run_started_at"]}, keep_existing=("first_run_at",))


def cue_sources(tdir: Path) -> dict[str, Any]:
    """{cue_type: {'source': text, 'alternatives': {id: source}}} of a template set; {} when it does not
    load (the variants stage reports bad templates with file and line)."""
    from ..errors import AuditError
    from ..templates import load_templates

    try:
        ts = load_templates(tdir)
    except AuditError:
        return {}
    out: dict[str, Any] = {}
    for name, cf in ts.cues.items():
        alts = {item.id: item.source for item in (getattr(cf, "items", None) or []) if getattr(item, "source", None)}
        out[name] = {"source": " ".join(str(cf.source).split()), "alternatives": alts}
    return out


def record_import_provenance(store: Any, run_dir: Path, *, records: list[dict[str, Any]], mapping: dict[str, Any],
                             counts: dict[str, Any], sha256: str, spec_text: str = "",
                             spec_path: Path | None = None, command: str | None = None) -> None:
    """Write what an import (:mod:`audit.importer`) was made from into the store's ``meta``.

    Key ``import`` holds ``{sha256, files: [{path, name, sha256, bytes, rows, format, header}], mapping,
    counts, spec_path, command}``; ``import_spec_yaml`` the import spec's text; the usual run facts
    (tool and software versions, run directory, times) are written as :func:`record_provenance` does.
    ``import_complete`` marks the import as finished.
    """
    from .. import __version__
    from ..store import now_iso

    started = now_iso()
    facts: dict[str, Any] = {
        "import": {"sha256": sha256, "files": records, "mapping": mapping, "counts": counts,
                   "spec_path": str(spec_path) if spec_path else None, "command": command or command_line(),
                   "imported_at": started},
        "import_spec_yaml": spec_text or "",
        "tool_version": __version__,
        "run_started_at": started,
        "run_dir": str(run_dir),
        "command_line": command or command_line(),
        "software_versions": software_versions(),
        "corpus_source": "imported: " + ", ".join(r["name"] for r in records),
        "import_complete": started,
    }
    store.set_meta_many({**facts, "first_run_at": started}, keep_existing=("first_run_at",))


def import_provenance(meta: dict[str, str], run_dir: str | Path) -> dict[str, Any] | None:
    """What a report says about an imported run: the files (name, path, sha256, size, rows), the
    counts, and the command that re-imports it; None for a run whose replies were generated."""
    import json
    import shlex

    raw = meta.get("import")
    if not raw:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    spec_path = info.get("spec_path")
    again = (f"empathy-audit import --spec {shlex.quote(spec_path)} --out {shlex.quote(str(run_dir))}" if spec_path
             else info.get("command"))
    return {"sha256": info.get("sha256"), "files": info.get("files", []), "counts": info.get("counts", {}),
            "command": info.get("command"), "reproduce": again}
