"""The scorer invariance check: identical replies scored against each demographic variant of a post.

The scorers below are fault injections: a deliberately biased scorer (the fault the check must find)
and one that ignores the post (which must pass).
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from audit.cli import main
from audit.errors import AuditError
from audit.scorers.invariance import invariance_summary, load_reference_replies, run_invariance
from audit.store import RunStore
from scoring_fixtures import POSTS, make_run, make_spec, variants_frame


class _ReplyOnly:
    """Reads the post but ignores it: invariant."""

    name = "reply-only"
    measures = ("empathy",)

    def __init__(self):
        self.pairs = 0

    def info(self):
        return {"name": self.name, "version": "1"}

    def score(self, posts, replies):
        self.pairs += len(posts)
        return pd.DataFrame({"empathy": [len(r) % 3 for r in replies]})


class _Biased(_ReplyOnly):
    """Scores a reply lower when the post says 'Black' (only in explicit statements: 'As a Black ...')."""

    name = "biased"

    def score(self, posts, replies):
        self.pairs += len(posts)
        base = np.array([1.0 + (len(r) % 3) for r in replies])
        rng = np.random.default_rng([len(p) for p in posts])
        pen = np.array([0.3 + 0.05 * rng.random() if p.startswith("As a Black") else 0.0 for p in posts])
        return pd.DataFrame({"empathy": base - pen})


def test_a_biased_scorer_is_flagged_where_it_is_biased_and_only_there(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    with RunStore(run_dir) as st:
        res = run_invariance(spec, st, [_Biased(), _ReplyOnly()])
    t = res.table
    cells = t[t["group"] != "pooled"].set_index(["scorer", "cue_type", "group"])
    bad = cells.loc[("biased", "explicit_statement", "Black woman")]
    assert bad["flagged"] == 1 and bad["mean_shift"] == pytest.approx(-0.325, abs=0.03)
    assert bad["ci_high"] < 0 and bad["n_posts"] == len(POSTS) and bad["share_changed"] == 1.0
    assert bad["relative_shift"] < 0
    others = cells.drop(("biased", "explicit_statement", "Black woman"))
    assert (others["flagged"] == 0).all() and (others["mean_shift"] == 0).all()
    v = res.verdicts()
    assert v["biased"]["invariant"] is False and v["biased"]["flagged"] == 1
    assert v["biased"]["where"] == "empathy, Black woman, explicit_statement"
    assert v["reply-only"]["invariant"] is True
    assert "NOT invariant (1 of 4 cells)" in res.headline()["biased"]
    assert set(t["reply_source"]) == {"run"}


def test_control_replies_of_the_run_are_used_for_every_variant_of_their_post(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    with RunStore(run_dir) as st:
        res = run_invariance(spec, st, [_ReplyOnly()], replies_per_post=3)
        pairs = st.query_df("SELECT DISTINCT variant_id, reply_id FROM invariance_scores")
        reps = st.replies_df()
    ctrl_keys = set(reps[reps["cue_type"] == "control"]["request_key"])
    assert set(pairs["reply_id"]) == ctrl_keys  # one control reply per post in this run
    assert len(pairs) == len(variants_frame())  # each variant x its post's reply
    assert res.pairs == len(pairs)


def test_reference_replies_stand_in_when_the_run_has_no_control_replies(tmp_path):
    run_dir = tmp_path / "fresh"
    spec = make_spec(run_dir)
    with RunStore(run_dir) as st:
        st.put_variants(variants_frame())
        res = run_invariance(spec, st, [_Biased()])
    ref = load_reference_replies()
    assert len(ref) >= 5
    assert set(res.table["reply_source"]) == {"reference"}
    assert res.pairs == len(variants_frame()) * len(ref)
    cell = res.table.set_index(["cue_type", "group"]).loc[("explicit_statement", "Black woman")]
    assert cell["n_pairs"] == len(POSTS) * len(ref) and cell["flagged"] == 1


def test_pair_scores_are_stored_and_never_computed_twice(tmp_path):
    spec, run_dir, keys = make_run(tmp_path)
    first, second = _Biased(), _Biased()
    with RunStore(run_dir) as st:
        a = run_invariance(spec, st, [first])
        b = run_invariance(spec, st, [second])
        stored = invariance_summary(st)
    assert first.pairs == a.pairs and second.pairs == 0
    pd.testing.assert_frame_equal(a.table.reset_index(drop=True), b.table.reset_index(drop=True))
    assert stored is not None and stored.verdicts() == a.verdicts()


def test_invariance_command_on_a_run_prints_the_verdict(tmp_path, capsys, monkeypatch):
    spec, run_dir, keys = make_run(tmp_path)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"name: t\noutput: {run_dir}\nscoring: {{scorers: [length], inference_probe: false}}\n",
                         encoding="utf-8")
    assert main(["scorers", "invariance", str(spec_file)]) == 2
    assert "invariant by construction" in capsys.readouterr().err
    assert main(["scorers", "invariance", str(spec_file), "--scorer", "nope"]) == 2
    assert "unknown scorer 'nope'" in capsys.readouterr().err
    assert main(["scorers", "invariance", str(spec_file), "--replies-per-post", "0"]) == 2


def test_no_variants_is_a_clear_error(tmp_path):
    spec = make_spec(tmp_path / "r")
    with RunStore(tmp_path / "r") as st:
        with pytest.raises(AuditError, match="no variants"):
            run_invariance(spec, st, [_ReplyOnly()])
