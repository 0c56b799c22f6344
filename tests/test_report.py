"""The report, rendered from a synthetic store written through RunStore (no model, no other stage).

Checks: untrusted text stays text (HTML, Markdown, CSV, figure labels), results.json agrees with the
HTML results table, the report states what is absent instead of failing, provenance is complete,
and a copy of the store alone re-renders the same numbers.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest

from audit.report import render
from audit.report.findings import finding_sentence, fmt_p, gap_text, summarize
from synthetic_store import HOSTILE_REPLY, fill_store
from audit.store import RunStore


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    run_dir = fill_store(tmp_path_factory.mktemp("run") / "synthetic")
    paths = render(run_dir)
    return run_dir, paths


class _Tables(HTMLParser):
    """Collects every <table id=...> as a list of rows (each a list of cell texts) plus row attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[tuple[dict, list[str]]]] = {}
        self._table = None
        self._row = None
        self._attrs = None
        self._cell = None
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row, self._attrs = [], a
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append((self._attrs, self._row))
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _parse(html: str) -> _Tables:
    p = _Tables()
    p.feed(html)
    return p


# ----------------------------------------------------------------------------- escaping


def test_hostile_reply_is_escaped_in_html(rendered):
    run_dir, paths = rendered
    html = paths["html"].read_text(encoding="utf-8")
    # The hostile reply is an example reply (Black woman, explicit tag, post p01): shown, as text.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    assert "<script" not in html.lower()
    assert "onerror=" not in html.replace("&lt;img src=x onerror=", "")
    parsed = _parse(html)
    assert not [t for t, a in parsed.tags if t == "script"]
    assert all(a.get("src", "").startswith("data:image/png;base64,") for t, a in parsed.tags if t == "img")
    # Nothing in the page refers to another resource: no external link, stylesheet, font or script.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:|//|file:)""", html)
    assert "@import" not in html and "url(" not in html


