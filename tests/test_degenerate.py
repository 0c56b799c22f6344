"""Constant outcomes and zero-variance arms (audit.stats.degenerate): one rule, relative to the outcome's
scale, shared by every suite's gap tests, the paired contrasts and ``compare``; a constant outcome or a
pair of constant arms is "not fitted", never a p-value (issue 25 row S1, issue 28 row H1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.stats import gap_test, paired_contrasts
from audit.stats.binary import binary_gap
from audit.stats.degenerate import CONSTANT, constant_arms, is_constant
from audit.stats.models_compare import gap_interaction
from audit.stats.simulate import simulate_audit_table
from audit.stats.stage import analyze_scores

# A model that answers every prompt with one template: every reply scored 2/3, which a double cannot
# hold. Computed two ways (as a mean of three ratings and as 1 - 1/3), the stored values are two
# neighbouring doubles: nanstd ~5e-17, not 0.
TWO_THIRDS = (2 / 3, 1 - 1 / 3)


def _two_thirds(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    t["value"] = np.where(np.arange(len(t)) % 2 == 0, *TWO_THIRDS)
    assert 0 < np.nanstd(t["value"]) < 1e-15   # the case the old check (nanstd == 0) missed
    return t


def test_the_rule_is_relative_to_the_scale():
    assert is_constant(TWO_THIRDS) and is_constant([1000.0, 1000.0 + 1e-10]) and is_constant([0.0, 0.0])
    assert is_constant([]) and is_constant([np.nan, 1.0])
    assert not is_constant([1e-20, 2e-20])          # tiny, but a real spread on its own scale
    assert not is_constant([0.0, 1e-6])
    assert is_constant([5.5e-17, 0.0], scale=1.0)   # 1 - 2/3 - 1/3 beside 0, on an outcome in [0, 1]
    assert constant_arms([0, 0, 1, 1, 0, 1], ["a", "a", "b", "b", "c", "c"]) == {"a": 0.0, "b": 1.0}


def test_an_outcome_constant_at_two_thirds_is_not_fitted_in_gap_tests_and_compare():
    t = _two_thirds(simulate_audit_table(n_posts=20, groups=["A", "B"], seed=1))
    with pytest.raises(AuditError, match="is constant"):
        gap_test(t, outcome="value", where="one suite")
    two = pd.concat([t.assign(model_label="v1"), t.assign(model_label="v2")])
    with pytest.raises(AuditError, match="is constant"):   # compare's model: the same rule, the same verdict
        gap_interaction(two, outcome="value", between="model_label")
    p = paired_contrasts(t, "value", "group", "control", "post_id")
    assert p["p_value"].isna().all() and np.allclose(p["mean_diff"], 0, atol=1e-12)


def test_the_analysis_of_every_reply_scored_two_thirds_says_not_fitted_constant():
    varied = simulate_audit_table(n_posts=20, groups=["White", "Black"], gaps={"Black": -0.3}, seed=2)
    flat = _two_thirds(varied.assign(outcome="template.score"))
    res = analyze_scores(pd.concat([varied, flat], ignore_index=True), paired_check=False).results
    rows = res[res["outcome"] == "template.score"]
    assert len(rows) and (rows["method"] == "not fitted").all() and rows["p_value"].isna().all()
    assert rows["warning"].str.contains("is constant").all()
    assert not rows["significant_holm"].astype(bool).any()
    assert res.loc[res["outcome"] == "epitome.empathy", "p_value"].notna().all()


def test_a_pair_of_zero_variance_arms_has_no_p_value():
    """Group A always 1, the control always 0 (B varies): A's gap is a difference of two constants."""
    t = simulate_audit_table(n_posts=20, groups=["A", "B"], seed=3)
    rng = np.random.default_rng(3)
    t["value"] = np.where(t["group"] == "A", 1.0, np.where(t["group"] == "control", 1 / 3 - 1 / 3, rng.normal(size=len(t))))
    r = gap_test(t, outcome="value").set_index("group")
    assert r.loc["A", "method"] == CONSTANT and np.isnan(r.loc["A", "p_value"]) and np.isnan(r.loc["A", "se"])
    assert r.loc["A", "estimate"] == 1.0 and "no variation in either arm" in r.loc["A", "warning"]
    assert np.isfinite(r.loc["B", "p_value"])


