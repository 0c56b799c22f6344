"""Scorer invariance: a scorer must not create a gap by itself.

An empathy scorer judges a reply *in the context of the post*. If it gives the same reply a different
score because the post names a Black woman rather than nobody, part of any "gap" the audit finds was
made by the scorer. The check scores IDENTICAL replies against every demographic variant of their post
and reports the shift relative to the control (the unmodified post)::

    shift(variant, reply) = score(variant text, reply) - score(control text, reply)

Replies: the run's own replies to the control posts (up to ``replies_per_post`` per post, the same
replies for every variant of that post), or, for posts without any, the generic replies in
``templates/invariance/reference_replies.yaml``.

Per scorer, measure, group and cue type (and pooled over groups per cue type) the summary gives
``n_pairs``, ``n_posts``, ``mean_shift`` with a 95% t interval over per-post mean shifts (the post is
the unit: pairs within a post are not independent), ``relative_shift`` (= mean_shift / mean control
score, comparable with the audit's relative gaps), ``max_abs_shift``, ``share_changed`` (pairs whose
score changed at all), a one-sample t-test p-value of the per-post shifts with Holm correction over
the cells of the scorer, and ``flagged`` (Holm-adjusted p < alpha). A scorer is *invariant on this
run* when no cell is flagged. Scorers whose output depends on the reply alone (length, refusal,
sentiment) are invariant by construction and are not checked.

Pair scores are stored in table ``invariance_scores`` keyed by (variant, reply, scorer identity), so
the check never scores a pair twice; the summary is written to table ``invariance`` (the report
reads it) and returned.

>>> # result = invariance_check("demo", scorer="epitome"); print(result.text())
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..resources import templates_dir
from ..store import canonical_json
from .base import check_output, identity, is_missing

def load_reference_replies(path: str | Path | None = None) -> list[dict[str, str]]:
    from ..spec import read_yaml

    p = Path(path) if path else templates_dir() / "invariance" / "reference_replies.yaml"
    data, _ = read_yaml(p, "reference reply")
    reps = data.get("replies") if isinstance(data, dict) else None
    if not isinstance(reps, list) or not reps or not all(
            isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("text"), str) and r["text"].strip()
            for r in reps):
        raise AuditError("the reference reply file needs a list 'replies' of {id, text}", where=str(p),
                         fix="follow templates/invariance/reference_replies.yaml")
    return [{"reply_id": f"ref:{r['id']}", "reply": r["text"].strip()} for r in reps]


def scorer_id(scorer: Any) -> str:
    return hashlib.sha256(canonical_json(identity(scorer.info()) or {"name": scorer.name}).encode()).hexdigest()[:16]


@dataclass
class InvarianceResult:
    table: pd.DataFrame          # the summary (see module docstring)
    pairs: int                   # (variant, reply) pairs per scorer
    alpha: float

    def verdicts(self) -> dict[str, dict[str, Any]]:
        """Per scorer: invariant or not, cells flagged, the largest relative shift and where."""
        out: dict[str, dict[str, Any]] = {}
        for sc, g in self.table.groupby("scorer", sort=False):
            cells = g[g["group"] != "pooled"]
            flagged = cells[cells["flagged"] == 1]
            rel = cells["relative_shift"].abs()
            worst = cells.loc[rel.idxmax()] if rel.notna().any() else None
            out[sc] = {
                "invariant": bool(flagged.empty), "cells": int(len(cells)), "flagged": int(len(flagged)),
                "max_relative_shift": None if worst is None else float(worst["relative_shift"]),
                "max_mean_shift": None if worst is None else float(worst["mean_shift"]),
                "where": None if worst is None else f"{worst['measure']}, {worst['group']}, {worst['cue_type']}",
            }
        return out

    def headline(self) -> dict[str, str]:
        """Per scorer, the verdict as a tested hypothesis with its numbers, e.g. "invariant: identical
        replies scored against every variant of their post; 0 of 48 cells shift (Holm-adjusted p < 0.05);
        largest mean shift +0.010 points (ER, Black woman, name)". The relative shift is given only
        where it is meaningful (at most 100% of the control mean: beside a control mean near 0 it is not)."""
        out = {}
        for sc, v in self.verdicts().items():
            head = ("invariant" if v["invariant"] else f"NOT invariant ({v['flagged']} of {v['cells']} cells)")
            head += (f": the hypothesis that identical replies get the same score against every variant of their "
                     f"post is {'kept' if v['invariant'] else 'rejected'}; {v['flagged']} of {v['cells']} cells shift "
                     f"(Holm-adjusted p < {self.alpha:g})")
            if v["max_mean_shift"] is not None and math.isfinite(v["max_mean_shift"]):
                rel = v["max_relative_shift"]
                rel_t = (f", {rel:+.1%} of the control mean" if rel is not None and math.isfinite(rel) and abs(rel) <= 1
                         else "")
                head += f"; largest mean shift {v['max_mean_shift']:+.3f} points{rel_t} ({v['where']})"
            out[sc] = head
        return out

    def text(self) -> str:
        lines = [f"Scorer invariance: identical replies scored against each variant of their post "
                 f"({self.pairs} variant x reply pairs per scorer); a cell is flagged when its mean shift "
                 f"differs from 0 (Holm-adjusted p < {self.alpha})."]
        for sc, h in self.headline().items():
            lines.append(f"  {sc}: {h}")
        return "\n".join(lines)


def _replies_for_posts(store: Any, post_ids: list[str], k: int) -> tuple[pd.DataFrame, str]:
    """Up to k answered replies to each post's control; reference replies for posts without any."""
    src = set()
    rows = []
    reps = store.replies_df("reply") if store is not None else pd.DataFrame()
    if not reps.empty:
        ctrl = reps[(reps["cue_type"] == "control") & (reps["status"] == "ok") & reps["reply"].notna()]
        ctrl = ctrl[ctrl["reply"].str.strip() != ""].sort_values("request_key")
        for pid, g in ctrl.groupby("post_id"):
            g = g.drop_duplicates("reply").head(k)
            rows += [{"post_id": pid, "reply_id": r, "reply": t} for r, t in zip(g["request_key"], g["reply"])]
    have = {r["post_id"] for r in rows}
    if have:
        src.add("run")
    missing = [p for p in post_ids if p not in have]
    if missing:
        src.add("reference")
        ref = load_reference_replies()
        rows += [{"post_id": p, **r} for p in missing for r in ref]
    return pd.DataFrame(rows, columns=["post_id", "reply_id", "reply"]), "+".join(sorted(src, reverse=True))