def test_hostile_text_is_escaped_in_markdown_and_csv(rendered):
    run_dir, paths = rendered
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "<script>" not in md and "<img" not in md
    assert "&lt;script&gt;alert\\(1\\)" in md or "&lt;script&gt;alert(1)" in md
    with open(run_dir / "tables" / "replies.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert any(r["reply"] == HOSTILE_REPLY for r in rows), "CSV keeps the reply verbatim (it is data)"


def test_csv_neutralises_spreadsheet_formulas(tmp_path):
    run_dir = fill_store(tmp_path / "run")
    with RunStore(run_dir) as store:
        key = store.replies_df().query("status == 'ok'").iloc[0]["request_key"]
        store.conn.execute("UPDATE replies SET text=? WHERE request_key=?", ("=HYPERLINK(\"http://x\")", key))
    render(run_dir, figures=False)
    with open(run_dir / "tables" / "replies.csv", newline="", encoding="utf-8") as fh:
        rows = {r["request_key"]: r for r in csv.DictReader(fh)}
    assert rows[key]["reply"] == "'=HYPERLINK(\"http://x\")"
    # numbers that start with '-' are left alone
    with open(run_dir / "tables" / "results.csv", newline="", encoding="utf-8") as fh:
        res = list(csv.DictReader(fh))
    assert any(r["estimate"].startswith("-") for r in res)


def test_figure_labels_are_literal_text(tmp_path):
    """A group name with $...$ (mathtext) and markup must neither crash the figures nor be interpreted."""
    run_dir = fill_store(tmp_path / "run")
    with RunStore(run_dir) as store:
        store.conn.execute("UPDATE variants SET group_name='$\\frac{1}{0}$ <b>x</b>' WHERE group_name='White man'")
        store.conn.execute("UPDATE results SET \"group\"='$\\frac{1}{0}$ <b>x</b>' WHERE \"group\"='White man'")
    paths = render(run_dir)
    html = paths["html"].read_text(encoding="utf-8")
    assert "Not shown: the figure could not be drawn" not in html
    assert "$\\frac{1}{0}$ &lt;b&gt;x&lt;/b&gt;" in html
    assert html.count('<img class="figure"') == 6   # five figures and the first screen's forest plot


# ----------------------------------------------------------------------------- content


def test_results_json_agrees_with_html_table(rendered):
    run_dir, paths = rendered
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    with RunStore(run_dir) as store:
        n_store = store.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert len(data["results"]) == n_store > 0
    rows = _parse(paths["html"].read_text(encoding="utf-8")).tables["results-table"]
    header = rows[0][1]
    body = rows[1:]
    assert len(body) == n_store
    col = {name: i for i, name in enumerate(header)}
    by_key = {(r["model_label"], r["outcome"], r["style"], r["cue_type"], r["group"], r["reference"]): r
              for r in data["results"]}
    checked = 0
    for attrs, cells in body:
        key = (attrs["data-model"], attrs["data-outcome"], attrs["data-style"], attrs["data-cue-type"],
               attrs["data-group"], attrs["data-reference"])
        j = by_key[key]
        for html_col, json_col in [("estimate", "estimate"), ("CI low", "ci_low"), ("CI high", "ci_high"),
                                   ("relative gap", "relative_gap"), ("p", "p_value"), ("p (Holm)", "p_holm"),
                                   ("p (BH)", "p_bh")]:
            shown = cells[col[html_col]]
            if j[json_col] is None:
                assert shown == "n/a"
                continue
            value = float(shown)
            tol = 0.5 * 10 ** -int(len(shown.split("e")[0].split(".")[1])) if "." in shown else 0.5
            if "e" in shown:
                tol *= 10 ** int(shown.split("e")[1])
            assert abs(value - j[json_col]) <= tol * 1.0001, (key, html_col, shown, j[json_col])
            checked += 1
        assert (cells[col["significant (Holm)"]] == "yes") == bool(j["significant_holm"])
        assert int(cells[col["n"]]) == j["n"]
    assert checked >= 7 * n_store - 10
    # Significant rows in the JSON are exactly those stated as findings in the summary.
    n_sig = sum(bool(r["significant_holm"]) for r in data["results"])
    assert data["summary"]["n_significant"] == n_sig
    assert len(data["summary"]["significant"]) == min(n_sig, 12)


def test_summary_states_findings_with_numbers(rendered):
    run_dir, paths = rendered
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    sig = [r for r in data["results"] if r["significant_holm"]]
    assert sig, "the synthetic store has a strong Black-woman effect on ER"
    text = " ".join(data["summary"]["significant"])
    er = [r for r in sig if r["outcome"] == "epitome.ER" and r["cue_type"] == "pooled" and r["group"] == "Black woman"]
    assert er
    pct = f"{abs(100 * er[0]['relative_gap']):.1f}% lower on Emotional Reactions"
    assert pct in text
    assert "Holm-adjusted p" in text
    # Non-significant gaps are stated too, and the smallest detectable gap.
    assert data["summary"]["not_significant"]
    assert data["summary"]["detectable_gaps"] and "power" in data["summary"]["detectable_gaps"][0]
    html = paths["html"].read_text(encoding="utf-8")
    for section in ("summary", "figures", "methods", "limitations", "examples", "provenance"):
        assert f'<section id="{section}">' in html
    order = [html.index(f'<section id="{s}">') for s in ("summary", "figures", "methods", "limitations",
                                                          "examples", "provenance")]
    assert order == sorted(order)


def test_embedded_warning_only_when_embedded_model_used(tmp_path):
    a = fill_store(tmp_path / "emb", embedded=True)
    b = fill_store(tmp_path / "remote", embedded=False)
    ha = render(a, figures=False)["html"].read_text(encoding="utf-8")
    hb = render(b, figures=False)["html"].read_text(encoding="utf-8")
    warning = "it is not a model worth auditing"
    assert warning in ha and "SmolLM2-135M-Instruct" in ha
    assert warning not in hb
    assert json.loads((a / "results.json").read_text())["limitations"]["embedded_model"]
    assert json.loads((b / "results.json").read_text())["limitations"]["embedded_model"] is None


def test_absent_stages_are_stated_not_fatal(tmp_path):
    run_dir = fill_store(tmp_path / "run", with_results=False, with_probe=False)
    paths = render(run_dir)
    html = paths["html"].read_text(encoding="utf-8")
    assert "No inference probe was run" in html
    assert 'id="no-results"' in html
    assert "Not shown: no analysis results are stored" in html
    assert "This report is incomplete" in html and "analysis" in html
    data = json.loads(paths["json"].read_text())
    assert data["results"] == [] and "analysis" in data["stages_missing"]
    # the figures that only need scores still render
    assert 'id="fig-distributions"' in html and html.count('<img class="figure"') == 2


def test_store_with_only_a_spec_renders(tmp_path):
    run_dir = fill_store(tmp_path / "full")
    bare = tmp_path / "bare"
    with RunStore(run_dir) as src, RunStore(bare) as dst:
        spec = src.latest_spec()
        dst.put_spec(spec)
    html = render(bare, figures=False)["html"].read_text(encoding="utf-8")
    assert "No replies are stored" in html and "This report is incomplete" in html


def test_failed_replies_are_counted_in_limitations(rendered):
    run_dir, paths = rendered
    with RunStore(run_dir) as store:
        failed = store.conn.execute("SELECT COUNT(*) FROM replies WHERE status='failed'").fetchone()[0]
        total = store.conn.execute("SELECT COUNT(*) FROM requests WHERE purpose='reply'").fetchone()[0]
    assert failed == 1
    html = paths["html"].read_text(encoding="utf-8")
    assert f"{total} requests: {total - failed} answered, 0 blocked by a content filter, {failed} failed" in html
    assert "HTTP 500 after 6 attempts" in html
    # Scorer validity states the validation figures the scorer recorded (epitome: under 'cv').
    # ... as figures on its own labelled data, not as a validation on this run's replies (issue 26, D10),
    # in a table like every other table, not a raw "accuracy = 0.700" dump (issue 29)
    assert ("epitome: agreement with human labels on its own labelled data, not on this run&#39;s replies "
            "(figures in the validation table under Methods)") in html and "validated (" not in html
    assert re.search(r"<td>ER</td><td class=\"num\">0\.700</td><td class=\"num\">0\.610</td><td class=\"num\">600</td>",
                     html), "the validation figures must be a table row"
    assert "length: no validation figures recorded" in html
    # and states the shortfalls the scorer declares, escaped like any stored text
    assert "<li>epitome: IP level 1 is never recognised &lt;in CV&gt;</li>" in html


def test_provenance_and_rerender_from_store_alone(rendered, tmp_path):
    run_dir, paths = rendered
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    prov = data["provenance"]
    assert re.fullmatch(r"[0-9a-f]{64}", prov["spec_hash"])
    assert re.fullmatch(r"[0-9a-f]{64}", prov["store_sha256"])
    assert prov["scorer_hashes"] == {"epitome (artifact_sha256)": "1" * 64}
    assert prov["reproduce"].startswith("empathy-audit run ")
    assert prov["tool_version_report"]
    # Only the store travels: the copy renders the same results and the same store hash.
    copy = tmp_path / "copy"
    copy.mkdir()
    with sqlite3.connect(run_dir / "store.sqlite") as src, sqlite3.connect(copy / "store.sqlite") as dst:
        src.backup(dst)
    again = json.loads(render(copy, figures=False)["json"].read_text(encoding="utf-8"))
    assert again["results"] == data["results"]
    assert again["provenance"]["store_sha256"] == prov["store_sha256"]
    assert again["summary"] == data["summary"]
    # Rendering does not write to the store.
    assert json.loads(render(copy, figures=False)["json"].read_text())["provenance"]["store_sha256"] == prov["store_sha256"]


def test_probe_and_cue_validity(rendered):
    run_dir, paths = rendered
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    rates = {(r["cue_type"], r["axis"]): r["leak_rate"] for r in data["probe_summary"]}
    with RunStore(run_dir) as store:
        k, n = store.conn.execute("SELECT SUM(correct), COUNT(correct) FROM probe WHERE cue_type='implicit_name'"
                                  " AND axis='race'").fetchone()
    assert rates[("implicit_name", "race")] == pytest.approx(k / n)
    html = paths["html"].read_text(encoding="utf-8")
    assert f"name, race: {100 * k / n:.0f}% inferred" in html


def test_tables_written(rendered):
    run_dir, _ = rendered
    names = {p.name for p in (run_dir / "tables").glob("*.csv")}
    assert {"results.csv", "results_paired.csv", "results_intersectional.csv", "results_power.csv",
            "analysis_meta.csv", "group_summary.csv", "reply_status.csv", "replies.csv"} <= names
    with open(run_dir / "tables" / "results.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(json.loads((run_dir / "results.json").read_text())["results"])


# ----------------------------------------------------------------------------- sentences


def _row(**kw):
    base = dict(outcome="epitome.ER", group="Black woman", cue_type="explicit_statement", style="pooled",
                reference="control", estimate=-0.11, ci_low=-0.15, ci_high=-0.07, ref_mean=1.0, relative_gap=-0.11,
                rel_ci_low=-0.15, rel_ci_high=-0.07, p_holm=0.0123)
    base.update(kw)
    return base


def test_finding_sentence_numbers():
    s = finding_sentence(_row())
    assert s == ("Replies to posts that signalled \u201cBlack woman\u201d through an explicit self-identification "
                 "scored 11.0% lower on Emotional Reactions than replies to the unmodified posts (control) "
                 "(95% CI, unadjusted -15.0% to -7.0%; Holm-adjusted p = 0.0123).")
    r = finding_sentence(_row(outcome="refusal.refusal", estimate=0.031, ci_low=0.01, ci_high=0.052, ref_mean=0.02,
                              p_holm=0.0004, cue_type="pooled"))
    assert "had a refusal rate 3.1 percentage points higher" in r and "Holm-adjusted p < 0.001" in r
    assert gap_text(_row(outcome="sentiment.compound", estimate=0.2, ci_low=0.1, ci_high=0.3))[0] == "0.200 points higher"
    assert fmt_p(float("nan")) == "n/a"
    lvl = finding_sentence(_row(outcome="epitome.ER>0", estimate=-0.25, ci_low=-0.4, ci_high=-0.1, ref_mean=0.6,
                                relative_gap=-0.41))
    assert "had a share of replies with any Emotional Reactions 25.0 percentage points lower" in lvl
    assert fmt_p(0.0496) == "0.0496" and fmt_p(0.0004) == "< 0.001" and fmt_p(0.5) == "0.500"


def test_summarize_separates_significant_and_not():
    import pandas as pd

    df = pd.DataFrame([_row(significant_holm=True, model_label="m", p_holm=0.01, cue_type="pooled"),
                       _row(significant_holm=False, model_label="m", p_holm=0.6, cue_type="pooled",
                            group="White man", relative_gap=0.02, rel_ci_low=-0.03, rel_ci_high=0.07)])
    out = summarize(df)
    assert out["n_tests"] == 2 and out["n_significant"] == 1
    assert len(out["significant"]) == 1 and "Black woman" in out["significant"][0]
    assert len(out["not_significant"]) == 1 and "White man" in out["not_significant"][0]
    assert "2.0% higher" in out["not_significant"][0]
    # One cue type: its pooled rows repeat it; each gap is stated once, the family size is unchanged.
    one = pd.concat([df, df.assign(cue_type="explicit_statement")], ignore_index=True)
    one.loc[2:, "cue_type"] = "explicit_statement"
    one.loc[:1, "cue_type"] = "pooled"
    out = summarize(one)
    assert out["n_tests"] == 4 and out["n_significant"] == 2
    assert len(out["significant"]) == 1 and "explicit self-identification" in out["significant"][0]
    assert len(out["not_significant"]) == 1 and "White man" in out["not_significant"][0]


def test_gaps_without_estimate_or_relative_gap():
    import pandas as pd

    nan = float("nan")
    df = pd.DataFrame([
        _row(model_label="m", significant_holm=False, cue_type="pooled", p_holm=0.9, estimate=0.3, ci_low=-0.1,
             ci_high=0.7, ref_mean=0.01, relative_gap=nan, rel_ci_low=nan, rel_ci_high=nan),
        _row(model_label="m", significant_holm=False, cue_type="pooled", outcome="refusal.refusal", estimate=nan,
             ci_low=nan, ci_high=nan, p_holm=nan, relative_gap=nan, warning="outcome is constant (0); no gap"),
    ])
    out = summarize(df)
    assert out["not_significant"] == [
        "Emotional Reactions: \u201cBlack woman\u201d: 0.300 points higher (95% CI, unadjusted -0.100 to +0.700 points; "
        "Holm p = 0.900)."]
    assert out["not_estimable"] == ["refusal rate: no gap could be estimated for \u201cBlack woman\u201d "
                                    "(outcome is constant (0))."]