def test_binary_suites_complete_separation_is_constant_arms_not_a_p_value():
    """Stigma / appropriateness (binary_gap): every answer of A is 1, every control answer 0."""
    t = simulate_audit_table(n_posts=20, groups=["A", "B"], seed=4)
    t["value"] = np.where(t["group"] == "A", 1.0, np.where(t["group"] == "control", 0.0, np.arange(len(t)) % 2))
    r = binary_gap(t, outcome="value", term="group", reference="control", factors=[], cluster="post_id",
                   where="stigma").set_index("group")
    assert r.loc["A", "method"] == CONSTANT and np.isnan(r.loc["A", "p_value"])
    assert r.loc["A", "estimate"] == 1.0


# ----------------------------------------------------------------------------- numerical warnings (issue 25 W)

DATA = __import__("pathlib").Path(__file__).parent / "data"


def test_analyze_states_a_numerical_warning_on_its_row_and_prints_nothing_raw(capsys):
    """A two-model run's binary outcome (tests/data/indefinite_gee.csv, one model's block, as stored by
    the deterministic demo servers): 'Asian woman' and 'White woman' agree on every post, so the robust
    variance of their gap is 0 up to rounding (-3.9e-16 here: numpy warned 'invalid value encountered in
    sqrt' on the console). The row says why it has no SE and no p-value; no warning escapes."""
    import json
    import warnings

    from audit.cli import main

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        assert main(["analyze", str(DATA / "indefinite_gee.csv"), "--outcome", "value", "--group", "group",
                     "--control", "White woman", "--cluster", "post_id", "--json"]) == 0
    out, err = capsys.readouterr()
    assert [str(w.message) for w in escaped] == [] and "Warning" not in err
    rows = {r["group"]: r for r in json.loads(out) if r.get("cue_type", "pooled") == "pooled"}
    row = rows["Asian woman"]
    assert row["p_value"] is None or np.isnan(row["p_value"])
    assert row["warning"].startswith("no standard error: the variance of the gap is 0 up to rounding")
    assert rows["Asian man"]["p_value"] < 0.05      # the other rows are fitted as before


def test_a_warning_raised_by_a_fit_is_stated_on_every_row_of_that_fit(monkeypatch):
    """A statsmodels ConvergenceWarning (or any warning) raised inside the fit is caught there: each row
    that fit produced says so, in the gap tests and in compare's interaction model."""
    import warnings

    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    import audit.stats.gaps as gaps
    import audit.stats.models_compare as mc

    real = gaps._fit_lmm

    def warns(*a, **k):
        warnings.warn("Maximum Likelihood optimization failed to converge", ConvergenceWarning)
        np.sqrt(-1.0)   # numpy: RuntimeWarning, invalid value encountered in sqrt
        return real(*a, **k)

    monkeypatch.setattr(gaps, "_fit_lmm", warns)
    monkeypatch.setattr(mc, "_fit_lmm", warns)
    t = simulate_audit_table(n_posts=20, groups=["A", "B"], gaps={"A": -0.5}, seed=5)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        r = gap_test(t, outcome="value")
        two = pd.concat([t.assign(model_label="v1"), t.assign(model_label="v2")])
        m = gap_interaction(two, outcome="value", between="model_label")
    assert [str(w.message) for w in escaped] == []
    for table in (r, m):
        assert table["warning"].str.contains("numerical warning during the fit: ConvergenceWarning: Maximum "
                                             "Likelihood optimization failed to converge").all()
        assert not table["warning"].str.contains("sqrt").any()   # every SE is finite: not the rows' concern
    assert np.isfinite(r["p_value"]).all()


def test_a_warning_that_says_nothing_about_the_fit_is_not_stated_as_one(monkeypatch):
    """A ResourceWarning that the garbage collector happens to raise while a fit runs (an unclosed event
    loop of some other test or library) is not a numerical warning: no row may carry it as a reason
    (it did, at random, in the full suite), and it is raised again untouched for Python's filters."""
    import warnings

    import audit.stats.gaps as gaps

    real = gaps._fit_lmm

    def leaks(*a, **k):
        warnings.warn("unclosed event loop <_UnixSelectorEventLoop running=False>", ResourceWarning)
        return real(*a, **k)

    monkeypatch.setattr(gaps, "_fit_lmm", leaks)
    t = simulate_audit_table(n_posts=20, groups=["A", "B"], gaps={"A": -0.5}, seed=5)
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        r = gap_test(t, outcome="value")
    assert not r["warning"].fillna("").str.contains("ResourceWarning|numerical warning").any()
    assert [w.category for w in escaped] == [ResourceWarning]
