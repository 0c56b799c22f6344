"""Reader-facing text only (issue 29): the rendered demo report (Markdown and the visible text of the
HTML) carries no exception vocabulary, no advice addressed to an analyst, no raw key = value dumps
and no NaN; scorer invariance is stated as a tested hypothesis with its number; the validity figures
are a table like every other table."""

from __future__ import annotations

import html
import re

import pytest

from demo_run import golden_demo_run

FORBIDDEN = [
    (r"Traceback", "a traceback"),
    (r"\b[A-Z]\w*(?:Error|Exception)\b", "an exception class"),
    (r"Choose an outcome", "a library's advice to the analyst"),
    # a raw statistics dump (decoding parameters such as max_tokens = 64 are the spec's own keys)
    (r"\b(?:accuracy|macro_f1|weighted_kappa|kappa|[a-z]+_(?:sd|se|shift|mean))\s*=\s*-?\d",
     "a raw key = value dump (e.g. accuracy_sd = 0.008)"),
    (r"\bnan\b|\bNaN\b", "a missing number shown as nan"),
    (r"largest relative shift [+-]?\d{3}", "a relative shift beside a control mean near 0"),
]


def _visible_html(path) -> str:
    t = path.read_text(encoding="utf-8")
    t = re.sub(r"<(script|style)\b.*?</\1>", " ", t, flags=re.S)
    t = re.sub(r"<pre\b.*?</pre>", " ", t, flags=re.S)  # the provenance appendix shows the spec and commands verbatim
    t = re.sub(r'(src|href)="[^"]*"', "", t)
    return html.unescape(re.sub(r"<[^>]+>", " ", t))


def _markdown(path) -> str:
    return re.sub(r"```.*?```", " ", path.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    return golden_demo_run(tmp_path_factory.mktemp("reader-text"))


@pytest.mark.parametrize("name", ["report.md", "report.html"])
def test_rendered_report_has_no_exception_vocabulary(demo_run, name):
    text = _markdown(demo_run / name) if name.endswith(".md") else _visible_html(demo_run / name)
    hits = []
    for pattern, what in FORBIDDEN:
        for m in re.finditer(pattern, text):
            hits.append(f"{what}: ...{text[max(0, m.start() - 60):m.end() + 40]!r}")
    assert not hits, "\n".join(hits[:10])
    # the constant refusal rate is still explained, as a finding
    assert "every reply had the same value (0), so there is no difference between groups to test" in text


def test_invariance_is_a_tested_hypothesis_with_its_number(demo_run):
    md = (demo_run / "report.md").read_text(encoding="utf-8")
    line = next(ln for ln in md.splitlines() if "Scorer invariance" in ln)
    assert re.search(r"hypothesis that identical replies get the same score .* is (kept|rejected); \d+ of \d+ cells "
                     r"shift \(Holm-adjusted p &?l?t?;?<? ?0\.05\)", line.replace("&lt;", "<")), line


def test_validity_figures_are_a_table(demo_run):
    md = (demo_run / "report.md").read_text(encoding="utf-8")
    head = re.search(r"^\| measure \| accuracy \(mean ± sd over folds\) \|.*\|$", md, flags=re.M)
    assert head, "the EPITOME validation figures must be a table"
    rows = re.findall(r"^\| (ER|IP|EX) \| (\d\.\d{3}) ± (\d\.\d{3}) \|", md, flags=re.M)
    assert {r[0] for r in rows} == {"ER", "IP", "EX"}
