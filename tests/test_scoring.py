"""The score stage on a run store filled directly (no model): what is scored, what is kept, resumption."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from audit.cli import main
from audit.errors import AuditError
from audit.scorers.auxiliary import LengthScorer, RefusalScorer, count_words
from audit.scoring import score_run, score_with
from audit.store import RunStore
from scoring_fixtures import REPLIES, add_reply, make_run, variants_frame


def _scores(run_dir) -> pd.DataFrame:
    with RunStore(run_dir, create=False) as st:
        return st.scores_df()


def test_scores_every_answered_reply_with_every_scorer(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    s = score_run(spec, run_dir)
    df = _scores(run_dir)
    assert set(df["scorer"]) == {"length", "refusal", "sentiment"}
    assert len(df) == 3 * len(keys) and set(df["request_key"]) == set(keys)
    with RunStore(run_dir, create=False) as st:
        reps = st.replies_df().set_index("request_key")
        info = st.scorer_info()
    words = df[df["measure"] == "words"].set_index("request_key")["value"]
    for k in keys:
        assert words[k] == count_words(reps.loc[k, "reply"])
    refusal = df[df["measure"] == "refusal"].set_index("request_key")
    assert refusal["value"].sum() == sum(1 for k in keys if reps.loc[k, "reply"] == REPLIES[1])
    assert set(refusal.loc[refusal["value"] == 1, "detail"]) == {"cannot_help"}
    assert {x.scorer: x.scored for x in s.scorers} == {"length": len(keys), "refusal": len(keys), "sentiment": len(keys)}
    assert info["refusal"]["patterns_sha256"] and info["length"]["name"] == "length"


def test_withheld_replies_stay_visible_and_failed_ones_get_nothing(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    v = variants_frame()
    with RunStore(run_dir) as st:
        cf = add_reply(st, v["variant_id"][0], None, status="content_filter", sample=1)
        failed = add_reply(st, v["variant_id"][0], None, status="failed", sample=2)
        pending = add_reply(st, v["variant_id"][0], None, status=None, sample=3)
    s = score_run(spec, run_dir)
    df = _scores(run_dir)
    row = df[df["request_key"] == cf].set_index("measure")
    assert row.loc["refusal", "value"] == 1.0 and row.loc["refusal", "detail"] == "content_filter"
    assert row.loc[["words", "compound"], "value"].isna().all()
    assert (row["detail"] == "content_filter").all()
    assert not df["request_key"].isin([failed, pending]).any()
    assert s.not_answered == 2 and all(x.content_filter == 1 for x in s.scorers)


def test_stored_scores_are_never_recomputed_and_replies_never_regenerated(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    score_run(spec, run_dir, ["length"])
    with RunStore(run_dir) as st:
        st.conn.execute("UPDATE scores SET value = -7 WHERE request_key = ? AND scorer = 'length'", (keys[0],))
        n_req = st.conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        replies_before = st.query_df("SELECT request_key, text, created_at FROM replies ORDER BY request_key")
    s = score_run(spec, run_dir, ["length", "refusal"])  # adds a scorer
    by = {x.scorer: x for x in s.scorers}
    assert by["length"].scored == 0 and by["length"].already == len(keys)
    assert by["refusal"].scored == len(keys)
    df = _scores(run_dir)
    assert df[(df["request_key"] == keys[0]) & (df["scorer"] == "length")]["value"].item() == -7
    with RunStore(run_dir) as st:
        assert st.conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == n_req
        pd.testing.assert_frame_equal(
            replies_before, st.query_df("SELECT request_key, text, created_at FROM replies ORDER BY request_key"))


class _Crashes(LengthScorer):
    """Fault injection: the scorer dies on its third batch (as a killed process would)."""

    batch_size = 5

    def __init__(self):
        self.calls = 0

    def score(self, posts, replies):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return super().score(posts, replies)


def test_an_interrupted_scoring_resumes_without_rescoring(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    sc = _Crashes()
    with RunStore(run_dir) as st:
        with pytest.raises(KeyboardInterrupt):
            score_with(st, sc)
        assert len(st.scored_keys("length")) == 10  # two committed batches survive
        sc2 = _Crashes()
        sc2.calls = -100
        summ = score_with(st, sc2)
    assert summ.already == 10 and summ.scored == len(keys) - 10
    assert sc2.calls == -100 + math.ceil((len(keys) - 10) / 5)


def test_a_different_scorer_identity_is_refused_not_mixed(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    score_run(spec, run_dir, ["refusal"])
    from audit.scorers.auxiliary import refusal_patterns_path

    other = tmp_path / "patterns.yaml"
    other.write_text(refusal_patterns_path().read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    with RunStore(run_dir) as st:
        with pytest.raises(AuditError, match="patterns_sha256"):
            score_with(st, RefusalScorer(other))
        assert len(st.scored_keys("refusal")) == len(keys)


def test_bad_inputs_are_single_audit_errors(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    with pytest.raises(AuditError, match="no run store"):
        score_run(spec, tmp_path / "nowhere")
    with pytest.raises(AuditError, match="unknown scorer 'empathy'"):
        score_run(spec, run_dir, ["length", "empathy"])
    assert _scores(run_dir).empty  # nothing scored before the bad name was found
    empty = tmp_path / "empty"
    RunStore(empty).close()
    with pytest.raises(AuditError, match="no replies"):
        score_run(spec, empty)


def test_score_command_uses_the_runs_own_spec(tmp_path, capsys):
    spec, run_dir, keys = make_run(tmp_path, scorers=("length",))
    assert main(["score", str(run_dir), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["scorer"] for s in out["scorers"]] == ["length"] and out["scorers"][0]["scored"] == len(keys)
    assert main(["score", str(run_dir), "--scorers", "refusal"]) == 0
    text = capsys.readouterr().out
    n_ref = sum(1 for i in range(len(keys)) if i % len(REPLIES) == 1)
    assert f"refusal: {len(keys)} scored now, 0 already stored" in text
    assert f"{n_ref} refusals in {len(keys)} replies ({n_ref / len(keys):.1%})" in text
    assert main(["score", str(tmp_path / "missing")]) == 2
    assert "no run store found" in capsys.readouterr().err


def test_agreement_is_reported_when_two_scorers_share_a_measure(tmp_path):
    spec, run_dir, keys = make_run(tmp_path, scorers=("length",))
    with RunStore(run_dir) as st:  # another scorer's stored word counts: the same on all but one reply
        reps = st.replies_df().set_index("request_key")
        st.put_scores([(k, "other", "words", count_words(reps.loc[k, "reply"]) + (5 if i == 0 else 0), None)
                       for i, k in enumerate(keys)])
    s = score_run(spec, run_dir)
    assert len(s.agreement) == 1
    a = s.agreement[0]
    assert (a["scorer_a"], a["scorer_b"], a["measure"], a["n"]) == ("length", "other", "words", len(keys))
    assert a["mean_diff"] == pytest.approx(5 / len(keys))
    assert any(line.startswith("agreement length vs other on words: Spearman") for line in s.lines())


def test_full_stage_checks_invariance_of_the_scorers_that_read_the_post(tmp_path):
    from audit.scorers.invariance import invariance_summary

    spec, run_dir, keys = make_run(tmp_path, scorers=("epitome", "length"))
    s = score_run(spec, run_dir)
    assert set(s.invariance) == {"epitome"}  # length depends on the reply alone
    with RunStore(run_dir, create=False) as st:
        res = invariance_summary(st)
        n_pairs = st.conn.execute("SELECT COUNT(DISTINCT variant_id || reply_id) FROM invariance_scores").fetchone()[0]
        ep = st.scores_df()
    t = res.table
    assert set(t["measure"]) == {"ER", "IP", "EX", "empathy"} and set(t["reply_source"]) == {"run"}
    assert n_pairs == len(variants_frame())  # each variant x its post's one control reply
    cells = t[t["group"] != "pooled"]
    assert len(cells) == 4 * 2 * 2 and (cells["n_posts"] == 4).all()
    assert s.invariance["epitome"].startswith("invariant" if (cells["flagged"] == 0).all() else "NOT invariant")
    lv = ep[(ep["scorer"] == "epitome") & (ep["measure"] == "ER")]["value"]
    assert len(lv) == len(keys) and set(lv) <= {0.0, 1.0, 2.0}
