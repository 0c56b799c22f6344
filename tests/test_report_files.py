"""The report's files on disk (issue 12 H, I, L, O): a damaged store never replaces a good report, a
kill at any point of `report` leaves a complete report, and two `report` commands at once are safe."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from audit.cli import main as cli_main
from golden_server import golden_server

FILES = ("report.html", "report.md", "results.json")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report-files")
    with golden_server() as srv:
        spec = {"name": "files", "posts": {"limit": 6},
                "demographics": {"axes": ["race"], "cue_types": ["explicit_tag"], "alternatives": 1},
                "models": [{"label": "golden", "base_url": srv.base_url, "model": "golden-model"}],
                "decoding": {"max_tokens": 64, "seed": 3},
                "scoring": {"scorers": ["epitome", "length"], "inference_probe": False}}
        (tmp / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        assert cli_main(["run", str(tmp / "spec.yaml"), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


def _complete(run: Path) -> None:
    """Every file of the report is there and whole."""
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert (run / "report.md").read_text(encoding="utf-8").strip()
    data = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert data["results"]
    names = {p.name for p in (run / "tables").glob("*.csv")}
    assert {"results.csv", "replies.csv", "group_summary.csv"} <= names
    for p in (run / "tables").glob("*.csv"):
        with p.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
        assert rows and all(len(r) == len(rows[0]) for r in rows), p.name


@pytest.mark.parametrize("damage", ["empty", "random", "truncated", "foreign"])
def test_a_damaged_store_gets_one_line_and_the_good_report_stays(finished_run, tmp_path, damage, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in FILES:
        (run / name).write_bytes((finished_run / name).read_bytes())
    good = {name: (run / name).read_bytes() for name in FILES}
    store = (finished_run / "store.sqlite").read_bytes()
    target = run / "store.sqlite"
    if damage == "empty":
        target.write_bytes(b"")
    elif damage == "random":
        target.write_bytes(random.Random(1).randbytes(len(store)))
    elif damage == "truncated":
        target.write_bytes(store[: len(store) // 2])
    else:
        import sqlite3

        with sqlite3.connect(target) as c:
            c.execute("CREATE TABLE contacts (name TEXT)")
    before = target.read_bytes()
    for argv in (["report", str(run)], ["run", str(tmp_path / "missing.yaml"), "--out", str(run)]):
        capsys.readouterr()
        status = cli_main(argv)
        err = capsys.readouterr().err
        assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    cli_main(["report", str(run)])
    err = capsys.readouterr().err
    assert ("empty file" in err) if damage == "empty" else ("damaged" in err or "not an empathy-audit" in err), err
    assert {name: (run / name).read_bytes() for name in FILES} == good      # nothing replaced
    assert target.read_bytes() == before                                     # nor the store touched


def test_a_kill_at_any_point_of_report_leaves_a_complete_report(finished_run):
    _complete(finished_run)
    t0 = time.monotonic()
    assert subprocess.run([sys.executable, "-m", "audit.cli", "report", str(finished_run)],
                          capture_output=True).returncode == 0
    took = time.monotonic() - t0
    rng = random.Random(7)
    for i in range(8):
        proc = subprocess.Popen([sys.executable, "-m", "audit.cli", "report", str(finished_run)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, took))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        _complete(finished_run)
    assert not [p for p in finished_run.glob(".report-*") if time.time() - p.stat().st_mtime > 3600]


def test_two_report_commands_at_once_both_succeed(finished_run):
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-m", "audit.cli", "report", str(finished_run)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
        _complete(finished_run)
