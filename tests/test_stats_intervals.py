"""Holm-consistent intervals (audit.stats.intervals): they exclude 0 exactly when the Holm p-value is
below alpha, hold simultaneously at 1 - alpha when nothing is rejected, and stay within the range."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from audit.stats import adjust_family
from audit.stats.gaps import FIELLER_G_MAX, safe_ratio
from audit.stats.intervals import clip_to_range, holm_intervals, holm_level


def _family(rng, m: int, planted: int) -> pd.DataFrame:
    se = rng.uniform(0.05, 0.3, m)
    truth = np.zeros(m)
    truth[:planted] = rng.choice([-1, 1], planted) * rng.uniform(2, 6, planted) * se[:planted]
    est = truth + rng.normal(0, se)
    p = 2 * stats.norm.sf(np.abs(est / se))
    df = pd.DataFrame({"outcome": "y", "estimate": est, "se": se, "p_value": p, "truth": truth})
    return adjust_family(df, alpha=0.05)


def test_holm_consistent_intervals_exclude_zero_exactly_when_holm_rejects():
    rng = np.random.default_rng(29)
    n_rejected = 0
    for _ in range(150):
        m = int(rng.integers(2, 60))
        df = holm_intervals(_family(rng, m, int(rng.integers(0, m))), alpha=0.05)
        excludes = (df["ci_low_adj"] > 0) | (df["ci_high_adj"] < 0)
        assert (excludes == df["significant_holm"]).all()
        n_rejected += int(df["significant_holm"].sum())
    assert n_rejected > 250  # the planted gaps make both outcomes common


def test_with_nothing_rejected_the_intervals_are_simultaneous_at_one_minus_alpha():
    rng = np.random.default_rng(7)
    all_cover, fams = 0, 0
    for _ in range(400):
        df = _family(rng, 20, 0)
        if df["significant_holm"].any():
            continue
        out = holm_intervals(df, alpha=0.05)
        assert np.allclose(out["ci_level_adj"], holm_level(20, 0))
        fams += 1
        all_cover += bool(((out["ci_low_adj"] <= 0) & (0 <= out["ci_high_adj"])).all())
    assert all_cover / fams >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / fams)


def test_the_other_tables_of_the_family_count_in_m():
    rng = np.random.default_rng(1)
    gaps = _family(rng, 10, 0)
    others = pd.DataFrame({"p_value": np.full(30, 0.9), "significant_holm": False})
    assert holm_intervals(gaps, others=[others])["ci_level_adj"].iloc[0] == holm_level(40, 0)


def test_intervals_are_clipped_to_the_quantity_s_range():
    d = pd.DataFrame({"outcome": ["share", "score", "free"], "estimate": [0.3, -1.5, 5.0],
                      "ci_low": [-0.4, -2.6, -50.0], "ci_high": [1.4, -0.4, 60.0],
                      "rel_ci_low": [-1.7, -1.3, -9.0], "rel_ci_high": [3.0, -0.2, 9.0]})
    out = clip_to_range(d, {"share": (0, 1), "score": (0, 2)})
    assert out["ci_high"].tolist()[0] == 1.0 and out["ci_low"].tolist()[1] == -2.0
    assert out["rel_ci_low"].tolist()[:2] == [-1.0, -1.0]
    assert out.iloc[2]["ci_low"] == -50.0 and out.iloc[2]["rel_ci_low"] == -9.0  # no declared range: untouched
    assert (out["estimate"] == d["estimate"]).all()


def test_a_ratio_is_reported_only_where_the_reference_mean_is_safely_off_zero():
    z = 1.96
    # g = z^2 vbb / b^2: 0.2 is safe, 0.5 gives a bounded but absurd Fieller interval and is refused
    for g, ok in ((0.2, True), (0.5, False)):
        b = 1.0
        vbb = g * b * b / z ** 2
        r, lo, hi = safe_ratio(0.1, b, 0.01, 0.0, vbb, z)
        assert np.isfinite(r) == ok and (g <= FIELLER_G_MAX) == ok
        if ok:
            assert lo <= r <= hi
    r, lo, hi = safe_ratio(-0.9, 1.0, 0.09, 0.0, 0.001, z, lower=-1.0)
    assert lo == -1.0 and lo <= r <= hi
