"""``import audit``: the notebook API is there, cheap to import, and keyword-only for table columns."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import audit
from audit.errors import AuditError
from audit.stats.simulate import simulate_audit_table

PUBLIC = ["load_spec", "run", "build_variants", "gap_test", "analyze_table", "adjust_family", "power", "get_scorer",
          "RunStore", "render", "AuditError", "read_table", "analyze_run", "rating_packet", "import_ratings",
          "rating_agreement", "reanalyze_stigma", "tidy_table", "compare_runs", "reanalyze_appropriateness",
          "validate_judge", "pcsa_validation_table", "score_run"]


def test_import_audit_loads_nothing_heavy(repo_root):
    code = ("import sys, audit; print(audit.__version__); "
            "print(sorted(m for m in ('numpy', 'pandas', 'scipy', 'audit.stats', 'audit.pipeline') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo_root, check=True)
    assert out.stdout.split("\n")[:2] == [audit.__version__, "[]"]


def test_every_public_name_resolves_to_the_library_function():
    from audit.counterfactual import build_variants
    from audit.pipeline import run
    from audit.ratings import import_ratings, make_packet, run_ratings_summary
    from audit.report import render
    from audit.scorers import get_scorer
    from audit.scoring import score_run
    from audit.spec import load_spec
    from audit.stats import adjust_family, analyze_run, analyze_table, gap_test, plan_power, read_table
    from audit.appropriateness.replicate import reanalyze_appropriateness
    from audit.appropriateness.validation import validate_judge
    from audit.pcsa.validation import validation_table as pcsa_validation_table
    from audit.stigma.replicate import reanalyze_stigma
    from audit.compare import compare_runs
    from audit.store import RunStore
    from audit.tidy import tidy_table

    expected = dict(reanalyze_stigma=reanalyze_stigma, reanalyze_appropriateness=reanalyze_appropriateness,
                    validate_judge=validate_judge, pcsa_validation_table=pcsa_validation_table, load_spec=load_spec, run=run, build_variants=build_variants, gap_test=gap_test,
                    analyze_table=analyze_table, adjust_family=adjust_family, power=plan_power, get_scorer=get_scorer,
                    RunStore=RunStore, render=render, AuditError=AuditError, read_table=read_table,
                    analyze_run=analyze_run, rating_packet=make_packet, import_ratings=import_ratings,
                    rating_agreement=run_ratings_summary, tidy_table=tidy_table, compare_runs=compare_runs,
                    score_run=score_run)
    assert set(PUBLIC) <= set(audit.__all__) and set(PUBLIC) <= set(dir(audit))
    for name in PUBLIC:
        assert getattr(audit, name) is expected[name], name
    with pytest.raises(AttributeError, match="no attribute 'gap_tset'"):
        audit.gap_tset  # noqa: B018


def test_package_docstring_example_runs():
    result = doctest.testmod(audit)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("call", [
    lambda t: audit.gap_test(t, "value", "group", "control", "post_id"),
    lambda t: audit.analyze_table(t, "value"),
    lambda t: audit.adjust_family(t.assign(p_value=0.5), 0.05),
    lambda t: audit.power(None, 0.1),
    lambda t: audit.reanalyze_stigma(t, "output"),
], ids=["gap_test", "analyze_table", "adjust_family", "power", "reanalyze_stigma"])
def test_table_and_design_arguments_are_keyword_only(call):
    with pytest.raises(TypeError, match="positional"):
        call(simulate_audit_table(n_posts=10, groups=["A"], seed=0))


def test_long_table_and_run_analysis_share_one_family_loop():
    """The same table through the run's analysis and through analyze_table gives the same family."""
    from audit.stats import analyze_scores

    t = simulate_audit_table(n_posts=30, groups=["A", "B"], cue_types=["tag", "name"], gaps={"A": -0.3}, seed=4)
    run = analyze_scores(t, paired_check=False, extra_references=["B"]).results
    long = audit.analyze_table(t, outcome="value", extra_references=["B"], by="cue_type")
    assert len(run) == len(long) == 2 * 3 + 4  # vs control: 2 groups x (pooled + 2 cue types); vs B: 4
    cols = ["estimate", "se", "p_value"]
    np.testing.assert_allclose(run[cols].to_numpy(float), long[cols].to_numpy(float), rtol=1e-12)
    # the run's family also holds its max - min disparity tests (issue 20), so its corrections are
    # over a larger family: never smaller than the long table's
    assert (run["p_holm"].to_numpy(float) >= long["p_holm"].to_numpy(float) - 1e-12).all()
    assert run["cue_type"].tolist() == long["cue_type"].tolist()
    assert run["reference"].tolist() == long["reference"].tolist()


