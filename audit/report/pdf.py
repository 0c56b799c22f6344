"""Print the HTML report to PDF with headless Chromium: the report as filed and signed.

:func:`print_pdf` loads ``report.html`` in the same sandboxed, network-less headless Chromium that
``report --check`` uses (:mod:`audit.report.browser`) and prints it through the DevTools protocol's
``Page.printToPDF``. What is printed is the HTML itself, under its ``@media print`` rules
(``report.css``): figures, tables, the headline box and example cards are never split across pages,
headings stay with what follows them, wide tables wrap instead of running off the page, and the
contents list is left out. Figures keep their size (they are embedded PNGs, scaled only to fit the
page width). Every ``<details>`` block is opened before printing, because a closed one prints as its
one-line summary: a filed PDF holds everything the HTML holds, including the full results table and
the provenance appendix. Each page carries a footer with the report's title, the first 16 hex digits
of the run store's content hash (so a page can be traced to its run) and "page N of M".

Example::

    from audit.report import render
    paths = render("reports/demo", pdf=True)        # also writes reports/demo/report.pdf
    # or, for an HTML report already written:
    from audit.report.pdf import print_pdf
    print_pdf("reports/demo/report.html", paper="letter")
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from ..errors import AuditError
from .browser import _chromium, find_chromium

# Paper sizes in inches (what Page.printToPDF takes) and the margins used for both.
PAPER = {"a4": (8.27, 11.69), "letter": (8.5, 11.0)}
MARGIN_IN = {"top": 0.55, "bottom": 0.6, "left": 0.5, "right": 0.5}
INSTALL_HINT = ("install Chromium (Debian/Ubuntu: apt-get install chromium, or run tests/system-deps.sh as "
                "root), or set CHROMIUM=/path/to/chromium")

_OPEN_DETAILS_JS = "document.querySelectorAll('details').forEach(d => d.open = true); " \
                   "document.querySelectorAll('details').length"


def _footer(note: str | None) -> str:
    """The page footer (Chromium fills the title, pageNumber and totalPages spans itself)."""
    mid = f"<span>{html.escape(note)}</span>" if note else ""
    return ('<div style="font-size:7px; color:#555; width:100%; margin:0 0.5in; display:flex; '
            'justify-content:space-between; font-family:sans-serif;">'
            f'<span class="title"></span>{mid}'
            '<span>page <span class="pageNumber"></span> of <span class="totalPages"></span></span></div>')


def print_pdf(html_path: str | Path, pdf_path: str | Path | None = None, *, paper: str = "a4",
              expand_details: bool = True, footer_note: str | None = None, chromium: str | None = None,
              timeout: float = 120.0) -> Path:
    """Print the HTML report ``html_path`` to ``pdf_path`` (default: ``report.pdf`` beside it); return it.

    ``paper``: ``"a4"`` or ``"letter"``. ``expand_details``: open every ``<details>`` block first (a
    closed one would print as its summary line only). ``footer_note``: text shown in the middle of
    every page's footer (e.g. the store hash). The file is written atomically: a failed print leaves
    any earlier PDF as it was.

    Raises :class:`~audit.errors.AuditError` when no Chromium is installed, the paper is unknown, the
    page does not load or Chromium returns no PDF.
    """
    html_path = Path(html_path)
    key = str(paper).lower()
    if key not in PAPER:
        raise AuditError(f"unknown paper size {paper!r}", where="--paper", fix="use a4 or letter")
    if not html_path.is_file():
        raise AuditError(f"no report at {html_path}", fix="render the report first (empathy-audit report RUN_DIR)")
    exe = chromium or find_chromium()
    if not exe:
        raise AuditError("no Chromium found to print the PDF", fix=INSTALL_HINT)
    out = Path(pdf_path) if pdf_path is not None else html_path.with_name("report.pdf")
    url = html_path.resolve().as_uri()
    width_in, height_in = PAPER[key]
    with _chromium(exe, width=1280, height=900, timeout=timeout) as page:
        loaded, _ = page.navigate(url, timeout)
        if not loaded:
            raise AuditError(f"Chromium could not load {html_path} to print it",
                             fix="open the report with `empathy-audit report RUN_DIR --check` to see why")
        if expand_details:
            page.evaluate(_OPEN_DETAILS_JS)
        printed = page.send("Page.printToPDF", {
            "paperWidth": width_in, "paperHeight": height_in, "printBackground": True,
            "marginTop": MARGIN_IN["top"], "marginBottom": MARGIN_IN["bottom"],
            "marginLeft": MARGIN_IN["left"], "marginRight": MARGIN_IN["right"],
            "preferCSSPageSize": False, "displayHeaderFooter": True,
            "headerTemplate": "<span></span>", "footerTemplate": _footer(footer_note),
        }, timeout=timeout)
    data = base64.b64decode(printed.get("data", ""))
    if not data.startswith(b"%PDF"):
        raise AuditError(f"Chromium returned no PDF for {html_path}", fix="run again; if it persists, report a bug")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return out


def require_pdf_printer(paper: str = "a4") -> None:
    """Raise :class:`~audit.errors.AuditError` now if a PDF could not be printed later (unknown paper,
    no Chromium), so a command fails before its work rather than after it."""
    if str(paper).lower() not in PAPER:
        raise AuditError(f"unknown paper size {paper!r}", where="--paper", fix="use a4 or letter")
    if not find_chromium():
        raise AuditError("no Chromium found to print the PDF", fix=INSTALL_HINT)


def pdf_step(run_dir: str | Path, paths: dict[str, Path], *, pdf: bool, paper: str = "a4") -> dict[str, Path]:
    """The last step of every rendering (either suite's report): with ``pdf``, print ``report.pdf``
    of the report just written and add it to ``paths``; without, remove a ``report.pdf`` of an
    earlier rendering, which no longer matches the report beside it. Returns ``paths``."""
    if pdf:
        paths["pdf"] = report_pdf(run_dir, paper=paper)
    else:
        (Path(run_dir) / "report.pdf").unlink(missing_ok=True)
    return paths


def report_pdf(run_dir: str | Path, *, paper: str = "a4", chromium: str | None = None) -> Path:
    """Print the rendered report of ``run_dir`` (its ``report.html``) to ``run_dir/report.pdf``; the
    footer of each page names the run store's content hash (from ``results.json``)."""
    run_dir = Path(run_dir)
    note = None
    try:
        sha = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))["provenance"]["store_sha256"]
        note = f"store sha256 {str(sha)[:16]}" if sha else None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return print_pdf(run_dir / "report.html", run_dir / "report.pdf", paper=paper, footer_note=note,
                     chromium=chromium)
