"""The embedded epitome scorer: output contract, determinism, dedupe rule, and reproduction of the
shipped artifact from the shared EPITOME data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from audit.errors import AuditError
from audit.scorers import epitome_train, get_scorer
from audit.scorers.epitome import (
    ARTIFACT_DIR, CV_FILE, MODEL_FILE, WEIGHTS_FILE, EpitomeScorer, Featurizer, cv_caveats, sentence_aggregates,
    sentences,
)
from audit.scorers.validation import metrics, validate

FILES = ("emotional-reactions-reddit.csv", "interpretations-reddit.csv", "explorations-reddit.csv")


@pytest.fixture(scope="module")
def scorer() -> EpitomeScorer:
    return EpitomeScorer()


def test_registry_gives_the_shipped_scorer_and_its_output_contract(scorer):
    s = get_scorer("epitome")
    assert isinstance(s, EpitomeScorer) and s.measures == ("ER", "IP", "EX", "empathy")
    posts = ["I feel so alone since my mom died.", "I failed my exam again.", "", "Nobody cares."]
    replies = ["I'm so sorry for your loss. How are you coping?", "I've been there too, it gets better.",
               "ok", ""]
    out = s.score(posts, replies)
    assert list(out.columns[:4]) == ["ER", "IP", "EX", "empathy"] and len(out) == 4
    for m in ("ER", "IP", "EX"):
        assert out[m].dtype == float and set(out[m]) <= {0.0, 1.0, 2.0}
    assert np.allclose(out["empathy"], out[["ER", "IP", "EX"]].mean(axis=1))
    assert s.score([], []).shape[0] == 0
    with pytest.raises(AuditError):
        s.score(["a"], ["b", "c"])


def test_info_names_the_artifact_and_the_training_data(scorer, shared_dir):
    info = scorer.info()
    assert info["name"] == "epitome" and info["version"]
    assert info["artifact_sha256"] == hashlib.sha256((ARTIFACT_DIR / MODEL_FILE).read_bytes()).hexdigest()
    per = {n: hashlib.sha256((shared_dir / "epitome_data" / n).read_bytes()).hexdigest() for n in FILES}
    combined = hashlib.sha256("".join(f"{per[n]}  {n}\n" for n in sorted(per)).encode()).hexdigest()
    assert info["training_data_sha256"] == combined
    # The license notice travels with the artifact, verbatim.
    assert (ARTIFACT_DIR / "LICENSE_NOTICE.txt").read_bytes() == (shared_dir / "epitome_data" / "LICENSE_NOTICE.txt").read_bytes()


def test_artifact_is_plain_json_and_npy_without_pickle():
    doc = json.loads((ARTIFACT_DIR / MODEL_FILE).read_text(encoding="utf-8"))
    w = np.load(ARTIFACT_DIR / WEIGHTS_FILE, allow_pickle=False)
    assert w.dtype == np.float64 and w.ndim == 1 and np.isfinite(w).all()
    assert doc["weights_sha256"] == hashlib.sha256((ARTIFACT_DIR / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert set(doc["layout"]["mechanisms"]) == {"ER", "IP", "EX"}


def test_cv_figures_are_recorded_with_the_artifact(scorer):
    p = ARTIFACT_DIR / CV_FILE
    if not p.is_file():
        pytest.fail("the shipped artifact has no cross-validation figures (epitome_cv.json)")
    cv = json.loads(p.read_text(encoding="utf-8"))
    assert cv["training_data_sha256"] == scorer.info()["training_data_sha256"]
    for m in ("ER", "IP", "EX"):
        folds = cv["folds"][m]
        acc = np.array([f["accuracy"] for f in folds])
        assert len(folds) == 5 and cv["summary"][m]["accuracy"] == pytest.approx(acc.mean())
        assert cv["summary"][m]["accuracy_sd"] == pytest.approx(acc.std(ddof=1))
        assert sum(f["n"] for f in folds) == cv["summary"][m]["pooled"]["n"]
    assert scorer.info()["cv"]["ER"]["accuracy"] == cv["summary"]["ER"]["accuracy"]


def test_caveats_name_every_shortfall_of_the_cross_validation(scorer):
    level = {"0": {"recall": 0.8, "support": 50}, "1": {"recall": 0.0, "support": 7}, "2": {"recall": 0.0, "support": 0}}
    summary = {
        "ER": {"meets_target": False, "accuracy": 0.7, "target_accuracy": 0.8, "macro_f1": 0.6, "target_macro_f1": 0.7,
               "pooled": {"per_level": level}},
        "EX": {"meets_target": True, "accuracy": 0.95, "target_accuracy": 0.9, "macro_f1": 0.8, "target_macro_f1": 0.5,
               "pooled": {"per_level": {"1": {"recall": 0.4, "support": 9}}}},
    }
    assert cv_caveats(summary) == [
        "ER is below the published RoBERTa classifiers in cross-validation (accuracy 0.700 vs 0.800, macro-F1 0.600 "
        "vs 0.700)",
        "ER level 1 is never recognised (cross-validated recall 0 over 7 pairs): a reply at that level is scored "
        "0 or 2",
    ]  # a level with no pairs is not a shortfall; EX meets its target
    assert cv_caveats(None) == []
    # the shipped scorer states its own shortfalls, as recorded with its artifact
    cv = json.loads((ARTIFACT_DIR / CV_FILE).read_text(encoding="utf-8"))["summary"]
    caveats = scorer.info()["caveats"]
    below = {c.split()[0] for c in caveats if "below the published" in c}
    assert below == {m for m, s in cv.items() if not s["meets_target"]}
    never = {(m, lv) for m, s in cv.items() for lv, pl in s["pooled"]["per_level"].items() if pl["recall"] == 0}
    assert {(c.split()[0], c.split()[2]) for c in caveats if "never recognised" in c} == never


@seed(4)
@settings(max_examples=15, deadline=None)
@given(st.integers(1, 40), st.integers(0, 10_000))
def test_scores_do_not_depend_on_batching_or_order(batch, shuffle_seed):
    df = _sample(60, 7)
    posts, replies = df["seeker_post"].tolist(), df["response_post"].tolist()
    whole = EpitomeScorer(batch_size=1000).score(posts, replies)
    perm = np.random.default_rng(shuffle_seed).permutation(len(df))
    part = EpitomeScorer(batch_size=batch).score([posts[i] for i in perm], [replies[i] for i in perm])
    pd.testing.assert_frame_equal(part, whole.iloc[perm].reset_index(drop=True))


def test_the_seeker_post_is_part_of_the_features(scorer):
    feat = scorer.model.featurizer
    reply = ["That sounds so hard. Have you talked to anyone about it?"]
    a, _, _ = feat.matrices(["I lost my job and my girlfriend left me"], reply)
    b, _, _ = feat.matrices(["My exams are next week and I cannot sleep"], reply)
    assert abs(a - b).max() > 0


def test_sentence_split_and_aggregates():
    assert sentences("Hi. How are you?\nI'm sorry!") == ["Hi.", "How are you?", "I'm sorry!"]
    assert sentences("") == [""]
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    agg = sentence_aggregates(p, np.array([1, 1, 0]), 3)
    assert agg[1, :3].tolist() == pytest.approx([0.3, 0.5, 0.8])
    assert agg[1, 3] == pytest.approx(1 - 0.9 * 0.2)
    assert agg[0, :3].tolist() == pytest.approx([0.5, 0.0, 0.5]) and (agg[2] == 0).all()


def test_featurizer_tfidf_rows_are_unit_length(scorer):
    feat: Featurizer = scorer.model.featurizer
    x, xs, owner = feat.matrices(["a post"], ["You are not alone. I hope it gets better."])
    for name in ("word", "char", "post"):
        lo = feat.offset[name]
        block = x[:, lo:lo + feat.size[name]]
        assert np.sqrt(block.multiply(block).sum()) == pytest.approx(feat.weights.get(name, 1.0))
    assert xs.shape[0] == 2 and owner.tolist() == [0, 0]


def _sample(n: int, rs: int) -> pd.DataFrame:
    from tests.conftest import SHARED

    df = pd.read_csv(SHARED / "epitome_data" / FILES[0], keep_default_na=False)
    return df.sample(n, random_state=rs).reset_index(drop=True)


def test_validation_on_a_small_labelled_file(tmp_path, shared_dir, scorer):
    df = pd.read_csv(shared_dir / "epitome_data" / FILES[2], keep_default_na=False).sample(40, random_state=11)
    p = tmp_path / "labelled.csv"
    df[["seeker_post", "response_post", "level"]].to_csv(p, index=False)
    back = pd.read_csv(p, keep_default_na=False)
    res = validate(scorer, "EX", back)
    pred = scorer.score(back["seeker_post"].tolist(), back["response_post"].tolist())["EX"].astype(int)
    want = metrics(back["level"].tolist(), pred.tolist())
    assert res["n"] == 40 and res["accuracy"] == want["accuracy"] and res["confusion"] == want["confusion"]
    assert np.sum(res["confusion"]) == 40
    assert sum(v["support"] for v in res["per_level"].values()) == 40


# ------------------------------------------------------------------------------- training


def test_dedupe_majority_vote_and_ties_dropped():
    df = pd.DataFrame({
        "sp_id": ["a", "a", "a", "b", "b", "c", "d", "d"],
        "rp_id": ["x", "x", "x", "y", "y", "z", "w", "w"],
        "seeker_post": ["p"] * 8, "response_post": ["r1", "r1", "r1", "r2", "r2", "r3", "r4", "r4"],
        "level": [0, 2, 0, 1, 2, 1, 2, 2], "rationales": ["", "s|", "", "t|", "u|", "", "v|", "w|"],
    })
    out, stats = epitome_train.dedupe(df)
    assert list(zip(out["sp_id"], out["level"])) == [("a", 0), ("c", 1), ("d", 2)]
    assert out.loc[out["sp_id"] == "d", "rationales"].item() == "v|"      # first row of the winning level
    assert stats == {"rows": 8, "pairs": 3, "duplicated_pairs": 3, "conflicting_pairs": 2, "tied_dropped": 1}


def test_groups_join_shared_posts_and_identical_replies():
    df = pd.DataFrame({"sp_id": ["a", "a", "b", "c", "d"],
                       "response_post": ["one", "two", "Two ", "three", "four"]})
    g = epitome_train.groups_of(df)
    assert g[0] == g[1] == g[2] and len({g[0], g[3], g[4]}) == 3


def _tiny_data(src: Path, dst: Path, n: int = 120) -> Path:
    dst.mkdir()
    keys = None
    for name in FILES:
        df = pd.read_csv(src / name, dtype=str, keep_default_na=False)
        if keys is None:
            keys = df[["sp_id", "rp_id"]].drop_duplicates().sample(n, random_state=3)
        df.merge(keys, on=["sp_id", "rp_id"]).to_csv(dst / name, index=False)
    (dst / "LICENSE_NOTICE.txt").write_bytes((src / "LICENSE_NOTICE.txt").read_bytes())
    return dst


def test_training_is_deterministic_and_the_result_scores(tmp_path, shared_dir):
    data = _tiny_data(shared_dir / "epitome_data", tmp_path / "data")
    a = epitome_train.train(data, tmp_path / "a", cv=False, progress=False)
    epitome_train.train(data, tmp_path / "b", cv=False, progress=False)
    for f in (MODEL_FILE, WEIGHTS_FILE, "LICENSE_NOTICE.txt"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    s = EpitomeScorer(tmp_path / "a")
    assert s.info()["training_data_sha256"] == a["training_data_sha256"] != EpitomeScorer().info()["training_data_sha256"]
    out = s.score(["I am sad"], ["I'm so sorry. What happened?"])
    assert set(out.iloc[0, :3]) <= {0.0, 1.0, 2.0}


def test_training_rejects_bad_data(tmp_path):
    with pytest.raises(AuditError):
        epitome_train.train(tmp_path / "missing", tmp_path / "out", cv=False)
    d = tmp_path / "d"
    d.mkdir()
    for name in FILES:
        pd.DataFrame({"sp_id": ["a"], "rp_id": ["b"], "seeker_post": ["p"], "response_post": ["r"],
                      "level": ["3"], "rationales": [""]}).to_csv(d / name, index=False)
    with pytest.raises(AuditError, match="level"):
        epitome_train.train(d, tmp_path / "out", cv=False)


# Retraining on another CPU or BLAS build gives the same model up to floating-point rounding: the
# L-BFGS fits (tol 1e-6) take slightly different paths when the BLAS kernels round differently.
# Measured: OpenBLAS's generic kernels (OPENBLAS_CORETYPE=Prescott) instead of the Haswell ones move
# the largest weight difference to 0.0023 (2e-4 of the largest weight, 11.7) and change no level.
# What is promised everywhere: the same vocabulary, layout and metadata, every weight within
# WEIGHTS_RTOL x the largest shipped weight, and the same predicted level for every training pair.
# Bit-for-bit equality holds only on the same CPU kind and library versions.
WEIGHTS_RTOL = 1e-3


def test_retraining_from_the_shared_data_reproduces_the_shipped_artifact(tmp_path, shared_dir):
    """The shipped model is rebuilt from ../shared/epitome_data: same model file apart from the weights'
    hash, weights equal within WEIGHTS_RTOL, and identical levels on every training pair (the CV
    figures, epitome_cv.json, come from the same code with cv=True and are checked above)."""
    epitome_train.train(shared_dir / "epitome_data", tmp_path, cv=False, progress=False)
    assert (tmp_path / "LICENSE_NOTICE.txt").read_bytes() == (ARTIFACT_DIR / "LICENSE_NOTICE.txt").read_bytes()
    new_doc = json.loads((tmp_path / MODEL_FILE).read_text(encoding="utf-8"))
    old_doc = json.loads((ARTIFACT_DIR / MODEL_FILE).read_text(encoding="utf-8"))
    for doc in (new_doc, old_doc):
        doc.pop("weights_sha256")
    assert new_doc == old_doc, "the model file differs from the shipped one beyond the weights' hash"
    new_w, old_w = np.load(tmp_path / WEIGHTS_FILE), np.load(ARTIFACT_DIR / WEIGHTS_FILE)
    assert new_w.shape == old_w.shape and new_w.dtype == old_w.dtype
    worst, scale = float(np.max(np.abs(new_w - old_w))), float(np.max(np.abs(old_w)))
    assert worst <= WEIGHTS_RTOL * scale, f"weights differ by up to {worst:.3g} (tolerance {WEIGHTS_RTOL * scale:.3g})"

    pairs = pd.concat([pd.read_csv(shared_dir / "epitome_data" / n, dtype=str, keep_default_na=False)
                       [["seeker_post", "response_post"]] for n in FILES]).drop_duplicates()
    posts, replies = pairs["seeker_post"].tolist(), pairs["response_post"].tolist()
    new_levels = EpitomeScorer(tmp_path).score(posts, replies)
    old_levels = EpitomeScorer().score(posts, replies)
    for m in ("ER", "IP", "EX"):
        changed = int((new_levels[m] != old_levels[m]).sum())
        assert changed == 0, f"{m}: {changed} of {len(pairs)} training pairs get another level"