def _score_pairs(store: Any, scorer: Any, pairs: pd.DataFrame, batch: int = 256) -> pd.DataFrame:
    """Scores of (variant, reply) pairs for ``scorer``, computing only those not stored yet."""
    sid = scorer_id(scorer)
    have = store.invariance_scores_df(sid)
    done = set(zip(have["variant_id"], have["reply_id"]))
    todo = pairs[[(v, r) not in done for v, r in zip(pairs["variant_id"], pairs["reply_id"])]]
    measures = tuple(scorer.measures)
    for i in range(0, len(todo), batch):
        part = todo.iloc[i:i + batch]
        posts, replies = part["text"].tolist(), part["reply"].tolist()
        if getattr(scorer, "uses_store", False):
            keys = [f"invariance:{v}:{r}" for v, r in zip(part["variant_id"], part["reply_id"])]
            df = scorer.score(posts, replies, store=store, keys=keys)
        else:
            df = scorer.score(posts, replies)
        df = check_output(scorer, df, len(part))
        rows = []
        for v, r, rec in zip(part["variant_id"], part["reply_id"], df.to_dict("records")):
            if rec.get("pending"):
                continue
            rows += [(v, r, scorer.name, sid, m, None if is_missing(rec.get(m)) else float(rec[m])) for m in measures]
        store.put_invariance_scores(rows)
    out = store.invariance_scores_df(sid)
    return out.merge(pairs[["variant_id", "reply_id"]].drop_duplicates(), on=["variant_id", "reply_id"])


def _holm(p: np.ndarray) -> np.ndarray:
    out = np.full(len(p), np.nan)
    ok = ~np.isnan(p)
    idx = np.where(ok)[0]
    if len(idx) == 0:
        return out
    order = idx[np.argsort(p[idx])]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _cell(shifts: pd.DataFrame, control_mean: float) -> dict[str, Any]:
    from scipy import stats

    per_post = shifts.groupby("post_id")["shift"].mean().to_numpy()
    n_posts = len(per_post)
    # the post is the unit: the mean of per-post mean shifts (= the pair mean when posts have equal pairs)
    post_mean = float(np.mean(per_post)) if n_posts else math.nan
    mean = post_mean
    if n_posts >= 2:
        sd = float(np.std(per_post, ddof=1))
        if sd == 0:
            lo = hi = post_mean
            p = 1.0 if post_mean == 0 else 0.0
        else:
            se = sd / math.sqrt(n_posts)
            t = stats.t.ppf(0.975, n_posts - 1)
            lo, hi = post_mean - t * se, post_mean + t * se
            p = float(stats.ttest_1samp(per_post, 0.0).pvalue)
    else:
        lo = hi = p = math.nan
    return {
        "n_pairs": int(len(shifts)), "n_posts": n_posts, "control_mean": control_mean, "mean_shift": mean,
        "ci_low": lo, "ci_high": hi,
        "relative_shift": mean / control_mean if control_mean and not math.isnan(control_mean) else math.nan,
        "max_abs_shift": float(shifts["shift"].abs().max()) if len(shifts) else math.nan,
        "share_changed": float((shifts["shift"].abs() > 1e-12).mean()) if len(shifts) else math.nan,
        "p_value": p,
    }


