"""Scoring in worker processes with one writer: the same scores as in one process, errors that stop it
cleanly, and a kill -9 that loses and duplicates nothing (issue 17)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import audit.scoring as scoring
from audit.errors import AuditError
from audit.scoring import ScoringPool, resolve_workers, score_run, score_with
from audit.store import RunStore
from scoring_fixtures import SlowLength, add_many_replies, make_run

SCORERS = ("epitome", "length", "refusal", "sentiment")
TESTS = Path(__file__).resolve().parent


def _run_with_many(tmp_path: Path, n: int, scorers=SCORERS):
    spec, run_dir, keys = make_run(tmp_path, scorers)
    with RunStore(run_dir) as st:
        keys = keys + add_many_replies(st, n)
    return spec, run_dir, keys


def _scores(run_dir: Path) -> pd.DataFrame:
    with RunStore(run_dir, create=False) as st:
        df = st.scores_df()
    return df.sort_values(["request_key", "scorer", "measure"]).reset_index(drop=True)


def test_scores_from_two_processes_equal_those_from_one(tmp_path, monkeypatch):
    # small pages and batches: many batches in flight, finishing in any order
    monkeypatch.setattr(scoring, "PAGE_ROWS", 97)
    monkeypatch.setattr(scoring, "POOL_BATCH", 13)
    spec, run_dir, keys = _run_with_many(tmp_path, 700)
    other = tmp_path / "copy"
    shutil.copytree(run_dir, other)
    one = score_run(spec, run_dir, workers=1, probe=False, invariance=False)
    two = score_run(spec, other, workers=2, probe=False, invariance=False)
    assert [s.processes for s in one.scorers] == [1, 1, 1, 1]
    assert [s.processes for s in two.scorers] == [2, 2, 2, 2] and two.workers == 2
    assert [s.scored for s in two.scorers] == [len(keys)] * 4
    a, b = _scores(run_dir), _scores(other)
    assert len(a) == len(keys) * (4 + 1 + 1 + 1)  # epitome ER IP EX empathy; words; refusal; compound
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert a["value"].notna().all() and a.loc[a["scorer"] == "epitome", "value"].nunique() > 1
    again = score_run(spec, other, workers=2, probe=False, invariance=False)  # nothing left to score
    assert [s.scored for s in again.scorers] == [0] * 4 and [s.already for s in again.scorers] == [len(keys)] * 4


def test_an_error_in_a_worker_stops_scoring_and_keeps_what_was_stored(tmp_path):
    spec, run_dir, keys = _run_with_many(tmp_path, 400, ("length",))
    with RunStore(run_dir) as st:
        with ScoringPool([SlowLength(fail_on="(350 days)")], 2) as pool:
            with pytest.raises(ValueError, match="failed on purpose"):
                score_with(st, SlowLength(fail_on="(350 days)"), pool=pool, page=50)
        stored = st.scored_keys("length")
        bad = st.query_df("SELECT request_key FROM replies WHERE text LIKE '%(350 days)%'")["request_key"][0]
        assert bad not in stored and 0 < len(stored) < len(keys)
        with ScoringPool([SlowLength()], 2) as pool:  # the rerun scores only what is missing
            summ = score_with(st, SlowLength(), pool=pool, page=50)
        assert summ.already == len(stored) and summ.scored == len(keys) - len(stored)
        assert st.scored_keys("length") == set(keys)
        assert st.count_scores(scorer="length") == len(keys)  # one 'words' row per reply, none twice


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        f = task / "children"
        if f.exists():
            out += [int(x) for x in f.read_text().split()]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from /proc (Linux)")
def test_kill_9_during_parallel_scoring_loses_and_duplicates_nothing(tmp_path):
    spec, run_dir, keys = _run_with_many(tmp_path, 1500, ("length",))
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        from audit.scoring import ScoringPool, score_with
        from audit.store import RunStore
        from scoring_fixtures import SlowLength
        if __name__ == "__main__":  # worker processes start with spawn, which imports this module
            sc = SlowLength(delay=0.05)
            with RunStore({str(run_dir)!r}) as st, ScoringPool([sc], 2) as pool:
                score_with(st, sc, pool=pool, page=64)
            print("finished")
    """))
    log = (tmp_path / "score.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    deadline = time.monotonic() + 120
    n = 0
    while time.monotonic() < deadline and n < 200:
        time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "score.log").read_text()
        with RunStore(run_dir, create=False) as st:
            n = st.count_scores(scorer="length")
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 200 <= n < len(keys) and len(workers) >= 2
    deadline = time.monotonic() + 30  # the workers see their parent's pipe close and exit
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    with RunStore(run_dir) as st:
        before = st.scored_keys("length")
        assert len(before) >= n  # every committed batch survived the kill
        with ScoringPool([SlowLength()], 2) as pool:
            summ = score_with(st, SlowLength(), pool=pool)
        assert summ.already == len(before) and summ.scored == len(keys) - len(before)
        assert st.count_scores(scorer="length") == len(keys)
        values = st.score_values("length", "words")
    serial = tmp_path / "serial"
    spec2, run2, _ = _run_with_many(serial, 1500, ("length",))
    score_run(spec2, run2, workers=1, probe=False, invariance=False)
    with RunStore(run2, create=False) as st:
        assert st.score_values("length", "words") == values


def test_workers_default_to_one_per_core_only_for_large_runs(monkeypatch):
    monkeypatch.delenv("EMPATHY_AUDIT_WORKERS", raising=False)
    monkeypatch.setattr(scoring, "cpu_count", lambda: 4)
    assert resolve_workers(None, 100) == 1
    assert resolve_workers(None, scoring.PARALLEL_MIN_PAIRS) == 4
    assert resolve_workers(3, 5) == 3 and resolve_workers(0, 5) == 4
    monkeypatch.setenv("EMPATHY_AUDIT_WORKERS", "2")
    assert resolve_workers(None, 10) == 2
    monkeypatch.setenv("EMPATHY_AUDIT_WORKERS", "two")
    with pytest.raises(AuditError, match="EMPATHY_AUDIT_WORKERS"):
        resolve_workers(None, 10)
    with pytest.raises(AuditError, match="workers"):
        resolve_workers(-1, 10)


def test_scorers_that_call_models_stay_in_the_writing_process():
    from audit.scorers import get_scorer
    from audit.scoring import parallel_scorers

    objs = [get_scorer(n) for n in SCORERS]
    assert parallel_scorers(objs) == objs

    class Judge:
        name, measures, parallel_safe, uses_store = "j", ("x",), True, True

    class Plugin:
        name, measures = "p", ("x",)

    assert parallel_scorers([Judge(), Plugin()]) == []


def test_score_cli_takes_workers(tmp_path, capsys):
    from audit.cli import main

    spec, run_dir, keys = _run_with_many(tmp_path, 50, ("length", "refusal"))
    assert main(["score", str(run_dir), "--workers", "2", "--no-probe", "--no-invariance"]) == 0
    out = capsys.readouterr().out
    assert f"length: {len(keys)} scored now" in out and "in 2 processes" in out
    assert main(["score", str(run_dir), "--workers", "-3"]) == 2
