"""Blinded human rating packets of a run's stored replies (``empathy-audit ratings packet``).

:func:`make_packet` draws a stratified sample of the run's answered replies (status ``ok``, current
design), gives each rater an opaque item id per reply and a random order, writes the packet files and
records which reply went to which rater under which id in the run store (tables ``rating_packets``
and ``rating_items``, migration 3). The packet files never name a group, a cue type or a model.

Sampling. The strata are every (model, cue type, group) of the run plus every model's control:
the cells whose scorer error must be compared. Allocation is **equal**: each stratum gets
``n // strata`` replies (the remainder goes to randomly chosen strata), and a stratum with fewer
replies than its share gives the rest to the others. Equal rather than proportional allocation
because the per-group validity check needs comparable precision in every group; in a counterfactual
design every stratum has about the same number of replies anyway, so the two hardly differ. Within a
stratum the replies are spread over the posts (one reply per post before a second from any post),
so that errors are not driven by a few posts. Everything is drawn from ``numpy.random.default_rng``
seeded with ``seed`` (the spec's ``seed`` by default), so the same run, ``n``, raters and seed give
the same sample and the same assignment.

Raters and overlap. ``overlap`` replies (chosen spread over the strata) go to every rater, for
inter-rater agreement; the other ``n - overlap`` are dealt out in turn, so every rater gets
``overlap + (n - overlap) / raters`` items, each rater in its own random order. Default overlap:
20% of ``n`` (at least 2) with two or more raters, 0 with one.

Blinding. Item ids are ``HMAC-SHA256(salt, rater + request_key)`` (first 16 hex digits) with a random
per-packet salt kept only in the store: the same reply has a different id for every rater, and no
id can be traced to a reply without the store. Raters see the post without the demographic cue
(the text of the post's control variant) where the run has a control for it, and the post **as
written** where it has none (an observational or mixed release, where the post was only ever seen
under its group), and the reply. A reply that itself names
the person (e.g. by a cue name) is shown as it is: that is what the audited model wrote.

Files written under ``out`` (which must be empty or absent):

- ``guide.md``: the rater guide (:file:`audit/data/ratings/guide.yaml`);
- ``label-studio/config.xml``: a Label Studio labeling configuration (Choices ``er``, ``ip``, ``ex``
  with values 0/1/2, Choices ``harmful``, TextArea ``comment``);
- per rater ``<rater>/ratings.csv`` (columns ``item_id, post, reply, er, ip, ex, harmful,
  comment``; CSV-injection safe), ``<rater>/packet.html`` (printable, self-contained, no script) and
  ``<rater>/label-studio-tasks.json`` (Label Studio tasks ``[{"data": {"item_id", "post", "reply"}}]``);
- ``manifest.json``: packet id, raters, item counts, the files (no labels, no request keys).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..resources import DATA_DIR
from ..store import RunStore
from ..store_migrations import now_iso
from ..untrusted import csv_safe, visible_controls

GUIDE_DIR = DATA_DIR / "ratings"
CSV_COLUMNS = ("item_id", "post", "reply", "er", "ip", "ex", "harmful", "comment")
#: CSV / Label Studio column -> the epitome scorer's measure name (see audit/scorers/epitome.py)
LEVEL_COLUMNS = {"er": "ER", "ip": "IP", "ex": "EX"}
RATER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
CONTROL = "control"


@lru_cache(maxsize=1)
def load_guide() -> dict[str, Any]:
    """The rater guide (definitions, examples, harmful criteria) from ``audit/data/ratings/guide.yaml``."""
    from ..spec import read_yaml

    guide, _ = read_yaml(GUIDE_DIR / "guide.yaml", kind="rater guide")
    return guide


def _env(autoescape: bool):
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(str(GUIDE_DIR)), autoescape=autoescape, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env


def guide_markdown() -> str:
    """The rater guide as Markdown (the packet's ``guide.md``)."""
    return _env(False).get_template("guide.md.j2").render(guide=load_guide())


def label_studio_config() -> str:
    """The Label Studio labeling configuration (XML) of a packet."""
    return _env(True).get_template("label_studio.xml.j2").render(guide=load_guide())


def rater_ids(raters: int | Sequence[str]) -> list[str]:
    """Rater ids: ``r1..rK`` for a count ``K``, else the given names (checked: unique, usable as folder names)."""
    if isinstance(raters, int):
        if raters < 1:
            raise AuditError(f"--raters {raters}: a packet needs at least one rater", fix="give --raters 1 or more")
        return [f"r{i}" for i in range(1, raters + 1)]
    names = [str(r).strip() for r in raters]
    bad = [r for r in names if not RATER_ID.match(r)]
    if bad:
        raise AuditError(f"rater id {bad[0]!r} is not usable", where="raters",
                         fix="use 1-40 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if len(set(names)) != len(names) or not names:
        raise AuditError("rater ids must be unique and at least one", where="raters", fix="name each rater once")
    return names


def item_id(salt: str, rater: str, request_key: str) -> str:
    """The opaque id of a reply in one rater's packet: HMAC-SHA256 keyed by the packet's salt."""
    return "it" + hmac.new(bytes.fromhex(salt), f"{rater}\0{request_key}".encode(), hashlib.sha256).hexdigest()[:16]


def rateable_replies(store: RunStore) -> pd.DataFrame:
    """The replies a packet can hold: answered (status ``ok``, non-empty text) replies of the current
    design, with ``stratum`` (model | cue type | group) and ``shown_post`` (the post without its cue,
    or as written when the post has no control)."""
    rep = store.replies_df("reply", include_failed=False)
    if rep.empty:
        raise AuditError("the run has no answered replies to rate", where=str(store.run_dir),
                         fix="run the audit (empathy-audit run SPEC) before making a rating packet")
    rep = rep[rep["reply"].fillna("").str.strip() != ""].copy()
    variants = store.variants_df(all_designs=True)
    control_text = dict(zip(variants.loc[variants["cue_type"] == CONTROL, "post_id"],
                            variants.loc[variants["cue_type"] == CONTROL, "text"]))
    # a post with a control is shown without the cue (its control's text); a post without one (an
    # observational or mixed release: the post was only ever seen under its group) is shown as written
    own_text = dict(zip(variants["variant_id"], variants["text"]))
    rep["shown_post"] = [control_text.get(p, own_text.get(v)) for p, v in zip(rep["post_id"], rep["variant_id"])]
    missing = rep.loc[rep["shown_post"].isna(), "post_id"]
    if len(missing):
        raise AuditError(f"post {missing.iloc[0]} has no stored text (neither a control nor its own variant)",
                         where=str(store.path), fix="re-import or re-run the variants stage of this run")
    rep["group"] = rep["group_name"].where(rep["cue_type"] != CONTROL, CONTROL)
    rep["stratum"] = rep["model_label"].astype(str) + " | " + rep["cue_type"].astype(str) + " | " + rep["group"].astype(str)
    return rep.reset_index(drop=True)


def allocate(sizes: dict[str, int], n: int, rng: np.random.Generator) -> dict[str, int]:
    """Equal allocation of ``n`` draws to strata of the given sizes, a full stratum's share going to
    the others; the remainder of ``n // strata`` goes to randomly chosen strata.

    >>> allocate({"a": 10, "b": 2, "c": 10}, 12, np.random.default_rng(0))
    {'a': 5, 'b': 2, 'c': 5}
    """
    alloc = {s: 0 for s in sizes}
    remaining = n
    open_ = [s for s in sizes if sizes[s] > 0]
    while remaining > 0 and open_:
        share, extra = divmod(remaining, len(open_))
        for i, j in enumerate(rng.permutation(len(open_))):
            s = open_[j]
            give = min(share + (1 if i < extra else 0), sizes[s] - alloc[s])
            alloc[s] += give
            remaining -= give
        open_ = [s for s in open_ if alloc[s] < sizes[s]]
    return alloc


def _spread(df: pd.DataFrame, by: str, rng: np.random.Generator) -> pd.DataFrame:
    """``df`` in random order, interleaved over the values of ``by`` (one row of each value, then a
    second of each, ...)."""
    df = df.iloc[rng.permutation(len(df))].copy()
    df["_rank"] = df.groupby(by, sort=False).cumcount()
    df["_tie"] = rng.random(len(df))
    return df.sort_values(["_rank", "_tie"], kind="stable").drop(columns=["_rank", "_tie"])


def stratified_sample(replies: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows of :func:`rateable_replies` by equal allocation over ``stratum``, spread over posts
    within each stratum (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sizes = replies.groupby("stratum").size().to_dict()
    if n > len(replies):
        raise AuditError(f"--n {n} is more than the {len(replies)} answered replies of the run",
                         fix=f"give --n {len(replies)} or less")
    if n < len(sizes):
        raise AuditError(f"--n {n} cannot cover the run's {len(sizes)} strata (every model x cue type x group, "
                         "and the control)", fix=f"give --n {len(sizes)} or more (a few per stratum is better)")
    alloc = allocate({s: sizes[s] for s in sorted(sizes)}, n, rng)
    parts = []
    for s in sorted(sizes):
        spread = _spread(replies[replies["stratum"] == s], "post_id", rng)
        parts.append(spread.head(alloc[s]))
    return pd.concat(parts).reset_index(drop=True)


def assign(sample: pd.DataFrame, raters: list[str], overlap: int, seed: int) -> pd.DataFrame:
    """Rows ``request_key, rater, position, overlap`` dealing the sample to raters (module docstring)."""
    rng = np.random.default_rng([seed, 1])
    order = _spread(sample, "stratum", rng)
    keys = order["request_key"].tolist()
    shared, rest = keys[:overlap], keys[overlap:]
    start = int(rng.integers(len(raters)))
    own: dict[str, list[str]] = {r: [] for r in raters}
    for i, k in enumerate(rest):
        own[raters[(start + i) % len(raters)]].append(k)
    rows = []
    for ri, r in enumerate(raters):
        mine = [(k, 1) for k in shared] + [(k, 0) for k in own[r]]
        perm = np.random.default_rng([seed, 2, ri]).permutation(len(mine))
        for pos, j in enumerate(perm, start=1):
            rows.append((mine[j][0], r, pos, mine[j][1]))
    return pd.DataFrame(rows, columns=["request_key", "rater", "position", "overlap"])


@dataclass
class Packet:
    """What :func:`make_packet` made: its id, folder, raters, the items (``item_id, request_key, rater,
    position, overlap, stratum``), the sample's size per stratum, and the files by rater."""

    packet_id: str
    out_dir: Path
    raters: list[str]
    items: pd.DataFrame
    strata: pd.DataFrame
    overlap: int
    seed: int
    files: dict[str, list[Path]] = field(default_factory=dict)

    def summary(self) -> str:
        per = self.items.groupby("rater").size()
        return (f"packet {self.packet_id}: {self.items['request_key'].nunique()} replies from {len(self.strata)} strata, "
                f"{self.overlap} rated by every rater; " + ", ".join(f"{r}: {per[r]} items" for r in self.raters)
                + f"; written to {self.out_dir}")


def make_packet(run_dir: str | Path, *, n: int, raters: int | Sequence[str], out: str | Path,
                overlap: int | None = None, seed: int | None = None) -> Packet:
    """Draw, blind, write and record a rating packet of ``n`` replies of the run in ``run_dir`` for
    ``raters`` (a count or names), ``overlap`` of them rated by every rater; files under ``out``.
    See the module docstring for the sampling, the blinding and the files."""
    names = rater_ids(raters)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AuditError("the packet folder exists and is not empty", where=str(out),
                         fix="give --out a new folder (a packet never overwrites another)")
    if not isinstance(n, int) or n < 1:
        raise AuditError(f"--n {n}: give the number of replies to rate (1 or more)")
    if overlap is None:
        overlap = 0 if len(names) == 1 else min(n, max(2, round(0.2 * n)))
    if not 0 <= overlap <= n:
        raise AuditError(f"--overlap {overlap} must be between 0 and --n {n}")
    with RunStore(run_dir, create=False) as store:
        if seed is None:
            try:
                seed = int(store.latest_spec().seed)
            except AuditError:
                seed = 0
        replies = rateable_replies(store)
        sample = stratified_sample(replies, n, seed)
        assigned = assign(sample, names, overlap, seed)
        salt = secrets.token_hex(16)
        packet_id = "pk" + secrets.token_hex(6)
        assigned["item_id"] = [item_id(salt, r, k) for r, k in zip(assigned["rater"], assigned["request_key"])]
        info = sample.set_index("request_key")
        assigned["stratum"] = assigned["request_key"].map(info["stratum"])
        strata = sample.groupby("stratum").size().rename("n").reset_index()
        created = now_iso()
        files = _write_files(out, packet_id, created, names, assigned, info)
        design_id, _ = store.current_design()
        store.put_rating_packet(
            dict(packet_id=packet_id, design_id=design_id, salt=salt, seed=seed, raters=names, n_items=n,
                 overlap=overlap, out_dir=str(out.resolve()), created_at=created,
                 options=dict(allocation="equal", strata={r.stratum: int(r.n) for r in strata.itertuples()},
                              shown_post="control text (cue removed) where the post has a control, else the post as written")),
            assigned[["item_id", "request_key", "rater", "position", "overlap"]].itertuples(index=False, name=None))
    return Packet(packet_id=packet_id, out_dir=out, raters=names, items=assigned, strata=strata, overlap=overlap,
                  seed=seed, files=files)


def write_ratings_csv(path: Path, items: list[dict[str, Any]]) -> Path:
    """One rater's ``ratings.csv``: ``item_id, post, reply`` of each item (in order) and the empty
    columns to fill (``er, ip, ex, harmful, comment``). RFC 4180 (``"`` quotes, doubled inside a cell,
    so any text survives: commas, quotes, newlines, semicolons, tabs), UTF-8, texts through
    :func:`audit.untrusted.csv_safe` (the formula guard; invisible characters shown)."""
    table = pd.DataFrame([{**it, "er": "", "ip": "", "ex": "", "harmful": "", "comment": ""} for it in items],
                         columns=list(CSV_COLUMNS))
    csv_safe(table).to_csv(path, index=False, encoding="utf-8")
    return path


def _write_files(out: Path, packet_id: str, created: str, raters: list[str], assigned: pd.DataFrame,
                 info: pd.DataFrame) -> dict[str, list[Path]]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "guide.md").write_text(guide_markdown(), encoding="utf-8")
    (out / "label-studio").mkdir()
    (out / "label-studio" / "config.xml").write_text(label_studio_config(), encoding="utf-8")
    html = _env(True)
    html.finalize = lambda v: visible_controls(v) if isinstance(v, str) else v
    template = html.get_template("packet.html.j2")
    files: dict[str, list[Path]] = {}
    for r in raters:
        mine = assigned[assigned["rater"] == r].sort_values("position")
        items = [dict(item_id=i, post=info.at[k, "shown_post"], reply=info.at[k, "reply"])
                 for i, k in zip(mine["item_id"], mine["request_key"])]
        d = out / r
        d.mkdir()
        write_ratings_csv(d / "ratings.csv", items)
        (d / "packet.html").write_text(template.render(
            packet_id=packet_id, rater=r, created_at=created, items=items, guide=load_guide(),
            csv_name=f"{r}/ratings.csv"), encoding="utf-8")
        tasks = [{"data": {"item_id": it["item_id"], "post": it["post"], "reply": it["reply"]}} for it in items]
        (d / "label-studio-tasks.json").write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
        files[r] = [d / "ratings.csv", d / "packet.html", d / "label-studio-tasks.json"]
    manifest = dict(packet_id=packet_id, created_at=created, raters=raters,
                    items_per_rater={r: int((assigned["rater"] == r).sum()) for r in raters},
                    distinct_replies=int(assigned["request_key"].nunique()),
                    rated_by_every_rater=int(assigned.loc[assigned["overlap"] == 1, "request_key"].nunique()),
                    files=dict(guide="guide.md", label_studio_config="label-studio/config.xml",
                               per_rater={r: [str(p.relative_to(out)) for p in fs] for r, fs in files.items()}),
                    import_with="empathy-audit ratings import RUN_DIR FILE --rater RATER")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return files


__all__ = ["CSV_COLUMNS", "LEVEL_COLUMNS", "Packet", "allocate", "assign", "guide_markdown", "item_id",
           "label_studio_config", "load_guide", "make_packet", "rateable_replies", "rater_ids", "stratified_sample",
           "write_ratings_csv"]
