"""Calibration of the equivalence verdicts (issue 30), with seeds.

For each kind of comparison (a continuous gap with an absolute margin, a relative gap with a "5%"
margin, the max - min disparity between groups, a binary rate with a margin in percentage points):

* a true gap exactly on the margin is declared "within margin" at most alpha of the time (plus
  three Monte-Carlo standard errors);
* a true gap of 0 with enough posts is declared "within margin" in at least 80% of the datasets.

The test statistic's inputs are simulated where that is faithful: a counterfactual gap in a balanced
design is the mean of the within-post differences (the mixed model's gap equals it), so datasets are
drawn as post-level values and the estimate, SE and covariance computed from them; the disparity runs
the real bootstrap (:func:`audit.stats.disparity.max_min_disparity`) on simulated tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.spec import parse_margin
from audit.stats.disparity import max_min_disparity
from audit.stats.equivalence import (EXCEEDS, INCONCLUSIVE, UNDETERMINED, WITHIN, disparity_tost_p,
                                     equivalence_table, tost_p, tost_p_ratio, verdict)
from audit.stats.power import tost_power, tost_units_needed

ALPHA = 0.05


def _bound(n: int) -> float:
    """alpha plus three Monte-Carlo standard errors of a rate of alpha over n datasets."""
    return ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / n)


def _paired(rng, n_sets: int, n_posts: int, true_gap: float, mu: float = 1.0, sd_post: float = 0.5,
            sd_resid: float = 0.4):
    """Per dataset: the gap estimate (mean within-post difference), its SE, the control mean, its SE
    and their covariance, from ``n_posts`` posts with a control and one variant each."""
    u = rng.normal(0, sd_post, (n_sets, n_posts))
    yc = mu + u + rng.normal(0, sd_resid, (n_sets, n_posts))
    yg = mu + true_gap + u + rng.normal(0, sd_resid, (n_sets, n_posts))
    d = yg - yc
    a, r = d.mean(1), yc.mean(1)
    vaa, vrr = d.var(1, ddof=1) / n_posts, yc.var(1, ddof=1) / n_posts
    dc, cc = d - a[:, None], yc - r[:, None]
    var = (dc * cc).sum(1) / (n_posts - 1) / n_posts
    return a, np.sqrt(vaa), r, vaa, var, vrr


def _within_rate(p_within: np.ndarray) -> float:
    return float(np.mean(p_within < ALPHA))


def test_absolute_gap_on_the_margin_is_rarely_called_within():
    rng = np.random.default_rng(301)
    n = 4000
    for se_scale_posts in (30, 300):  # small and large audits: the size holds at both
        a, se, *_ = _paired(rng, n, se_scale_posts, true_gap=0.1)
        pw, _ = tost_p(a, se, 0.1)
        assert _within_rate(pw) <= _bound(n), se_scale_posts
        a, se, *_ = _paired(rng, n, se_scale_posts, true_gap=-0.1)  # the lower bound as well
        pw, _ = tost_p(a, se, 0.1)
        assert _within_rate(pw) <= _bound(n), se_scale_posts


def test_absolute_gap_of_zero_with_enough_posts_is_called_within():
    rng = np.random.default_rng(302)
    n = 2000
    a, se, *_ = _paired(rng, n, 500, true_gap=0.0)  # SE about 0.025: the margin 0.1 is 4 SE away
    pw, pe = tost_p(a, se, 0.1)
    calls = [verdict(w, e, off_zero=False, alpha=ALPHA) for w, e in zip(pw, pe)]
    assert calls.count(WITHIN) / n >= 0.8
    assert EXCEEDS not in calls


def test_gap_beyond_the_margin_is_called_exceeds_and_its_size_holds():
    rng = np.random.default_rng(303)
    n = 4000
    a, se, *_ = _paired(rng, n, 200, true_gap=0.1)
    _, pe = tost_p(a, se, 0.1)
    assert float(np.mean(pe < ALPHA)) <= _bound(n)  # a gap on the margin is rarely called beyond it
    a, se, *_ = _paired(rng, n, 200, true_gap=0.25)
    _, pe = tost_p(a, se, 0.1)
    assert float(np.mean(pe < ALPHA)) >= 0.8


def test_relative_margin_uses_the_fieller_test_and_is_calibrated():
    rng = np.random.default_rng(304)
    n = 4000
    m = parse_margin("5%")[0]
    # ratio exactly 5%, with posts enough for the test to have power near the margin (SE of the ratio
    # about 0.018): the size is then close to alpha, not trivially 0
    a, _, r, vaa, var, vrr = _paired(rng, n, 1000, true_gap=0.05 * 1.0)
    pw, _ = tost_p_ratio(a, r, vaa, var, vrr, m)
    assert _within_rate(pw) <= _bound(n)
    a, _, r, vaa, var, vrr = _paired(rng, 2000, 400, true_gap=0.0, sd_post=0.3, sd_resid=0.2)
    pw, _ = tost_p_ratio(a, r, vaa, var, vrr, m)
    assert _within_rate(pw) >= 0.8


def test_relative_test_agrees_with_fieller_interval_inside_the_margin():
    """p_within < alpha exactly when Fieller's 1 - 2 alpha interval lies inside (-m, m)."""
    from scipy import stats

    from audit.stats.gaps import fieller_ratio

    rng = np.random.default_rng(305)
    a, _, r, vaa, var, vrr = _paired(rng, 300, 60, true_gap=0.02)
    z = stats.norm.ppf(1 - ALPHA)
    for i in range(300):
        pw, _ = tost_p_ratio(a[i], r[i], vaa[i], var[i], vrr[i], 0.05)
        _, lo, hi = fieller_ratio(a[i], r[i], vaa[i], var[i], vrr[i], z)
        assert (pw < ALPHA) == (-0.05 < lo and hi < 0.05)


