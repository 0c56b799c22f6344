"""The report in a real browser: Debian's Chromium, headless, with no network.

Loads report.html from a synthetic run whose replies contain script and HTML, and checks that there
are no console errors, no failed and no external requests, that every figure decodes and renders,
that no script element exists, and that the hostile reply is shown as text. A PNG screenshot is kept
in test-artifacts/ (git-ignored; the path is printed).
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from audit.report import render
from audit.report.browser import check_page, find_chromium
from synthetic_store import fill_store

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="Chromium is not installed (bash tests/system-deps.sh installs Debian's chromium as root)",
)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    run_dir = fill_store(tmp_path_factory.mktemp("browser") / "run")
    paths = render(run_dir)
    shot = ARTIFACTS / "report-screenshot.png"
    if shot.exists():
        shot.unlink()
    result = check_page(paths["html"], screenshot=shot)
    print(f"\nreport screenshot: {shot}")
    return paths, result


def test_page_loads_without_errors_or_network(checked):
    _, r = checked
    assert r.loaded
    assert r.console_errors == []
    assert r.exceptions == []
    assert r.failed_requests == []
    assert r.external_requests == []


def test_figures_render(checked):
    _, r = checked
    ids = {i["id"] for i in r.images}
    assert {"fig-distributions", "fig-forest", "fig-intersectional", "fig-probe", "fig-refusals"} <= ids
    for img in r.images:
        assert img["src_scheme"] == "data"
        assert img["complete"] and img["width"] > 200 and img["height"] > 150, img


def test_untrusted_reply_is_text_in_the_browser(checked):
    _, r = checked
    assert r.script_elements == 0
    assert "<script>alert(1)</script>" in r.text
    assert "<img src=x onerror=" in r.text
    assert r.title.startswith("Empathy audit") and "pwned" not in r.title


def test_screenshot_is_a_png_of_the_page(checked):
    _, r = checked
    data = Path(r.screenshot).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width == 1280 and height > 2000


def test_browser_check_catches_a_broken_page(tmp_path):
    """The check is not blind: a page with an inline script (blocked by the CSP), a missing image and an
    external request reports all three."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data: file:\"></head><body><script>console.error('x')</script>"
        f"<figure id=f><img src=\"{(tmp_path / 'missing.png').as_uri()}\"></figure>"
        "<img src=\"http://example.invalid/a.png\"></body></html>", encoding="utf-8")
    r = check_page(page)
    assert r.loaded
    assert any("Content Security Policy" in e or "Content-Security-Policy" in e for e in r.console_errors)
    assert r.failed_requests
    assert any(u.startswith("http://example.invalid") for u in r.external_requests)
    assert any(not i["width"] for i in r.images)


def test_report_check_command(tmp_path, capsys):
    from audit.cli import main

    run_dir = fill_store(tmp_path / "run", with_probe=False)
    assert main(["report", str(run_dir), "--check"]) == 0
    out = capsys.readouterr().out
    assert "check: loaded in Chromium without network; 5 figures rendered" in out