def run_invariance(spec: Any, store: Any, scorers: list[Any], *, variants: pd.DataFrame | None = None,
                   replies_per_post: int = 3, alpha: float = 0.05) -> InvarianceResult:
    """Run the invariance check for ``scorers`` on the variants of ``store`` (or ``variants``), store
    pair scores and the summary in ``store``, and return the result."""
    store.ensure_stage_tables("invariance")
    if variants is None:
        variants = store.variants_df()
    if variants.empty:
        raise AuditError("no variants to check invariance on", where=str(store.path),
                         fix="build the variants first (empathy-audit variants SPEC) or give a spec")
    controls = variants[variants["cue_type"] == "control"]
    post_ids = sorted(set(controls["post_id"]))
    if not post_ids:
        raise AuditError("the variants have no control rows", fix="rebuild the variants: every post needs its control")
    replies, source = _replies_for_posts(store, post_ids, replies_per_post)
    v = variants[variants["post_id"].isin(post_ids)][["variant_id", "post_id", "group", "cue_type", "text"]]
    pairs = v.merge(replies, on="post_id")
    tables = []
    for sc in scorers:
        scored = _score_pairs(store, sc, pairs)
        scored = scored.merge(v[["variant_id", "post_id", "group", "cue_type"]], on="variant_id")
        ctrl = scored[scored["cue_type"] == "control"][["post_id", "reply_id", "measure", "value"]].rename(
            columns={"value": "control_value"})
        cued = scored[scored["cue_type"] != "control"].merge(ctrl, on=["post_id", "reply_id", "measure"])
        cued["shift"] = cued["value"] - cued["control_value"]
        cued = cued[cued["shift"].notna()]
        rows = []
        for m, gm in cued.groupby("measure", sort=False):
            cm = float(ctrl[ctrl["measure"] == m]["control_value"].mean())
            for (cue, grp), g in gm.groupby(["cue_type", "group"], sort=True):
                rows.append({"measure": m, "cue_type": cue, "group": grp, **_cell(g, cm)})
            for cue, g in gm.groupby("cue_type", sort=True):
                rows.append({"measure": m, "cue_type": cue, "group": "pooled", **_cell(g, cm)})
        t = pd.DataFrame(rows)
        if t.empty:
            continue
        cells = t["group"] != "pooled"
        t["p_holm"] = np.nan
        t.loc[cells, "p_holm"] = _holm(t.loc[cells, "p_value"].to_numpy(dtype=float))
        t.loc[~cells, "p_holm"] = _holm(t.loc[~cells, "p_value"].to_numpy(dtype=float))
        t["flagged"] = (t["p_holm"] < alpha).astype(int)
        t.insert(0, "scorer", sc.name)
        t.insert(1, "scorer_id", scorer_id(sc))
        t["reply_source"] = source
        tables.append(t)
        cols = ["scorer", "scorer_id", "measure", "cue_type", "group", "n_pairs", "n_posts", "control_mean",
                "mean_shift", "ci_low", "ci_high", "relative_shift", "max_abs_shift", "share_changed", "p_value",
                "p_holm", "flagged", "reply_source"]
        store.replace_invariance_summary(sc.name, t[cols])
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return InvarianceResult(table, len(pairs), alpha)


def invariance_summary(store: Any) -> InvarianceResult | None:
    """The stored invariance summary of a run (what the report states), or None if never checked."""
    t = store.table_df("invariance")
    if t is None or t.empty:
        return None
    return InvarianceResult(t, store.invariance_pair_count(), 0.05)


def invariance_check(spec: Any, run_dir: str | Path | None = None, scorer: str | None = None, *,
                     replies_per_post: int = 3, alpha: float = 0.05) -> InvarianceResult:
    """The check as the CLI runs it: on the run's store when the run exists (its variants and control
    replies; results stored there), otherwise on the spec's variants with the reference replies, kept in
    a cache store under :func:`audit.scorers.judge.default_cache_dir`. ``scorer``: one name; default: the spec's scorers that read the post."""
    from . import get_scorer
    from ..store import STORE_FILENAME, RunStore

    if isinstance(spec, (str, Path)):
        from ..spec import load_spec

        spec = load_spec(spec)
    names = [scorer] if scorer else list(spec.scoring.scorers)
    objs = [get_scorer(n, spec) for n in names]
    objs = [o for o in objs if getattr(o, "reads_post", True)]
    if not objs:
        raise AuditError(f"scorer(s) {names} depend on the reply alone and are invariant by construction",
                         fix="check a scorer that reads the post: epitome, llm-judge or hf-classifier")
    rd = Path(run_dir) if run_dir is not None else spec.run_dir()
    if (rd / STORE_FILENAME).exists():
        with RunStore(rd, create=False) as store:
            variants = store.variants_df()
            if variants.empty:
                from ..counterfactual import build_variants

                variants = build_variants(spec)
            return run_invariance(spec, store, objs, variants=variants, replies_per_post=replies_per_post, alpha=alpha)
    from ..counterfactual import build_variants
    from .judge import default_cache_dir

    variants = build_variants(spec)
    # No run yet: pair scores (and judge calls) are kept in a cache store, so they are never paid twice.
    with RunStore(default_cache_dir() / "invariance" / spec.name) as store:
        return run_invariance(spec, store, objs, variants=variants, replies_per_post=replies_per_post, alpha=alpha)