def _disparity_sets(seed: int, n_sets: int, n_posts: int, true_disparity: float, sd_resid: float):
    rng = np.random.default_rng(seed)
    post = np.repeat(np.arange(n_posts), 2)
    grp = np.tile(["A", "B"], n_posts)
    out = []
    for i in range(n_sets):
        y = (rng.normal(0, 0.5, n_posts)[post] + true_disparity * (grp == "A")
             + rng.normal(0, sd_resid, 2 * n_posts))
        df = pd.DataFrame(dict(post_id=post, group=grp, value=y, variant_id=np.arange(2 * n_posts)))
        r = max_min_disparity(df, inner="variant_id", alpha=ALPHA, n_boot=399, n_perm=1, seed=i)
        out.append(disparity_tost_p(r["estimate"], r["ci_low"], r["ci_high"], 0.1, alpha=ALPHA))
    return np.array(out)


def test_disparity_on_the_margin_is_rarely_called_within():
    p = _disparity_sets(306, 300, 60, true_disparity=0.1, sd_resid=0.15)
    assert _within_rate(p[:, 0]) <= _bound(300)


def test_disparity_of_zero_with_enough_posts_is_called_within():
    p = _disparity_sets(307, 200, 120, true_disparity=0.0, sd_resid=0.1)
    assert _within_rate(p[:, 0]) >= 0.8


def _binary(rng, n_sets: int, n_posts: int, p_ref: float, diff: float):
    """A binary-rate suite (stigma, appropriateness): per post a 0/1 answer for the reference and the
    group; the gap is the difference of rates, SE from the within-post differences."""
    yc = rng.random((n_sets, n_posts)) < p_ref
    yg = rng.random((n_sets, n_posts)) < p_ref + diff
    d = yg.astype(float) - yc
    return d.mean(1), d.std(1, ddof=1) / np.sqrt(n_posts)


def test_binary_rate_with_a_margin_in_points_is_calibrated():
    rng = np.random.default_rng(308)
    m, kind = parse_margin("5pp")
    assert (m, kind) == (0.05, "points")
    n = 4000
    a, se = _binary(rng, n, 2500, 0.3, 0.05)  # SE about 0.013: the size at the margin is close to alpha
    pw, _ = tost_p(a, se, m)
    assert _within_rate(pw) <= _bound(n)
    a, se = _binary(rng, 2000, 2500, 0.3, 0.0)  # SE about 0.013: the margin is 3.8 SE away
    pw, _ = tost_p(a, se, m)
    assert _within_rate(pw) >= 0.8


def test_verdicts_follow_the_families_and_multiplicity():
    """The same comparison is within margin alone but not among many (Holm), and an exploratory
    family is adjusted with BH on its own (nine equal p-values keep their value under BH)."""
    one = pd.DataFrame(dict(outcome=["x.y"], model_label="m", style="pooled", cue_type="pooled", group="A",
                            reference="control", estimate=0.0, se=0.05, ref_mean=1.0, significant_holm=False,
                            n_posts=50))
    eq, _ = equivalence_table(one, None, {"y": 0.1}, alpha=ALPHA)
    assert eq["verdict"].iloc[0] == WITHIN  # p_within = 1 - Phi(2) = 0.023
    many = pd.concat([one.assign(group=f"G{i}") for i in range(10)], ignore_index=True)
    eq, _ = equivalence_table(many, None, {"y": 0.1}, alpha=ALPHA)
    assert set(eq["verdict"]) == {INCONCLUSIVE}  # Holm over ten: 10 x 0.023 > 0.05
    fam = many.assign(family=["confirmatory"] + ["exploratory"] * 9, significant_bh=False)
    eq, _ = equivalence_table(fam, None, {"x.y": "0.1"}, alpha=ALPHA)
    assert (eq["verdict"] == WITHIN).all()
    assert np.allclose(eq["p_within_adj"].iloc[1:], eq["p_within"].iloc[1:])
    off = one.assign(estimate=0.12, significant_holm=True)
    eq, _ = equivalence_table(off, None, {"y": 0.1}, alpha=ALPHA)
    assert eq["verdict"].iloc[0] == UNDETERMINED
    eq, _ = equivalence_table(one, None, {"other": 0.1}, alpha=ALPHA)
    assert eq["verdict"].iloc[0] == "no margin"


