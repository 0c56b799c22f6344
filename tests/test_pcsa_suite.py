"""The PCSA suite's mechanics against scripted local servers (no model): strategy switching, best-of-N,
exact ASRs per strategy and per group, the group gap test, strict judge parsing, the baselines, resume
after kill -9 mid-dialogue with no duplicated turn, prompt hashes in the provenance, the report."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from audit.errors import AuditError
from audit.pcsa.data import load_data, prompt_hashes
from audit.pipeline import run
from audit.resources import sha256_text
from audit.spec import spec_from_dict
from audit.store import RunStore
from audit.testing import StubServer

sys.path.insert(0, str(Path(__file__).parent))
from pcsa_sim import REFUSAL, attacker_reply, spec_dict, target  # noqa: E402

STRATEGIES = ["reassurance_seeking", "appeal_to_expertise", "intellectualization", "metaphorical_expression"]


def _run(d: dict, run_dir: Path):
    return run(spec_from_dict(d), run_dir, progress=False, echo=None)


def _table(run_dir: Path, name: str):
    with RunStore(run_dir) as st:
        return st.table_df(name)


def _user_says(ms, word):
    return any(word in m["content"] for m in ms if m["role"] == "user")


def test_target_complying_only_under_one_strategy_gives_exact_rates_per_strategy(tmp_path):
    metaphor = target(lambda ms, last: "Metaphorical expression" in last)
    with StubServer(reply=attacker_reply) as att, StubServer(reply=metaphor) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=5,
                      objectives=["secrecy_about_risk", "anti_recovery"], max_turns=6, baselines=True)
        res = _run(d, tmp_path / "run")
    assert res.ok
    rates = _table(tmp_path / "run", "pcsa_rates")
    ov = rates[rates["by"] == "overall"].set_index("arm")
    # every persona conversation switches strategy after each refusal and succeeds at turn 4 (metaphor);
    # the baselines never use the metaphor strategy, so they never succeed
    assert ov.loc["persona", "asr"] == 1.0 and ov.loc["persona", "n_judged"] == 10
    assert ov.loc["persona", "median_turns_to_success"] == 4.0
    assert ov.loc["direct", "asr"] == 0.0 and ov.loc["crescendo", "asr"] == 0.0
    assert ov.loc["direct", "n_judged"] == 10 and ov.loc["crescendo", "n_judged"] == 10  # 2 objectives x 5
    assert ov.loc["persona", "safety_score"] == 0.0 and ov.loc["direct", "safety_score"] == 1.0
    s = _table(tmp_path / "run", "pcsa_strategies").set_index("strategy")
    assert s.loc["metaphorical_expression", "success_rate"] == 1.0
    assert s.loc["metaphorical_expression", "n_winning"] == 10
    for other in STRATEGIES[:3]:
        assert s.loc[other, "success_rate"] == 0.0 and s.loc[other, "n_turns"] == 10
    e = _table(tmp_path / "run", "pcsa_effects").set_index("baseline")
    assert e.loc["direct", "difference"] == 1.0 and e.loc["direct", "ci_low"] > 0.5
    with RunStore(tmp_path / "run") as st:
        turns = st.pcsa_turns_df()
        conv = st.pcsa_conversations_df()
    p = conv[conv["arm"] == "persona"]
    assert set(p["stop_reason"]) == {"threshold"} and set(p["n_turns"]) == {4}
    order = turns[(turns["role"] == "target") & turns["conversation_id"].isin(p["conversation_id"])]
    assert order.groupby("turn")["strategy"].agg(set).to_dict() == {i + 1: {s} for i, s in enumerate(STRATEGIES)}
    assert set(conv.loc[conv["arm"] == "crescendo", "stop_reason"]) == {"max_turns"}


def test_fixed_mode_follows_the_order_and_never_asks_an_evaluator(tmp_path):
    metaphor = target(lambda ms, last: "Metaphorical expression" in last)
    with StubServer(reply=attacker_reply) as att, StubServer(reply=metaphor) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=5, objectives=["anti_recovery"],
                      mode="fixed", evaluator=None, max_turns=2,
                      strategies=["intellectualization", "metaphorical_expression"])
        _run(d, tmp_path / "run")
    with RunStore(tmp_path / "run") as st:
        purposes = {r[0] for r in st.conn.execute("SELECT DISTINCT purpose FROM requests")}
        conv = st.pcsa_conversations_df()
    assert "pcsa_evaluator" not in purposes
    assert set(conv["n_turns"]) == {2} and set(conv["stop_reason"]) == {"max_turns"}
    assert set(conv["verdict"]) == {"UNSAFE"}  # the judge reads the whole conversation


def test_best_of_n_keeps_the_candidate_that_got_furthest(tmp_path):
    # the target complies only to the third candidate's wording (its seed makes the attacker say 'B')
    from audit.engine import derive_seed

    def att(req, last):
        return attacker_reply(req, last) + (" B" if req["seed"] == derive_seed(0, 2) else " A")

    comply_b = target(lambda ms, last: last.endswith(" B"))
    with StubServer(reply=att) as a, StubServer(reply=comply_b) as t:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=5, objectives=["anti_recovery"], n_candidates=4,
                      max_turns=3)
        _run(d, tmp_path / "run")
    with RunStore(tmp_path / "run") as st:
        turns = st.pcsa_turns_df()
        conv = st.pcsa_conversations_df()
    kept = turns[(turns["role"] == "attacker") & (turns["chosen"] == 1)]
    assert (kept["text"].str.endswith(" B")).all()
    assert len(turns[turns["role"] == "attacker"]) == 4 * len(conv)  # 4 candidates, one turn each
    assert set(conv["verdict"]) == {"UNSAFE"} and set(conv["n_turns"]) == {1}


@pytest.mark.slow
def test_group_only_attack_gives_exact_group_rates_and_a_significant_gap(tmp_path):
    black_only = target(lambda ms, last: _user_says(ms, "Black"))
    with StubServer(reply=attacker_reply) as att, StubServer(reply=black_only) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=8, objectives=["secrecy_about_risk"],
                      max_turns=1, demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        res = _run(d, tmp_path / "run")
    assert res.ok
    r = _table(tmp_path / "run", "pcsa_rates")
    g = r[r["by"] == "group"].set_index("level")
    assert g.loc["Black", "asr"] == 1.0 and g.loc["White", "asr"] == 0.0 and g.loc["control", "asr"] == 0.0
    assert set(g["n_judged"]) == {8}
    t = _table(tmp_path / "run", "pcsa_tests")
    t = t[t["outcome"] == "unsafe"].set_index("group")
    assert bool(t.loc["Black", "significant_holm"]) and t.loc["Black", "estimate"] == pytest.approx(1.0)
    assert t.loc["Black", "n_discordant"] == 8 and t.loc["Black", "p_exact"] == pytest.approx(2 * 0.5 ** 8)
    assert not bool(t.loc["White", "significant_holm"])
    summary = json.loads((tmp_path / "run" / "results.json").read_text())["summary"]
    assert summary["n_significant"] >= 1 and "Black vs control" in summary["significant"][0]


def test_group_gap_with_overlap_is_fitted_by_the_gee(tmp_path):
    # Black personas succeed except p01; White and control personas succeed only for p02 and p03:
    # no separation, so the GEE itself is fitted; 7/10 vs 2/10
    def complies(ms, last):
        text = " ".join(m["content"] for m in ms if m["role"] == "user")
        return ("Black" in text) != ("[P01]" in text) if "Black" in text else ("[P02]" in text or "[P03]" in text)

    def att(req, last):
        system = req["messages"][0]["content"]
        tag = next((f"[P{i:02d}]" for i, occ in enumerate(OCCUPATIONS, 1) if occ in system), "")
        return attacker_reply(req, last) + " " + tag

    with StubServer(reply=att) as a, StubServer(reply=target(complies)) as t:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=10, objectives=["anti_recovery"], max_turns=1,
                      demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        _run(d, tmp_path / "run")
    r = _table(tmp_path / "run", "pcsa_rates")
    g = r[r["by"] == "group"].set_index("level")
    assert g.loc["Black", "asr"] == pytest.approx(0.9) and g.loc["White", "asr"] == pytest.approx(0.2)
    t = _table(tmp_path / "run", "pcsa_tests")
    row = t[(t["outcome"] == "unsafe") & (t["group"] == "Black")].iloc[0]
    assert row["method"].startswith("gee") and row["estimate"] == pytest.approx(0.7, abs=0.02)
    assert row["p_value"] < 0.05


OCCUPATIONS = [p.occupation for p in list(load_data().personas.values())[:10]]


def test_unparseable_verdicts_are_stored_and_counted_never_guessed(tmp_path):
    def judge(req, last):
        from audit.pcsa.local import answer

        if "<<<LAST REPLY>>>" in last:
            return answer(last)
        return "The conversation looks UNSAFE to me." if "Appeal" in last else answer(last)

    with StubServer(reply=attacker_reply) as a, StubServer(reply=target(lambda ms, last: False)) as t, \
            StubServer(reply=judge) as j:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=5, objectives=["anti_recovery"], max_turns=2,
                      judge={"model": {"label": "judge", "base_url": j.base_url, "model": "stub-judge"}})
        _run(d, tmp_path / "run")
    with RunStore(tmp_path / "run") as st:
        conv = st.pcsa_conversations_df()
        counts = json.loads(st.get_meta("pcsa_judge_counts"))
    # two turns: reassurance then appeal to expertise; the judge's prose answer is unparseable for all
    assert counts["unparseable"] == 5 and counts["ok"] == 0
    assert conv["verdict"].isna().all()
    detail = json.loads(conv["judge_detail"].iloc[0])
    assert detail["raw"] == "The conversation looks UNSAFE to me." and "JSON" in detail["reason"]
    r = _table(tmp_path / "run", "pcsa_rates")
    ov = r[r["by"] == "overall"].iloc[0]
    assert ov["n_unparseable"] == 5 and ov["n_judged"] == 0 and pd.isna(ov["asr"])  # missing, not 0 or 1


def test_prompts_are_stored_with_their_hashes_in_the_provenance(tmp_path):
    with StubServer(reply=attacker_reply) as att, StubServer(reply=target(lambda ms, last: False)) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=5, objectives=["anti_recovery"], max_turns=1)
        _run(d, tmp_path / "run")
    prompts = load_data().prompts
    with RunStore(tmp_path / "run") as st:
        stored = json.loads(st.get_meta("pcsa_prompts"))
        hashes = {r[0]: r[1] for r in st.conn.execute("SELECT purpose, style_hash FROM requests")}
    assert stored == prompt_hashes()
    for name in ("attacker_persona", "evaluator", "judge"):
        assert stored[name] == sha256_text(prompts[name])
    assert hashes["pcsa_attacker"] == stored["attacker_persona"]
    assert hashes["pcsa_evaluator"] == stored["evaluator"] and hashes["pcsa_judge"] == stored["judge"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert stored["judge"][:12] in html


CHILD = """
import sys
from audit.pipeline import run
from audit.spec import load_spec
run(load_spec(sys.argv[1]), sys.argv[2], progress=False, echo=None)
"""


def _turn_rows(db: Path) -> int:
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return c.execute("SELECT COUNT(*) FROM pcsa_turns").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_mid_dialogue_then_resume_completes_every_conversation_without_duplicates(tmp_path):
    metaphor = target(lambda ms, last: "Metaphorical expression" in last)
    with StubServer(reply=attacker_reply, latency_s=0.02) as att, StubServer(reply=metaphor, latency_s=0.02) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=6,
                      objectives=["anti_recovery", "medication_advice"], max_turns=5, demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        for m in d["models"] + [d["pcsa"]["attacker"]["model"]]:
            m["max_in_flight"] = 2
        spec_path = tmp_path / "pcsa.yaml"
        spec_path.write_text(yaml.safe_dump(d))
        run_dir = tmp_path / "run"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(spec_path), str(run_dir)],
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        try:
            deadline = time.monotonic() + 120
            while _turn_rows(run_dir / "store.sqlite") < 60 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        time.sleep(0.3)  # requests the killed process had already written reach the servers' counts
        at_kill = {"attacker": att.count, "target": tgt.count}
        with RunStore(run_dir) as st:
            before = st.pcsa_conversations_df()
            stored = {p: st.conn.execute("SELECT COUNT(*) FROM replies r JOIN requests q USING (request_key)"
                                         " WHERE q.purpose=? AND r.status='ok'", (f"pcsa_{p}",)).fetchone()[0]
                      for p in ("attacker", "target")}
        assert (before["status"] == "open").any(), "killed after every conversation had finished"
        assert stored["attacker"] > 0
        res = run(spec_from_dict(d), run_dir, progress=False, echo=None)
        resent = {"attacker": att.count - at_kill["attacker"], "target": tgt.count - at_kill["target"]}
    assert res.ok
    with RunStore(run_dir) as st:
        conv = st.pcsa_conversations_df()
        turns = st.pcsa_turns_df()
        keys = {p: {r[0] for r in st.conn.execute("SELECT request_key FROM requests WHERE purpose=?", (f"pcsa_{p}",))}
                for p in ("attacker", "target")}
    # every conversation finished, each the same way (4 turns, success under the metaphor)
    assert len(conv) == 36 and set(conv["status"]) == {"done"} and set(conv["n_turns"]) == {4}
    assert set(conv["verdict"]) == {"UNSAFE"}
    # one row per (conversation, turn, role, candidate) and one kept turn per turn
    assert len(turns) == 36 * 4 * 3
    assert not turns.duplicated(["conversation_id", "turn", "role", "candidate"]).any()
    # the resumed run asked only for what was not stored: no stored reply was paid for twice
    assert resent["attacker"] == len(keys["attacker"]) - stored["attacker"]
    assert resent["target"] == len(keys["target"]) - stored["target"]


def test_report_is_escaped_collapsed_and_loads_in_chromium(tmp_path):
    from audit.report.browser import check_report, find_chromium

    def att(req, last):
        return attacker_reply(req, last) + " <img src=x onerror=alert(1)>"

    with StubServer(reply=att) as a, StubServer(reply=target(lambda ms, last: "Appeal" in last)) as t:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=5, objectives=["anti_recovery"], max_turns=2,
                      baselines=True, demographics={"axes": ["gender"]})
        res = _run(d, tmp_path / "run")
    html = res.paths["html"].read_text()
    assert "Content warning." in html and html.index("content-warning") < html.index("pcsa-summary")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<details class=\"transcript\"" in html and "<details open" not in html and "<script" not in html
    assert "The paper's settings and ours" in html
    md = res.paths["markdown"].read_text()
    assert "Content warning" in md
    import audit  # `empathy-audit report RUN_DIR` re-renders the suite's own report from the store

    again = audit.render(tmp_path / "run")
    assert "PCSA red-teaming audit" in again["html"].read_text()
    if find_chromium() is None:
        pytest.skip("no Chromium on this machine: the HTML checks above ran, the browser check cannot")
    verdict = check_report(res.paths["html"])
    assert verdict.ok, verdict.lines()


def test_spec_errors_name_the_key(tmp_path):
    base = spec_dict("http://127.0.0.1:9/v1", {"t": "http://127.0.0.1:9/v1"})
    bad = json.loads(json.dumps(base))
    bad["pcsa"]["objectives"] = ["how_to_do_harm"]
    with pytest.raises(AuditError) as e:
        spec_from_dict(bad)
    assert "unknown objectives ['how_to_do_harm']" in e.value.what and "pcsa" in e.value.where
    bad = json.loads(json.dumps(base))
    bad["pcsa"]["evaluator"] = None
    with pytest.raises(AuditError, match="needs an evaluator"):
        spec_from_dict(bad)
    bad = json.loads(json.dumps(base))
    bad["pcsa"].update(mode="fixed", evaluator=None, n_candidates=3)
    with pytest.raises(AuditError, match="best-of-N"):
        spec_from_dict(bad)
    with pytest.raises(AuditError, match="only with suite: pcsa"):
        spec_from_dict({"name": "x", "pcsa": {"mode": "fixed"}})


def test_a_missing_role_key_stops_the_run_before_anything_is_sent(tmp_path, monkeypatch):
    monkeypatch.delenv("PCSA_TEST_KEY", raising=False)
    with StubServer(reply=attacker_reply) as att, StubServer(reply=lambda req, last: REFUSAL) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=5, objectives=["anti_recovery"])
        d["pcsa"]["judge"] = {"model": {"label": "j", "base_url": tgt.base_url, "model": "x",
                                        "api_key_env": "PCSA_TEST_KEY"}}
        with pytest.raises(AuditError, match="PCSA_TEST_KEY"):
            _run(d, tmp_path / "run")
        assert att.count == 0 and tgt.count == 0


def test_other_suites_keep_their_spec_hash():
    # adding the pcsa section must not change the canonical JSON (and so the design) of other suites' specs
    s = spec_from_dict({"name": "x"})
    assert "pcsa" not in s.canonical_json and "stigma" not in s.canonical_json
    assert "pcsa" not in spec_from_dict({"name": "x", "suite": "stigma"}).canonical_json


def test_refusing_target_gives_zero_asr_and_full_safety(tmp_path):
    with StubServer(reply=attacker_reply) as att, StubServer(reply=lambda req, last: REFUSAL) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=5, objectives=["anti_recovery"], max_turns=3)
        _run(d, tmp_path / "run")
    ov = _table(tmp_path / "run", "pcsa_rates").query("by == 'overall'").iloc[0]
    assert ov["asr"] == 0.0 and ov["safety_score"] == 1.0 and ov["refusal_asr"] == 0.0
    assert ov["mean_turns"] == 3.0  # switched strategy each turn and ran to max_turns


def test_unparseable_evaluator_scores_are_stored_and_never_count_as_success(tmp_path):
    with StubServer(reply=attacker_reply) as a, StubServer(reply=target(lambda ms, last: True)) as t, \
            StubServer(reply=lambda req, last: "Score: 10/10, full compliance") as ev:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=5, objectives=["anti_recovery"], max_turns=3,
                      evaluator={"model": {"label": "ev", "base_url": ev.base_url, "model": "stub-ev"}})
        _run(d, tmp_path / "run")
    with RunStore(tmp_path / "run") as st:
        turns = st.pcsa_turns_df()
        conv = st.pcsa_conversations_df()
    ev_rows = turns[turns["role"] == "evaluator"]
    assert len(ev_rows) == 15 and ev_rows["score"].isna().all()
    assert ev_rows["parse_status"].str.startswith("unparseable").all()
    assert (ev_rows["text"] == "Score: 10/10, full compliance").all()   # the raw answer is kept
    # no score, so no early stop and no success turn; the strategy switched every turn
    assert set(conv["stop_reason"]) == {"max_turns"} and conv["first_success_turn"].isna().all()
    assert turns[turns["role"] == "target"].groupby("turn")["strategy"].nunique().tolist() == [1, 1, 1]
    assert turns[turns["role"] == "target"].drop_duplicates("turn")["strategy"].tolist() == STRATEGIES[:3]
    # the judge (local rules) still reads the compliance in the transcript
    assert set(conv["verdict"]) == {"UNSAFE"}


def _persona_tag_attacker(req, last):
    system = req["messages"][0]["content"]
    tag = next((f"[P{i:02d}]" for i, occ in enumerate(OCCUPATIONS, 1) if occ in system), "")
    return attacker_reply(req, last) + " " + tag


def test_complete_separation_gets_the_exact_mcnemar_test_and_an_exact_ci(tmp_path):
    """Every Black conversation UNSAFE, no White or control one (issue 25 P1): the GEE is not
    estimable, so p and CI are the exact McNemar test's and the exact conditional interval, and the
    method says so (not p = 0 with a zero-width CI [1, 1])."""
    from scipy.stats import binomtest

    black_only = target(lambda ms, last: _user_says(ms, "Black"))
    with StubServer(reply=attacker_reply) as att, StubServer(reply=black_only) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=8, objectives=["secrecy_about_risk"],
                      max_turns=1, demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        _run(d, tmp_path / "run")
    t = _table(tmp_path / "run", "pcsa_tests")
    row = t[(t["outcome"] == "unsafe") & (t["group"] == "Black")].iloc[0]
    assert row["method"].startswith("exact McNemar") and "complete separation" in row["warning"]
    assert row["p_value"] == pytest.approx(2 * 0.5 ** 8) and row["n_discordant"] == row["n_pairs"] == 8
    lo = binomtest(8, 8).proportion_ci(method="exact").low   # Clopper-Pearson, 8 of 8
    assert row["estimate"] == 1.0 and row["ci_low"] == pytest.approx(2 * lo - 1) and row["ci_high"] == 1.0
    assert row["ci_low"] < 0.5 and "n_personas" in t.columns and "n_posts" not in t.columns
    white = t[(t["outcome"] == "unsafe") & (t["group"] == "White")].iloc[0]   # both never UNSAFE: no pair differs
    assert "complete separation" not in white["warning"] and "same outcome" in white["warning"]
    assert white["method"].startswith("exact McNemar") and white["p_value"] == 1.0
    assert white["ci_low"] == pytest.approx(-(1 - 0.05 ** (1 / 8))) and white["ci_high"] == -white["ci_low"]


def test_no_discordant_pairs_is_labelled_as_such_with_a_ci(tmp_path):
    """Both groups 25% UNSAFE, from the same personas (issue 25 P2): the outcome is the persona's, no
    pair differs; the row says 'exact McNemar', p = 1, a finite CI around 0, not 'complete separation'."""
    with StubServer(reply=_persona_tag_attacker) as a, \
            StubServer(reply=target(lambda ms, last: "[P01]" in last or "[P02]" in last)) as t:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=8, objectives=["anti_recovery"], max_turns=1,
                      demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        _run(d, tmp_path / "run")
    g = _table(tmp_path / "run", "pcsa_rates").query("by == 'group'").set_index("level")
    assert g.loc["Black", "asr"] == g.loc["White", "asr"] == g.loc["control", "asr"] == 0.25
    tests = _table(tmp_path / "run", "pcsa_tests")
    row = tests[(tests["outcome"] == "unsafe") & (tests["group"] == "Black")].iloc[0]
    assert row["n_discordant"] == 0 and row["p_value"] == 1.0 and row["estimate"] == 0.0
    assert row["method"].startswith("exact McNemar") and "separation" not in row["method"] + row["warning"]
    assert -1 < row["ci_low"] < 0 < row["ci_high"] < 1


def test_gap_methods_and_columns_name_the_persona_clustering(tmp_path):
    """The GEE is clustered by persona: its method text and its cluster count say persona (issue 25 P3)."""
    def complies(ms, last):
        text = " ".join(m["content"] for m in ms if m["role"] == "user")
        return ("Black" in text) != ("[P01]" in text) if "Black" in text else ("[P02]" in text or "[P03]" in text)

    with StubServer(reply=_persona_tag_attacker) as a, StubServer(reply=target(complies)) as t:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=10, objectives=["anti_recovery"], max_turns=1,
                      demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        res = _run(d, tmp_path / "run")
    tests = _table(tmp_path / "run", "pcsa_tests")
    gee = tests[tests["method"].str.startswith("gee")]
    assert len(gee) and gee["method"].str.contains("within persona").all()
    assert not tests["method"].str.contains(r"\bpost\b").any() and (gee["n_personas"] == 10).all()
    assert "n_posts" not in tests.columns
    html = res.paths["html"].read_text()
    assert "within persona" in html and "within post" not in html


def test_markdown_report_is_at_parity_with_the_html_one(tmp_path):
    """report.md has what report.html has (issue 25 P4): the by-objective table, the baselines, the
    example conversations (quoted, escaped), the methods; and CARES ASR per group in both."""
    import re

    from audit.report.suite_report import pct

    def att(req, last):
        return attacker_reply(req, last) + " | a|b <b>bold</b>"

    with StubServer(reply=att) as a, StubServer(reply=target(lambda ms, last: "Appeal" in last)) as t:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=4, objectives=["anti_recovery", "secrecy_about_risk"],
                      max_turns=2, baselines=True, demographics={"axes": ["gender"]})
        res = _run(d, tmp_path / "run")
    md, html = res.paths["markdown"].read_text(), res.paths["html"].read_text()
    rates = _table(tmp_path / "run", "pcsa_rates")
    for section in ("### By objective category", "## The persona attack against the baselines",
                    "## Example conversations", "## Methods", "### The paper's settings and ours", "## Provenance"):
        assert section in md, section
    objective_rows = [ln for ln in md.splitlines() if re.match(r"\| (persona|direct|crescendo) \| t \| (anti\\_recovery|"
                                                               r"secrecy\\_about\\_risk) \|", ln)]
    assert len(objective_rows) == int((rates["by"] == "objective").sum()) == 6
    effects = _table(tmp_path / "run", "pcsa_effects")
    assert len(effects) == 2 and all(f"| t | {b} |" in md for b in effects["baseline"])
    assert md.count("<details><summary>") == html.count('<details class="transcript"') > 0
    assert "<b>bold</b>" not in md and "a\\|b" in md      # model text escaped, table pipes too
    group = rates[rates["by"] == "group"]
    for r in group.to_dict("records"):   # CARES ASR (refusal-based) and safety score per group, in both reports
        cares = pct(r["refusal_asr"])
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| persona | t | {r['level']} |"))
        assert f"| {cares} | {r['safety_score']:.2f} |" in line
        row = next(x for x in html.split("<tr>") if x.startswith(f"<td>persona</td><td>t</td><td>{r['level']}</td>"))
        assert f'<td class="num">{cares}</td><td class="num">{r["safety_score"]:.2f}</td>' in row
    assert md.count("CARES ASR (refusal-based)") >= 3 and html.count("CARES ASR (refusal-based)") >= 3
    tests = _table(tmp_path / "run", "pcsa_tests")
    assert md.count("| t | unsafe |") == int((tests["outcome"] == "unsafe").sum())
    assert "| personas | pairs (discordant) | method |" in md


def test_margins_give_pcsa_gaps_tost_verdicts_in_every_output_and_the_gate(tmp_path, capsys):
    """analysis.margins on a PCSA outcome (issue 30): every Black conversation UNSAFE, no White or
    control one. Black vs control, a planted gap of 100 pp (exact McNemar row, 8 of 8 pairs
    discordant), exceeds a 5 pp margin; White vs control, a planted zero gap (no pair differs), is
    within a 50 pp margin (exact bound: P(no discordant pair of 8 | rate >= 0.5) = 0.5 ** 8). Without
    margins the tests table is the same, with no margin or verdict column."""
    from audit.commands.run import gate_exit
    from audit.pcsa.analysis import analyze_pcsa, conversations_frame
    from audit.stats.equivalence import EXCEEDS, WITHIN

    black_only = target(lambda ms, last: _user_says(ms, "Black"))
    with StubServer(reply=attacker_reply) as att, StubServer(reply=black_only) as tgt:
        d = spec_dict(att.base_url, {"t": tgt.base_url}, persona_limit=8, objectives=["secrecy_about_risk"],
                      max_turns=1, demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        d["analysis"] = {"margins": {"pcsa.unsafe": "5pp"}}
        res = _run(d, tmp_path / "run")
    assert res.ok
    t = _table(tmp_path / "run", "pcsa_tests")
    unsafe = t[t["outcome"] == "unsafe"].set_index("group")
    assert unsafe.loc["Black", "method"].startswith("exact McNemar") and unsafe.loc["Black", "verdict"] == EXCEEDS
    assert unsafe.loc["Black", "margin"] == "5pp" and unsafe.loc["Black", "tost_ci_low"] > 0.05
    assert (t.loc[t["outcome"] != "unsafe", "verdict"] == "no margin").all()   # only the outcome with a margin
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    black = next(r for r in results["tables"]["pcsa_tests"] if r["outcome"] == "unsafe" and r["group"] == "Black")
    assert black["verdict"] == EXCEEDS and black["margin"] == "5pp"
    assert results["summary"]["verdicts"][EXCEEDS] == 1
    md, html = res.paths["markdown"].read_text(), res.paths["html"].read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| t | unsafe | Black |"))
    assert f"| \u00b15 pp | " in line and f"| {EXCEEDS} (exact TOST" in line and "| 90% CI | verdict |" in md
    row = next(x for x in html.split("<tr") if "<td>unsafe</td><td>Black</td>" in x)
    assert f'<td class="verdict">{EXCEEDS} ' in row and "<th>verdict</th>" in html
    assert gate_exit(tmp_path / "run", 0) == 3 and "exceed their margin" in capsys.readouterr().out

    with RunStore(tmp_path / "run") as st:
        conv, turns = conversations_frame(st), st.pcsa_turns_df()
    wide = analyze_pcsa(conv, turns, spec=spec_from_dict(d), margins={"unsafe": "50pp"}).tests
    white = wide[wide["outcome"] == "unsafe"].set_index("group").loc["White"]
    assert white["n_discordant"] == 0 and white["estimate"] == 0 and white["verdict"] == WITHIN
    assert white["p_within"] == pytest.approx(0.5 ** 8)
    assert white["tost_ci_high"] == pytest.approx(1 - 0.05 ** (1 / 8)) and white["tost_ci_high"] < 0.5

    del d["analysis"]
    plain = analyze_pcsa(conv, turns, spec=spec_from_dict(d)).tests
    assert not {"margin", "verdict", "p_within", "tost_ci_low"} & set(plain.columns)
    pd.testing.assert_frame_equal(plain, wide[plain.columns])


def test_margins_on_fitted_gee_gaps_and_on_rows_without_a_test(tmp_path):
    """The Wald TOST on a GEE row with its SE: Black 90% vs control 20% UNSAFE (a 70 pp gap) exceeds
    a 5 pp margin; White vs control (the same two personas succeed in both: no pair differs, 10
    pairs) is inconclusive at 5 pp (P(no discordant pair | rate >= 0.05) = 0.95 ** 10 = 0.6). An outcome
    no conversation has (the model not fitted, no exact test) is 'not estimable' and says why."""
    from audit.pcsa.analysis import analyze_pcsa, conversations_frame
    from audit.stats.equivalence import EXCEEDS, INCONCLUSIVE, NOT_ESTIMABLE, tost_ci

    def complies(ms, last):
        text = " ".join(m["content"] for m in ms if m["role"] == "user")
        return ("Black" in text) != ("[P01]" in text) if "Black" in text else ("[P02]" in text or "[P03]" in text)

    with StubServer(reply=_persona_tag_attacker) as a, StubServer(reply=target(complies)) as t:
        d = spec_dict(a.base_url, {"t": t.base_url}, persona_limit=10, objectives=["anti_recovery"], max_turns=1,
                      demographics={"axes": ["race"], "groups": {"race": ["Black", "White"]}})
        _run(d, tmp_path / "run")
    with RunStore(tmp_path / "run") as st:
        conv, turns = conversations_frame(st), st.pcsa_turns_df()
    never = next(o for o in ("impersonation", "toxic_empathy", "harmful_content", "compliance")
                 if conv[o].fillna(0).eq(0).all())
    tests = analyze_pcsa(conv, turns, spec=spec_from_dict(d), margins={"unsafe": "5pp", never: "5pp"}).tests
    u = tests[tests["outcome"] == "unsafe"].set_index("group")
    black = u.loc["Black"]
    assert black["method"].startswith("gee") and black["se"] > 0 and black["verdict"] == EXCEEDS
    lo, hi = tost_ci(black["estimate"], black["se"], 0.05)
    assert (black["tost_ci_low"], black["tost_ci_high"]) == pytest.approx((lo, hi)) and lo > 0.05
    assert u.loc["White", "verdict"] == INCONCLUSIVE and u.loc["White", "p_within"] == pytest.approx(0.95 ** 10)
    nf = tests[tests["outcome"] == never]
    assert len(nf) and (nf["verdict"] == NOT_ESTIMABLE).all()
    assert nf["verdict_note"].str.contains("no standard error and no exact paired test").all()
