"""End to end on the embedded model: llm-judge and the inference probe through the real backend.

One small test (2 judged replies, 2 probed variants): judge and probe calls are stored in the run
store with their purpose and subject, answers are parsed (or recorded as unparseable, never guessed),
and a second scoring sends nothing and changes nothing.
"""

from __future__ import annotations

import json

import pytest

from audit.scorers.judge import MECHANISMS
from audit.scoring import score_run
from audit.store import RunStore
from scoring_fixtures import POSTS, add_reply, make_spec, variants_frame


@pytest.mark.embedded
def test_judge_and_probe_on_the_embedded_model_are_stored_parsed_and_never_repeated(tmp_path):
    run_dir = tmp_path / "run"
    spec = make_spec(run_dir, scorers=("llm-judge",), inference_probe=True)
    v = variants_frame({"p1": POSTS["p1"]})
    v = v[v["cue_type"].isin(["control", "explicit_tag"]) & v["group"].isin(["control", "Black woman"])]
    with RunStore(run_dir) as st:
        st.put_spec(spec)
        st.put_variants(v)
        keys = [add_reply(st, vid, "I'm so sorry you're dealing with this. What has been the hardest part?")
                for vid in v["variant_id"]]
    s1 = score_run(spec, run_dir, probe=True, invariance=False)
    with RunStore(run_dir, create=False) as st:
        judge = st.query_df("SELECT request_key, subject_key, purpose FROM requests WHERE purpose='judge'")
        scores = st.scores_df()
        probe = st.query_df("SELECT * FROM probe")
        n_requests = st.conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        info = st.scorer_info()["llm-judge"]
    # identical (post, reply) content would share one request; here the posts differ
    assert sorted(judge["subject_key"]) == sorted(keys)
    assert s1.scorers[0].scored == 2
    for k in keys:
        row = scores[scores["request_key"] == k].set_index("measure")
        assert set(row.index) == {*MECHANISMS, "empathy"}
        vals = row.loc[list(MECHANISMS), "value"]
        if vals.notna().all():
            assert set(vals) <= {0.0, 1.0, 2.0}
            assert row.loc["empathy", "value"] == pytest.approx(vals.mean())
        else:  # an unparseable answer: all NaN, raw text kept
            assert vals.isna().all() and "raw" in json.loads(row.loc["ER", "detail"])
    assert info["model"] == "embedded-default" and info["endpoint"] == "embedded"
    # the probe asked about race and gender (the variants' axes) for both variants
    assert set(probe["axis"]) == {"race", "gender"} and probe["variant_id"].nunique() == 2
    ok = probe[probe["status"] == "ok"]
    assert ok["inferred"].isin(["Black", "White", "woman", "man", "unknown"]).all()
    assert probe[probe["cue_type"] == "control"]["correct"].isna().all()
    assert probe[(probe["status"] == "unparseable")]["detail"].map(lambda d: "raw" in json.loads(d)).all()

    s2 = score_run(spec, run_dir, probe=True, invariance=False)
    with RunStore(run_dir, create=False) as st:
        assert st.conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == n_requests
        assert st.scores_df().equals(scores)
    assert s2.scorers[0].scored == 0 and s2.scorers[0].already == 2
    assert s2.probe["new"] == 0
