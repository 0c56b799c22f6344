"""The report's layout after the first screen (issue 20): long lists and tables one click down in
``<details>`` (no script), short ones shown as they are, the Markdown report in the same order, and
sections as a list that a new section joins with one entry (numbering and contents follow)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from audit.report import render
from audit.report import build
from audit.report.build import FOLD_ROWS, Section, add_section
from synthetic_store import fill_store


class _Details(HTMLParser):
    """For each <details>: its id, its summary text, and the ids of the elements inside it; plus the
    ids of elements outside any <details>, and whether a summary is the first child every time."""

    def __init__(self):
        super().__init__()
        self.stack: list[dict] = []
        self.blocks: list[dict] = []
        self.outside: set[str] = set()
        self.in_summary = False
        self.expect_summary = False
        self.summary_first = True
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.expect_summary and tag != "summary":
            self.summary_first = False
        self.expect_summary = False
        if tag == "script":
            self.scripts += 1
        if tag == "details":
            block = {"id": a.get("id"), "summary": "", "inside": set()}
            self.stack.append(block)
            self.blocks.append(block)
            self.expect_summary = True
        elif tag == "summary":
            self.in_summary = True
        if a.get("id") and tag != "details":
            (self.stack[-1]["inside"] if self.stack else self.outside).add(a["id"])

    def handle_endtag(self, tag):
        if tag == "details":
            self.stack.pop()
        elif tag == "summary":
            self.in_summary = False

    def handle_data(self, data):
        if self.in_summary and self.stack:
            self.stack[-1]["summary"] += data


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    run = fill_store(tmp_path_factory.mktemp("layout") / "run")
    paths = render(run, figures=False)
    p = _Details()
    p.feed(paths["html"].read_text(encoding="utf-8"))
    return paths, p


def test_long_lists_are_one_click_down(rendered):
    _, p = rendered
    assert p.scripts == 0 and p.summary_first
    where = {i: b for b in p.blocks for i in b["inside"]}
    # the non-significant list and the table of every test are always folded, with a summary that
    # says what is inside and how much
    assert "nonsignificant-findings" in where
    assert re.match(r"Show the gaps that were not significant, for \d+ outcomes", where["nonsignificant-findings"]["summary"])
    assert "results-table" in where
    assert re.match(r"Show all \d+ tests of the family \(\d+ significant", where["results-table"]["summary"])
    # long tables (more than FOLD_ROWS rows) are folded: the synthetic group summary has dozens of rows
    assert "group-summary-table" in where
    # the first screen stays as it is: nothing of it is folded
    for first in ("first-screen", "headline", "group-table"):
        assert first in p.outside
    # the summary's significant findings are shown, not folded
    assert "significant-findings" in p.outside


def test_short_tables_are_not_folded(rendered):
    paths, p = rendered
    where = {i for b in p.blocks for i in b["inside"]}
    html = paths["html"].read_text(encoding="utf-8")
    rows = len(re.findall(r"<tr", html.split('id="power-table"')[1].split("</table>")[0])) - 1
    assert rows <= FOLD_ROWS and "power-table" not in where and "power-table" in p.outside


def test_markdown_follows_the_same_order_and_folds(rendered):
    paths, _ = rendered
    md = paths["markdown"].read_text(encoding="utf-8")
    heads = [md.index(f"## {i}. {t}") for i, t in enumerate(
        ["Summary", "Figures and results", "Methods", "Does the scorer treat groups alike?", "Limitations",
         "Example replies", "Provenance"], 1)]
    assert heads == sorted(heads)
    ns = md.index("### Gaps that were not significant")
    fold = md.index("<details><summary>Show the gaps that were not significant", ns)
    assert fold < md.index("\n- ", fold) < md.index("</details>", fold)
    res = md.index("### Full results")
    assert md.index("<details><summary>Show all", res) < md.index("| model | outcome |", res) < md.index("</details>", res)
    # the Markdown inside a fold is Markdown (a blank line after the summary; tables not escaped)
    assert "</summary>\n\n" in md and "\\| model" not in md


def test_a_new_section_is_one_entry(rendered, monkeypatch, tmp_path):
    """add_section puts a section before the provenance appendix: the contents list, the numbering
    and both reports follow (here it reuses the examples templates)."""
    monkeypatch.setattr(build, "SECTIONS", list(build.SECTIONS))
    add_section(Section("more", "More examples", "examples", context=lambda data: {"extra_key": 1}))
    assert [s.id for s in build.SECTIONS][-2:] == ["more", "provenance"]
    run = fill_store(tmp_path / "run")
    paths = render(run, figures=False)
    html = paths["html"].read_text(encoding="utf-8")
    assert '<li><a href="#more">More examples</a></li>' in html
    assert "<h2>7. More examples</h2>" in html and "<h2>8. Provenance</h2>" in html
    md = paths["markdown"].read_text(encoding="utf-8")
    assert md.index("## 7. More examples") < md.index("## 8. Provenance")
