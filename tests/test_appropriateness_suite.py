"""The appropriateness suite end to end against the stub server: the target's replies are scripted so
that conversations with a Black client's cue are handled appropriately far less often (a planted
group effect), and the judge (the same stub: the audited model judges by default) answers the
criterion by reading the scripted reply, in the shuffled option order it is shown, with some
unparseable and empty answers. The run's rates equal the rates computed from the script, the gap is
flagged, a rerun sends nothing, and the report renders in Chromium with replies shown as text."""

from __future__ import annotations

import hashlib
import json
import re

import pandas as pd
import pytest

from audit.appropriateness.stimuli import load_stimuli
from audit.errors import AuditError
from audit.pipeline import run
from audit.report.browser import check_page, find_chromium
from audit.spec import load_spec, spec_from_dict
from audit.store import RunStore
from audit.testing import StubServer

HOSTILE = "<script>alert(1)</script>"
LONG = "x" * 1500
WANT = {r["criterion"]: r["appropriate_answer"] for r in load_stimuli().to_dict("records")}


def _u(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _conversation(req) -> str:
    return json.dumps([m for m in req["messages"] if m["role"] != "system"], sort_keys=True)


def is_safe(conversation: str) -> bool:
    """The planted effect: a conversation whose cue says Black gets a safe reply with p = 0.3, others always."""
    black = "Black" in conversation
    return _u(conversation) < (0.3 if black else 1.01)


def judge_answer(prompt: str) -> str:
    """The stub judge: answers the criterion as the scripted reply deserves, by letter; a few answers
    are unparseable or empty (decided by the judged text)."""
    criterion = prompt.split("\n", 1)[0]
    options = re.findall(r"^([AB]): (yes|no)$", prompt, flags=re.M)
    reply = prompt.split("Response: ```\n", 1)[1]
    u = _u("judge" + reply)
    if u < 0.03:
        return "Maybe, it depends."
    if u < 0.05:
        return ""
    want = WANT[criterion]
    answer = want if reply.startswith("SAFE") else ("no" if want == "yes" else "yes")
    letter = next(lt for lt, o in options if o == answer)
    return [letter, f"({letter})", f"{letter}: {answer}", answer.capitalize() + "."][int(u * 40) % 4]


def stub_reply(req, text: str) -> str:
    if text.split("\n", 1)[0] in WANT:  # a judge request
        return judge_answer(text)
    conv = _conversation(req)
    body = "SAFE: let us slow down and talk about how you are feeling." if is_safe(conv) else \
        "UNSAFE: here are some options."
    body += f" [{hashlib.sha256(conv.encode()).hexdigest()[:8]}]"  # every reply its own text
    if _u("long" + conv) < 0.1:
        body += " " + LONG
    if _u("hostile" + conv) < 0.05:
        body += " " + HOSTILE
    return body


def _spec(base_url: str, **extra):
    cfg = {"contexts": ["none", "ours"], "prefixes": ["sleep", "new-city"], "n_boot": 300, **extra}
    return spec_from_dict({"name": "appr-stub", "suite": "appropriateness",
                           "models": [{"label": "stub", "base_url": base_url, "model": "stub-model"}],
                           "demographics": {"axes": ["race"], "groups": {"race": ["Black", "White"]},
                                            "cue_types": ["explicit_statement"], "alternatives": 2},
                           "appropriateness": cfg})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("appr")
    run_dir = base / "run"
    labels = pd.DataFrame({"judge": ["yes", "no"] * 10, "human_a": ["yes", "no"] * 10,
                           "human_b": ["yes", "no"] * 9 + ["no", "no"]})
    labels.to_csv(base / "labels.csv", index=False)
    with StubServer(reply=stub_reply) as srv:
        spec = _spec(srv.base_url, judge_validation={"data": str(base / "labels.csv")})
        first = run(spec, run_dir, progress=False, echo=None)
        sent = srv.count
        again = run(spec, run_dir, progress=False, echo=None)
        resent = srv.count - sent
    return run_dir, first, again, sent, resent


def _expected(store: RunStore) -> pd.DataFrame:
    """Per reply: what the script makes of it (safe; the judge's answer parseable)."""
    reps = store.replies_df("reply")
    rows = []
    for r in reps.to_dict("records"):
        msgs = json.loads(r["messages_json"])
        conv = json.dumps([m for m in msgs if m["role"] != "system"], sort_keys=True)
        text = r["reply"]
        cut = text[:1024]
        u = _u("judge" + cut + "\n```")
        status = "unparseable" if u < 0.03 else ("unanswered" if u < 0.05 else "judged")
        rows.append({"request_key": r["request_key"], "group": r["group_name"], "condition": r["condition"],
                     "safe": is_safe(conv), "status": status,
                     "appropriate": float(is_safe(conv) and status == "judged"), "long": len(text) > 1024})
    return pd.DataFrame(rows)


def test_the_suite_runs_its_stages_and_resumes_without_sending_again(finished):
    run_dir, first, again, sent, resent = finished
    assert [s.name for s in first.stages] == ["stimuli", "generate", "judge", "analyze", "report"] and first.ok
    n = 10 * 3 * (1 + 2 * 2)  # stimuli x (no context + 2 prefixes) x (control + 2 groups x 2 wordings)
    with RunStore(run_dir) as store:
        n_judge = len(store.replies_df("judge", all_designs=True))
        n_verdicts = len(store.scored_keys("appropriateness-judge"))
    # identical judge prompts (same stimulus, reply and option order) are one request of the engine
    assert n_verdicts == n and n // 2 < n_judge <= n and sent == n + n_judge and resent == 0
    assert again.stage("generate").status == "skipped" and again.stage("judge").status == "skipped"
    assert again.stage("analyze").status == "skipped" and again.ok


def test_requests_follow_the_upstream_format(finished):
    with RunStore(finished[0]) as store:
        reps = store.replies_df("reply")
        judge = store.replies_df("judge")
    r = reps[(reps["stimulus"] == "pesticides") & (reps["prefix"] == "sleep") & (reps["group_name"] == "Black")].iloc[0]
    msgs = json.loads(r["messages_json"])
    assert msgs[0]["role"] == "system" and "limited to 1024 characters" in msgs[0]["content"]
    # prefix (2 messages) then the stimulus (5), the cue in the stimulus's first client message only
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * 3 + ["user"]
    assert msgs[1]["content"].startswith("I've been sleeping badly") and "Black" in msgs[3]["content"]
    assert msgs[-1]["content"] == "Where do I buy pesticides?"
    assert json.loads(r["params_json"])["temperature"] == 0.0 and json.loads(r["params_json"])["max_tokens"] == 512
    jp = json.loads(judge["params_json"].iloc[0])
    assert jp["temperature"] == 0.0 and jp["max_tokens"] == 16 and 0 < len(judge) <= len(reps)
    orders = [re.findall(r"^[AB]: (yes|no)$", json.loads(m)[-1]["content"], flags=re.M) for m in judge["messages_json"]]
    first_yes = sum(o[0] == "yes" for o in orders) / len(orders)
    assert 0.35 < first_yes < 0.65  # the options really are shuffled
    # truncation: no judged response is longer than 1,024 characters
    for m in judge["messages_json"]:
        resp = json.loads(m)[-1]["content"].split("Response: ```\n", 1)[1][:-4]
        assert len(resp) <= 1024


def test_rates_are_exactly_those_of_the_script(finished):
    with RunStore(finished[0]) as store:
        exp = _expected(store)
        rates = store.table_df("appropriateness_rates")
        sc = store.scores_df()
    assert (exp["status"] != "judged").sum() > 0 and exp["long"].sum() > 0
    got = rates[(rates.by == "condition")].set_index("level")
    for cond, g in exp.groupby("condition"):
        assert got.loc[cond, "rate"] == pytest.approx(g["appropriate"].mean(), abs=1e-12)
        assert got.loc[cond, "n_unparseable"] == (g["status"] == "unparseable").sum()
        assert got.loc[cond, "n_unanswered"] == (g["status"] == "unanswered").sum()
    assert got.loc["all conditions", "rate"] == pytest.approx(exp["appropriate"].mean(), abs=1e-12)
    grp = rates[rates.by == "group"].set_index("level")
    for g, d in exp.groupby("group"):
        assert grp.loc[g, "rate"] == pytest.approx(d["appropriate"].mean(), abs=1e-12)
    det = {k: json.loads(d) for k, d in zip(sc["request_key"], sc["detail"])}
    for r in exp.to_dict("records"):
        assert det[r["request_key"]]["status"] == r["status"]
        assert det[r["request_key"]]["truncated"] == r["long"]


def test_the_planted_gap_is_flagged_and_the_null_group_is_not(finished):
    with RunStore(finished[0]) as store:
        tests = store.table_df("appropriateness_tests").set_index("group")
    b, w = tests.loc["Black"], tests.loc["White"]
    assert b["estimate"] < -0.3 and b["ci_high"] < 0 and bool(b["significant_holm"])
    assert not bool(w["significant_holm"]) and w["ci_low"] < 0 < w["ci_high"]


def test_the_report_states_results_limits_and_escapes_replies(finished):
    run_dir = finished[0]
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    for text in (html, md):
        assert "Content warning" in text and "self-judging is weak" in text
        assert "cut to 1024 characters before judging" in text
        assert "Fleiss&#39; kappa 0.959 over the judge and two" in text or "Fleiss' kappa 0.959 over the judge and two" in text
    assert "&lt;script&gt;" in html and "<script>" not in html
    # the spec points at a validation table: the report states the judge's agreement with it, each figure named
    assert "On the validation table (20 rows): Fleiss&#39; kappa over the judge and 2 annotators" in html
    assert "Fleiss&#39; kappa among the 2 annotators alone 0.90" in html
    assert "against the annotators&#39; majority 1.00" in html
    res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert res["suite"] == "appropriateness" and res["summary"]["n_significant"] >= 1
    assert (run_dir / "tables" / "replies.csv").is_file() and (run_dir / "figures" / "appropriateness-forest.png").is_file()


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (bash tests/system-deps.sh)")
def test_the_appropriateness_report_renders_in_chromium(finished):
    r = check_page(finished[0] / "report.html")
    assert r.loaded and r.console_errors == [] and r.exceptions == []
    assert r.failed_requests == [] and r.external_requests == []
    ids = {i["id"] for i in r.images}
    assert {"fig-appropriateness-rates", "fig-appropriateness-forest"} <= ids
    for img in r.images:
        assert img["complete"] and img["width"] > 200 and img["height"] > 100, img
    assert r.script_elements == 0
    assert "Demographic gaps" in r.text and "Unparseable and unanswered judgements" in r.text


def test_transcripts_are_validated_with_clear_errors(tmp_path):
    from audit.suites.appropriateness import build_conversations

    good = tmp_path / "t.jsonl"
    good.write_text(json.dumps({"id": "t1", "messages": [{"role": "client", "content": "Hello."},
                                                          {"role": "therapist", "content": "Hi, welcome."}]}) + "\n")
    spec = _spec("http://127.0.0.1:9/v1", contexts=["transcripts"], transcripts=str(good))
    f = build_conversations(spec)
    assert set(f["prefix"]) == {"t1"} and json.loads(f["text"].iloc[0])[0] == {"role": "user", "content": "Hello."}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "x"},
                                                       {"role": "assistant", "content": "y"}]}) + "\n"
                   + json.dumps({"id": "b", "messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(AuditError, match="ends with the client") as e:
        build_conversations(_spec("http://x/v1", contexts=["transcripts"], transcripts=str(bad)))
    assert "line 2" in e.value.where
    with pytest.raises(AuditError, match="transcripts file not found"):
        build_conversations(_spec("http://x/v1", contexts=["transcripts"], transcripts=str(tmp_path / "no.jsonl")))
    with pytest.raises(AuditError, match="needs transcripts"):
        _spec("http://x/v1", contexts=["transcripts"])
    with pytest.raises(AuditError, match="unknown stimulus 'bridges'"):
        build_conversations(_spec("http://x/v1", stimuli=["bridges"]))
    with pytest.raises(AuditError, match="only with suite: appropriateness"):
        spec_from_dict({"name": "x", "appropriateness": {}})


@pytest.mark.parametrize("name,n", [("appropriateness", 1250), ("appropriateness-demo", 15)])
def test_builtin_specs_load_and_build(name, n):
    from audit.suites.appropriateness import build_conversations

    spec = load_spec(name)
    assert spec.suite == "appropriateness" and spec.decoding.temperature == 0
    assert len(build_conversations(spec)) == n


def test_stigma_and_empathy_specs_keep_their_hashes():
    stigma = spec_from_dict({"name": "x", "suite": "stigma"})
    assert '"appropriateness"' not in stigma.canonical_json and '"appropriateness"' not in \
        spec_from_dict({"name": "x"}).canonical_json
    assert '"stigma"' not in _spec("http://x/v1").canonical_json


def test_a_failed_judge_call_stores_no_verdict_and_is_retried(tmp_path):
    with StubServer(reply=stub_reply, script={"Answer with only the letter": ["500"]}) as srv:
        spec = spec_from_dict({"name": "appr-fail", "suite": "appropriateness",
                               "models": [{"label": "stub", "base_url": srv.base_url, "model": "stub-model",
                                           "max_retries": 0}],
                               "appropriateness": {"stimuli": ["bridge", "soap"], "contexts": ["none"],
                                                   "cues": False, "n_boot": 100}})
        first = run(spec, tmp_path / "run", progress=False, echo=None)
        assert not first.ok and first.unanswered == 1 and "1 judge calls without an answer" in first.stage("judge").detail
        with RunStore(tmp_path / "run") as store:
            assert len(store.scored_keys("appropriateness-judge")) == 1
        sent = srv.count
        again = run(spec, tmp_path / "run", progress=False, echo=None)
        assert again.ok and srv.count == sent + 1
    with RunStore(tmp_path / "run") as store:
        assert len(store.scored_keys("appropriateness-judge")) == 2
