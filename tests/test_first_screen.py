"""The first screen of the demo report answers the question (issue 20): in headless Chromium at
1280x900, the headline box, the group table and the forest plot of the primary outcome lie within
the first screen; the screenshot is kept as test-artifacts/first-screen.png. The Markdown report
leads in the same order, and the primary forest plot has a symmetric axis."""

from __future__ import annotations

import json
import re
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


# ----------------------------------------------------------------------------- how sure (issue 29)

_SENTENCE = re.compile(
    r"(?P<est>\d+\.\d+)(?P<pct>%)? ?(?P<unit>percentage points|points)? (?:higher|lower|different \(no gap\))"
    r"(?: than [^\n(]*?)?\s*\((?P<label>Holm-consistent [\d.]+% CI|95% CI, unadjusted|95% CI) "
    r"(?P<lo>[+-]?\d+\.\d+)%? to (?P<hi>[+-]?\d+\.\d+)%?(?: percentage points| points)?; Holm p = (?P<p>< 0\.001|[\d.]+)")
_CELL = re.compile(r"(?:higher|lower|different \(no gap\))(?: than [^\n|]*?)?(?:\n|; )\s*(?P<lo>[+-]\d+\.\d+)(?P<pct>%)? to "
                   r"(?P<hi>[+-]\d+\.\d+)%?; p = (?P<p>< 0\.001|[\d.]+)")
_CAPTION = re.compile(r"Intervals(?: of the automated gaps)?: (?P<label>Holm-consistent [\d.]+% CI) in (?P<unit>[^,]+), which excludes 0 exactly "
                      r"when the Holm p is below 0.05")


def _p(text: str) -> float:
    return 0.0 if text.startswith("<") else float(text)


def _first_screen_intervals(text: str) -> list[dict]:
    """The headline's reference-group sentence, then every interval of the group table, as
    (unit, label, lo, hi, Holm p); the table's label and unit come from its caption."""
    out = []
    for m in _SENTENCE.finditer(text):
        unit = "relative %" if m.group("pct") else m.group("unit")
        out.append(dict(unit=unit, label=m.group("label"), lo=float(m.group("lo")), hi=float(m.group("hi")),
                        p=_p(m.group("p"))))
    cap = _CAPTION.search(text)
    assert cap, "the group table must say what its intervals are"
    unit = {"points on the 0–2 scale": "points"}.get(cap.group("unit").strip(), cap.group("unit").strip())
    for m in _CELL.finditer(text):
        out.append(dict(unit="relative %" if m.group("pct") else unit, label=cap.group("label"),
                        lo=float(m.group("lo")), hi=float(m.group("hi")), p=_p(m.group("p"))))
    return out


def _check_interval(iv: dict, alpha: float = 0.05) -> None:
    assert iv["label"].startswith("Holm-consistent"), f"an interval beside a Holm p must be Holm-consistent: {iv}"
    assert iv["lo"] <= iv["hi"]
    excludes_zero = iv["lo"] > 0 or iv["hi"] < 0
    assert excludes_zero == (iv["p"] < alpha), f"interval contradicts its Holm p: {iv}"
    # within what the quantity can take: overall empathy is on a 0-2 scale, shares in percentage points
    # lie within +-100, a relative gap of a non-negative outcome is at least -100%
    bound = {"points": 2.0, "percentage points": 100.0}.get(iv["unit"])
    assert iv["unit"] in ("points", "percentage points", "relative %"), iv
    if bound is not None:
        assert -bound <= iv["lo"] and iv["hi"] <= bound, iv
    else:
        assert iv["lo"] >= -100.0, iv


