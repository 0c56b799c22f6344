"""Our mixed-model gaps are lme4's: fixed effects and standard errors agree to 1e-4.

Runs where ``Rscript`` and the R package lme4 are installed (CI installs r-base-core and
r-cran-lme4 through tests/system-deps.sh); skipped with the reason elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from audit.stats import gap_test
from audit.stats.fastlmm import fit_nested_ri
from audit.stats.gaps import design_matrix
from audit.stats.lme4 import fit_lme4, lme4_available
from audit.stats.simulate import simulate_audit_table

_ok, _why = lme4_available()
pytestmark = pytest.mark.skipif(not _ok, reason=f"lme4 agreement not checked: {_why}")

TOL = 1e-4


@pytest.mark.parametrize(
    "case",
    [
        dict(samples=1, styles=["plain"], nested=False, reml=True),
        dict(samples=1, styles=["plain"], nested=False, reml=False),
        dict(samples=3, styles=["plain", "warm"], nested=True, reml=True),
        dict(samples=2, styles=["plain"], nested=True, reml=False),
    ],
    ids=["ri-reml", "ri-ml", "nested-style-reml", "nested-ml"],
)
def test_gaps_agree_with_lme4(case):
    t = simulate_audit_table(n_posts=30, groups=["Black woman", "White man", "Asian woman"], cue_types=["tag", "name"],
                             samples=case["samples"], styles=case["styles"], gaps={"Black woman": -0.15},
                             sd_post=0.4, sd_variant=0.3, sd_resid=0.7, seed=7)
    factors = ["style"] if len(case["styles"]) > 1 else []
    inner = "variant_id" if case["nested"] else None
    ours = gap_test(t, outcome="value", factors=factors, inner=inner, reml=case["reml"])
    formula = "value ~ group" + "".join(f" + {f}" for f in factors) + " + (1 | post_id)" + (
        " + (1 | post_id:variant_id)" if inner else "")
    r = fit_lme4(t, formula, reml=case["reml"], factors=("group", *factors), reference=("group", "control"))
    for row in ours.itertuples():
        name = f"group{row.group}"
        assert abs(row.estimate - r["fixef"][name]) < TOL, (name, row.estimate, r["fixef"][name])
        assert abs(row.se - r["se"][name]) < TOL, (name, row.se, r["se"][name])
    assert ours["method"].str.startswith("lmm").all()
    # the whole fixed-effect vector, intercept and style included, and the criterion
    X, names, _ = design_matrix(t, "group", "control", factors)
    f = fit_nested_ri(t["value"].to_numpy(), X, t["post_id"].to_numpy(), t["variant_id"].to_numpy() if inner else None,
                      reml=case["reml"])
    assert np.max(np.abs(f.params - r["fixef"].to_numpy())) < TOL
    assert np.max(np.abs(f.bse - r["se"].to_numpy())) < TOL
    assert abs(np.sqrt(f.scale) - r["sigma"]) < TOL
    assert abs(f.criterion - r["crit"]) < 1e-3


def test_singular_fit_agrees_with_lme4():
    t = simulate_audit_table(n_posts=20, groups=["A", "B"], sd_post=0.0, sd_resid=1.0, seed=1)
    f = fit_nested_ri(t["value"].to_numpy(), design_matrix(t, "group", "control")[0], t["post_id"].to_numpy())
    r = fit_lme4(t, "value ~ group + (1 | post_id)", factors=("group",), reference=("group", "control"))
    assert f.singular and r["singular"]
    assert np.max(np.abs(f.params - r["fixef"].to_numpy())) < TOL
    assert np.max(np.abs(f.bse - r["se"].to_numpy())) < TOL


@pytest.mark.parametrize("sd_variant, seed", [(0.0, 21), (0.1, 22), (0.6, 23)], ids=["no-variant-var", "small", "large"])
def test_nested_optimum_matches_lme4_across_variance_regimes(sd_variant, seed):
    """The two-component optimiser finds lme4's optimum whether the variant variance is 0, small or large."""
    t = simulate_audit_table(n_posts=25, groups=["A", "B"], cue_types=["tag"], samples=4, sd_post=0.5,
                             sd_variant=sd_variant, sd_resid=0.5, seed=seed)
    X, _, _ = design_matrix(t, "group", "control")
    f = fit_nested_ri(t["value"].to_numpy(), X, t["post_id"].to_numpy(), t["variant_id"].to_numpy())
    r = fit_lme4(t, "value ~ group + (1 | post_id) + (1 | post_id:variant_id)", factors=("group",),
                 reference=("group", "control"))
    assert np.max(np.abs(f.params - r["fixef"].to_numpy())) < TOL
    assert np.max(np.abs(f.bse - r["se"].to_numpy())) < TOL
    assert f.criterion <= r["crit"] + 1e-6          # at least as good an optimum as lme4's
    assert f.converged
