"""The first screen of the demo report answers the question (issue 20): in headless Chromium at
1280x900, the headline box, the group table and the forest plot of the primary outcome lie within
the first screen; the screenshot is kept as test-artifacts/first-screen.png. The Markdown report
leads in the same order, and the primary forest plot has a symmetric axis."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.report.browser import check_page, find_chromium
from demo_run import golden_demo_run

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
WIDTH, HEIGHT = 1280, 900


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    return golden_demo_run(tmp_path_factory.mktemp("first-screen"))


def test_markdown_report_leads_with_the_disparity_between_groups(demo_run):
    md = (demo_run / "report.md").read_text(encoding="utf-8")
    head = md.index("The largest disparity in")
    assert head < md.index("| group |") < md.index("figures/forest-primary.png") < md.index("## 1. Summary")


@pytest.mark.skipif(find_chromium() is None,
                    reason="Chromium is not installed (bash tests/system-deps.sh installs Debian's chromium as root)")
def test_headline_table_and_forest_plot_are_on_the_first_screen(demo_run):
    shot = ARTIFACTS / "first-screen.png"
    if shot.exists():
        shot.unlink()
    page = check_page(demo_run / "report.html", screenshot=shot, width=WIDTH, height=HEIGHT, first_screen=True)
    print(f"\nfirst-screen screenshot: {shot}")
    assert page.loaded and not page.console_errors
    for element in ("headline", "group-table", "fig-forest-primary"):
        box = page.boxes[element]
        assert 0 <= box["top"] < box["bottom"] <= HEIGHT, (element, box)
        assert 0 <= box["left"] < box["right"] <= WIDTH, (element, box)
    primary = [i for i in page.images if i["id"] == "fig-forest-primary"]
    assert primary and primary[0]["complete"] and primary[0]["width"] > 0
    assert "The largest disparity in" in page.text
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[20:24], "big") == HEIGHT


@pytest.fixture(scope="module")
def margin_run(tmp_path_factory) -> tuple[Path, int]:
    from demo_run import margin_demo_run

    return margin_demo_run(tmp_path_factory.mktemp("verdicts"), {"epitome.empathy": "10%", "refusal": "5pp"})


def test_without_margins_the_first_screen_says_no_fairness_claim_can_be_made(demo_run):
    md = (demo_run / "report.md").read_text(encoding="utf-8")
    html = (demo_run / "report.html").read_text(encoding="utf-8")
    for text in (md, html):
        assert "No fairness claim can be made" in text and "analysis.margins" in text
    assert md.index("No fairness claim") < md.index("## 1. Summary")
    assert 'id="verdict-table"' not in html


@pytest.mark.skipif(find_chromium() is None,
                    reason="Chromium is not installed (bash tests/system-deps.sh installs Debian's chromium as root)")
def test_verdict_table_is_on_the_first_screen(margin_run):
    run, _ = margin_run
    shot = ARTIFACTS / "first-screen-verdicts.png"
    page = check_page(run / "report.html", screenshot=shot, width=WIDTH, height=HEIGHT, first_screen=True)
    assert page.loaded and not page.console_errors
    box = page.boxes["verdict-table"]
    assert 0 <= box["top"] < box["bottom"] <= HEIGHT, box
    assert box["top"] > page.boxes["headline"]["bottom"] - 1  # right below the headline
    text = page.text[page.text.index("Is each gap within its equivalence margin"):]
    first_row = text.splitlines()[2]  # caption, header, first comparison
    assert "vs" in first_row and "overall empathy" in first_row and "\u00b110%" in first_row
    assert "inconclusive" in first_row and "more posts would decide it" in first_row
    assert "No fairness claim" not in page.text
