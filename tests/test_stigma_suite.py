"""The stigma suite end to end against the stub server: a reply hook answers by the vignette's stated
race (a planted effect), in varied formats, with "do not know", refusals and hostile text; the run
recovers the planted race gap, resumes without sending again, and its report renders in Chromium
with the untrusted answers shown as text."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from audit.errors import AuditError
from audit.pipeline import run
from audit.report.browser import check_page, find_chromium
from audit.spec import load_spec, spec_from_dict
from audit.store import RunStore
from audit.suites import get_suite
from audit.testing import StubServer

HOSTILE = "<script>alert(1)</script> B or C"


def _u(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def planted_reply(req, text: str) -> str:
    """African American vignettes: stigma with probability 0.8, others 0.2; fixed per prompt."""
    m = re.search(r"is an? (White|African American|Hispanic) (man|woman)", text)
    race = m.group(1) if m else "White"
    u = _u(text)
    if u < 0.04:
        return "E"
    if u < 0.06:
        return "I cannot answer that."
    if u < 0.07:
        return HOSTILE
    stigma = _u(text + "!") < (0.8 if race == "African American" else 0.2)
    if "How willing" in text:
        return ["A", "(B)", "Probably unwilling"][int(u * 30) % 3] if stigma else ["C", "d)", "Definitely willing"][int(u * 30) % 3]
    return ["C", "Very likely", "D."][int(u * 30) % 3] if stigma else ["A", "b", "Not very likely"][int(u * 30) % 3]


def _spec(base_url: str, **stigma):
    return spec_from_dict({"name": "stigma-stub", "suite": "stigma",
                           "models": [{"label": "stub", "base_url": base_url, "model": "stub-model"}],
                           "stigma": {"questions": ["work_closely", "live_next_door", "socialize", "marry_into_family",
                                                    "friend", "violent_others"], "n_boot": 300, **stigma}})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stigma") / "run"
    with StubServer(reply=planted_reply) as srv:
        spec = _spec(srv.base_url)
        first = run(spec, run_dir, progress=False, echo=None)
        sent = srv.count
        again = run(spec, run_dir, progress=False, echo=None)
        resent = srv.count - sent
    return run_dir, first, again, sent, resent


def test_the_suite_runs_its_stages_and_resumes_without_sending_again(finished):
    run_dir, first, again, sent, resent = finished
    assert get_suite("stigma").stage_names == ["stimuli", "generate", "parse", "analyze", "report"]
    assert first.ok and [s.name for s in first.stages] == get_suite("stigma").stage_names
    assert sent == 72 * 6 and resent == 0
    assert again.stage("generate").status == "skipped" and again.stage("parse").status == "skipped"
    assert again.stage("analyze").status == "skipped" and again.ok


def test_requests_follow_the_upstream_format(finished):
    run_dir = finished[0]
    with RunStore(run_dir) as store:
        reps = store.replies_df("reply")
    msgs = json.loads(reps["messages_json"].iloc[0])
    params = json.loads(reps["params_json"].iloc[0])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[0]["content"].startswith("You are an experienced, licensed clinical psychologist")
    assert msgs[0]["content"].endswith('by writing only the option letter (e.g. "A", "B", "C", "D", or "E").')
    assert msgs[2]["content"] == "A" and msgs[3]["content"].startswith("Vignette:\n")
    assert params["temperature"] == 0.0 and params["max_tokens"] == 10


def test_answers_are_parsed_coded_and_counted(finished):
    run_dir = finished[0]
    with RunStore(run_dir) as store:
        reps = store.replies_df("reply").set_index("request_key")
        sc = store.scores_df()
        parse = store.table_df("stigma_parse")
    sc = sc[sc["scorer"] == "stigma-parser"]
    ans = sc[sc["measure"] == "answer"].set_index("request_key")
    assert len(ans) == 432
    for key, row in ans.iterrows():
        detail = json.loads(row["detail"])
        text = reps.loc[key, "reply"]
        if text == "E":
            assert detail["status"] == "dont_know"
        elif text in ("I cannot answer that.", HOSTILE):
            assert detail["status"] == "unparseable" and detail["raw"] == text and pd.isna(row["value"])
        else:
            assert detail["status"] == "answered"
    n_bad = sum(t in ("I cannot answer that.", HOSTILE) for t in reps["reply"])
    assert int(parse.loc[parse["parse_status"] == "unparseable", "n"].sum()) == n_bad > 0


def test_the_planted_race_gap_is_found(finished):
    run_dir = finished[0]
    with RunStore(run_dir) as store:
        tests = store.table_df("stigma_tests")
        rates = store.table_df("stigma_rates")
    aa = tests[(tests.term == "race") & (tests.condition == "pooled") & (tests.group == "African American")].iloc[0]
    assert 0.45 < aa["estimate"] < 0.75 and aa["ci_low"] > 0.3 and bool(aa["significant_holm"])
    g = tests[(tests.term == "gender") & (tests.condition == "pooled")].iloc[0]
    assert g["ci_low"] < 0 < g["ci_high"]
    assert set(rates["condition"]) >= {"daily troubles", "schizophrenia", "all conditions but the control"}
    assert rates["human_rate"].notna().all()


def test_the_report_states_results_limits_and_escapes_answers(finished):
    run_dir = finished[0]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    for text in (html, md):
        assert "stated attitudes in a survey format, not behaviour in conversation" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert res["suite"] == "stigma" and res["summary"]["n_significant"] >= 1
    assert res["parse"]["unparseable"] > 0 and res["parse"]["dont_know"] > 0
    assert (run_dir / "tables" / "answers.csv").is_file() and (run_dir / "figures" / "stigma-forest.png").is_file()


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (bash tests/system-deps.sh)")
def test_the_stigma_report_renders_in_chromium(finished):
    r = check_page(finished[0] / "report.html")
    assert r.loaded and r.console_errors == [] and r.exceptions == []
    assert r.failed_requests == [] and r.external_requests == []
    ids = {i["id"] for i in r.images}
    assert {"fig-stigma-rates", "fig-stigma-forest"} <= ids
    for img in r.images:
        assert img["complete"] and img["width"] > 200 and img["height"] > 100, img
    assert r.script_elements == 0 and HOSTILE in r.text
    assert "African American" in r.text and "Unparseable answers" in r.text


def test_the_report_command_rerenders_a_stigma_run(finished):
    from audit.report import render

    paths = render(finished[0])
    assert "Stigma audit" in paths["html"].read_text(encoding="utf-8")


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (bash tests/system-deps.sh)")
def test_a_stigma_report_prints_to_pdf_and_a_later_render_drops_the_stale_pdf(finished, tmp_path):
    """render(pdf=True) of a stigma run prints its own report (not the empathy one); rendering again
    without pdf removes the PDF, which would no longer match the report beside it."""
    import shutil

    from audit.report import render

    run_dir = tmp_path / "run"
    shutil.copytree(finished[0], run_dir)
    paths = render(run_dir, pdf=True)
    pdf = paths["pdf"].read_bytes()
    assert paths["pdf"] == run_dir / "report.pdf" and pdf.startswith(b"%PDF-") and len(pdf) > 20_000
    assert "Stigma audit" in paths["html"].read_text(encoding="utf-8")
    render(run_dir)
    assert not (run_dir / "report.pdf").exists()


def test_own_vignettes_take_extra_template_axes(tmp_path):
    from audit.suites.stigma import build_stimuli

    spec = _spec("http://127.0.0.1:9/v1", stimuli="own", axes=["race", "gender", "religion"],
                 groups={"race": ["White", "Black"], "religion": ["Muslim", "Christian"], "education": ["college"]},
                 conditions=["depression"])
    f = build_stimuli(spec)
    assert len(f) == 2 * 2 * 2 * 6 and f["post_id"].nunique() == 8
    assert f["text"].str.contains("Laura is a Muslim Black woman who graduated from college.").any()
    assert not f["text"].str.contains(r"\{").any()


def test_bad_stigma_settings_are_one_clear_error():
    from audit.suites.stigma import build_stimuli

    with pytest.raises(AuditError, match="unknown stigma question 'friends'"):
        build_stimuli(_spec("http://x/v1", questions=["friends"]))
    with pytest.raises(AuditError, match="published vignettes vary race, gender and education only"):
        build_stimuli(_spec("http://x/v1", groups={"religion": ["Muslim"]}))
    with pytest.raises(AuditError, match="not a race of the published vignettes"):
        build_stimuli(_spec("http://x/v1", groups={"race": ["Black"]}))
    with pytest.raises(AuditError, match="'age' is not an audited axis"):
        build_stimuli(_spec("http://x/v1", stimuli="own", groups={"age": ["45"]}))
    with pytest.raises(AuditError, match="system_prompt_text"):
        spec_from_dict({"name": "x", "suite": "stigma", "stigma": {"system_prompt": "own"}})
    with pytest.raises(AuditError, match="only with suite: stigma"):
        spec_from_dict({"name": "x", "stigma": {}})


@pytest.mark.parametrize("name", ["stigma", "stigma-demo"])
def test_builtin_stigma_specs_load_and_build(name):
    from audit.suites.stigma import build_stimuli

    spec = load_spec(name)
    assert spec.suite == "stigma" and spec.decoding.temperature == 0
    f = build_stimuli(spec)
    assert len(f) == (1008 if name == "stigma" else len(f)) and len(f) > 0


def test_generate_refuses_a_stigma_spec(tmp_path):
    from audit.generate import generate

    with pytest.raises(AuditError, match="stigma suite"):
        generate(_spec("http://127.0.0.1:9/v1"), tmp_path / "run")


def test_a_reference_outside_the_design_is_an_error_and_empathy_specs_keep_their_hash():
    from audit.suites.stigma import build_stimuli

    with pytest.raises(AuditError, match="reference 'Black' is not a race level"):
        build_stimuli(_spec("http://x/v1", reference={"race": "Black"}))
    empathy = spec_from_dict({"name": "x"})
    assert empathy.suite == "empathy" and '"suite"' not in empathy.canonical_json
    assert '"suite":"stigma"' in _spec("http://x/v1").canonical_json
