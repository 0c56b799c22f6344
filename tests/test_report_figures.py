"""Figures that never mislead (issue 20), checked on the matplotlib Figure objects before they are
saved, for the demo design (golden server) and the synthetic store:

- no warning is emitted while drawing (``warnings`` as errors);
- no panel is empty: every visible axes has data or says why not ("not estimable: <reason>");
- every gap axis is symmetric around 0, with the no-gap line and a unit in its label;
- every colour comes from the one colour-blind-safe palette (or is a grey), a cue type has the
  same colour in every figure;
- the alt text of every figure is a sentence built from the data, in the HTML and the Markdown.
"""

from __future__ import annotations

import gc
import re
import warnings
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from audit.report import render
from audit.report.data import collect
from audit.report.figures import (NOTE_GID, REFERENCE_GID, FigureOut, cue_colour, draw_figures, palette,
                                  panel_problems)
from demo_run import golden_demo_run
from synthetic_store import fill_store


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return golden_demo_run(tmp_path_factory.mktemp("figures-demo"))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return fill_store(tmp_path_factory.mktemp("figures-synthetic") / "run")


@pytest.fixture(scope="module")
def drawn(demo, synthetic):
    """{name: (data, figures)}, every figure drawn with warnings turned into errors."""
    out = {}
    gc.collect()  # sockets of the finished golden-server run must not warn inside the block below
    for name, run in (("demo", demo), ("synthetic", synthetic)):
        data = collect(run)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out[name] = (data, draw_figures(data, strict=True))
    return out


def _by_id(figs: list[FigureOut]) -> dict[str, FigureOut]:
    return {f.id: f for f in figs}


@pytest.mark.parametrize("design", ["demo", "synthetic"])
def test_every_figure_draws_without_warnings_and_no_panel_is_empty(drawn, design):
    _, figs = drawn[design]
    drawn_figs = [f for f in figs if f.figure is not None]
    # the demo has no inference probe; everything else is drawn
    expected = {"fig-forest-primary", "fig-distributions", "fig-forest", "fig-intersectional", "fig-refusals"}
    assert expected <= {f.id for f in drawn_figs}
    for f in drawn_figs:
        assert f.data_uri and f.data_uri.startswith("data:image/png;base64,")
        assert panel_problems(f) == [], f.id
    if design == "synthetic":
        assert _by_id(figs)["fig-probe"].figure is not None


def test_the_unestimable_panel_says_why(drawn):
    """The issue's case: refusal never varies in the demo, so its gaps cannot be estimated. Its panel
    says so in words (with the fit's reason) instead of an empty axis from -0.04 to 0.04."""
    data, figs = drawn["demo"]
    forest = _by_id(figs)["fig-forest"].figure
    panel = next(ax for ax in forest.axes if ax.get_visible() and ax.get_title() == "refusal rate")
    notes = [t.get_text() for t in panel.texts if t.get_gid() == NOTE_GID]
    # the reason as a finding (issue 29), not the library's "outcome 'value' is constant ... Choose an outcome"
    assert notes and notes[0].startswith("not estimable:")
    assert "every reply had the same value (0)" in notes[0].replace("\n", " ") and "Choose" not in notes[0]
    assert not [ln for ln in panel.lines if ln.get_gid() != REFERENCE_GID]
    # the alt text names it too
    assert "not estimable: refusal rate" in _by_id(figs)["fig-forest"].alt
    # the refusal bar chart: every bar has height 0, so the panel says what that means
    ref = _by_id(figs)["fig-refusals"].figure.axes[0]
    assert any(t.get_gid() == NOTE_GID and "no reply was flagged as a refusal" in t.get_text().replace("\n", " ")
               for t in ref.texts)


def test_the_checker_is_not_blind():
    """An axes with a title, tick labels and the reference line but no data is reported empty."""
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    ax1.set_title("Interpretations")
    ax1.set_yticks([0, 1], ["Asian man", "Black man"])
    ax1.axvline(0, gid=REFERENCE_GID)
    ax2.set_title("ok")
    ax2.plot([0.1], [0], marker="o")
    assert panel_problems(FigureOut("fig-x", "x", "", "", figure=fig)) == ["fig-x: panel 'Interpretations' is empty"]
    ax1.text(0.5, 0.5, "not estimable: constant outcome", gid=NOTE_GID)
    assert panel_problems(FigureOut("fig-x", "x", "", "", figure=fig)) == []


