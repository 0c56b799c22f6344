"""Issue 26: the rating loop and the headline on a release without a control, through the CLI.

The fixture (tests/observational_release.py) is shaped like the release the issue was found on:
observational (each post under one race only), no control, unequal groups (30 and 54 posts), replies
holding quotes, commas, semicolons, tabs and newlines, and a scorer that over-states the "Black" group's
gap (the simulated raters rate those replies a level above it). The loop runs as a user runs it:
import -> score -> ratings packet -> fill the CSV in a spreadsheet -> ratings import -> report (refused:
the analysis predates the ratings) -> analyze -> report. Each test names the row of the issue's table
(D1-D10) whose failure it pins down; each failed on the code before the issue.
"""

from __future__ import annotations

import csv
import json
import re

import pandas as pd
import pytest

from audit.cli import main as cli_main
from audit.report.browser import check_page, find_chromium
from audit.store import RunStore
from observational_release import GROUPS, UNDER_SCORED, human_truth, write_release
from ratings_sim import fill_csv, item_keys

N_RATED = 50


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("observational")
    spec = write_release(tmp / "release")
    run, packet = tmp / "run", tmp / "packet"
    steps: dict[str, tuple[int, str, str]] = {}

    def step(name: str, *args: str) -> None:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main([str(a) for a in args])
        steps[name] = (rc, out.getvalue(), err.getvalue())

    step("import", "import", "--spec", spec, "--out", run)
    step("score", "score", run)
    step("analyze-automated", "analyze", run)  # the automated gaps first, as a user looks before rating
    step("packet", "ratings", "packet", run, "--n", N_RATED, "--raters", 1, "--seed", 4, "--out", packet)
    truth = human_truth(run)
    # the rater fills the CSV in a spreadsheet, which saves it quoting only where needed (QUOTE_MINIMAL)
    filled = fill_csv(run, packet, "r1", truth, tmp / "r1-filled.csv")
    step("ratings-import", "ratings", "import", run, filled, "--rater", "r1")
    step("report-before-analyze", "report", run)
    step("analyze", "analyze", run)
    step("report", "report", run)
    return dict(run=run, packet=packet, truth=truth, steps=steps, filled=filled)


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """The same release with the ratings stored straight into the run store (no packet, no CSV), so that
    each later step (report, analyze, ...) is checked on its own, whatever the packet step does."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("observational-direct")
    run = tmp / "run"
    steps: dict[str, tuple[int, str, str]] = {}

    def step(name: str, *args) -> None:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main([str(a) for a in args])
        steps[name] = (rc, out.getvalue(), err.getvalue())

    step("import", "import", "--spec", write_release(tmp / "release"), "--out", run)
    step("score", "score", run)
    step("analyze-automated", "analyze", run)
    truth = human_truth(run)
    with RunStore(run, create=False) as st:
        rep = st.replies_df()
        chosen = [k for _, d in rep.groupby("group") for k in sorted(d["request_key"])[:N_RATED // 2]]
        st.put_ratings([(f"it{i:04d}", k, "r1", m, truth(k, m), None, None, "0" * 64, "direct")
                        for i, k in enumerate(chosen) for m in ("ER", "IP", "EX")])
    step("report-before-analyze", "report", run)
    step("analyze", "analyze", run)
    step("report", "report", run)
    return dict(run=run, steps=steps, truth=truth)


def _results(loop) -> dict:
    return json.loads((loop["run"] / "results.json").read_text(encoding="utf-8"))


def test_the_whole_loop_runs_through_the_cli(loop):
    for name in ("import", "score", "analyze-automated", "packet", "ratings-import", "analyze", "report"):
        rc, out, err = loop["steps"][name]
        assert rc == 0, (name, err)
    assert "Observational design" in loop["steps"]["import"][1]


# --------------------------------------------------------------------------- D1, D2: the packet and its CSV


def test_d1_a_packet_of_a_run_without_a_control_shows_each_post_as_written(loop):
    keys = item_keys(loop["run"], "r1")
    rows = list(csv.DictReader((loop["packet"] / "r1" / "ratings.csv").open(encoding="utf-8", newline="")))
    assert len(rows) == N_RATED
    with RunStore(loop["run"], create=False) as st:
        rep = st.replies_df().set_index("request_key")
        v = st.variants_df().set_index("variant_id")
    for row in rows[:10]:
        key = keys[row["item_id"]]
        written = v.loc[rep.loc[key, "variant_id"], "text"]
        assert row["post"] == written and row["reply"] == rep.loc[key, "reply"]
    # both groups are in the packet (equal allocation over the strata), although the groups are unequal
    strata = {rep.loc[keys[r["item_id"]], "group"] for r in rows}
    assert strata == set(GROUPS)


def test_d2_the_filled_csv_with_quotes_and_newlines_imports_every_item(loop):
    text = loop["filled"].read_text(encoding="utf-8")
    assert '""' in text and ";" in text and "\n\n" in text  # the texts hold quotes, semicolons, newlines
    rc, out, _ = loop["steps"]["ratings-import"]
    assert rc == 0 and f"{N_RATED} items read (csv)" in out and f"{N_RATED} rated" in out
    with RunStore(loop["run"], create=False) as st:
        h = st.human_ratings_df()
    assert h["request_key"].nunique() == N_RATED and len(h) == 3 * N_RATED
    truth = loop["truth"]
    assert all(v == truth(k, m) for k, m, v in zip(h["request_key"], h["measure"], h["value"]))


# --------------------------------------------------------------------------- D3: the headline leads with the corrected gap


def test_d3_results_json_leads_with_the_corrected_gap_from_results_ppi(loop):
    r = _results(loop)
    head = r["headline"]
    res = head["result"]
    assert res["kind"] == "corrected" and res["source"] == "results_ppi"
    assert res["outcome"] == head["primary_outcome"] == "epitome.ER"  # strongest evidence (macro-F1), not the composite
    assert head["lead"] == head["sentences"][0] and head["lead"].startswith(f"Corrected with {N_RATED} human ratings")
    ppi = pd.DataFrame(r["results_ppi"])
    rows = ppi[(ppi["outcome"] == res["outcome"]) & (ppi["group"] == res["group"])].set_index("kind")
    assert res["estimate"] == pytest.approx(rows.loc["ppi", "estimate"], abs=1e-12)
    assert res["automated"]["estimate"] == pytest.approx(rows.loc["automated", "estimate"], abs=1e-12)
    assert res["group"] == UNDER_SCORED and res["reference"] == "White"
    # the lead's numbers are the stored result's, rounded as shown
    nums = [float(x) for x in re.findall(r"[-+]?\d+\.\d+", head["lead"])]
    shown = [abs(res["estimate"]), res["ci_low"], res["ci_high"], abs(res["automated"]["estimate"]),
             res["automated"]["ci_low"], res["automated"]["ci_high"]]
    assert nums == [round(x, 2) for x in shown]
    # the automated gap beside it is labelled as such
    assert "the automated scores alone say" in head["lead"]


def test_the_scorer_over_states_the_gap_and_the_correction_recovers_the_human_scale(loop):
    """The planted truth: humans rate the under-scored group a level above the scorer. The automated gap
    misses the human-scale gap of all replies, the corrected CI covers it."""
    r = _results(loop)["headline"]["result"]
    with RunStore(loop["run"], create=False) as st:
        rep = st.replies_df()
    truth = loop["truth"]
    mean = {g: sum(truth(k, "ER") for k in d["request_key"]) / len(d) for g, d in rep.groupby("group")}
    true_gap = mean[UNDER_SCORED] - mean["White"]
    assert r["ci_low"] <= true_gap <= r["ci_high"]
    assert not r["automated"]["ci_low"] <= true_gap <= r["automated"]["ci_high"]
    assert abs(r["automated"]["estimate"]) > abs(r["estimate"]) + 0.3  # the scorer over-states the gap


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (bash tests/system-deps.sh)")
def test_d3_d4_the_first_screen_carries_the_corrected_gap_from_the_same_stored_result(loop):
    page = check_page(loop["run"] / "report.html", width=1280, height=900, first_screen=True)
    assert page.loaded and not page.console_errors
    first = page.text.split("Contents", 1)[0]
    r = _results(loop)
    head, res = r["headline"], r["headline"]["result"]
    assert head["lead"] in first  # the lead sentence, word for word
    assert page.boxes["headline"]["top"] < 900
    # every number of the first screen's headline box and group table is the stored result's
    box = first[first.index("Model:"):]
    lead_nums = [float(x) for x in re.findall(r"[-+]?\d+\.\d+", head["lead"])]
    table = first[first.index("\ngroup\t"):]
    black = table.split(f"\n{UNDER_SCORED}\t", 1)[1].split("\nWhite\t", 1)[0]  # a cell's CI is on its own line
    cells = [float(x) for x in re.findall(r"[-+]?\d+\.\d+", black)]
    assert cells == lead_nums  # corrected gap and CI, then the automated gap and CI
    white = table.split("\nWhite\t", 1)[1].split("\n", 1)[0]
    assert white == "reference group\treference group"  # the reference group, named once as such
    # D4: the design is stated, and no control is mentioned where none exists
    assert "Not a counterfactual comparison. Observational design" in box
    assert "control" not in box.replace("no control", "")
    assert "vs “White” (reference group)" in first


# --------------------------------------------------------------------------- D4: the text matches the design


def test_d4_no_control_is_mentioned_and_limitations_state_the_design(direct):
    md = (direct["run"] / "report.md").read_text(encoding="utf-8")
    first = md.split("## 1. Summary", 1)[0]
    assert "+ control" not in first and "unmodified posts" not in first and "control mean" not in md
    assert "Observational design" in first and "differs significantly from the reference group “White”" in first
    lim = md.split("Limitations", 2)[-1]
    assert "Not a counterfactual comparison." in lim and "Observational design" in lim
    html = (direct["run"] / "report.html").read_text(encoding="utf-8")
    assert 'id="limitations-design"' in html and "versus the control" not in html


# --------------------------------------------------------------------------- D5: per-group scorer error between posts


def test_d5_the_scorer_error_test_runs_between_posts_and_finds_the_planted_bias(direct):
    hr = _results(direct)["human_ratings"]
    tests = {(t["scorer"], t["measure"]): t for t in hr["group_test"]}
    ex = tests[("epitome", "EX")]
    assert ex["method"] == "between-post cluster bootstrap" and ex["differs"] is True and ex["p_holm"] < 0.05
    assert ex["lowest_group"] == UNDER_SCORED
    assert ex["difference_ci_low"] > 0  # highest - lowest mean error: a CI away from 0
    assert not any("Too few rated replies per group and post" in s for s in hr["sentences"])


# --------------------------------------------------------------------------- D6: a stale analysis is refused


def test_d6_a_report_right_after_ratings_import_refuses_with_the_command(direct):
    assert direct["steps"]["analyze-automated"][0] == 0 and direct["steps"]["report"][0] == 0
    rc, _, err = direct["steps"]["report-before-analyze"]
    assert rc == 2 and "predates the human ratings" in err and f"empathy-audit analyze {direct['run']}" in err


# --------------------------------------------------------------------------- D7, D8: disparities and examples


def test_d7_the_between_group_disparity_is_computed_without_a_control(direct):
    d = pd.DataFrame(_results(direct)["results_disparity"])
    ex = d[d["outcome"] == "epitome.EX"].iloc[0]
    assert ex["estimate"] > 0.5 and ex["min_group"] == UNDER_SCORED and ex["p_value"] < 0.05
    assert "between posts" in ex["method"]
    md = (direct["run"] / "report.md").read_text(encoding="utf-8")
    assert "No between-group disparities are stored" not in md


def test_d8_examples_show_the_replies_of_a_run_without_a_control(direct):
    html = (direct["run"] / "report.html").read_text(encoding="utf-8")
    examples = html.split('<section id="examples">', 1)[1].split("</section>", 1)[0]
    assert "No replies are stored" not in examples
    assert examples.count('<div class="reply">') >= 2
    assert "no control: the post as written" in examples
    for g in GROUPS:
        assert f"<h4>{g}</h4>" in examples


# --------------------------------------------------------------------------- D9: analyze RUN_DIR


def test_d9_analyze_prints_the_design_and_the_corrected_lines(direct):
    rc, out, _ = direct["steps"]["analyze"]
    assert rc == 0
    assert "design: Observational design: each of the 84 posts appears under one group only" in out
    assert "headline (as the report leads): Corrected with" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("epitome.EX Black vs White: corrected"))
    assert "automated" in line and "human-only" in line and f"{N_RATED} rated of 84" in line
    row = next(x for x in out.splitlines() if x.startswith("epitome.EX ") and " Black " in x)
    posts, clusters = row.split()[-2:]
    assert (int(posts), int(clusters)) == (GROUPS["Black"], sum(GROUPS.values()))


# --------------------------------------------------------------------------- D10: power with unequal arms, validity


def test_d10_power_from_the_run_uses_its_unequal_arms(direct, capsys):
    rc, out, err = _cli(capsys, "power", direct["run"], "--ratings-ci", "0.4", "--from", direct["run"], "--json")
    assert rc == 0, err
    plan = json.loads(out)
    assert plan["replies"] == 84 and plan["share"] == pytest.approx(GROUPS["Black"] / 84)
    assert "Black 30" in plan["source"] and "White 54" in plan["source"]


def test_d10_limitations_say_what_the_headline_measure_rests_on(direct):
    lim = _results(direct)["limitations"]
    text = " ".join(lim["headline_measure_validity"])
    assert "human peer replies" in text and f"against {N_RATED} human-rated replies" in text
    assert not any("validated (" in s for s in lim["scorer_validity"])


# --------------------------------------------------------------------------- D1 on a mixed design


def test_d1_a_mixed_release_shows_the_control_text_where_there_is_one_and_the_post_as_written_elsewhere(tmp_path):
    rows = []
    for i in range(12):
        post = f"Post {i}: I can't \"cope\", honestly;\nwhat now?"
        groups = ["control", "Black", "White"] if i < 6 else [["Black", "White"][i % 2]]
        for g in groups:
            text = post if g == "control" else f"As a {g} woman, {post}"
            rows.append(dict(post_id=f"M{i:02d}", group=g, text=text, reply=f"Reply to {i} ({g}): \"okay\", 1;2"))
    pd.DataFrame(rows).to_csv(tmp_path / "mixed.csv", index=False)
    run = tmp_path / "run"
    assert cli_main(["import", str(tmp_path / "mixed.csv"), "--out", str(run), "--post-id", "post_id", "--variant",
                     "text", "--reply", "reply", "--group", "group"]) == 0
    from audit.ratings import make_packet
    from audit.ratings.packet import rateable_replies

    with RunStore(run, create=False) as st:
        rep = rateable_replies(st)
        v = st.variants_df()
    control = dict(zip(v.loc[v["cue_type"] == "control", "post_id"], v.loc[v["cue_type"] == "control", "text"]))
    own = dict(zip(v["variant_id"], v["text"]))
    for r in rep.to_dict("records"):
        assert r["shown_post"] == (control[r["post_id"]] if r["post_id"] in control else own[r["variant_id"]])
    assert {r["post_id"] for r in rep.to_dict("records") if r["post_id"] not in control}  # some without a control
    p = make_packet(run, n=len(rep), raters=1, out=tmp_path / "packet", seed=1)
    assert len(p.items) == len(rep)


def test_d3_with_ratings_stored_results_json_and_the_markdown_first_screen_lead_with_the_corrected_gap(direct):
    r = _results(direct)
    head = r["headline"]
    assert head["result"]["kind"] == "corrected" and head["lead"].startswith(f"Corrected with {N_RATED} human ratings")
    md = (direct["run"] / "report.md").read_text(encoding="utf-8").split("## 1. Summary", 1)[0]
    assert f"**{head['lead']}**" in md and "| group | corrected vs" in md
