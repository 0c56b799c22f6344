"""The embedded ``epitome`` scorer: EPITOME-level classifiers for Emotional Reactions (ER),
Interpretations (IP) and Explorations (EX) (Sharma, Miner, Atkins & Althoff, EMNLP 2020).

Each reply is judged in the context of the seeker's post. Scoring needs numpy and scipy only (no
scikit-learn, no download): the shipped artifact in ``audit/scorers/artifacts/`` holds the
vocabularies, idf weights and the linear weights of the classifiers (JSON + ``.npy``, no pickle),
the SHA-256 of the training data and the cross-validated figures. It was trained by
:mod:`audit.scorers.epitome_train` (``empathy-audit scorers train epitome --data DIR``), which
rebuilds it (bit-for-bit on the same CPU kind; up to solver rounding elsewhere). See ``docs/epitome.md`` for the features, the training protocol and the
measured accuracy; ``artifacts/LICENSE_NOTICE.txt`` for the data's provenance and license.

Features of a (post, reply) pair (all computed by :class:`Featurizer`, shared with training):

- reply: word 1-2-gram and character 2-5-gram (within words) TF-IDF, sublinear tf, L2 per block;
- seeker post: word unigram TF-IDF (context);
- cross features: word overlap of reply and post, questions, second- and first-person pronouns,
  length;
- sentence level: a classifier trained on the annotated rationale sentences scores every sentence of
  the reply; the highest sentence probabilities are features of the reply classifier (the level of a
  reply is carried by its most empathic sentence, also in a long reply).

>>> from audit.scorers.epitome import EpitomeScorer
>>> s = EpitomeScorer()                                                  # doctest: +SKIP
>>> s.score(["I feel so alone."], ["I'm so sorry. What happened?"])      # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ..errors import AuditError
from ..resources import sha256_file
from .base import check_pairs
from .measures import Evidence, Measure, measure_dicts, names

MECHANISMS = ("ER", "IP", "EX")
#: What the EPITOME measures mean (shared by every scorer of the EPITOME levels: epitome, llm-judge,
#: hf-classifier). Levels: 0 none, 1 weak, 2 strong (Sharma et al. 2020).
EPITOME_MEASURES = (
    Measure("ER", "Emotional Reactions", kind="ordinal", range=(0, 2), higher_is="more empathic"),
    Measure("IP", "Interpretations", kind="ordinal", range=(0, 2), higher_is="more empathic"),
    Measure("EX", "Explorations", kind="ordinal", range=(0, 2), higher_is="more empathic"),
    Measure("empathy", "overall empathy (EPITOME mean)", kind="continuous", range=(0, 2), higher_is="more empathic",
            short="empathy"),
)
_CV_DATA = ("Reddit peer-support replies, EPITOME corpus (Sharma et al. 2020), 5-fold CV grouped by seeker post; "
            "never checked on LLM replies")
#: The shipped classifier's validity evidence per measure: the pooled macro-F1 of its cross-validation
#: (``artifacts/epitome_cv.json``, key ``summary.<M>.pooled``; a test keeps the two equal), with the
#: quadratic-weighted kappa beside it. Macro-F1 ranks the measures: it averages the F1 of the three
#: levels, so a level the classifier cannot recognise counts fully (IP's weak level has F1 0, EX's
#: 0.45), where the kappa of a measure dominated by one level (85% of EX pairs are "none") is carried
#: by that level (EX has the highest kappa, 0.76). The composite has none of its own: it averages
#: mechanisms of unequal agreement.
EPITOME_EVIDENCE = {
    "ER": Evidence(_CV_DATA, "human peer replies", "macro-F1", 0.732, 2705,
                   "quadratic-weighted kappa 0.65; F1 of the levels none/weak/strong 0.85/0.64/0.71"),
    "IP": Evidence(_CV_DATA, "human peer replies", "macro-F1", 0.554, 2705,
                   "quadratic-weighted kappa 0.68; F1 of the levels none/weak/strong 0.84/0.00/0.82"),
    "EX": Evidence(_CV_DATA, "human peer replies", "macro-F1", 0.717, 2712,
                   "quadratic-weighted kappa 0.76; F1 of the levels none/weak/strong 0.96/0.45/0.74"),
    "empathy": Evidence("the mean of ER, IP and EX, whose agreement differs (macro-F1 0.55 to 0.73)",
                        "human peer replies", note="a composite of measures of unequal validity"),
}
#: The epitome scorer's declarations: :data:`EPITOME_MEASURES` with the classifier's evidence.
EPITOME_SCORER_MEASURES = tuple(replace(m, evidence=EPITOME_EVIDENCE[m.name]) for m in EPITOME_MEASURES)
ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
MODEL_FILE = "epitome_model.json"
WEIGHTS_FILE = "epitome_weights.npy"
CV_FILE = "epitome_cv.json"
FORMAT = "empathy-audit/epitome-linear/1"

_APOS = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*|[?!]")
_SENT = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")
_SECOND = frozenset({"you", "your", "you're", "yours", "yourself", "u", "ur", "you've", "you'll", "you'd"})
_FIRST = frozenset({"i", "me", "my", "i'm", "i've", "myself", "mine", "i'd", "i'll", "im", "ive"})
_STOP = frozenset(
    "a an the and or but if of to in on at for with is are was were be been am it it's this that i me my you "
    "your he she they we to do does did not no so just have has had im i'm what how".split()
)
#: Names of the dense cross features, in order.
DENSE = ("q_marks", "has_q", "q_first", "second_person", "first_person", "overlap", "words", "post_q", "sentences")
MAX_CHAR_WORD = 24       # longer "words" (URLs) contribute their first 24 characters only


def normalize(text: str) -> str:
    return text.lower().translate(_APOS)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(normalize(text))


def sentences(text: str) -> list[str]:
    """Split a reply into sentences (at . ! ? and line breaks); never returns an empty list."""
    out = [s.strip() for s in _SENT.findall(text)]
    out = [s for s in out if _TOKEN.search(normalize(s))]
    return out or [text]


def word_grams(toks: Sequence[str]) -> list[str]:
    return list(toks) + [a + " " + b for a, b in zip(toks, toks[1:])]


def char_grams(word: str, lo: int = 2, hi: int = 5) -> list[str]:
    w = " " + word[:MAX_CHAR_WORD] + " "
    return [w[i:i + n] for n in range(lo, hi + 1) for i in range(len(w) - n + 1)]


def dense_features(post_toks: Sequence[str], reply_toks: Sequence[str], n_sent: int) -> list[float]:
    """Cross features of a pair (bounded, roughly 0..1); names in :data:`DENSE`."""
    n = max(len(reply_toks), 1)
    q = reply_toks.count("?")
    words = [t for t in reply_toks if t not in ("?", "!")]
    first_q = 0.0
    if q:
        first_q = 1.0 if reply_toks.index("?") <= 25 else 0.5
    content_r = {t for t in words if t not in _STOP}
    content_p = {t for t in post_toks if t not in _STOP and t not in ("?", "!")}
    overlap = len(content_r & content_p) / math.sqrt(max(len(content_r), 1) * max(len(content_p), 1))
    return [
        math.log1p(q) / 2.0,
        1.0 if q else 0.0,
        first_q,
        min(sum(t in _SECOND for t in words) / n * 5.0, 1.5),
        min(sum(t in _FIRST for t in words) / n * 5.0, 1.5),
        overlap,
        math.log1p(len(words)) / 6.0,
        1.0 if "?" in post_toks else 0.0,
        math.log1p(n_sent) / 3.0,
    ]


class Featurizer:
    """Turns (post, reply) pairs into sparse feature matrices, identically at training and scoring.

    ``vocab`` maps a block name (``word``, ``char``, ``post``) to its sorted list of n-grams, ``idf``
    to its idf weights. ``pair_matrix`` gives one row per pair: the blocks ``word, char, post`` (each
    L2-normalised TF-IDF, times its block weight) then the dense features. ``sentence_matrix`` gives
    one row per reply sentence (blocks ``word, char``) and the pair each sentence belongs to.
    """

    BLOCKS = ("word", "char", "post")

    def __init__(self, vocab: dict[str, list[str]], idf: dict[str, np.ndarray], weights: dict[str, float]):
        self.vocab = vocab
        self.idf = {k: np.asarray(v, dtype=np.float64) for k, v in idf.items()}
        self.weights = dict(weights)
        self.index = {k: {g: i for i, g in enumerate(v)} for k, v in vocab.items()}
        self.size = {k: len(v) for k, v in vocab.items()}
        self.offset: dict[str, int] = {}
        off = 0
        for k in self.BLOCKS:
            self.offset[k] = off
            off += self.size[k]
        self.n_sparse = off
        self.n_pair = off + len(DENSE)
        self.n_sentence = self.size["word"] + self.size["char"]
        self._char_cache: dict[str, list[int]] = {}

    def _char_ids(self, word: str) -> list[int]:
        ids = self._char_cache.get(word)
        if ids is None:
            idx = self.index["char"]
            ids = [idx[g] for g in char_grams(word) if g in idx]
            if len(self._char_cache) > 200_000:
                self._char_cache.clear()
            self._char_cache[word] = ids
        return ids

    def _counts(self, rows: list[int], cols: list[int], n_rows: int, n_cols: int) -> sparse.csr_matrix:
        m = sparse.csr_matrix(
            (np.ones(len(cols), dtype=np.float64), (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
            shape=(n_rows, n_cols),
        )
        m.sum_duplicates()
        return m

    def _tfidf(self, m: sparse.csr_matrix, name: str) -> sparse.csr_matrix:
        """Sublinear tf (1 + ln count) times idf, each row L2-normalised, times the block weight."""
        m = m.tocsr()
        m.sum_duplicates()
        m.data = (1.0 + np.log(m.data)) * self.idf[name][m.indices]
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return (sparse.diags(self.weights.get(name, 1.0) / norms) @ m).tocsr()

    def matrices(self, posts: Sequence[str], replies: Sequence[str], with_sentences: bool = True):
        """``(X_pair, X_sentence, sentence_owner)``; the sentence parts are None without sentences.

        Character n-grams are counted per distinct word of the batch (cached) and spread to the
        replies and sentences by a sparse product (tokens x words) @ (words x n-grams): the same
        counts as n-gramming every word occurrence, at a fraction of the cost.
        """
        widx, pidx = self.index["word"], self.index["post"]
        local: dict[str, int] = {}           # distinct words of this batch -> row of the word x char matrix
        pw_r: list[int] = []
        pw_c: list[int] = []                 # pair-level word n-grams
        pt_r: list[int] = []
        pt_c: list[int] = []                 # pair-level word occurrences (local ids) for the char block
        pp_r: list[int] = []
        pp_c: list[int] = []                 # post unigrams
        sw_r: list[int] = []
        sw_c: list[int] = []
        st_r: list[int] = []
        st_c: list[int] = []
        dense = np.zeros((len(replies), len(DENSE)))
        owner: list[int] = []
        k = 0
        for i, (post, reply) in enumerate(zip(posts, replies)):
            ptoks = tokens(post)
            ids = [pidx[g] for g in ptoks if g in pidx]
            pp_r.extend([i] * len(ids))
            pp_c.extend(ids)
            sents = sentences(reply)
            all_toks: list[str] = []
            for s in sents:
                toks = tokens(s)
                all_toks.extend(toks)
                if with_sentences:
                    w = [widx[g] for g in word_grams(toks) if g in widx]
                    sw_r.extend([k] * len(w))
                    sw_c.extend(w)
                    lids = [local.setdefault(t, len(local)) for t in toks if t != "?" and t != "!"]
                    st_r.extend([k] * len(lids))
                    st_c.extend(lids)
                    owner.append(i)
                    k += 1
            w = [widx[g] for g in word_grams(all_toks) if g in widx]
            pw_r.extend([i] * len(w))
            pw_c.extend(w)
            lids = [local.setdefault(t, len(local)) for t in all_toks if t != "?" and t != "!"]
            pt_r.extend([i] * len(lids))
            pt_c.extend(lids)
            dense[i] = dense_features(ptoks, all_toks, len(sents))
        n = len(replies)
        words = list(local)
        char_lists = [self._char_ids(t) for t in words]
        indptr = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum([len(c) for c in char_lists], out=indptr[1:])
        flat = np.fromiter((j for c in char_lists for j in c), dtype=np.int64, count=int(indptr[-1]))
        w2c = sparse.csr_matrix((np.ones(len(flat)), flat, indptr), shape=(len(words), self.size["char"]))
        n_char = self.size["char"]
        pair_char = self._counts(pt_r, pt_c, n, len(words)) @ w2c if words else sparse.csr_matrix((n, n_char))
        xp = sparse.hstack([
            self._tfidf(self._counts(pw_r, pw_c, n, self.size["word"]), "word"),
            self._tfidf(pair_char, "char"),
            self._tfidf(self._counts(pp_r, pp_c, n, self.size["post"]), "post"),
            sparse.csr_matrix(dense),
        ], format="csr")
        if not with_sentences:
            return xp, None, None
        sent_char = self._counts(st_r, st_c, k, len(words)) @ w2c if words else sparse.csr_matrix((k, n_char))
        xs = sparse.hstack([self._tfidf(self._counts(sw_r, sw_c, k, self.size["word"]), "word"),
                            self._tfidf(sent_char, "char")], format="csr")
        return xp, xs, np.asarray(owner, dtype=np.int64)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


#: Names of the sentence aggregates appended to the pair features, in order.
SENTENCE_AGG = ("max_p1", "max_p2", "max_p12", "noisy_or", "mean_p12", "n_p12_over_half", "mean_p2")


def sentence_aggregates(p_sent: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per pair: max over its sentences of P(level 1), P(level 2), P(level >= 1), the noisy-or
    1 - prod(P(level 0)) of its sentences, the mean over its sentences of P(level >= 1), the number
    of sentences with P(level >= 1) > 0.5 (capped at 3, divided by 3) and the mean of P(level 2)."""
    out = np.zeros((n, len(SENTENCE_AGG)))
    if len(owner) == 0:
        return out
    order = np.argsort(owner, kind="stable")
    o = owner[order]
    p = p_sent[order]
    starts = np.flatnonzero(np.r_[True, o[1:] != o[:-1]])
    rows = o[starts]
    q = p[:, 1] + p[:, 2]
    count = np.diff(np.r_[starts, len(o)]).astype(np.float64)
    out[rows, 0] = np.maximum.reduceat(p[:, 1], starts)
    out[rows, 1] = np.maximum.reduceat(p[:, 2], starts)
    out[rows, 2] = np.maximum.reduceat(q, starts)
    out[rows, 3] = 1.0 - np.exp(np.add.reduceat(np.log(np.clip(p[:, 0], 1e-9, 1.0)), starts))
    out[rows, 4] = np.add.reduceat(q, starts) / count
    out[rows, 5] = np.minimum(np.add.reduceat((q > 0.5).astype(np.float64), starts), 3.0) / 3.0
    out[rows, 6] = np.add.reduceat(p[:, 2], starts) / count
    return out


