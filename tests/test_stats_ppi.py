"""Prediction-powered gaps (audit.stats.ppi), pre-registered families, the scorer comparison and the
ratings power: coverage with clustered data, the planted scorer bias, flags and errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from audit.errors import AuditError
from audit.report.scorer_comparison import comparison_section, scorer_flags, comparison_table
from audit.spec import spec_from_dict
from audit.stats import analyze_scores, simulate_audit_table
from audit.stats.power import ratings_plan
from audit.stats.ppi import ppi_gap, ppi_gap_arrays, ppi_halfwidth, ppi_table, ratings_needed
from audit.store import RunStore

# latent human scale: N(mu, 0.5^2 post + 0.6^2 reply), cut into levels 0/1/2 at 0.5 and 1.5
_SD = np.hypot(0.5, 0.6)


def _levels_mean(mu: float) -> float:
    return float(stats.norm.sf((0.5 - mu) / _SD) + stats.norm.sf((1.5 - mu) / _SD))


TRUE_GAP = _levels_mean(0.75) - _levels_mean(1.0)  # the human-scale gap of group B


def _simulate(rng, n_posts=40, per=3, bias=-0.3, rate=0.25):
    """Clustered replies (post random effect, ``per`` replies per arm and post), human levels 0/1/2, a
    scorer that under-scores group B by ``bias`` and shares the post effect; ``rate`` of replies rated."""
    post = np.repeat(np.arange(n_posts), 2 * per)
    b = np.tile(np.r_[np.zeros(per, bool), np.ones(per, bool)], n_posts)
    u = rng.normal(0, 0.5, n_posts)[post]
    latent = 1.0 - 0.25 * b + u + rng.normal(0, 0.6, post.size)
    y = (latent > 0.5).astype(float) + (latent > 1.5)
    yhat = y + bias * b + rng.normal(0, 0.4, post.size) + 0.3 * u
    rated = rng.random(post.size) < rate
    return post, b, yhat, np.where(rated, y, np.nan)


def test_ppi_ci_covers_the_human_gap_that_a_biased_scorer_misses():
    rng = np.random.default_rng(20261127)
    R = 500
    cover = {"automated": 0, "ppi": 0, "human": 0}
    width = {"ppi": [], "human": []}
    auto_est = []
    for _ in range(R):
        post, b, yhat, y = _simulate(rng)
        r = ppi_gap_arrays(post, b, ~b, yhat, y)
        for k, e in r.items():
            cover[k] += e.ci_low <= TRUE_GAP <= e.ci_high
        width["ppi"].append(r["ppi"].ci_high - r["ppi"].ci_low)
        width["human"].append(r["human"].ci_high - r["human"].ci_low)
        auto_est.append(r["automated"].estimate)
    # the scorer's planted under-scoring biases the automated gap by about -0.3 ...
    assert np.mean(auto_est) - TRUE_GAP == pytest.approx(-0.3, abs=0.03)
    assert cover["automated"] / R < 0.3
    # ... the PPI-corrected CI covers the human-scale gap at the nominal rate, and is narrower than human-only
    assert cover["ppi"] / R >= 0.93
    assert cover["human"] / R >= 0.93
    assert np.mean(width["ppi"]) < 0.8 * np.mean(width["human"])


def test_lambda_zero_is_the_human_only_gap_and_lambda_one_plain_ppi():
    post, b, yhat, y = _simulate(np.random.default_rng(1))
    r0 = ppi_gap_arrays(post, b, ~b, yhat, y, lam=0.0)
    assert r0["ppi"].estimate == pytest.approx(r0["human"].estimate)
    assert r0["ppi"].se == pytest.approx(r0["human"].se)
    r1 = ppi_gap_arrays(post, b, ~b, yhat, y, lam=1.0)
    rated = np.isfinite(y)
    arm = lambda m: yhat[m].mean() + (y[m & rated] - yhat[m & rated]).mean()  # noqa: E731
    assert r1["ppi"].estimate == pytest.approx(arm(b) - arm(~b))
    tuned = ppi_gap_arrays(post, b, ~b, yhat, y)["ppi"]
    assert 0 <= tuned.lambda_group <= 1 and 0 <= tuned.lambda_reference <= 1


def test_too_few_ratings_give_no_estimate_and_say_why():
    post, b, yhat, y = _simulate(np.random.default_rng(2))
    y = np.full_like(y, np.nan)
    y[:2] = 1.0
    df = pd.DataFrame(dict(post=post, group=np.where(b, "B", "control"), s=yhat, h=y))
    r = ppi_gap(df, group="group", reference="control", cluster="post", scorer="s", human="h").set_index("kind")
    assert np.isnan(r.loc["ppi", "estimate"]) and "too few human-rated replies" in r.loc["ppi", "warning"]
    assert np.isfinite(r.loc["automated", "estimate"])
    with pytest.raises(AuditError, match="reference group 'nobody'"):
        ppi_gap(df, group="group", reference="nobody", cluster="post", scorer="s", human="h")


def _table_and_human(seed=3, judge_noise=0.3):
    """Two scorers of ER on the same replies (epitome under-scores B by 0.3), human ratings of 30%."""
    t = simulate_audit_table(n_posts=40, groups=("A", "B"), samples=2, gaps={"B": -0.25}, outcome="epitome.ER",
                             seed=seed)
    rng = np.random.default_rng(seed)
    a = t.assign(value=t["value"] - 0.3 * (t["group"] == "B") + rng.normal(0, 0.3, len(t)))
    j = t.assign(outcome="llm-judge.ER", value=t["value"] + rng.normal(0, judge_noise, len(t)))
    rated = rng.random(len(t)) < 0.3
    human = pd.DataFrame(dict(request_key=t["request_key"][rated], measure="ER", value=t["value"][rated]))
    return pd.concat([a, j], ignore_index=True), human


def test_ppi_table_averages_raters_and_builds_the_composite():
    table, human = _table_and_human()
    # a second rater one level higher on every reply: the consensus is the mean, half a level higher
    two = pd.concat([human.assign(rater="r1"), human.assign(rater="r2", value=human["value"] + 1)])
    one = ppi_table(table, human).set_index(["outcome", "group", "kind"])
    both = ppi_table(table, two).set_index(["outcome", "group", "kind"])
    assert both.loc[("epitome.ER", "B", "human"), "estimate"] == pytest.approx(
        one.loc[("epitome.ER", "B", "human"), "estimate"])
    assert both.loc[("epitome.ER", "B", "human"), "n_rated"] == one.loc[("epitome.ER", "B", "human"), "n_rated"]
    # empathy (not rated itself) on the human scale: the mean of the rated ER, IP and EX
    emp = table[table["outcome"] == "epitome.ER"].assign(outcome="epitome.empathy")
    h3 = pd.concat([human.assign(measure=m) for m in ("ER", "IP", "EX")])
    r = ppi_table(emp, h3)
    assert set(r["human_measure"]) == {"mean(ER, IP, EX)"}
    assert ppi_table(emp, human).empty  # ER alone is not the composite


def test_analysis_adds_results_ppi_only_with_ratings_and_corrects_the_biased_scorer():
    table, human = _table_and_human()
    plain = analyze_scores(table, paired_check=False)
    assert "results_ppi" not in plain.tables and "family" not in plain.results.columns
    res = analyze_scores(table, paired_check=False, human=human)
    p = res.tables["results_ppi"].set_index(["outcome", "group", "kind"])
    auto, ppi = p.loc[("epitome.ER", "B", "automated")], p.loc[("epitome.ER", "B", "ppi")]
    # the scorer's -0.3 bias is removed: the PPI estimate moves towards the planted -0.25
    assert auto["estimate"] < -0.45 and abs(ppi["estimate"] - (-0.25)) < abs(auto["estimate"] - (-0.25))
    assert ppi["ci_low"] < -0.25 < ppi["ci_high"]


def test_primary_outcome_makes_a_confirmatory_holm_family_and_an_exploratory_bh_one():
    table, _ = _table_and_human()
    res = analyze_scores(table, paired_check=False, primary=["epitome.ER"])
    r = res.results
    conf = r[r["family"] == "confirmatory"]
    assert set(conf["outcome"]) == {"epitome.ER"} and set(conf["cue_type"]) == {"pooled"}
    assert set(r.loc[r["family"] == "exploratory", "outcome"]) == {"epitome.ER", "llm-judge.ER"}
    d = res.disparity
    assert d.set_index("outcome").loc["epitome.ER", "family"] == "confirmatory"
    # Holm within the confirmatory family only: its size is its gap tests plus its disparity test
    m = int(conf["p_value"].notna().sum()) + 1
    p = np.r_[conf["p_value"].to_numpy(float), d.set_index("outcome").loc["epitome.ER", "p_value"]]
    order = np.argsort(p)
    holm = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    np.testing.assert_allclose(np.sort(np.r_[conf["p_holm"].to_numpy(float),
                                             d.set_index("outcome").loc["epitome.ER", "p_holm"]]), np.sort(holm))
    assert "significant_bh" in r.columns
    with pytest.raises(AuditError, match="analysis.primary"):
        analyze_scores(table, paired_check=False, primary=["sentiment.compound"])


def test_spec_rejects_a_primary_outcome_no_scorer_produces():
    ok = spec_from_dict({"name": "t", "analysis": {"primary": ["epitome.ER>0"]}})
    assert ok.analysis.primary == ["epitome.ER>0"]
    with pytest.raises(AuditError, match="analysis.primary names 'epitome.warmth'.*epitome.empathy"):
        spec_from_dict({"name": "t", "analysis": {"primary": ["epitome.warmth"]}})
    with pytest.raises(AuditError, match="not one of analysis.outcomes"):
        spec_from_dict({"name": "t", "analysis": {"primary": ["epitome.ER"], "outcomes": ["epitome.IP"]}})


def test_scorer_comparison_flags_a_conclusion_that_depends_on_the_scorer():
    rows = lambda est_b, p_b: pd.DataFrame(dict(  # noqa: E731
        outcome=["epitome.ER", "llm-judge.ER"], model_label="m", style="pooled", cue_type="pooled", group="B",
        reference="control", estimate=est_b, ci_low=[e - 0.1 for e in est_b], ci_high=[e + 0.1 for e in est_b],
        significant_holm=[p < 0.05 for p in p_b], p_holm=p_b))
    disagree = comparison_section(rows([-0.4, -0.05], [0.001, 0.6]), None, figure=False)
    assert disagree["n_flagged"] == 1 and "significant with epitome; not with llm-judge" in disagree["flagged"][0]
    agree = comparison_section(rows([-0.4, -0.3], [0.001, 0.01]), None, figure=False)
    assert agree["n_flagged"] == 0 and agree["flagged"] == []
    sign = scorer_flags(comparison_table(rows([-0.4, 0.3], [0.001, 0.01])))
    assert "the sign differs" in sign["reason"].iloc[0]
    assert comparison_section(rows([-0.4, -0.3], [0.001, 0.01]).iloc[:1], None) is None  # one scorer: no section


def test_scorer_comparison_counts_human_ratings_as_a_scorer():
    table, human = _table_and_human()
    res = analyze_scores(table, paired_check=False, human=human)
    sec = comparison_section(res.results, res.tables["results_ppi"], figure=True)
    assert {"epitome", "llm-judge", "humans (PPI-corrected)", "humans (rated replies only)"} <= {
        r["scorer"] for r in sec["rows"]}
    assert sec["figure"].data_uri.startswith("data:image/png;base64,")


def test_ratings_needed_meets_the_halfwidth_and_one_fewer_does_not():
    kw = dict(n_all=2000, sd=0.7, rho=0.6, deff=1.5)
    n = ratings_needed(0.12, **kw)
    assert ppi_halfwidth(n, **kw) <= 0.12 < ppi_halfwidth(n - 1, **kw)
    # a better scorer needs fewer ratings; a perfect one none beyond what the share f requires
    assert ratings_needed(0.12, **{**kw, "rho": 0.9}) < n
    plan = ratings_plan(0.12, replies=2000)
    assert plan["needed"] == n and all(r["ppi_halfwidth"] < r["human_only_halfwidth"] for r in plan["table"])
    with pytest.raises(AuditError, match="even rating all"):
        ratings_needed(0.01, **kw)


def test_ppi_halfwidth_matches_the_simulated_spread_of_the_estimator():
    """The analytic half-width (no clustering: deff 1) against the spread of the PPI++ estimator."""
    rng = np.random.default_rng(5)
    n_all, n_rated, rho = 800, 200, 0.7
    est = []
    for _ in range(400):
        g = np.r_[np.zeros(n_all // 2, bool), np.ones(n_all // 2, bool)]
        y = rng.normal(0, 1, n_all)
        yhat = rho * y + np.sqrt(1 - rho ** 2) * rng.normal(0, 1, n_all)
        rated = np.zeros(n_all, bool)
        rated[rng.choice(n_all // 2, n_rated // 2, replace=False)] = True
        rated[n_all // 2 + rng.choice(n_all // 2, n_rated // 2, replace=False)] = True
        est.append(ppi_gap_arrays(np.arange(n_all), g, ~g, yhat, np.where(rated, y, np.nan))["ppi"].estimate)
    sim_half = 1.96 * np.std(est)
    assert ppi_halfwidth(n_rated, n_all=n_all, sd=1.0, rho=rho) == pytest.approx(sim_half, rel=0.12)


def test_power_command_answers_how_many_ratings(capsys):
    from audit.cli import main

    assert main(["power", "analyses/demo.yaml", "--ratings-ci", "0.15", "--rho", "0.8", "--replies", "2000"]) == 0
    out = capsys.readouterr().out
    n = ratings_needed(0.15, n_all=2000, sd=0.7, rho=0.8, deff=1.5)
    assert f"CI of +-0.15: {n} " in out and "rho 0.80" in out
    assert main(["power", "analyses/demo.yaml"]) != 0
    assert "give --gap" in capsys.readouterr().err


def test_analyze_flags_two_scorer_columns_of_one_measure(tmp_path, capsys):
    """`analyze` on a long table with two scorer columns of ER says which conclusion depends on the scorer."""
    from audit.cli import main

    t = simulate_audit_table(n_posts=30, groups=("A", "B"), gaps={"B": -0.4}, outcome="x", seed=4)
    rng = np.random.default_rng(4)
    wide = t.drop(columns=["outcome", "value"]).assign(
        **{"epitome.ER": t["value"], "published.ER": t["value"] + 0.4 * (t["group"] == "B") + rng.normal(0, .05, len(t))})
    path = tmp_path / "two.csv"
    wide.to_csv(path, index=False)
    assert main(["analyze", str(path), "--outcome", "epitome.ER", "published.ER", "--group", "group",
                 "--control", "control", "--cluster", "post_id"]) == 0
    out = capsys.readouterr().out
    assert "depends on the scorer: ER, B vs control: significant with epitome; not with published" in out
    assert "depends on the scorer: ER, A vs control" not in out


def test_the_analysis_stage_reads_ratings_from_the_store(tmp_path, monkeypatch):
    """With a store that keeps human ratings (RunStore.human_ratings_df), the stage writes results_ppi and
    refits when ratings arrive; without them nothing changes."""
    from audit.stats.stage import analysis_fingerprint, analyze_run
    from test_stats_stage import fill_store as fill_stage_store

    spec = fill_stage_store(tmp_path / "run", n_posts=12, styles=("plain",), samples=2)
    with RunStore(tmp_path / "run", create=False) as store:
        before = analysis_fingerprint(store, spec)
        keys = store.scores_df()
    analyze_run(spec, tmp_path / "run")
    with RunStore(tmp_path / "run", create=False) as store:
        assert "results_ppi" not in store.table_names()
    emp = keys[keys["measure"] == "empathy"]
    ratings = pd.DataFrame(dict(request_key=emp["request_key"].iloc[::2], rater="r1", measure="empathy",
                                value=emp["value"].iloc[::2]))
    monkeypatch.setattr(RunStore, "human_ratings_df", lambda self: ratings, raising=False)
    with RunStore(tmp_path / "run", create=False) as store:
        assert analysis_fingerprint(store, spec) != before  # new ratings refit
    analyze_run(spec, tmp_path / "run")
    with RunStore(tmp_path / "run", create=False) as store:
        ppi = store.table_df("results_ppi")
    assert set(ppi["outcome"]) == {"epitome.empathy"} and set(ppi["kind"]) == {"automated", "ppi", "human"}
    # the ratings equal the scores here: lambda = Cov / Var = 1, and PPI is the automated gap exactly
    b = ppi[(ppi["group"] == "Black woman")].set_index("kind")
    assert b.loc["ppi", "lambda_group"] == pytest.approx(1.0)
    assert b.loc["ppi", "estimate"] == pytest.approx(b.loc["automated", "estimate"], abs=1e-9)


def test_power_takes_the_ratings_assumptions_from_a_run(tmp_path, monkeypatch, capsys):
    from audit.cli import main
    from test_stats_stage import fill_store as fill_stage_store

    fill_stage_store(tmp_path / "run", n_posts=12, styles=("plain",), samples=2)
    with RunStore(tmp_path / "run", create=False) as store:
        emp = store.scores_df().query("measure == 'empathy'")
    rng = np.random.default_rng(0)
    noisy = emp["value"] + rng.normal(0, 0.3, len(emp))  # raters agree with the scorer up to noise
    ratings = pd.DataFrame(dict(request_key=emp["request_key"], rater="r1", measure="empathy", value=noisy))
    monkeypatch.setattr(RunStore, "human_ratings_df", lambda self: ratings, raising=False)
    assert main(["power", "analyses/demo.yaml", "--ratings-ci", "0.6", "--from", str(tmp_path / "run"),
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    rho = float(np.corrcoef(emp["value"], noisy)[0, 1])
    assert got["rho"] == pytest.approx(rho, abs=1e-9) and "rated replies of epitome.empathy" in got["source"]
    assert got["sd"] == pytest.approx(float(noisy.std(ddof=1))) and got["deff"] >= 1.0


def test_ppi_halfwidth_with_unequal_arms_matches_the_simulated_spread():
    """Issue 26, D10: a quarter of the replies in the group and the ratings a random sample of all of
    them. The equal-arm formula (the only one before) under-states the half-width by about 15%; with the
    arms given it matches the spread of the PPI++ estimator (deff 1: one reply per post)."""
    rng = np.random.default_rng(26)
    n_all, n_rated, rho, share = 2400, 240, 0.7, 0.25
    n_g = int(share * n_all)
    est = []
    for _ in range(400):
        g = np.r_[np.ones(n_g, bool), np.zeros(n_all - n_g, bool)]
        y = rng.normal(0, 1, n_all)
        yhat = rho * y + np.sqrt(1 - rho ** 2) * rng.normal(0, 1, n_all)
        rated = np.zeros(n_all, bool)
        rated[rng.choice(n_all, n_rated, replace=False)] = True
        est.append(ppi_gap_arrays(np.arange(n_all), g, ~g, yhat, np.where(rated, y, np.nan))["ppi"].estimate)
    sim_half = 1.96 * np.std(est)
    unequal = ppi_halfwidth(n_rated, n_all=n_all, sd=1.0, rho=rho, share=share, rated_share=share)
    assert unequal == pytest.approx(sim_half, rel=0.08)
    assert ppi_halfwidth(n_rated, n_all=n_all, sd=1.0, rho=rho) < 0.92 * sim_half  # the old, equal-arm answer
    # the rating packet's equal split narrows it again, and the arm sizes are checked
    assert ppi_halfwidth(n_rated, n_all=n_all, sd=1.0, rho=rho, share=share) < unequal
    with pytest.raises(AuditError, match="strictly between 0 and 1"):
        ppi_halfwidth(n_rated, n_all=n_all, sd=1.0, rho=rho, share=1.0)


def test_power_command_takes_unequal_arms(capsys):
    from audit.cli import main

    args = ["power", "analyses/demo.yaml", "--ratings-ci", "0.15", "--arms", "250,750"]
    assert main(args + ["--allocation", "proportional", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["replies"] == 1000 and plan["share"] == 0.25 and plan["rated_share"] == 0.25
    assert plan["needed"] == ratings_needed(0.15, n_all=1000, sd=0.7, rho=0.6, deff=1.5, share=0.25, rated_share=0.25)
    assert plan["needed"] > ratings_needed(0.15, n_all=1000, sd=0.7, rho=0.6, deff=1.5)
    assert main(args[:-2] + ["--arms", "x,3"]) == 2 and "--arms" in capsys.readouterr().err
