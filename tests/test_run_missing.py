"""No silent drops inside a run: failed replies, unscored replies and NULL scores are missing outcomes,
counted per group beside every gap, and a group whose replies failed more often than the control's is
refused (the run's analysis stage fails with the reason) unless ``analysis.allow_missing``.

Before this, the analysis stage kept only scored replies: a group that lost 40% of its replies - the
low-empathy ones, say - got a gap computed on the survivors, with no word about it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.spec import spec_from_dict
from audit.stages import StageContext, run_stages
from audit.stats.stage import AnalyzeStage, analysis_table, analyze_store
from audit.store import RunStore, request_key
from synthetic_store import synthetic_spec_dict

N_POSTS = 20
FAILED_A = 8      # replies of group A that failed (all of them to the posts with the lowest scores)
NULL_B = 1        # replies of group B whose score is NULL


def _store(run_dir, *, allow_missing: bool = False):
    d = synthetic_spec_dict("missing")
    d["demographics"] = {"axes": ["race"], "cue_types": ["explicit_tag"]}
    d["samples"] = 1
    d["scoring"] = {"scorers": ["length"], "inference_probe": False}
    d["analysis"] = {"allow_missing": allow_missing, "paired_check": False}
    spec = spec_from_dict(d)
    rng = np.random.default_rng(11)
    post_effect = np.sort(rng.normal(0, 5, N_POSTS))  # posts 0.. have the lowest scores
    store = RunStore(run_dir)
    store.put_spec(spec)
    variants, requests, replies, scores = [], [], [], []
    for i in range(N_POSTS):
        for group in ("control", "A", "B"):
            vid = hashlib.sha256(f"{i}|{group}".encode()).hexdigest()[:16]
            text = f"post {i}" if group == "control" else f"[{group}] post {i}"
            variants.append(dict(variant_id=vid, post_id=f"p{i:02d}", topic=None, risk=None, group_name=group,
                                 cue_type="control" if group == "control" else "explicit_tag", alternative=None,
                                 cue_text="", text=text, race=None if group == "control" else group))
            messages = [{"role": "user", "content": text}]
            key = request_key("http://x/v1", "m", messages, {}, 0)
            requests.append(dict(request_key=key, purpose="reply", variant_id=vid, model_label="embedded",
                                 endpoint_id="http://x/v1", model_name="m", style="plain", sample_index=0,
                                 messages=messages, params={}))
            if group == "A" and i < FAILED_A:
                replies.append((dict(request_key=key, status="failed", error="HTTP 500"), ()))
                continue
            replies.append((dict(request_key=key, status="ok", text="a reply"), ()))
            value = None if group == "B" and i < NULL_B else float(30 + post_effect[i] + rng.normal(0, 1))
            scores.append((key, "length", "words", value, None))
    store.put_variants(pd.DataFrame(variants))
    store.put_requests(requests)
    store.put_replies(replies)
    store.put_scores(scores)
    store.put_scorer_info("length", {"version": "1"})
    return store, spec


def test_failed_and_null_outcomes_stay_in_the_analysis_table(tmp_path):
    store, spec = _store(tmp_path)
    with store:
        t = analysis_table(store, spec)
    t = t[t["outcome"] == "length.words"]
    assert len(t) == 3 * N_POSTS  # every reply request, answered or not
    missing = t[t["value"].isna()].groupby("group").size().to_dict()
    assert missing == {"A": FAILED_A, "B": NULL_B}


def test_a_group_whose_replies_failed_more_often_is_refused(tmp_path):
    store, spec = _store(tmp_path)
    with store:
        with pytest.raises(AuditError, match=rf"missing outcomes differ: A {FAILED_A} of {N_POSTS} \(40%\) vs "
                                             rf"reference 0 of {N_POSTS}"):
            analyze_store(store, spec)
        # the run's analyze stage fails (the report says why) instead of reporting a selected gap
        ctx = StageContext(spec, tmp_path, store, progress=False)
        rec = run_stages([AnalyzeStage()], ctx)[0]
        assert rec.status == "failed"
        assert "missing outcomes differ: A 8 of 20" in store.get_meta("analysis_error")
        assert "results" not in store.table_names()


def test_allow_missing_fits_and_shows_the_counts_beside_each_gap(tmp_path):
    store, spec = _store(tmp_path, allow_missing=True)
    with store:
        res = analyze_store(store, spec).results
    pooled = res[(res["cue_type"] == "pooled") & (res["outcome"] == "length.words")].set_index("group")
    assert pooled.loc["A", "n_missing"] == FAILED_A and pooled.loc["A", "ref_n_missing"] == 0
    assert pooled.loc["A", "n"] == N_POSTS - FAILED_A
    assert "missing outcomes differ" in pooled.loc["A", "warning"]
    assert pooled.loc["B", "n_missing"] == NULL_B  # 1 of 20 against 0 of 20: not a difference (Fisher p = 1)
    assert "missing outcomes differ" not in str(pooled.loc["B", "warning"])
    assert np.isfinite(pooled.loc["A", "p_value"])