def test_analyze_table_reports_the_first_problem_where_it_is():
    t = simulate_audit_table(n_posts=10, groups=["A"], seed=0)
    with pytest.raises(AuditError) as err:
        audit.analyze_table(t, outcome="value", control="nobody", where="my.csv")
    assert err.value.where == "my.csv" and "does not occur" in err.value.what
    with pytest.raises(AuditError) as err:
        audit.analyze_table(t, outcome="value", extra_references=["nobody"], where="my.csv")
    assert err.value.where == "my.csv, reference nobody" and "does not occur" in err.value.what


def test_run_analysis_records_a_test_it_cannot_fit():
    from audit.stats.family import Block, fit_family

    good = simulate_audit_table(n_posts=10, groups=["A"], seed=0)
    flat = good.assign(value=1.0)
    res, notes = fit_family([Block({"outcome": "ok"}, good, "value"), Block({"outcome": "flat"}, flat, "value",
                                                                              where="flat one")],
                            group="group", references=["control"], cluster="post_id", strict=False)
    assert res["outcome"].tolist() == ["ok", "flat"]
    assert res.loc[1, "method"] == "not fitted" and np.isnan(res.loc[1, "p_value"])
    assert len(notes) == 1 and notes[0].startswith("flat one, reference control: ") and "constant" in notes[0]
    assert res.loc[0, "p_holm"] == res.loc[0, "p_value"]  # the family is the one fitted test


def test_power_plan_without_a_spec():
    plan = audit.power(gap="20%", groups=2, cue_types=1, sd_post=0.3, sd_resid=0.5, ref_mean=1.0, posts=[10, 40],
                       sims=20, seed=1)
    assert plan.family_size == 2 * (1 + 1) and plan.alpha == 0.05
    assert plan.grid["n_posts"].tolist() == [10, 40] and plan.grid["power"].is_monotonic_increasing
    d = plan.as_dict()
    assert set(d["needed_posts"]) == {"1"} and d["components_source"] == "stated"
    assert any(line.startswith("with 1 sample(s) per variant") for line in plan.lines())
    with pytest.raises(AuditError, match="number of groups"):
        audit.power(gap=0.2, sd_post=0.3, sd_resid=0.5, ref_mean=1.0)
    # no pilot and nothing stated: the planning defaults from published audits, with their source (issue 29)
    plan = audit.power(gap=0.5, groups=2, posts=[10], sims=4, seed=1)
    assert plan.components_source.startswith("no pilot run: planning defaults") and "Sharma" in plan.components_source


def test_one_json_cleaner_handles_what_the_commands_print():
    from audit.jsonable import jsonable

    got = jsonable({"confusion": np.array([[1, 0], [0, 2]]), "kappa": np.float64("nan"), "n": np.int64(4),
                    "ok": np.bool_(True), "at": pd.Timestamp("2025-01-02"), "missing": pd.NA, 3: float("inf")})
    assert got == {"confusion": [[1, 0], [0, 2]], "kappa": None, "n": 4, "ok": True, "at": "2025-01-02T00:00:00",
                   "missing": None, "3": None}


def test_browser_verdict_names_every_problem():
    from audit.report.browser import PageCheck, ReportCheck, page_problems

    page = PageCheck(url="file:///r.html", loaded=False, console_errors=["csp"], failed_requests=["file:///x.png"],
                     external_requests=["http://e.invalid/"], script_elements=1,
                     images=[{"id": "f1", "complete": True, "width": 10}, {"id": "f2", "complete": False, "width": 0}])
    problems = page_problems(page)
    assert problems == ["csp", "file:///x.png", "http://e.invalid/", "the page did not finish loading",
                        "figure f2 did not render", "1 script elements in the page"]
    assert not ReportCheck(page, problems).ok
    fine = PageCheck(url="file:///r.html", loaded=True, script_elements=0, images=[{"id": "f", "complete": True,
                                                                                    "width": 5}])
    verdict = ReportCheck(fine, page_problems(fine))
    assert verdict.ok and verdict.lines()[0].startswith("check: loaded in Chromium without network; 1 figures")


@pytest.mark.parametrize("name", ["load_spec", "build_variants", "gap_test", "analyze_table", "read_table",
                                  "adjust_family", "power"])
def test_public_function_examples_run(name):
    """Each public function's docstring example runs and prints what it says."""
    fn = getattr(audit, name)
    finder = doctest.DocTestFinder(recurse=False)
    tests = [t for t in finder.find(fn, name, globs=dict(vars(sys.modules[fn.__module__]))) if t.examples]
    assert tests, f"{name} has no docstring example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0