def test_units_needed_decide_the_comparison():
    """The planner solved for the TOST: at the number of posts it returns, the power is at least 80%,
    and one fewer post falls short."""
    n = tost_units_needed(0.02, 0.05, 50, 0.1, level=ALPHA)
    se_n = 0.05 * np.sqrt(50 / n)
    assert tost_power(0.02, se_n, 0.1, level=ALPHA) >= 0.8
    assert tost_power(0.02, 0.05 * np.sqrt(50 / (n - 1)), 0.1, level=ALPHA) < 0.8
    assert tost_units_needed(0.1, 0.05, 50, 0.1) is None  # a gap on the margin is never decided
    rng = np.random.default_rng(309)  # and the simulated rate agrees with the formula
    sims = rng.normal(0.02, se_n, 20000)
    pw, _ = tost_p(sims, se_n, 0.1)
    assert abs(_within_rate(pw) - tost_power(0.02, se_n, 0.1, level=ALPHA)) < 0.02


@pytest.mark.parametrize("text,expected", [("5%", (0.05, "relative")), (" 2 pp ", (0.02, "points")),
                                           (0.3, (0.3, "absolute")), ("0.3", (0.3, "absolute"))])
def test_margins_are_read_as_written(text, expected):
    assert parse_margin(text) == expected


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "150%", True])
def test_unreadable_margins_are_refused(bad):
    with pytest.raises(ValueError):
        parse_margin(bad)


def test_a_binary_rate_suite_gets_verdicts_in_percentage_points():
    """The stigma suite's family (GEE gaps on the probability scale): a planted race effect far beyond
    a 5 pp margin is called "exceeds margin", a group without effect is not; the gate reads them."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from stigma_sim import simulate_coded

    from audit.report.verdicts import gate_status
    from audit.stigma.analysis import analyze_stigma

    d = simulate_coded(seed=11, race_effect={"African American": 1.2}, replicates=2)
    res = analyze_stigma(d, n_boot=50, margins={"stigma": "5pp"})
    t = res.tests
    pooled = t[(t.term == "race") & (t.condition == "pooled")].set_index("group")
    assert pooled.loc["African American", "verdict"] == EXCEEDS
    assert pooled.loc["African American", "margin_abs"] == pytest.approx(0.05)
    assert pooled.loc["Hispanic", "verdict"] in (INCONCLUSIVE, WITHIN, UNDETERMINED)
    assert gate_status(None, None, t).code == 3
    assert "verdict" not in analyze_stigma(d, n_boot=50).tests.columns  # without margins: as before


def test_with_human_ratings_the_verdict_uses_the_corrected_gap():
    """A scorer that under-scores a group shows a gap beyond the margin; the prediction-powered gap
    (results_ppi, kind ppi) is near zero, and the verdict is made on it, with the ratings (not posts)
    that would decide an undecided one."""
    from audit.stats.stage import verdicts

    res = pd.DataFrame([dict(family_id="F", outcome="epitome.ER", model_label="m", style="pooled", cue_type="pooled",
                             group=g, reference="control", estimate=-0.4, se=0.05, ci_low=-0.5, ci_high=-0.3,
                             ref_mean=1.0, relative_gap=-0.4, significant_holm=True, n_posts=60, p_value=1e-9)
                        for g in ("A", "B")])
    ppi = pd.DataFrame([dict(outcome="epitome.ER", model_label="m", group="A", reference="control", kind="ppi",
                             estimate=0.01, se=0.02, ci_low=-0.03, ci_high=0.05, n_rated=200),
                        dict(outcome="epitome.ER", model_label="m", group="B", reference="control", kind="ppi",
                             estimate=0.05, se=0.06, ci_low=-0.07, ci_high=0.17, n_rated=150),
                        dict(outcome="epitome.ER", model_label="m", group="A", reference="control", kind="automated",
                             estimate=-0.4, se=0.05, ci_low=-0.5, ci_high=-0.3, n_rated=200)])
    out, _ = verdicts(res, pd.DataFrame(), ppi, {"ER": 0.1}, alpha=ALPHA, reference="control")
    a, b = out.iloc[0], out.iloc[1]
    assert (out["verdict_source"] == "ppi").all() and a["verdict_estimate"] == 0.01
    assert a["estimate"] == -0.4  # the stored automated gap itself is unchanged
    assert a["verdict"] == WITHIN  # 0.01 +- 1.645 x 0.02 lies inside +-0.1 (Holm over two: p = 2 x 3e-6)
    assert b["verdict"] == INCONCLUSIVE and b["ratings_more"] > 0 and np.isnan(b["posts_more"])
    plain, _ = verdicts(res, pd.DataFrame(), None, {"ER": 0.1}, alpha=ALPHA, reference="control")
    assert set(plain["verdict"]) == {EXCEEDS} and (plain["verdict_source"] == "model").all()