class EpitomeModel:
    """The three mechanism classifiers over one :class:`Featurizer` (arrays, no scikit-learn)."""

    def __init__(self, featurizer: Featurizer, params: dict[str, dict[str, Any]], meta: dict[str, Any] | None = None):
        self.featurizer = featurizer
        self.params = params          # mechanism -> {sent_W, sent_b, W, b, offset, agg_scale}
        self.meta = meta or {}

    def decision(self, posts: Sequence[str], replies: Sequence[str]) -> dict[str, np.ndarray]:
        """Per mechanism, the (n, 3) class probabilities (before the decision offsets)."""
        use_sent = any(p.get("sent_W") is not None for p in self.params.values())
        xp, xs, owner = self.featurizer.matrices(posts, replies, with_sentences=use_sent)
        out = {}
        for m, p in self.params.items():
            x = xp
            if p.get("sent_W") is not None:
                ps = softmax(np.asarray(xs @ p["sent_W"]) + p["sent_b"])
                agg = sentence_aggregates(ps, owner, len(replies)) * p["agg_scale"]
                x = sparse.hstack([xp, sparse.csr_matrix(agg)], format="csr")
            out[m] = softmax(np.asarray(x @ p["W"]) + p["b"])
        return out

    def predict(self, posts: Sequence[str], replies: Sequence[str]) -> dict[str, np.ndarray]:
        probs = self.decision(posts, replies)
        return {m: np.argmax(np.log(np.clip(pr, 1e-12, 1.0)) + self.params[m]["offset"], axis=1)
                for m, pr in probs.items()}

    # ---- storage: one JSON (vocabularies, idf, shapes, metadata) + one float64 .npy (all weights) ----
    def to_files(self, out_dir: Path) -> dict[str, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        chunks: list[np.ndarray] = []
        layout: dict[str, Any] = {}
        pos = 0

        def put(arr: np.ndarray) -> list[int]:
            nonlocal pos
            a = np.ascontiguousarray(arr, dtype=np.float64)
            chunks.append(a.ravel())
            ref = [pos, *a.shape]
            pos += a.size
            return ref

        f = self.featurizer
        layout["idf"] = {b: put(f.idf[b]) for b in Featurizer.BLOCKS}
        layout["mechanisms"] = {}
        for m, p in self.params.items():
            entry = {"W": put(p["W"]), "b": put(p["b"]), "offset": put(p["offset"]), "agg_scale": float(p["agg_scale"])}
            if p.get("sent_W") is not None:
                entry["sent_W"] = put(p["sent_W"])
                entry["sent_b"] = put(p["sent_b"])
            layout["mechanisms"][m] = entry
        weights = np.concatenate(chunks) if chunks else np.zeros(0)
        wpath = out_dir / WEIGHTS_FILE
        np.save(wpath, weights, allow_pickle=False)
        doc = {
            "format": FORMAT,
            "meta": self.meta,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": sha256_file(wpath),
            "block_weights": f.weights,
            "dense_features": list(DENSE),
            "sentence_aggregates": list(SENTENCE_AGG),
            "layout": layout,
            "vocab": f.vocab,
        }
        mpath = out_dir / MODEL_FILE
        mpath.write_text(json.dumps(doc, sort_keys=True, ensure_ascii=True, separators=(",", ":")) + "\n",
                         encoding="utf-8")
        return {"model": mpath, "weights": wpath}

    @classmethod
    def from_files(cls, art_dir: Path) -> "EpitomeModel":
        mpath = art_dir / MODEL_FILE
        try:
            doc = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise AuditError("the epitome artifact is missing", where=str(mpath),
                             fix="reinstall empathy-audit, or rebuild it: empathy-audit scorers train epitome "
                                 "--data DIR") from None
        if doc.get("format") != FORMAT:
            raise AuditError(f"unknown epitome artifact format {doc.get('format')!r}", where=str(mpath),
                             fix="rebuild it with this version: empathy-audit scorers train epitome --data DIR")
        wpath = art_dir / doc["weights_file"]
        if sha256_file(wpath) != doc["weights_sha256"]:
            raise AuditError("the epitome weights do not match their checksum", where=str(wpath),
                             fix="reinstall empathy-audit, or rebuild the artifact")
        w = np.load(wpath, allow_pickle=False)

        def get(ref: list[int]) -> np.ndarray:
            start, *shape = ref
            size = int(np.prod(shape)) if shape else 1
            return w[start:start + size].reshape(shape)

        lay = doc["layout"]
        feat = Featurizer(doc["vocab"], {b: get(r) for b, r in lay["idf"].items()}, doc["block_weights"])
        params = {}
        for m, e in lay["mechanisms"].items():
            params[m] = {"W": get(e["W"]), "b": get(e["b"]), "offset": get(e["offset"]), "agg_scale": e["agg_scale"],
                         "sent_W": get(e["sent_W"]) if "sent_W" in e else None,
                         "sent_b": get(e["sent_b"]) if "sent_b" in e else None}
        return cls(feat, params, doc.get("meta", {}))


def _compact_cv(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """Per mechanism: mean and sd over the CV folds of accuracy, macro-F1 and weighted kappa, and n."""
    if not summary:
        return None
    keys = ("accuracy", "accuracy_sd", "macro_f1", "macro_f1_sd", "weighted_kappa", "weighted_kappa_sd")
    return {m: {**{k: s[k] for k in keys if k in s}, "n": s.get("pooled", {}).get("n")} for m, s in summary.items()}


def cv_caveats(summary: dict[str, Any] | None) -> list[str]:
    """Plain sentences on where the cross-validated classifiers fall short, for reports.

    A mechanism below the published RoBERTa classifiers (Sharma et al. 2020) in accuracy or
    macro-F1, and a level that is never recognised (pooled recall 0), each give one sentence.
    """
    out: list[str] = []
    for m, s in (summary or {}).items():
        if s.get("meets_target") is False:
            out.append(f"{m} is below the published RoBERTa classifiers in cross-validation (accuracy "
                       f"{s['accuracy']:.3f} vs {s['target_accuracy']:.3f}, macro-F1 {s['macro_f1']:.3f} vs "
                       f"{s['target_macro_f1']:.3f})")
        for level, pl in sorted(s.get("pooled", {}).get("per_level", {}).items()):
            if pl.get("support") and pl.get("recall") == 0:
                others = " or ".join(x for x in ("0", "1", "2") if x != level)
                out.append(f"{m} level {level} is never recognised (cross-validated recall 0 over "
                           f"{pl['support']} pairs): a reply at that level is scored {others}")
    return out


@lru_cache(maxsize=4)
def _load(art_dir: str) -> EpitomeModel:
    return EpitomeModel.from_files(Path(art_dir))


class EpitomeScorer:
    """The embedded default scorer: ER, IP, EX levels (0/1/2 as floats) and ``empathy`` (their mean).

    ``EpitomeScorer()`` loads the artifact shipped in the package; ``artifact_dir`` loads another
    (e.g. one rebuilt by ``empathy-audit scorers train epitome --out DIR``). Loading happens on first
    use, not at import.
    """

    name = "epitome"
    declared_measures = EPITOME_SCORER_MEASURES
    measures = names(EPITOME_MEASURES)
    reads_post = True
    parallel_safe = True  # a pure function of the pair: may score in worker processes

    def __init__(self, artifact_dir: str | Path | None = None, batch_size: int = 512):
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else ARTIFACT_DIR
        self.batch_size = batch_size

    @property
    def model(self) -> EpitomeModel:
        return _load(str(self.artifact_dir.resolve()))

    def info(self) -> dict[str, Any]:
        meta = self.model.meta
        cv = {}
        cv_path = self.artifact_dir / CV_FILE
        if cv_path.is_file():
            cv = json.loads(cv_path.read_text(encoding="utf-8"))
        return {
            "name": self.name,
            "version": meta.get("version"),
            "artifact_sha256": sha256_file(self.artifact_dir / MODEL_FILE),
            "weights_sha256": sha256_file(self.artifact_dir / WEIGHTS_FILE),
            "training_data_sha256": meta.get("training_data_sha256"),
            "training": {k: meta.get(k) for k in ("n_pairs", "dedupe_rule", "data_files") if k in meta},
            "cv": _compact_cv(cv.get("summary")),
            "cv_protocol": cv.get("protocol"),
            "caveats": cv_caveats(cv.get("summary")),
            "reference": "Sharma, Miner, Atkins & Althoff (2020). A Computational Approach to Understanding "
                         "Empathy Expressed in Text-Based Mental Health Support. EMNLP.",
            "license_notice": str(self.artifact_dir / "LICENSE_NOTICE.txt"),
            "measures": measure_dicts(self.declared_measures),
        }

    def score(self, posts: list[str], replies: list[str]) -> pd.DataFrame:
        check_pairs(posts, replies, "epitome")
        model = self.model
        parts = {m: [] for m in MECHANISMS}
        for start in range(0, len(replies), self.batch_size):
            pred = model.predict(posts[start:start + self.batch_size], replies[start:start + self.batch_size])
            for m in MECHANISMS:
                parts[m].append(pred[m])
        df = pd.DataFrame({m: (np.concatenate(parts[m]) if parts[m] else np.zeros(0)).astype(float) for m in MECHANISMS})
        df["empathy"] = df[list(MECHANISMS)].mean(axis=1)
        return df


__all__ = ["EPITOME_MEASURES", "EpitomeModel", "EpitomeScorer", "Featurizer", "MECHANISMS", "sentences", "tokens"]