def test_markdown_first_screen_intervals_agree_with_their_p_values_and_results_json(demo_run):
    md = (demo_run / "report.md").read_text(encoding="utf-8")
    head = md[:md.index("## 1. Summary")]
    shown = _first_screen_intervals(head)
    doc = json.loads((demo_run / "results.json").read_text(encoding="utf-8"))
    groups = doc["headline"]["groups"]
    stored = [r[f"vs_{k}_interval"] for r in groups for k in ("control", "reference") if r.get(f"vs_{k}_interval")]
    # every group row's intervals (8 vs control, 6 vs their reference group) plus the headline's sentence
    assert len(stored) == 14 and len(shown) == 15, (len(stored), len(shown))
    for iv in shown:
        _check_interval(iv)
    table = shown[1:]  # the headline sentence first, then the table row by row
    for iv, js in zip(table, [r[f"vs_{k}_interval"] for r in groups for k in ("control", "reference")
                              if r.get(f"vs_{k}_interval")]):
        assert js["kind"] == iv["unit"]
        assert round(js["low"], 3) == pytest.approx(iv["lo"], abs=1e-9) and round(js["high"], 3) == pytest.approx(iv["hi"], abs=1e-9)
        assert (js["low"] > 0 or js["high"] < 0) == js["significant_holm"] == (js["p_holm"] < 0.05)


def test_results_json_intervals_stay_within_each_quantity_s_range(demo_run):
    doc = json.loads((demo_run / "results.json").read_text(encoding="utf-8"))
    width = {"epitome.ER": 2, "epitome.IP": 2, "epitome.EX": 2, "epitome.empathy": 2, "sentiment.compound": 2}
    for r in doc["results"]:
        o = r["outcome"]
        for lo_k, hi_k in (("ci_low", "ci_high"), ("ci_low_adj", "ci_high_adj")):
            lo, hi = r.get(lo_k), r.get(hi_k)
            if lo is None or hi is None:
                continue
            if o.endswith(">0") or o == "refusal.refusal":
                assert -1 <= lo <= hi <= 1, (o, lo_k, lo, hi)  # a share difference lies in [-1, 1]
            elif o in width:
                assert -width[o] <= lo <= hi <= width[o], (o, lo_k, lo, hi)
        if o != "sentiment.compound":  # every other outcome is non-negative
            for lo_k in ("rel_ci_low", "rel_ci_low_adj"):
                if r.get(lo_k) is not None:
                    assert r[lo_k] >= -1.0, (o, lo_k, r[lo_k])


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
def test_first_screen_in_chromium_no_interval_contradicts_its_p_value(demo_run):
    page = check_page(demo_run / "report.html", width=WIDTH, height=HEIGHT, first_screen=True)
    assert page.loaded and not page.console_errors
    text = page.text[:page.text.index("1. Summary")] if "1. Summary" in page.text else page.text
    shown = _first_screen_intervals(text)
    assert len(shown) == 15, text[:3000]
    for iv in shown:
        _check_interval(iv)
    doc = json.loads((demo_run / "results.json").read_text(encoding="utf-8"))
    stored = [r[f"vs_{k}_interval"] for r in doc["headline"]["groups"] for k in ("control", "reference")
              if r.get(f"vs_{k}_interval")]
    assert [(round(s["low"], 3), round(s["high"], 3)) for s in stored] == [(iv["lo"], iv["hi"]) for iv in shown[1:]]
    assert "0–2 scale" in text  # the scale stated with the first number


def test_no_smallest_detectable_gap_is_larger_than_the_scale(demo_run):
    """'Emotional Reactions: 2.14 points' on a 0-2 scale said nothing; such a gap is stated as none."""
    doc = json.loads((demo_run / "results.json").read_text(encoding="utf-8"))
    two_point = ("Emotional Reactions", "Interpretations", "Explorations", "overall empathy")
    for s in doc["summary"]["detectable_gaps"]:
        m = re.match(r"(.+?): (\d+(?:\.\d+)?) points", s)
        if m and m.group(1).startswith(two_point):
            assert float(m.group(2)) < 2.0, s
    assert any(": none; the smallest detectable gap" in s and "0–2 scale" in s for s in doc["summary"]["detectable_gaps"])


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