@pytest.mark.parametrize("design", ["demo", "synthetic"])
def test_gap_axes_are_symmetric_with_the_reference_line_and_a_unit(drawn, design):
    _, figs = drawn[design]
    for fid in ("fig-forest", "fig-forest-primary"):
        fig = _by_id(figs)[fid].figure
        checked = 0
        for ax in fig.axes:
            if not ax.get_visible() or any(t.get_gid() == NOTE_GID for t in ax.texts):
                continue
            lo, hi = ax.get_xlim()
            assert hi > 0 and abs(lo + hi) <= 1e-9 * hi, (fid, ax.get_title(), lo, hi)
            ref = [ln for ln in ax.lines if ln.get_gid() == REFERENCE_GID]
            assert ref and set(np.asarray(ref[0].get_xdata(), float)) == {0.0}
            assert re.search(r"\((% of the \w+ mean|% of the comparison mean|percentage points|points.*)\)$",
                             ax.get_xlabel()), ax.get_xlabel()
            # every interval lies within the axis
            for ln in ax.lines:
                x = np.asarray(ln.get_xdata(), float)
                assert np.all((x >= lo) & (x <= hi)), (fid, ax.get_title())
            checked += 1
        assert checked >= 1


def _colours(fig: Figure) -> set[tuple[float, float, float]]:
    out = set()
    for ax in fig.axes:
        for ln in ax.lines:
            if ln.get_gid() != REFERENCE_GID:
                out.add(tuple(round(c, 3) for c in to_rgb(ln.get_color())))
        for p in ax.patches:
            out.add(tuple(round(c, 3) for c in to_rgb(p.get_facecolor())))
    return out


@pytest.mark.parametrize("design", ["demo", "synthetic"])
def test_one_colour_blind_safe_palette_and_one_colour_per_cue_type(drawn, design):
    _, figs = drawn[design]
    allowed = {tuple(round(c, 3) for c in rgb) for rgb in palette()}
    for fid in ("fig-forest", "fig-forest-primary", "fig-distributions", "fig-refusals", "fig-probe"):
        f = _by_id(figs).get(fid)
        if f is None or f.figure is None:
            continue
        for rgb in _colours(f.figure):
            grey = max(rgb) - min(rgb) < 0.02
            assert grey or rgb in allowed, (fid, rgb)
    # the same cue type, the same colour: explicit tag in the forest plot and in the box plots
    tag = tuple(round(c, 3) for c in cue_colour("explicit_tag"))
    for fid in ("fig-forest", "fig-distributions", "fig-refusals"):
        assert tag in _colours(_by_id(figs)[fid].figure), fid
    assert cue_colour("control") == cue_colour("pooled") != cue_colour("explicit_tag") != cue_colour("implicit_name")


def test_alt_text_is_built_from_the_data(drawn):
    data, figs = drawn["demo"]
    res = data.results
    ctrl = res[(res["reference"] == "control") & (res["style"] == "pooled")]
    est = pd.to_numeric(ctrl["estimate"], errors="coerce")
    finite = ctrl[est.notna()]
    lo, hi = pd.to_numeric(finite["ci_low"]), pd.to_numeric(finite["ci_high"])
    excl = int(((lo > 0) | (hi < 0)).sum())
    alt = _by_id(figs)["fig-forest"].alt
    assert f"{excl} of {len(finite)} 95% intervals exclude 0" in alt, alt
    assert f"for {ctrl['group'].nunique()} groups" in alt
    primary = _by_id(figs)["fig-forest-primary"].alt
    # the default primary outcome: the measure with the strongest validity evidence (issue 26), not the composite
    assert primary.startswith("Forest plot of Emotional Reactions") and "versus the control" in primary
    assert re.search(r"\d+ of \d+ intervals exclude 0", primary)
    assert "0 of 102 answered replies were refusals" in _by_id(figs)["fig-refusals"].alt


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.alts: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.alts.append(dict(attrs).get("alt"))


def test_every_image_has_alt_text_in_html_and_markdown(synthetic):
    paths = render(synthetic)
    p = _Imgs()
    p.feed(paths["html"].read_text(encoding="utf-8"))
    assert len(p.alts) == 6 and all(a and len(a.split()) >= 8 for a in p.alts), p.alts
    md = paths["markdown"].read_text(encoding="utf-8")
    md_alts = re.findall(r"!\[([^\]]*)\]\(figures/", md)
    assert len(md_alts) == 6 and all(len(a.split()) >= 8 for a in md_alts)
