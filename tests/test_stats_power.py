"""Power: the analytic detectable gap and the simulation agree; power grows with posts and samples."""

from __future__ import annotations

import numpy as np
import pytest

from audit.stats import detectable_gap, gap_test, simulate_power
from audit.stats.power import pilot_components
from audit.stats.simulate import simulate_audit_table


def test_simulated_power_at_the_detectable_gap_is_the_target():
    design = dict(n_posts=60, samples=1, n_groups=2, n_cue_types=1, sd_post=0.4, sd_resid=0.5, ref_mean=1.0)
    # the SE of a gap in this design, from one realisation (it hardly varies between realisations)
    t = simulate_audit_table(n_posts=60, groups=["A", "B"], sd_post=0.4, sd_resid=0.5, seed=0)
    se = gap_test(t, outcome="value").se.iloc[0]
    mde, rel = detectable_gap(se, 1.0, alpha=0.05, family_size=6, power=0.8)
    assert rel == pytest.approx(mde)
    r = simulate_power(**design, rel_gap=rel, alpha=0.05, family_size=6, n_sims=400, seed=1)
    # 400 simulations: MC SE 0.02; the analytic value is 0.80
    assert abs(r["power"] - 0.8) < 0.07, r
    # no gap: rejection rate at the Bonferroni level stays small
    r0 = simulate_power(**design, rel_gap=1e-9, alpha=0.05, family_size=6, n_sims=400, seed=2)
    assert r0["power"] <= 0.03


def test_power_grows_with_posts_and_samples():
    kw = dict(n_groups=2, n_cue_types=2, sd_post=0.3, sd_resid=0.6, ref_mean=1.0, rel_gap=0.15, n_sims=150, seed=3)
    small = simulate_power(n_posts=20, samples=1, **kw)["power"]
    large = simulate_power(n_posts=120, samples=1, **kw)["power"]
    more_samples = simulate_power(n_posts=20, samples=4, **kw)["power"]
    assert large > small + 0.2
    assert more_samples > small + 0.1


def test_pilot_components_recover_the_truth():
    t = simulate_audit_table(n_posts=150, groups=["A", "B"], samples=3, sd_post=0.4, sd_variant=0.2, sd_resid=0.5,
                             ref_mean=1.2, seed=4)
    c = pilot_components(t, "epitome.empathy")
    assert c["sd_post"] == pytest.approx(0.4, rel=0.2)
    assert c["sd_variant"] == pytest.approx(0.2, rel=0.3)
    assert c["sd_resid"] == pytest.approx(0.5, rel=0.05)
    assert c["ref_mean"] == pytest.approx(1.2, abs=0.1)
    assert c["samples"] == 3 and c["n_posts"] == 150
