"""The demo audit (analyses/demo.yaml) run end to end against the golden server instead of the
embedded model: the demo's design and every stage, in seconds, with deterministic replies. Used by
the report tests that need the demo report (first screen, figures, PDF)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import yaml

from audit.cli import main as cli_main
from golden_server import golden_server

ROOT = Path(__file__).resolve().parents[1]


_DONE: Path | None = None  # the one run of this test process; each caller gets a copy


def golden_demo_run(tmp: Path) -> Path:
    """The demo design run into ``tmp/run`` (replies from the golden server); return the run directory.

    The audit runs once per test process; later callers get a copy of that run directory (the run
    store records the directory it was made in; the report re-rendered from a copy is the same)."""
    global _DONE
    if _DONE is None:
        where = Path(tempfile.mkdtemp(prefix="golden-demo-"))
        atexit.register(shutil.rmtree, where, True)
        _DONE = _run_once(where)
    shutil.copytree(_DONE, tmp / "run")
    shutil.copy(_DONE.parent / "demo.yaml", tmp / "demo.yaml")  # the spec it was run with, to run it again
    return tmp / "run"


def _run_once(tmp: Path) -> Path:
    spec = yaml.safe_load((ROOT / "analyses" / "demo.yaml").read_text(encoding="utf-8"))
    with golden_server() as srv:
        spec["models"] = [{"label": "golden", "base_url": srv.base_url, "model": "golden-model", "max_in_flight": 4}]
        path = tmp / "demo.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        assert cli_main(["run", str(path), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


def margin_demo_run(tmp: Path, margins: dict, *, gate: bool = True) -> tuple[Path, int]:
    """The demo design with ``analysis.margins`` run into ``tmp/run`` against the golden server with
    ``run --gate``; returns (run directory, exit status)."""
    spec = yaml.safe_load((ROOT / "analyses" / "demo.yaml").read_text(encoding="utf-8"))
    with golden_server() as srv:
        spec["models"] = [{"label": "golden", "base_url": srv.base_url, "model": "golden-model", "max_in_flight": 4}]
        spec["analysis"]["margins"] = dict(margins)
        path = tmp / "demo-margins.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        status = cli_main(["run", str(path), "--out", str(tmp / "run"), "--no-progress"] + (["--gate"] if gate else []))
    return tmp / "run", status
