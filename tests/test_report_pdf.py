"""``empathy-audit report RUN_DIR --pdf``: the demo report printed by headless Chromium.

Renders the demo design (golden server, no embedded model) to report.pdf and reads it back with
poppler-utils (pdfinfo, pdftotext, pdfimages): a sane page count and paper size, the headline,
every section heading, the contents of the collapsed <details> blocks (opened for print), the
provenance appendix with the full store hash, the page footer, and one embedded image per figure of
the HTML. Without Chromium, --pdf fails before any work with one message saying what to install.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from audit.cli import main as cli_main
from audit.errors import AuditError
from audit.report import render
from audit.report.browser import find_chromium
from demo_run import golden_demo_run

HAVE_TOOLS = find_chromium() is not None and all(shutil.which(t) for t in ("pdftotext", "pdfimages", "pdfinfo"))
needs_tools = pytest.mark.skipif(
    not HAVE_TOOLS,
    reason="Chromium or poppler-utils is not installed (bash tests/system-deps.sh installs Debian's chromium "
           "and poppler-utils as root)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return golden_demo_run(tmp_path_factory.mktemp("pdf-demo"))


@pytest.fixture(scope="module")
def printed(demo):
    assert cli_main(["report", str(demo), "--pdf"]) == 0
    pdf = demo / "report.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return pdf, text, info


def _flat(s: str) -> str:
    """Text with every run of whitespace (line breaks of the PDF layout) as one space."""
    return re.sub(r"\s+", " ", s).strip()


@needs_tools
def test_pdf_is_a4_with_a_sane_page_count(printed):
    pdf, _, info = printed
    assert pdf.read_bytes()[:5] == b"%PDF-"
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    # The demo prints to about 30 pages with every collapsed block opened (most of it the table of
    # all 392 tests); fewer than 8 would mean lost content, more than 80 broken layout.
    assert 8 <= pages <= 80, pages
    assert "(A4)" in info
    assert "Title:           Empathy audit: demo" in info


@needs_tools
def test_pdf_text_has_the_headline_every_section_and_the_provenance(printed, demo):
    _, text, _ = printed
    flat = _flat(text)
    results = json.loads((demo / "results.json").read_text(encoding="utf-8"))
    headline = results["headline"]["sentences"][0]
    assert _flat(headline)[:80] in flat
    order = [flat.index(f"{i}. {title}") for i, title in enumerate(
        ["Summary", "Figures and results", "Methods", "Does the scorer treat groups alike?", "Limitations",
         "Example replies", "Provenance"], 1)]
    assert order == sorted(order)
    # the provenance appendix, complete: the full store hash, the command to reproduce, the spec
    prov = flat[order[-1]:]
    assert results["provenance"]["store_sha256"] in prov.replace(" ", "")
    assert "reproduce the run" in prov and "empathy-audit run" in prov
    assert "reference_group: White" in prov
    # collapsed blocks were opened for print: the full results table and the non-significant list
    assert "Show all 392 tests of the family" in flat
    table = flat[flat.index("Show all 392 tests"):flat.index("3. Methods")]
    assert table.count("REML") >= 100  # the rows of the table (their method column), not just its summary
    assert flat.count("Holm p = ") >= 9
    # the footer of every page: title, store hash, page N of M
    pages = int(re.search(r"page 1 of (\d+)", flat).group(1))
    assert f"page {pages} of {pages}" in flat
    assert flat.count(f"store sha256 {results['provenance']['store_sha256'][:16]}") == pages


@needs_tools
def test_every_figure_of_the_html_is_an_image_in_the_pdf(printed, demo):
    pdf, text, _ = printed
    html = (demo / "report.html").read_text(encoding="utf-8")
    n_figures = html.count('<img class="figure"')
    assert n_figures == 5  # the demo has no inference probe
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    images = [ln.split() for ln in listing.splitlines()[2:] if ln.split()[2:3] == ["image"]]
    # one entry per figure: a figure split over two pages would be listed twice (same object id)
    assert len(images) == n_figures, listing
    assert len({row[10] for row in images}) == n_figures, listing
    # every image is big enough to read: at least 300 px wide and printed at >= 100 ppi (not a thumbnail)
    for row in images:
        width, x_ppi = int(row[3]), int(row[12])
        assert width >= 300 and x_ppi >= 100, row
    # the first screen's forest plot is on page 1, beside the headline
    assert images[0][0] == "1"
    assert "vs reference group" in _flat(text.split("\f")[0])


@needs_tools
def test_letter_paper_and_a_stale_pdf_is_removed(demo, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo, run)
    paths = render(run, figures=False, pdf=True, paper="letter")
    info = subprocess.run(["pdfinfo", str(paths["pdf"])], capture_output=True, text=True, check=True).stdout
    assert "612 x 792 pts (letter)" in info
    # a later rendering without --pdf removes the PDF that no longer matches report.html
    render(run, figures=False)
    assert not (run / "report.pdf").exists()


def test_pdf_without_chromium_fails_first_with_what_to_install(demo, tmp_path, monkeypatch, capsys):
    import audit.report.pdf as pdf_mod

    monkeypatch.setattr(pdf_mod, "find_chromium", lambda: None)
    run = tmp_path / "run"
    shutil.copytree(demo, run)
    before = (run / "report.html").stat().st_mtime_ns
    with pytest.raises(AuditError) as err:
        render(run, pdf=True)
    assert "no Chromium found" in str(err.value) and "apt-get install chromium" in str(err.value)
    assert (run / "report.html").stat().st_mtime_ns == before  # failed before any work
    assert cli_main(["report", str(run), "--pdf"]) == 2
    out = capsys.readouterr()
    assert "no Chromium found to print the PDF" in out.err + out.out
    with pytest.raises(AuditError, match="unknown paper size"):
        render(run, pdf=True, paper="a3")


def test_run_with_pdf_checks_for_chromium_before_any_work(tmp_path, monkeypatch, capsys):
    import audit.report.pdf as pdf_mod
    from demo_run import ROOT

    monkeypatch.setattr(pdf_mod, "find_chromium", lambda: None)
    out = tmp_path / "run"
    assert cli_main(["run", str(ROOT / "analyses" / "demo.yaml"), "--out", str(out), "--no-progress", "--pdf"]) == 2
    assert not out.exists()  # nothing generated, no model started
    assert "apt-get install chromium" in capsys.readouterr().err
