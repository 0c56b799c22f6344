"""A labelling table of a PCSA run's judged conversations, for validating the final judge against
human annotators (``empathy-audit pcsa validation-table``; then ``empathy-audit judge validate``).

One row per judged conversation of the run's current plan (:func:`validation_table`):

- ``conversation_id``; ``objective`` (the objective's label and goal, as the judge was told);
  ``transcript``: the kept turns as the judge read them (:func:`audit.pcsa.dialogue.render_conversation`),
  plain text; ``criterion``: one yes/no question restating the judge's verdict rule
  (``audit/data/pcsa/validation.yaml``), so that ``yes`` means UNSAFE;
- ``judge``: ``yes`` when the verdict is UNSAFE, ``no`` when SAFE; ``judge_compliance``,
  ``judge_harmful_content``, ``judge_impersonation``, ``judge_toxic_empathy``: the four axes as yes/no
  (each can be validated on its own with ``--columns judge=judge_compliance``);
- ``human_1`` ... ``human_k``: empty, for the annotators.

Unparseable verdicts are left out (there is no judge label to validate) and counted, as are
conversations without a verdict (open, failed, no dialogue).

**Blinding (our decision).** The group the client stated, the arm, model, persona and strategy are
not in the file: an annotator who sees the group is asked the equity question implicitly, and the
arm says which conversations were attacks. They go to a sidecar key file (``<out stem>.key.csv``,
one row per conversation id) for the coordinator; ``conversation_id`` (a content hash) reveals none
of it. The judge's labels are in the file because ``judge validate`` reads one table; hide those
columns from the annotators (they are the ones starting with ``judge``) so that they do not anchor on
them: the guide in ``validation.yaml`` says so too.

**Sampling.** With ``n``, a stratified random sample: strata are verdict x arm x group (UNSAFE and
SAFE conversations of every group, and of each baseline arm), **equal allocation** over the strata
(:func:`audit.ratings.packet.allocate`: ``n // strata`` each, a small stratum's share going to the
others), simple random sampling without replacement within a stratum (seeded). Equal allocation
over verdicts oversamples the rarer verdict, which is what makes the judge's errors on it
measurable; the kappa and accuracy are then those of the sample, not of the run's verdict mix (the
key file has each row's stratum for reweighting).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError
from .parse import AXES

YES_NO = {1: "yes", 0: "no"}
KEY_COLUMNS = ["conversation_id", "stratum", "verdict", "arm", "model_label", "group_name", "persona_id",
               "objective", "replicate"]


@lru_cache(maxsize=1)
def criterion_text() -> dict[str, str]:
    """``criterion`` and ``guide`` of ``audit/data/pcsa/validation.yaml``."""
    from pydantic import BaseModel, ConfigDict

    from .data import _load

    class _File(BaseModel):
        model_config = ConfigDict(extra="forbid")
        source: str
        version: int
        criterion: str
        guide: str

    f = _load("validation.yaml", _File)
    return {"criterion": " ".join(f.criterion.split()), "guide": " ".join(f.guide.split())}


@dataclass
class ValidationTable:
    """``table`` (the file for the annotators and ``judge validate``), ``key`` (the sidecar: design
    columns and stratum per conversation), ``counts`` (judged, unparseable, not judged, written),
    ``strata`` (rows per stratum in the table) and the ``paths`` written."""

    table: pd.DataFrame
    key: pd.DataFrame
    counts: dict[str, int]
    strata: dict[str, int]
    paths: dict[str, Path] = field(default_factory=dict)
    backups: list[Path] = field(default_factory=list)  # files replaced under force, kept beside them

    def summary(self) -> str:
        c = self.counts
        s = (f"{c['written']} of {c['judged']} judged conversations written"
             + (f" (a stratified sample over {len(self.strata)} strata)" if c["written"] < c["judged"] else ""))
        s += (f"; left out: {c['unparseable']} with an unparseable verdict (no judge label to validate), "
              f"{c['not_judged']} without a verdict (open, failed or no dialogue)")
        return s + "."


def key_path(out: str | Path) -> Path:
    """The sidecar key file of the table ``out``: ``<stem>.key.csv`` beside it."""
    out = Path(out)
    return out.with_name(out.name[: -len(out.suffix)] + ".key.csv" if out.suffix else out.name + ".key.csv")


def _sample(conv: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    from ..ratings.packet import allocate

    if n is None or n >= len(conv):
        return conv
    sizes = conv.groupby("stratum").size().to_dict()
    if n < len(sizes):
        raise AuditError(f"--n {n} cannot cover the run's {len(sizes)} strata (verdict x arm x group)",
                         where="--n", fix=f"give --n {len(sizes)} or more (several per stratum is better), or "
                                          "leave --n out for every judged conversation")
    rng = np.random.default_rng(seed)
    alloc = allocate(dict(sorted(sizes.items())), n, rng)
    parts = []
    for s, k in sorted(alloc.items()):
        d = conv[conv["stratum"] == s]
        parts.append(d.iloc[np.sort(rng.choice(len(d), size=k, replace=False))])
    return pd.concat(parts).sort_values("conversation_id")


def validation_table(run_dir: str | Path, *, out: str | Path | None = None, n: int | None = None, seed: int = 0,
                     annotators: int = 2, force: bool = False) -> ValidationTable:
    """The labelling table of the judged conversations of ``run_dir`` (module docstring); with ``out``
    also written there (``.csv``/``.tsv``: CSV-injection safe via :func:`audit.untrusted.csv_safe`;
    ``.jsonl``) with the key file beside it (:func:`key_path`). Reads the store, never writes to it.
    An existing non-empty table or key file is refused before any work (annotators may have filled
    it) unless ``force``, which keeps a backup of each (:func:`audit.human_files.guard_human_files`)."""
    from ..store import RunStore
    from .analysis import conversations_frame
    from .data import load_data
    from .dialogue import render_conversation, stored_history

    if n is not None and n < 1:
        raise AuditError(f"--n {n} is not a positive number", where="--n", fix="give --n 1 or more, or leave it out")
    if annotators < 1:
        raise AuditError(f"{annotators} annotators", where="annotators", fix="give 1 or more")
    suffix = Path(out).suffix.lower() if out is not None else ".csv"
    if suffix not in (".csv", ".tsv", ".jsonl"):
        raise AuditError(f"cannot write a table as '{suffix or Path(out).name}'", where=f"--out {out}",
                         fix="name the file .csv, .tsv or .jsonl")
    if out is not None and not force:
        from ..human_files import guard_human_files

        guard_human_files([out, key_path(Path(out))], force=False, what="a labelling table annotators may have filled")
    run_dir = Path(run_dir)
    if not (run_dir / "store.sqlite").is_file():
        raise AuditError("no run store here", where=str(run_dir),
                         fix="give the run directory of a PCSA run (it holds store.sqlite)")
    with RunStore(run_dir, create=False) as store:
        if store.get_meta("suite") != "pcsa":
            raise AuditError(f"the run is not a PCSA run (suite: {store.get_meta('suite') or 'empathy'})",
                             where=str(run_dir), fix="give the run directory of a `suite: pcsa` run")
        conv = conversations_frame(store)
        turns = store.pcsa_turns_df()
    status = conv["judge_status"].fillna("")
    judged = conv[(status == "ok") & conv["verdict"].isin(["UNSAFE", "SAFE"])].copy()
    counts = {"conversations": len(conv), "judged": len(judged), "unparseable": int((status == "unparseable").sum())}
    counts["not_judged"] = len(conv) - counts["judged"] - counts["unparseable"]
    if judged.empty:
        raise AuditError(f"no conversation of the run has a verdict ({counts['unparseable']} unparseable, "
                         f"{counts['not_judged']} not judged)", where=str(run_dir),
                         fix="finish the run (empathy-audit run SPEC) so that the judge gives verdicts")
    judged["stratum"] = (judged["verdict"] + " | " + judged["arm"] + " | " + judged["group_name"].astype(str))
    sample = _sample(judged, n, seed)
    objectives = load_data().objectives
    crit = criterion_text()["criterion"]
    rows = []
    for r in sample.to_dict("records"):
        o = objectives.get(r["objective"])
        rows.append({"conversation_id": r["conversation_id"],
                     "objective": f"{o.label}: {o.goal}" if o else str(r["objective"]),
                     "transcript": render_conversation(stored_history(turns, r["conversation_id"])),
                     "criterion": crit, "judge": "yes" if r["verdict"] == "UNSAFE" else "no",
                     **{f"judge_{a}": YES_NO.get(int(r[a])) if pd.notna(r[a]) else None for a in AXES},
                     **{f"human_{i}": None for i in range(1, annotators + 1)}})
    table = pd.DataFrame(rows)
    key = sample[KEY_COLUMNS].reset_index(drop=True)
    counts["written"] = len(table)
    res = ValidationTable(table, key, counts, sample.groupby("stratum").size().astype(int).to_dict())
    if out is not None:
        from ..human_files import guard_human_files

        res.backups = guard_human_files([out, key_path(Path(out))], force=force)
        res.paths = write_validation_table(res, out)
    return res


def write_validation_table(res: ValidationTable, out: str | Path) -> dict[str, Path]:
    """Write ``res.table`` to ``out`` (by suffix) and ``res.key`` to :func:`key_path`; both CSV-injection
    safe where CSV. Returns ``{"table": ..., "key": ...}``."""
    from ..untrusted import csv_safe

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".jsonl":
        res.table.to_json(out, orient="records", lines=True, force_ascii=False)
    else:
        csv_safe(res.table).to_csv(out, index=False, sep="\t" if suffix == ".tsv" else ",")
    kp = key_path(out)
    csv_safe(res.key).to_csv(kp, index=False)
    return {"table": out, "key": kp}


__all__ = ["KEY_COLUMNS", "ValidationTable", "criterion_text", "key_path", "validation_table",
           "write_validation_table"]
