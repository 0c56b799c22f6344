"""The analysis's independent parts in a forked process (audit.parallel) give the results of
running them one after the other, number for number; failures in either process surface."""

import os

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit import parallel
from audit.stats.simulate import simulate_audit_table
from audit.stats.stage import analyze_scores

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only; elsewhere nothing forks")


def _table():
    parts = []
    for m, seed in (("m1", 1), ("m2", 2)):
        for outcome, binary in (("epitome.empathy", False), ("refusal.refusal", True)):
            t = simulate_audit_table(n_posts=30, groups=["A", "B"], samples=2, gaps={"A": -0.2}, binary=binary,
                                     ref_mean=0.4 if binary else 1.0, outcome=outcome, model_label=m, seed=seed)
            parts.append(t)
    return pd.concat(parts, ignore_index=True)


def _analyze(monkeypatch, workers):
    monkeypatch.setenv("EMPATHY_AUDIT_WORKERS", str(workers))
    monkeypatch.setenv("EMPATHY_AUDIT_PARALLEL_MIN_CELLS", "0")
    forks = []
    real = os.fork
    monkeypatch.setattr(parallel.os, "fork", lambda: (forks.append(1), real())[1])
    res = analyze_scores(_table(), reference_model="m1", seed=5)
    return res, len(forks)


def test_forked_parts_equal_the_sequential_analysis(monkeypatch):
    seq, n_seq = _analyze(monkeypatch, 1)
    par, n_par = _analyze(monkeypatch, 2)
    assert (n_seq, n_par) == (0, 1)  # the parallel run did fork, the sequential one did not
    assert set(seq.tables) == set(par.tables) and {"results_disparity", "results_models"} <= set(par.tables)
    for name, a in seq.tables.items():
        b = par.tables[name]
        if name == "analysis_meta":  # the time of the analysis differs
            a, b = a[a["key"] != "analyzed_at"], b[b["key"] != "analyzed_at"]
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True)


def test_an_error_in_the_child_is_raised_in_the_parent_with_its_message():
    def boom():
        raise AuditError("the disparity table is broken", where="here", fix="that")

    side = parallel.Beside(boom, fork=True)
    with pytest.raises(AuditError) as e:
        side.result()
    assert (e.value.what, e.value.where, e.value.fix) == ("the disparity table is broken", "here", "that")
    assert parallel.Beside(lambda: np.arange(3), fork=True).result().tolist() == [0, 1, 2]


def test_a_child_that_dies_is_an_error_and_a_cancelled_child_is_reaped():
    side = parallel.Beside(lambda: os._exit(3), fork=True)
    with pytest.raises(RuntimeError, match="without a result"):
        side.result()
    import time

    slow = parallel.Beside(lambda: time.sleep(60), fork=True)
    pid = slow._pid
    slow.cancel()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie left
