"""The report's scorer comparison and "Gaps corrected with human ratings" sections, end to end on a
run store: two scorers of one mechanism (the shipped epitome and an imported ``published`` scorer)
whose gaps disagree, plus human ratings; rendered to HTML, Markdown, JSON and CSV, and loaded in
Chromium. A run without either keeps its report as it was."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from audit.report import render
from audit.report.browser import check_page, find_chromium
from audit.stats.ppi import ppi_table
from audit.stats.stage import analysis_table
from audit.store import RunStore
from synthetic_store import fill_store


def _add_published_scorer_and_ratings(run_dir) -> None:
    """A ``published`` scorer of ER whose pooled gaps are near 0 and not significant (where the
    synthetic epitome gaps of "Black woman" are), and human ER ratings of 60% of the replies."""
    with RunStore(run_dir, create=False) as store:
        res = store.table_df("results")
        er = res[res["outcome"] == "epitome.ER"].copy()
        pub = er.assign(outcome="published.ER", estimate=er["estimate"] * 0.05, p_value=0.8, p_holm=1.0, p_bh=1.0,
                        significant_holm=False, ci_low=er["estimate"] * 0.05 - 0.3,
                        ci_high=er["estimate"] * 0.05 + 0.3)
        table = analysis_table(store)
        rng = np.random.default_rng(0)
        er_scores = table[table["outcome"] == "epitome.ER"].drop_duplicates("request_key")
        rated = er_scores[rng.random(len(er_scores)) < 0.6]
        human = pd.DataFrame(dict(request_key=rated["request_key"], measure="ER",
                                  value=np.clip(rated["value"] + rng.integers(-1, 2, len(rated)), 0, 2)))
        ppi = ppi_table(table[table["outcome"] == "epitome.ER"], human)
        store.replace_tables({"results": pd.concat([res, pub], ignore_index=True), "results_ppi": ppi})


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    run_dir = fill_store(tmp_path_factory.mktemp("cmp") / "run")
    _add_published_scorer_and_ratings(run_dir)
    return render(run_dir)


def test_report_puts_the_scorers_side_by_side_and_flags_the_disagreement(compared):
    html = compared["html"].read_text(encoding="utf-8")
    assert 'id="scorer-comparison-table"' in html and 'id="fig-scorer-comparison"' in html
    assert "the conclusion depends on the scorer" in html
    # its table (16 rows, more than FOLD_ROWS) is one click down like every long table; the flags are not
    fold = html.index('<details class="fold" id="scorer-comparison-details">')
    assert html.index('id="scorer-flags"') < fold < html.index('id="scorer-comparison-table"')
    flagged = json.loads(compared["json"].read_text(encoding="utf-8"))["scorer_comparison"]["flagged"]
    assert any("Black woman" in f and "not with" in f and "published" in f for f in flagged)
    md = compared["markdown"].read_text(encoding="utf-8")
    assert "### Does the conclusion depend on the scorer?" in md and "**Depends on the scorer:**" in md


def test_report_shows_automated_ppi_and_human_gaps_side_by_side(compared):
    html = compared["html"].read_text(encoding="utf-8")
    assert 'id="ppi-table"' in html and "Gaps corrected with human ratings" in html
    assert "The PPI-corrected gap leads" in html
    assert 'id="ppi-summary"' in html and "corrected with " in html
    data = json.loads(compared["json"].read_text(encoding="utf-8"))
    kinds = {r["kind"] for r in data["results_ppi"]}
    assert data["ppi_summary"] and all("human ratings" in s for s in data["ppi_summary"])
    assert kinds == {"automated", "ppi", "human"}
    csv = pd.read_csv(compared["tables"] / "results_ppi.csv")
    assert len(csv) == len(data["results_ppi"]) and set(csv["outcome"]) == {"epitome.ER"}
    assert "| automated | PPI-corrected | human-only |" in compared["markdown"].read_text(encoding="utf-8")


def test_a_run_without_a_second_scorer_or_ratings_has_neither_section(tmp_path):
    paths = render(fill_store(tmp_path / "run"))
    html = paths["html"].read_text(encoding="utf-8")
    assert "ppi-table" not in html and "scorer-comparison-table" not in html
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert not {"results_ppi", "scorer_comparison", "families", "ppi_lead", "ppi_summary"} & set(data)
    assert not (paths["tables"] / "results_ppi.csv").exists()
    assert 'id="composite"' in html  # the empathy composite is described wherever it is scored


@pytest.mark.skipif(find_chromium() is None,
                    reason="Chromium is not installed (bash tests/system-deps.sh installs Debian's chromium as root)")
def test_comparison_sections_render_in_the_browser(compared):
    r = check_page(compared["html"])
    assert r.loaded and r.console_errors == [] and r.exceptions == [] and r.external_requests == []
    fig = [i for i in r.images if i["id"] == "fig-scorer-comparison"]
    assert fig and fig[0]["complete"] and fig[0]["width"] > 200
    assert "Gaps corrected with human ratings" in r.text and "Does the conclusion depend on the scorer?" in r.text


def test_pre_registered_families_are_labelled_and_the_headline_leads_with_the_primary(tmp_path):
    from audit.report.headline import headline_sentences, primary_outcome
    from audit.stats.family import split_families

    run_dir = fill_store(tmp_path / "run")
    with RunStore(run_dir, create=False) as store:
        res = store.table_df("results")
        fam, _ = split_families(res, None, ["epitome.ER"])
        store.replace_tables({"results": fam})
    assert primary_outcome(fam, ["epitome.empathy"], primary=["epitome.ER"]) == "epitome.ER"
    disparity = pd.DataFrame([dict(outcome="epitome.ER", estimate=0.3, ci_low=0.1, ci_high=0.5, max_group="White man",
                                   min_group="Black woman", ratio=0.8, p_holm=0.01, significant_holm=True,
                                   family="confirmatory")])
    assert "over the confirmatory family" in headline_sentences(fam, disparity, None, "epitome.ER")[1]
    paths = render(run_dir)
    html = paths["html"].read_text(encoding="utf-8")
    assert 'id="families"' in html and "(confirmatory)" in html and "(exploratory)" in html
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["families"]["primary"] == ["epitome.ER"]
