"""The optional epitome-plus scorer: the shipped artifact (hashes, licence files, CV figures), the
output contract, the confidence gate, clear cases, the missing-extra errors and the training helpers
that need no torch. Retraining takes ~20 CPU-minutes (docs/epitome.md), so it is not run here."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

from audit.errors import AuditError
from audit.scorers import available_scorers, epitome_plus_train, get_scorer
from audit.scorers.epitome import MECHANISMS, EpitomeScorer
from audit.scorers.epitome_plus import (
    ARTIFACT_DIR, CV_FILE, META_FILE, ONNX_FILE, TOKENIZER_FILE, CrossEncoder, EpitomePlusScorer, _load, cascade,
    combine, confidence, gate_threshold,
)

STRONG_ER = ["I'm so sorry. That sounds incredibly painful and my heart truly goes out to you.",
             "Oh no, I am so sorry you are going through this. That must feel awful, sending you a hug.",
             "I'm really sorry for your loss. I can only imagine how heartbroken you must feel."]
NO_ER = ["Go for a run every morning.", "Have you tried turning it off and on again?",
         "The library closes at nine on weekdays."]
POSTS = ["My dog died yesterday and I can't stop crying.", "I lost my job and my girlfriend left me.",
         "My father passed away last week."]


@pytest.fixture(scope="module")
def scorer() -> EpitomePlusScorer:
    return EpitomePlusScorer()


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((ARTIFACT_DIR / META_FILE).read_text(encoding="utf-8"))


def test_registered_like_epitome_with_the_same_measures():
    s = get_scorer("epitome-plus")
    assert isinstance(s, EpitomePlusScorer) and s.measures == ("ER", "IP", "EX", "empathy")
    row = next(r for r in available_scorers() if r["name"] == "epitome-plus")
    assert row["measures"] == ["ER", "IP", "EX", "empathy"] and row["source"] == "built-in"
    assert [m["label"] for m in row["declared"]] == [m["label"] for m in
                                                     next(r for r in available_scorers() if r["name"] == "epitome")["declared"]]


def test_the_shipped_artifact_matches_its_recorded_hashes_and_carries_both_notices(meta):
    for key, name in (("onnx_sha256", ONNX_FILE), ("tokenizer_sha256", TOKENIZER_FILE)):
        assert hashlib.sha256((ARTIFACT_DIR / name).read_bytes()).hexdigest() == meta[key]
    epitome_model = ARTIFACT_DIR.parent / "epitome_model.json"
    assert hashlib.sha256(epitome_model.read_bytes()).hexdigest() == meta["epitome_artifact_sha256"]
    # the EPITOME notice travels verbatim with the derived model; the MiniLM notice names its licence
    assert (ARTIFACT_DIR / "LICENSE_NOTICE.txt").read_bytes() == (ARTIFACT_DIR.parent / "LICENSE_NOTICE.txt").read_bytes()
    assert "Apache" in (ARTIFACT_DIR / "MINILM_NOTICE.txt").read_text(encoding="utf-8")
    assert (ARTIFACT_DIR / ONNX_FILE).stat().st_size < 25_000_000
    # the training data are the shared files the epitome artifact was trained on
    epi = json.loads(epitome_model.read_text(encoding="utf-8"))["meta"]
    assert meta["training_data_sha256"] == epi["training_data_sha256"]


def test_scores_have_the_contract_shape_and_level_range(scorer):
    posts = POSTS + ["", "Nobody cares."]
    replies = STRONG_ER + ["ok", ""]
    out = scorer.score(posts, replies)
    assert list(out.columns) == ["ER", "IP", "EX", "empathy"] and len(out) == 5
    for m in MECHANISMS:
        assert set(out[m].unique()) <= {0.0, 1.0, 2.0}
    assert np.allclose(out["empathy"], out[list(MECHANISMS)].mean(axis=1))
    assert len(scorer.score([], [])) == 0
    with pytest.raises(AuditError, match="2 posts but 1 replies"):
        scorer.score(["a", "b"], ["c"])


def test_clear_emotional_reactions_rank_above_none_both_gated_and_through_the_cross_encoder(scorer):
    posts = POSTS + POSTS
    replies = STRONG_ER + NO_ER
    for s in (scorer, EpitomePlusScorer(gate=False)):
        probs, _ = s.probabilities(posts, replies)
        p_er = probs[:, 0, 1:].sum(axis=1)                  # P(ER >= 1)
        assert p_er[:3].min() > p_er[3:].max()
        out = s.score(posts, replies)
        assert out["ER"][:3].min() >= 1 and out["ER"][3:].max() == 0
    _, enc = _load(str(ARTIFACT_DIR.resolve()), 0)
    q = enc.probs(posts, replies)
    assert np.allclose(q.sum(axis=2), 1.0, atol=1e-5)
    assert q[:3, 0, 1:].sum(axis=1).min() > q[3:, 0, 1:].sum(axis=1).max()


def test_the_gate_sends_exactly_the_unconfident_pairs_and_leaves_the_rest_to_epitome(scorer, meta, shared_dir):
    df = pd.read_csv(shared_dir / "epitome_data" / "emotional-reactions-reddit.csv").iloc[:120]
    posts, replies = df["seeker_post"].tolist(), df["response_post"].tolist()
    probs, sent = scorer.probabilities(posts, replies)
    base = EpitomeScorer().model.decision(posts, replies)
    base = np.stack([base[m] for m in MECHANISMS], axis=1)
    assert np.array_equal(sent, confidence(base) <= meta["gate_threshold"])
    assert 0 < sent.sum() < len(sent)
    # pairs the gate keeps get epitome's own levels; the others the average with the cross-encoder
    assert np.allclose(probs[~sent], base[~sent])
    _, enc = _load(str(ARTIFACT_DIR.resolve()), 0)
    idx = np.flatnonzero(sent)
    q = enc.probs([posts[i] for i in idx], [replies[i] for i in idx])
    assert np.allclose(probs[sent], combine(base[sent], q, meta["mix"]), atol=1e-6)
    levels = scorer.score(posts, replies)
    epi = EpitomeScorer().score(posts, replies)
    assert (levels.loc[~sent, list(MECHANISMS)].to_numpy() == epi.loc[~sent, list(MECHANISMS)].to_numpy()).all()
    # the rule is per pair: a pair scored alone gets the levels it gets in the batch
    for i in (int(idx[0]), int(np.flatnonzero(~sent)[0])):
        alone = scorer.score([posts[i]], [replies[i]])
        assert alone.iloc[0].tolist() == levels.iloc[i].tolist()


def test_info_shows_the_cross_validated_figures_of_both_scorers(scorer):
    info = scorer.info()
    cv = json.loads((ARTIFACT_DIR / CV_FILE).read_text(encoding="utf-8"))
    for m in MECHANISMS:
        assert info["cv"][m]["accuracy"] == cv["variants"]["cascade"]["summary"][m]["accuracy"]
        assert info["cv_epitome_same_folds"][m]["macro_f1"] == cv["variants"]["epitome"]["summary"][m]["macro_f1"]
        # the folds the shipped figures cover (docs/epitome.md says which), each with its own row
        assert [r["fold"] for r in cv["variants"]["cascade"]["folds"][m]] == cv["folds_run"]
        assert len(cv["folds_run"]) >= 2 and set(cv["folds_run"]) <= set(range(5))
    assert info["gate"]["on"] and 0 < info["gate"]["threshold"] < 1
    assert info["model"] != EpitomePlusScorer(gate=False).info()["model"]    # the gate is part of the identity


def test_a_tampered_or_mismatched_artifact_is_refused(tmp_path):
    art = tmp_path / "plus"
    shutil.copytree(ARTIFACT_DIR, art)
    (art / TOKENIZER_FILE).write_text((art / TOKENIZER_FILE).read_text(encoding="utf-8") + " ", encoding="utf-8")
    with pytest.raises(AuditError, match="does not match its checksum"):
        EpitomePlusScorer(art).score(["a"], ["b"])
    shutil.copytree(ARTIFACT_DIR, tmp_path / "plus2")
    other_epitome = tmp_path / "epi"
    shutil.copytree(ARTIFACT_DIR.parent, other_epitome, ignore=shutil.ignore_patterns("epitome_plus"))
    doc = json.loads((other_epitome / "epitome_model.json").read_text(encoding="utf-8"))
    doc["meta"]["version"] = "other"
    (other_epitome / "epitome_model.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(AuditError, match="built on another epitome artifact"):
        EpitomePlusScorer(tmp_path / "plus2", epitome_dir=other_epitome).score(["a"], ["b"])
    with pytest.raises(AuditError, match="artifact is missing"):
        EpitomePlusScorer(tmp_path / "nothing").score(["a"], ["b"])


def test_without_the_plus_extra_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)      # import onnxruntime now fails
    art = tmp_path / "plus"
    shutil.copytree(ARTIFACT_DIR, art)                         # a fresh path: nothing cached
    with pytest.raises(AuditError) as exc:
        EpitomePlusScorer(art).score(["I feel alone."], ["I'm sorry."])
    assert 'pip install "empathy-audit[plus]"' in str(exc.value) and "onnxruntime" in str(exc.value)
    with pytest.raises(AuditError, match=r"empathy-audit\[plus\]"):
        CrossEncoder(art / ONNX_FILE, art / TOKENIZER_FILE, 128)


def test_training_without_torch_says_to_install_the_train_plus_extra(monkeypatch, shared_dir, capsys):
    from audit.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)
    assert main(["scorers", "train", "epitome-plus", "--data", str(shared_dir / "epitome_data"), "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "train-plus" in err and "torch" in err


# ---------------------------------------------------------------- the numpy parts of training and the gate
def test_gate_threshold_is_the_quantile_and_sends_that_fraction():
    rng = np.random.default_rng(0)
    base = rng.dirichlet(np.ones(3), size=(2000, 3))
    conf = confidence(base)
    assert np.allclose(conf, base.max(axis=2).min(axis=1))
    thr = gate_threshold(conf, 0.3)
    assert abs((conf <= thr).mean() - 0.3) < 0.002
    with pytest.raises(ValueError):
        gate_threshold(conf, 1.5)
    cross = rng.dirichlet(np.ones(3), size=(2000, 3))
    out, sent = cascade(base, lambda idx: cross[idx], thr, 0.5)
    assert np.array_equal(sent, conf <= thr)
    assert np.allclose(out[sent], 0.5 * base[sent] + 0.5 * cross[sent]) and np.array_equal(out[~sent], base[~sent])
    assert np.allclose(out.sum(axis=2), 1.0)
    out_all, sent_all = cascade(base, lambda idx: cross[idx], None, 0.5)
    assert sent_all.all() and np.allclose(out_all, combine(base, cross, 0.5))


def test_evaluate_scores_each_fold_and_ignores_missing_labels():
    rng = np.random.default_rng(1)
    n = 300
    y = rng.integers(0, 3, size=(n, 3))
    y[:7, 1] = -1                                   # a tied vote: no IP label
    fold_of = np.arange(n) % 5
    perfect = np.eye(3)[np.clip(y, 0, 2)]           # one-hot of the truth
    noisy = perfect.copy()
    noisy[fold_of == 2] = np.eye(3)[(np.clip(y, 0, 2)[fold_of == 2] + 1) % 3]   # fold 2 always wrong
    res = epitome_plus_train.evaluate(y, fold_of, {"perfect": perfect, "noisy": noisy})
    assert res["perfect"]["summary"]["ER"]["accuracy"] == 1.0
    assert res["perfect"]["summary"]["IP"]["pooled"]["n"] == n - 7
    accs = [f["accuracy"] for f in res["noisy"]["folds"]["EX"]]
    assert accs == [1.0, 1.0, 0.0, 1.0, 1.0] and res["noisy"]["summary"]["EX"]["accuracy"] == pytest.approx(0.8)


def test_merging_cv_runs_over_disjoint_folds_equals_one_run_over_all(tmp_path):
    rng = np.random.default_rng(2)
    n = 400
    y = rng.integers(0, 3, size=(n, 3))
    fold_of = rng.integers(0, 5, size=n)
    probs = {"epitome": rng.dirichlet(np.ones(3), size=(n, 3)), "cascade": rng.dirichlet(np.ones(3), size=(n, 3))}
    whole = epitome_plus_train.evaluate(y, fold_of, probs)
    paths = []
    for part in ([0, 1], [2, 3, 4]):
        run = np.where(np.isin(fold_of, part), fold_of, -1)
        doc = {"folds_run": part, "variants": epitome_plus_train.evaluate(y, run, probs), "fraction_sent": 0.3,
               "training_data_sha256": "x", "protocol": "p"}
        paths.append(tmp_path / f"cv{part[0]}.json")
        paths[-1].write_text(json.dumps(doc), encoding="utf-8")
    merged = epitome_plus_train.merge_cv(paths, tmp_path / "merged.json")
    assert merged["folds_run"] == [0, 1, 2, 3, 4]
    for v in probs:
        for m in MECHANISMS:
            a, b = merged["variants"][v]["summary"][m], whole[v]["summary"][m]
            for k in ("accuracy", "macro_f1", "weighted_kappa", "accuracy_sd"):
                assert a[k] == pytest.approx(b[k])
            assert a["pooled"]["confusion"] == b["pooled"]["confusion"]
            assert a["pooled"]["macro_f1"] == pytest.approx(b["pooled"]["macro_f1"])
    with pytest.raises(AuditError, match="overlap"):
        epitome_plus_train.merge_cv([paths[0], paths[0]], tmp_path / "bad.json")


def test_scorers_validate_runs_epitome_plus_and_shows_its_cross_validated_figures(shared_dir, tmp_path, capsys):
    from audit.cli import main

    df = pd.read_csv(shared_dir / "epitome_data" / "emotional-reactions-reddit.csv")
    df = df.groupby("level").sample(n=8, random_state=3).reset_index(drop=True)
    p = tmp_path / "er.csv"
    df[["seeker_post", "response_post", "level"]].to_csv(p, index=False)
    assert main(["scorers", "validate", "--scorer", "epitome-plus", "--mechanism", "ER", "--data", str(p), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    pred = EpitomePlusScorer().score(df["seeker_post"].tolist(), df["response_post"].tolist())["ER"].to_numpy()
    assert res["n"] == 24 and res["accuracy"] == pytest.approx(float((pred == df["level"].to_numpy()).mean()))
    assert main(["scorers", "validate", "--scorer", "epitome-plus", "--mechanism", "ER", "--data", str(p)]) == 0
    cv = EpitomePlusScorer().info()["cv"]["ER"]
    assert (f"cross-validated figures on EPITOME Reddit (ER): accuracy {cv['accuracy']:.3f}, "
            f"macro-F1 {cv['macro_f1']:.3f}") in capsys.readouterr().out


def test_a_pairs_cross_encoder_probabilities_do_not_depend_on_the_other_pairs_scored_with_it():
    _, enc = _load(str(ARTIFACT_DIR.resolve()), 0)
    posts = POSTS + ["I am sad."]
    replies = STRONG_ER + ["I'm sorry. " * 40]          # a long pair: batching would pad the others
    together = enc.probs(posts, replies)
    for i in range(len(posts)):
        assert np.array_equal(enc.probs([posts[i]], [replies[i]])[0], together[i])
