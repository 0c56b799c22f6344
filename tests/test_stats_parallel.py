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


def test_disparity_blocks_shared_by_two_processes_are_each_computed_once_and_equal_one_process():
    """The parent and a forked child take the disparity blocks from one shared counter (audit.parallel
    SharedTasks): each block is computed by exactly one of them, both take some, and the table put back
    together is the one-process table number for number (block i has seed + i whoever computes it)."""
    import time

    from audit.stats.disparity import DisparityBlocks, disparity_table

    t = _table()
    t = pd.concat([t.assign(outcome=t["outcome"] + s) for s in ("", ".b", ".c")], ignore_index=True)  # 12 blocks
    blocks = DisparityBlocks(t, control="control", seed=3, n_boot=99, n_perm=99)
    tasks = parallel.SharedTasks(blocks.n)

    def slow_take():  # each process pauses after taking a block, so that the other one takes some too
        i = tasks.take()
        time.sleep(0.05)
        return i

    side = parallel.Beside(lambda: blocks.rows(slow_take), fork=True)
    mine = blocks.rows(slow_take)
    theirs = side.result()
    assert blocks.n == 12 and mine and theirs and not set(mine) & set(theirs)
    assert set(mine) | set(theirs) == set(range(blocks.n))
    assert tasks.take() is None
    want = disparity_table(t, control="control", seed=3, n_boot=99, n_perm=99)
    pd.testing.assert_frame_equal(blocks.table_of({**theirs, **mine}), want, check_exact=True)


def test_disparity_blocks_of_a_mask_are_those_of_the_masked_table():
    """``DisparityBlocks(table, keep=mask)`` (the analysis passes the observed cells as a mask, not a copy)
    numbers its blocks and seeds as the groupby of ``table[mask]``: a block whose rows are all masked out
    leaves no gap in the seeds of the blocks after it."""
    from audit.stats.disparity import DisparityBlocks, disparity_table

    t = _table()
    t = pd.concat([t.assign(outcome=t["outcome"] + s) for s in ("", ".b")], ignore_index=True)
    t["outcome"] = t["outcome"].astype("category")
    rng = np.random.default_rng(0)
    keep = rng.random(len(t)) > 0.2
    first = sorted(t["outcome"].unique())[0]
    keep &= (t["outcome"] != first).to_numpy()  # every row of the first outcome's blocks masked out
    blocks = DisparityBlocks(t, control="control", seed=7, n_boot=49, n_perm=49, keep=keep)
    got = blocks.table_of(blocks.rows())
    want = disparity_table(t[keep], control="control", seed=7, n_boot=49, n_perm=49)
    assert first not in set(got["outcome"]) and blocks.n == len(want) == 6
    pd.testing.assert_frame_equal(got, want, check_exact=True)
