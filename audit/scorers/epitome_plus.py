"""The optional ``epitome-plus`` scorer: the embedded ``epitome`` classifiers plus a fine-tuned
MiniLM-L6 cross-encoder, consulted only for the pairs the fast classifier is least sure about.

Design (confidence-gated cascade; figures and protocol in ``docs/epitome.md``):

1. The ``epitome`` classifiers (:mod:`audit.scorers.epitome`, the same shipped artifact) give, per
   mechanism m in (ER, IP, EX), the class probabilities ``p_m`` of levels 0/1/2.
2. The pair's confidence is ``c = min_m max_k p_m[k]`` (its least confident mechanism).
3. A pair with ``c <= threshold`` (``threshold`` is fixed at training time: the ``gate_fraction``
   quantile of the out-of-fold confidences of the training pairs, so about 30% of EPITOME-like pairs
   go on) is read by the cross-encoder: all-MiniLM-L6-v2 over ``post [SEP] reply`` (at most
   ``max_length`` word pieces, the longer text truncated first), mean pooling, one linear head per
   mechanism, int8 ONNX. Its probabilities ``q_m`` are averaged with the fast ones:
   ``(1 - mix) p_m + mix q_m`` (``mix`` = 0.5).
4. The level is the argmax; ``empathy`` is the mean of the three levels, as in ``epitome``.

The rule depends on the pair alone (not on the batch), so a reply gets the same levels whatever it
is scored with. ``EpitomePlusScorer(gate=False)`` sends every pair to the cross-encoder (slower).

Run time needs onnxruntime and tokenizers (``pip install "empathy-audit[plus]"``), never torch and
never a download: the int8 ONNX model and the tokenizer ship in ``artifacts/epitome_plus/`` under
the EPITOME license notice (the head and the two top encoder layers were trained on EPITOME data)
and the MiniLM notice (Apache-2.0). :mod:`audit.scorers.epitome_plus_train` rebuilds the artifact
(``empathy-audit scorers train epitome-plus --data DIR``).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..resources import sha256_file
from .base import check_pairs
from .epitome import ARTIFACT_DIR as EPITOME_ARTIFACT_DIR
from .epitome import EPITOME_MEASURES, MECHANISMS, MODEL_FILE as EPITOME_MODEL_FILE, EpitomeScorer, _compact_cv, cv_caveats
from .measures import measure_dicts, names

ARTIFACT_DIR = EPITOME_ARTIFACT_DIR / "epitome_plus"
META_FILE = "epitome_plus.json"
ONNX_FILE = "cross_encoder.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
CV_FILE = "epitome_plus_cv.json"
FORMAT = "empathy-audit/epitome-plus/1"
INSTALL_FIX = 'install the extra: pip install "empathy-audit[plus]" (onnxruntime and tokenizers)'


# ------------------------------------------------------------------ the cascade (plain numpy)
def confidence(base: np.ndarray) -> np.ndarray:
    """Per pair, the smallest over mechanisms of the largest class probability.

    ``base`` has shape (n, 3 mechanisms, 3 levels); returns shape (n,)."""
    return base.max(axis=2).min(axis=1)


def gate_threshold(conf: np.ndarray, fraction: float) -> float:
    """The confidence at or below which a pair goes to the cross-encoder: the ``fraction`` quantile
    of ``conf`` (numpy's default linear interpolation)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return float(np.quantile(conf, fraction)) if len(conf) else 0.0


def combine(base: np.ndarray, cross: np.ndarray, mix: float) -> np.ndarray:
    """``(1 - mix) * base + mix * cross`` (both (n, 3, 3) probabilities); rows stay distributions."""
    return (1.0 - mix) * base + mix * cross


def cascade(base: np.ndarray, cross_fn, threshold: float | None, mix: float) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the cascade and the mask of pairs the cross-encoder read.

    ``cross_fn(index_array) -> (k, 3, 3)`` scores the selected pairs; ``threshold`` None sends all.
    """
    sent = np.ones(len(base), dtype=bool) if threshold is None else confidence(base) <= threshold
    out = base.copy()
    idx = np.flatnonzero(sent)
    if len(idx):
        out[idx] = combine(base[idx], cross_fn(idx), mix)
    return out, sent


# ------------------------------------------------------------------ the cross-encoder (onnxruntime)
def _runtime() -> tuple[Any, Any]:
    try:
        import onnxruntime
        import tokenizers
    except ImportError as exc:
        raise AuditError(f"the epitome-plus scorer needs onnxruntime and tokenizers ({exc.name} is not installed)",
                         where="scorer epitome-plus", fix=INSTALL_FIX) from None
    return onnxruntime, tokenizers


def make_tokenizer(path: str | Path, max_length: int):
    """The MiniLM word-piece tokenizer from ``tokenizer.json``, truncating a (post, reply) pair to
    ``max_length`` pieces (the longer of the two first), no padding (batches pad themselves)."""
    _, tokenizers = _runtime()
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length, strategy="longest_first")
    tok.no_padding()
    return tok


def encode(tok, posts: Sequence[str], replies: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(input ids, token type ids) of ``[CLS] post [SEP] reply [SEP]`` per pair (shared with training)."""
    return [(e.ids, e.type_ids) for e in tok.encode_batch(list(zip(posts, replies)))]


def pad_batch(encs: Sequence[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
    """int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` padded to the batch's longest pair."""
    n, width = len(encs), max(len(e[0]) for e in encs)
    ids = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    for i, (a, t) in enumerate(encs):
        ids[i, :len(a)] = a
        mask[i, :len(a)] = 1
        types[i, :len(t)] = t
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


class CrossEncoder:
    """The int8 ONNX cross-encoder: ``probs(posts, replies)`` gives (n, 3 mechanisms, 3 levels).

    One pair per onnxruntime run (``batch_size`` 1, the default): the dynamic int8 quantisation scales
    the activations of each run by that run's range, so in a batch a pair's probabilities would depend
    on its batch-mates (measured: 1.3% of the cross-encoder's levels changed between batches of 32 and
    single pairs). One pair at a time also needs no padding and was faster per CPU-second (164 vs 148
    pairs). Larger ``batch_size`` values sort pairs by length and pad. ``threads`` is onnxruntime's
    intra-op thread count (0: onnxruntime's default, all cores).
    """

    def __init__(self, onnx_path: str | Path, tokenizer_path: str | Path, max_length: int, *, threads: int = 0,
                 batch_size: int = 1):
        ort, _ = _runtime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.tokenizer = make_tokenizer(tokenizer_path, max_length)
        self.batch_size = batch_size

    def probs(self, posts: Sequence[str], replies: Sequence[str]) -> np.ndarray:
        encs = encode(self.tokenizer, posts, replies)
        out = np.zeros((len(encs), 3, 3))
        order = np.argsort([len(e[0]) for e in encs], kind="stable")
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            out[idx] = self.session.run(["probs"], pad_batch([encs[i] for i in idx]))[0]
        return out


# ------------------------------------------------------------------ artifact
def read_meta(art_dir: Path) -> dict[str, Any]:
    """The artifact's metadata, after checking the files it names against their SHA-256."""
    mpath = art_dir / META_FILE
    try:
        meta = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError("the epitome-plus artifact is missing", where=str(mpath),
                         fix="reinstall empathy-audit, or rebuild it: empathy-audit scorers train epitome-plus "
                             "--data DIR") from None
    if meta.get("format") != FORMAT:
        raise AuditError(f"unknown epitome-plus artifact format {meta.get('format')!r}", where=str(mpath),
                         fix="rebuild it with this version: empathy-audit scorers train epitome-plus --data DIR")
    for key, name in (("onnx_sha256", ONNX_FILE), ("tokenizer_sha256", TOKENIZER_FILE)):
        p = art_dir / name
        if not p.is_file():
            raise AuditError(f"the epitome-plus artifact lacks {name}", where=str(p),
                             fix="reinstall empathy-audit, or rebuild the artifact")
        if sha256_file(p) != meta[key]:
            raise AuditError(f"{name} does not match its checksum in {META_FILE}", where=str(p),
                             fix="reinstall empathy-audit, or rebuild the artifact")
    return meta


@lru_cache(maxsize=4)
def _load(art_dir: str, threads: int) -> tuple[dict[str, Any], CrossEncoder]:
    d = Path(art_dir)
    meta = read_meta(d)
    return meta, CrossEncoder(d / ONNX_FILE, d / TOKENIZER_FILE, int(meta["max_length"]), threads=threads)


class EpitomePlusScorer:
    """ER, IP, EX levels (0/1/2 as floats) and ``empathy`` from the ``epitome`` classifiers gated into a
    fine-tuned MiniLM cross-encoder (module docstring). Optional: needs ``empathy-audit[plus]``.

    ``gate=False`` sends every pair to the cross-encoder; ``threshold`` replaces the artifact's gate
    threshold (a higher one sends more pairs); ``threads`` sets onnxruntime's thread count (0: all
    cores). ``artifact_dir`` loads another build (``scorers train epitome-plus --out DIR``);
    ``epitome_dir`` another ``epitome`` artifact (it must be the one the build was made with).
    """

    name = "epitome-plus"
    declared_measures = EPITOME_MEASURES
    measures = names(EPITOME_MEASURES)
    reads_post = True

    def __init__(self, artifact_dir: str | Path | None = None, *, epitome_dir: str | Path | None = None,
                 gate: bool = True, threshold: float | None = None, threads: int = 0, batch_size: int = 512):
        self.artifact_dir = Path(artifact_dir) if artifact_dir is not None else ARTIFACT_DIR
        self.base = EpitomeScorer(epitome_dir)
        self.gate = gate
        self.threshold = threshold
        self.threads = threads
        self.batch_size = batch_size
        self.last_fraction_sent: float | None = None

    def preflight(self) -> None:
        """Checked before the first request of a run (:mod:`audit.preflight`): the ``plus`` extra is
        installed and the artifact is readable, so a missing extra never surfaces after paid requests."""
        _runtime()
        read_meta(self.artifact_dir)

    def _loaded(self) -> tuple[dict[str, Any], CrossEncoder]:
        meta, enc = _load(str(self.artifact_dir.resolve()), int(self.threads))
        base_sha = sha256_file(self.base.artifact_dir / EPITOME_MODEL_FILE)
        if meta.get("epitome_artifact_sha256") != base_sha:
            raise AuditError("the epitome-plus artifact was built on another epitome artifact",
                             where=str(self.artifact_dir / META_FILE),
                             fix="rebuild it on this one: empathy-audit scorers train epitome-plus --data DIR")
        return meta, enc

    def _threshold(self, meta: dict[str, Any]) -> float:
        return float(meta["gate_threshold"] if self.threshold is None else self.threshold)

    def info(self) -> dict[str, Any]:
        meta, _ = self._loaded()
        cv: dict[str, Any] = {}
        cv_path = self.artifact_dir / CV_FILE
        if cv_path.is_file():
            cv = json.loads(cv_path.read_text(encoding="utf-8"))
        variants = cv.get("variants", {})
        mine = variants.get("cascade" if self.gate else "average", {}).get("summary")
        return {
            "name": self.name,
            "version": meta.get("version"),
            "artifact_sha256": sha256_file(self.artifact_dir / META_FILE),
            "weights_sha256": meta.get("onnx_sha256"),
            # the gate changes the scores, so it is part of the scorer's identity
            "model": f"{meta.get('encoder', {}).get('name')} cross-encoder, "
                     + (f"gated at confidence {self._threshold(meta):.6g}" if self.gate else "every pair"),
            "epitome_artifact_sha256": meta.get("epitome_artifact_sha256"),
            "training_data_sha256": meta.get("training_data_sha256"),
            "gate": {"on": self.gate, "threshold": self._threshold(meta),
                     "fraction_of_training_pairs": meta.get("gate_fraction"), "mix": meta.get("mix")},
            "max_length": meta.get("max_length"),
            "cv": _compact_cv(mine),
            "cv_epitome_same_folds": _compact_cv(variants.get("epitome", {}).get("summary")),
            "cv_protocol": cv.get("protocol"),
            "caveats": cv_caveats(mine),
            "reference": "Sharma, Miner, Atkins & Althoff (2020), EMNLP (EPITOME); Wang et al. (2020), MiniLM, "
                         "NeurIPS; sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0).",
            "license_notice": str(self.artifact_dir / "LICENSE_NOTICE.txt"),
            "measures": measure_dicts(self.declared_measures),
        }

    def probabilities(self, posts: list[str], replies: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, 3, 3) level probabilities per mechanism (ER, IP, EX) and the mask of the pairs the
        cross-encoder read."""
        check_pairs(posts, replies, self.name)
        meta, enc = self._loaded()
        model = self.base.model
        parts, sent_parts = [], []
        for s in range(0, len(replies), self.batch_size):
            ps, rs = posts[s:s + self.batch_size], replies[s:s + self.batch_size]
            pr = model.decision(ps, rs)
            base = np.stack([pr[m] for m in MECHANISMS], axis=1)
            out, sent = cascade(base, lambda idx: enc.probs([ps[i] for i in idx], [rs[i] for i in idx]),
                                self._threshold(meta) if self.gate else None, float(meta["mix"]))
            parts.append(out)
            sent_parts.append(sent)
        if not parts:
            return np.zeros((0, 3, 3)), np.zeros(0, dtype=bool)
        return np.concatenate(parts), np.concatenate(sent_parts)

    def score(self, posts: list[str], replies: list[str]) -> pd.DataFrame:
        probs, sent = self.probabilities(posts, replies)
        self.last_fraction_sent = float(sent.mean()) if len(sent) else None
        df = pd.DataFrame({m: probs[:, k].argmax(axis=1).astype(float) for k, m in enumerate(MECHANISMS)})
        df["empathy"] = df[list(MECHANISMS)].mean(axis=1)
        return df


__all__ = ["CrossEncoder", "EpitomePlusScorer", "cascade", "combine", "confidence", "gate_threshold"]
