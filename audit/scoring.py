"""The ``score`` stage: score the stored replies of a run into its store.

:func:`score_run` reads the replies from the run store (it never generates one), scores every reply
that a scorer has not scored yet, in batches, and writes ``scores(request_key, scorer, measure, value,
detail)``, one committed transaction per batch, so a killed run resumes where it stopped. A stored
score is never recomputed or overwritten.

- Replies with status ``ok`` are scored.
- Replies withheld by the endpoint (``content_filter``) get no empathy score but stay visible: every
  measure is stored as NaN with detail ``content_filter``, except ``refusal``, which is 1.
- Failed or unanswered requests get nothing (``generate`` may still answer them); they are counted.

The identity of each scorer (its ``info()``: version, artifact hash, judge model...) is stored in
``scorer_info``. If a run already holds scores of a scorer whose identity differs from the one now
configured, scoring stops with an AuditError instead of mixing scores of two scorers under one name.

After the scorers, the stage runs the demographic inference probe (``scoring.inference_probe``) and
the scorer invariance check for the scorers that read the post (see :mod:`audit.scorers.invariance`).
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import AuditError
from .scorers import get_scorer
from .scorers.base import check_output, identity, is_missing
from .stages import StageContext, StageSummary
from .store import RunStore

DEFAULT_BATCH = 64


@dataclass
class ScorerSummary:
    scorer: str
    measures: list[str]
    scored: int = 0            # replies scored now
    already: int = 0           # replies whose scores were already stored (not recomputed)
    content_filter: int = 0    # replies withheld by the endpoint (NaN, refusal = 1)
    unscored: int = 0          # scored now but NaN in every measure (e.g. unparseable judge answers)
    pending: int = 0           # no final answer yet (e.g. a failed judge call); tried again next time
    seconds: float = 0.0
    refusals: int | None = None  # refusal scorer: stored replies flagged as refusals (content filter included)

    @property
    def pairs_per_s(self) -> float | None:
        return self.scored / self.seconds if self.seconds > 0 and self.scored else None


@dataclass
class ScoreSummary:
    run_dir: str
    replies: int                               # reply requests in the store
    answered: int                              # status ok
    not_answered: int                          # failed or not yet answered: not scored
    scorers: list[ScorerSummary] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    invariance: dict[str, Any] | None = None
    agreement: list[dict[str, Any]] = field(default_factory=list)  # scorer pairs sharing a measure

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for s, sd in zip(self.scorers, d["scorers"]):
            sd["pairs_per_s"] = s.pairs_per_s
        return d

    def lines(self) -> list[str]:
        out = [f"{self.replies} replies in the store: {self.answered} answered, "
               f"{self.not_answered} failed or not answered yet (not scored)"]
        for s in self.scorers:
            rate = f", {s.pairs_per_s:.1f} pairs/s" if s.pairs_per_s else ""
            extra = []
            if s.content_filter:
                extra.append(f"{s.content_filter} withheld by content filter")
            if s.unscored:
                extra.append(f"{s.unscored} could not be scored (see detail)")
            if s.pending:
                extra.append(f"{s.pending} pending (run score again)")
            if s.refusals is not None:
                total = s.scored + s.already + s.content_filter
                extra.insert(0, f"{s.refusals} refusals in {total} replies ({s.refusals / max(total, 1):.1%})")
            out.append(f"{s.scorer}: {s.scored} scored now, {s.already} already stored{rate}"
                       + (f"; {'; '.join(extra)}" if extra else ""))
        if self.probe:
            out.append("inference probe: " + ", ".join(f"{k} {v}" for k, v in self.probe.items()))
        if self.invariance:
            out.append("invariance: " + ", ".join(f"{k} {v}" for k, v in self.invariance.items()))
        for a in self.agreement:
            kappa = a.get("weighted_kappa")
            rho = a.get("spearman")
            stat = (f"weighted kappa {kappa:.2f}" if kappa is not None and kappa == kappa
                    else f"Spearman {rho:.2f}" if rho is not None and rho == rho else "no variation")
            out.append(f"agreement {a['scorer_a']} vs {a['scorer_b']} on {a['measure']}: {stat} (n {a['n']})")
        return out


def check_identity(store: RunStore, scorer: Any, info: dict[str, Any]) -> None:
    """Refuse to mix scores of a different scorer identity into a run; record the identity."""
    stored = store.scorer_info().get(scorer.name)
    if stored is not None and store.count_scores(scorer=scorer.name) and identity(stored) != identity(info):
        before, now = identity(stored), identity(info)
        diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise AuditError(
            f"the stored '{scorer.name}' scores were made by a different scorer identity (differs in {diff}: "
            f"stored {[before.get(k) for k in diff]}, now {[now.get(k) for k in diff]})",
            where=str(store.path),
            fix="score with the scorer configuration that made them, or score a fresh run directory; "
                "stored scores are never overwritten",
        )
    store.put_scorer_info(scorer.name, info)


def _rows(scorer_name: str, measures: tuple[str, ...], keys: list[str], df: pd.DataFrame) -> tuple[list[tuple], int, int]:
    """Score rows to store; returns (rows, n_unscored, n_pending)."""
    rows: list[tuple] = []
    unscored = pending = 0
    recs = df.to_dict("records")
    for k, rec in zip(keys, recs):
        if rec.get("pending"):
            pending += 1
            continue
        vals = [rec.get(m) for m in measures]
        if all(is_missing(v) for v in vals):
            unscored += 1
        for m, v in zip(measures, vals):
            d = rec.get(f"detail_{m}")
            d = rec.get("detail") if is_missing(d) else d
            rows.append((k, scorer_name, m, None if is_missing(v) else float(v), None if is_missing(d) else str(d)))
    return rows, unscored, pending


def score_with(store: RunStore, scorer: Any, replies: pd.DataFrame, progress: bool = False) -> ScorerSummary:
    """Score the replies (rows of ``store.replies_df()``) that ``scorer`` has not scored yet."""
    info = scorer.info()
    check_identity(store, scorer, info)
    measures = tuple(scorer.measures)
    summ = ScorerSummary(scorer.name, list(measures))
    done = store.scored_keys(scorer.name)
    todo = replies[~replies["request_key"].isin(done)]
    summ.already = int(replies["request_key"].isin(done).sum())

    withheld = todo[todo["status"] == "content_filter"]
    if len(withheld):
        store.put_scores([
            (k, scorer.name, m, 1.0 if m == "refusal" else None, "content_filter")
            for k in withheld["request_key"] for m in measures
        ])
        summ.content_filter = len(withheld)

    ok = todo[todo["status"] == "ok"]
    batch = int(getattr(scorer, "batch_size", DEFAULT_BATCH))
    bar = None
    if progress and len(ok):
        from tqdm import tqdm

        bar = tqdm(total=len(ok), desc=f"score {scorer.name}", unit="reply", file=sys.stderr)
    for i in range(0, len(ok), batch):
        part = ok.iloc[i:i + batch]
        keys = part["request_key"].tolist()
        posts = [p if isinstance(p, str) else "" for p in part["post_text"]]
        texts = [r if isinstance(r, str) else "" for r in part["reply"]]
        t0 = time.perf_counter()
        if getattr(scorer, "uses_store", False):
            df = scorer.score(posts, texts, store=store, keys=keys)
        else:
            df = scorer.score(posts, texts)
        summ.seconds += time.perf_counter() - t0
        df = check_output(scorer, df, len(part))
        rows, unscored, pending = _rows(scorer.name, measures, keys, df)
        store.put_scores(rows)
        summ.scored += len(part) - pending
        summ.unscored += unscored
        summ.pending += pending
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    if "refusal" in measures:
        keys = set(replies["request_key"])
        summ.refusals = sum(1 for k, v in store.score_values(scorer.name, "refusal").items() if v == 1 and k in keys)
    return summ


def _needs_embedded(spec: Any, scorers: list[Any], probe: bool) -> bool:
    """Whether the embedded model will be called (llm-judge or the probe without an endpoint)."""
    if any(getattr(sc, "uses_store", False) and getattr(getattr(sc, "judge", None), "model", None) is not None
           and sc.judge.model.is_embedded for sc in scorers):
        return True
    if probe:
        from .scorers.probe import probe_setup

        return bool(probe_setup(spec)[0].is_embedded)
    return False


def score_run(spec: Any, run_dir: str | Path | None = None, scorers: list[str] | None = None, *,
              probe: bool | None = None, invariance: bool | None = None, progress: bool = False) -> ScoreSummary:
    """Score every stored reply of the run in ``run_dir`` with ``scorers`` (default: ``spec.scoring.scorers``).

    ``spec`` may be None: the spec the run was started with (stored in the run) is used. ``probe``
    and ``invariance`` default to running them only when ``scorers`` is not given (the full stage):
    the probe when ``spec.scoring.inference_probe`` is set, the invariance check for the scorers used
    that read the post (not for llm-judge, whose check costs one judge call per variant and reply:
    run ``empathy-audit scorers invariance --scorer llm-judge`` for it).
    """
    if run_dir is None and spec is None:
        raise AuditError("score_run needs a spec or a run directory", where="score_run(spec, run_dir)",
                         fix="pass the run directory (its stored spec is used) or the spec")
    run_dir = Path(run_dir) if run_dir is not None else spec.run_dir()
    with RunStore(run_dir, create=False) as store:
        return score_store(store, spec if spec is not None else store.latest_spec(), scorers, probe=probe,
                           invariance=invariance, progress=progress)


def score_store(store: RunStore, spec: Any, scorers: list[str] | None = None, *, probe: bool | None = None,
                invariance: bool | None = None, progress: bool = False) -> ScoreSummary:
    """:func:`score_run` on an open store."""
    with ExitStack() as stack:
        names = list(dict.fromkeys(scorers or spec.scoring.scorers))
        objs = [get_scorer(n, spec) for n in names]  # fail on a bad name before scoring anything
        full_stage = scorers is None
        run_probe_now = probe if probe is not None else (full_stage and spec.scoring.inference_probe)
        replies = store.replies_df("reply")
        if replies.empty:
            raise AuditError("the run store holds no replies to score", where=str(store.path),
                             fix="generate replies first (empathy-audit generate SPEC)")
        if _needs_embedded(spec, objs, run_probe_now):
            from .backends.embedded import embedded_session

            stack.enter_context(embedded_session(progress=progress))  # one server for judge and probe
        answered = int((replies["status"] == "ok").sum())
        scorable = replies[replies["status"].isin(["ok", "content_filter"])]
        summary = ScoreSummary(str(store.run_dir), len(replies), answered, int(len(replies) - len(scorable)))
        for sc in objs:
            summary.scorers.append(score_with(store, sc, scorable, progress=progress))
        if run_probe_now:
            from .scorers.probe import run_probe

            summary.probe = run_probe(spec, store, progress=progress)
        if invariance if invariance is not None else full_stage:
            from .scorers.invariance import run_invariance

            inv_scorers = [sc for sc in objs if getattr(sc, "reads_post", True) and not getattr(sc, "uses_store", False)]
            if inv_scorers and store.has_control_variants():
                res = run_invariance(spec, store, inv_scorers)
                summary.invariance = res.headline()
        from .scorers.agreement import scorer_agreement

        agree = scorer_agreement(store)
        summary.agreement = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
                             for r in agree.to_dict("records")]
    return summary


class ScoreStage:
    """The ``score`` stage: every configured scorer over every answered reply it has not scored yet,
    then the inference probe and the scorer invariance check (see :func:`score_run`)."""

    name = "score"

    def run(self, ctx: StageContext) -> StageSummary:
        store = ctx.store
        if not store.done_keys("reply"):
            return StageSummary("skipped", "no answered replies to score")
        before = store.count_scores()
        summ = score_store(store, ctx.spec, progress=ctx.progress)
        after = store.count_scores()
        extra = []
        if summ.probe:
            extra.append("probe " + ", ".join(f"{k} {v}" for k, v in list(summ.probe.items())[:8]
                                              if isinstance(v, (int, float, str))))
        if summ.invariance:
            extra.append("invariance: " + "; ".join(f"{k} {v.split(';')[0]}" for k, v in summ.invariance.items()))
        detail = f"{after} scores stored ({after - before} new)" + (f" [{' | '.join(extra)}]" if extra else "")
        return StageSummary("done" if after > before else "skipped", detail, summ)
