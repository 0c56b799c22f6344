"""Calibration: with group labels carrying no signal, Holm keeps the family-wise error at the nominal level.

The null data are a real-looking audit table with large planted gaps whose group and cue-type labels
are then permuted *within each post* (so the labels carry no signal but the post structure stays).
Each replicate is a complete family: 4 groups x (pooled + 2 cue types) = 12 tests, fitted with the
exact mixed model the audit uses (:func:`audit.stats.fastlmm.fit_nested_ri`, the fast path behind
:func:`audit.stats.gap_test`; the first replicates are checked to give gap_test's p-values exactly).
500 replicates separate an FWER of 5% from one of 10%: if the true FWER were 10%, observing <= 7.5%
would have probability ~3%; at 5% it passes with probability ~99.5%.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.stats import adjust_family, gap_test
from audit.stats.fastlmm import fit_nested_ri
from audit.stats.gaps import design_matrix
from audit.stats.simulate import simulate_audit_table

REPLICATES = 500


def _family_pvalues(t: pd.DataFrame) -> np.ndarray:
    """The 12 raw p-values gap_test(by='cue_type') computes, straight from the fast path."""
    y, post = t["value"].to_numpy(), t["post_id"].to_numpy()
    X, _, _ = design_matrix(t, "group", "control")
    cond = np.where(t["group"] == "control", "control", t["group"] + "\x1f" + t["cue_type"])
    Xc, _, _ = design_matrix(t.assign(cond=cond), "cond", "control")
    z = []
    for M in (X, Xc):
        f = fit_nested_ri(y, M, post)
        z.extend(f.params[1:] / f.bse[1:])
    return 2 * stats.norm.sf(np.abs(np.array(z)))


@pytest.mark.slow
def test_holm_fwer_at_most_nominal_under_permuted_labels():
    base = simulate_audit_table(n_posts=30, groups=["A", "B", "C", "D"], cue_types=["tag", "name"],
                                gaps={"A": -0.3, "B": 0.2}, sd_post=0.4, sd_resid=0.5, seed=0)
    base = base.sort_values("post_id", kind="stable").reset_index(drop=True)
    codes = pd.factorize(base["post_id"])[0]
    labels = base[["group", "cue_type"]].to_numpy()
    rng = np.random.default_rng(2024)
    any_holm = any_bh = raw_rejections = n_tests = 0
    for i in range(REPLICATES):
        order = np.lexsort((rng.random(len(base)), codes))     # a random permutation within each post
        t = base.copy()
        t[["group", "cue_type"]] = labels[order]
        p = _family_pvalues(t)
        if i < 3:  # the loop computes exactly what the audit computes
            ref = gap_test(t, outcome="value", by="cue_type")["p_value"].to_numpy()
            assert np.allclose(np.sort(p), np.sort(ref), rtol=1e-8, atol=1e-12)
        r = adjust_family(pd.DataFrame({"p_value": p}), alpha=0.05)
        any_holm += bool(r.significant_holm.any())
        any_bh += bool((r.p_bh < 0.05).any())
        raw_rejections += int((p < 0.05).sum())
        n_tests += len(p)
    fwer = any_holm / REPLICATES
    assert fwer <= 0.075, f"Holm FWER {fwer:.3f} above nominal 0.05"
    # under the complete null FDR = FWER, so BH must hold it too
    assert any_bh / REPLICATES <= 0.075
    # the raw tests are neither liberal nor grossly conservative: per-test size near 5%
    size = raw_rejections / n_tests
    assert 0.03 <= size <= 0.07, f"per-test size {size:.3f}"
    # and the correction matters: uncorrected, the family would be wrong far more often
    assert fwer < 0.5 * min(1.0, size * 12)


@pytest.mark.slow
def test_binary_gee_is_not_liberal_under_permuted_labels():
    """0/1 outcomes (GEE logistic, bias-reduced sandwich): per-test size and Holm FWER stay at or below
    nominal with 30 posts. 120 replicates x 12 tests: a per-test size of 10% would exceed the 8% bound
    with high probability; the observed size is ~4%."""
    base = simulate_audit_table(n_posts=30, groups=["A", "B", "C", "D"], cue_types=["tag", "name"], binary=True,
                                ref_mean=0.25, sd_post=0.15, gaps={"A": 0.2}, seed=0)
    base = base.sort_values("post_id", kind="stable").reset_index(drop=True)
    codes = pd.factorize(base["post_id"])[0]
    labels = base[["group", "cue_type"]].to_numpy()
    rng = np.random.default_rng(7)
    any_holm = rejections = n_tests = 0
    reps = 120
    for _ in range(reps):
        order = np.lexsort((rng.random(len(base)), codes))
        t = base.copy()
        t[["group", "cue_type"]] = labels[order]
        r = adjust_family(gap_test(t, outcome="value", by="cue_type"))
        assert r.method.str.startswith("gee").all()
        any_holm += bool(r.significant_holm.any())
        rejections += int((r.p_value < 0.05).sum())
        n_tests += len(r)
    assert rejections / n_tests <= 0.08, rejections / n_tests
    assert any_holm / reps <= 0.10
