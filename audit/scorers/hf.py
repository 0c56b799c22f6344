"""``hf-classifier``: a user's own transformers sequence-classification checkpoints for ER/IP/EX.

Install the extra first: ``pip install "empathy-audit[hf]"`` (transformers and torch). Configure in the
spec (``scoring.hf_classifier``) or pass the paths directly::

    scoring:
      scorers: [hf-classifier, length, refusal, sentiment]
      hf_classifier:
        checkpoints: {ER: models/er, IP: models/ip, EX: models/ex}   # local directories
        input: pair          # pair: (seeker post, reply) as a text pair; reply: the reply alone
        max_length: 512
        batch_size: 16

Each checkpoint is a local directory readable by ``AutoModelForSequenceClassification`` and
``AutoTokenizer`` with exactly 3 labels, label index = EPITOME level (0 none, 1 weak, 2 strong). Nothing
is downloaded: loading uses ``local_files_only=True``. Mechanisms without a checkpoint are not scored;
``empathy`` (the mean of ER, IP, EX) is only given when all three are.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..resources import sha256_file
from .base import check_pairs
from .epitome import EPITOME_MEASURES
from .measures import measure_dicts, names

MECHANISMS = ("ER", "IP", "EX")


def _require_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise AuditError(
            f"the hf-classifier scorer needs the optional packages transformers and torch ({exc.name} is missing)",
            where="scorer 'hf-classifier'",
            fix='install them with: pip install "empathy-audit[hf]"',
        ) from None
    return transformers, torch


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 over the checkpoint's weight and config files (name + content), in name order."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt"):
            h.update(str(f.relative_to(path)).encode())
            h.update(sha256_file(f).encode())
    return h.hexdigest()


class HFClassifierScorer:
    """EPITOME levels from local transformers checkpoints (one per mechanism)."""

    name = "hf-classifier"
    declared_measures = EPITOME_MEASURES  # an instance declares the subset its checkpoints give

    def __init__(self, checkpoints: dict[str, str | Path] | None = None, input: str = "pair",
                 max_length: int = 512, batch_size: int = 16, device: str | None = None):
        if not checkpoints:
            raise AuditError(
                "the hf-classifier scorer needs at least one checkpoint", where="scoring.hf_classifier.checkpoints",
                fix="give local checkpoint directories, e.g. checkpoints: {ER: models/er, IP: models/ip, EX: models/ex}",
            )
        bad = sorted(set(checkpoints) - set(MECHANISMS))
        if bad:
            raise AuditError(f"unknown mechanism(s) {bad}", where="scoring.hf_classifier.checkpoints",
                             fix="use the keys ER, IP and EX")
        if input not in ("pair", "reply"):
            raise AuditError(f"input must be 'pair' or 'reply', not {input!r}", where="scoring.hf_classifier.input")
        self.checkpoints = {m: Path(p).expanduser() for m, p in checkpoints.items()}
        for m, p in self.checkpoints.items():
            if not (p / "config.json").is_file():
                raise AuditError(
                    f"no transformers checkpoint for {m} (config.json not found)", where=str(p),
                    fix="give the directory written by save_pretrained() (config.json, weights, tokenizer files)",
                )
        self.input = input
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        given = {m for m in MECHANISMS if m in self.checkpoints}
        self.declared_measures = tuple(m for m in EPITOME_MEASURES if m.name in given or (
            m.name == "empathy" and given == set(MECHANISMS)))
        self.measures = names(self.declared_measures)

    @cached_property
    def _models(self) -> dict[str, tuple[Any, Any]]:
        transformers, torch = _require_transformers()
        out = {}
        for m, p in self.checkpoints.items():
            try:
                tok = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
                model = transformers.AutoModelForSequenceClassification.from_pretrained(str(p), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise AuditError(f"cannot load the {m} checkpoint: {exc}", where=str(p),
                                 fix="check that the directory holds a sequence-classification model and its tokenizer") from None
            if model.config.num_labels != 3:
                raise AuditError(
                    f"the {m} checkpoint has {model.config.num_labels} labels; EPITOME levels need 3 (0, 1, 2)",
                    where=str(p), fix="train or export a 3-class head (label index = level)",
                )
            model.eval()
            if self.device:
                model.to(self.device)
            out[m] = (tok, model)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": "1", "input": self.input, "max_length": self.max_length,
            "checkpoints": {m: {"path": str(p), "sha256": checkpoint_sha256(p)} for m, p in self.checkpoints.items()},
            "measures": measure_dicts(self.declared_measures),
        }

    def score(self, posts: list[str], replies: list[str]) -> pd.DataFrame:
        check_pairs(posts, replies, self.name)
        _, torch = _require_transformers()
        cols: dict[str, list[float]] = {}
        for m, (tok, model) in self._models.items():
            levels: list[float] = []
            for i in range(0, len(replies), self.batch_size):
                rs = replies[i:i + self.batch_size]
                ps = posts[i:i + self.batch_size]
                enc = (tok(ps, rs, truncation="longest_first", max_length=self.max_length, padding=True, return_tensors="pt")
                       if self.input == "pair" else
                       tok(rs, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"))
                if self.device:
                    enc = {k: v.to(self.device) for k, v in enc.items()}
                with torch.no_grad():
                    logits = model(**enc).logits
                levels.extend(float(x) for x in logits.argmax(dim=-1).cpu().tolist())
            cols[m] = levels
        df = pd.DataFrame(cols)
        if "empathy" in self.measures:
            df["empathy"] = df[list(MECHANISMS)].mean(axis=1)
        # an empty reply has nothing to classify
        empty = np.array([not r.strip() for r in replies])
        if empty.any():
            df.loc[empty, list(self.measures)] = np.nan
        return df
