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

import os
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
#: Replies read from the store per page (the memory of the stage does not grow beyond a page and the
#: batches in flight).
PAGE_ROWS = 4096
#: Pairs per batch sent to a worker process.
POOL_BATCH = 256
#: ``workers`` left to the default: processes are started only when at least this many pairs wait to be
#: scored by scorers that can run in them (starting a process and loading a scorer costs ~1-2 s).
PARALLEL_MIN_PAIRS = 20_000
#: Thread-pool variables set to 1 in the worker processes: one process per core, not one per core
#: each running a thread per core.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_FRAMES",
                "NUMEXPR_NUM_THREADS")


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
    processes: int = 1         # processes that scored (seconds is then wall clock)
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
    workers: int = 1                           # processes that scored (the parallel-safe scorers)

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
            procs = f" in {s.processes} processes" if s.processes > 1 and s.pairs_per_s else ""
            out.append(f"{s.scorer}: {s.scored} scored now, {s.already} already stored{rate}{procs}"
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


def score_with(store: RunStore, scorer: Any, *, pool: "ScoringPool | None" = None, progress: bool = False,
               page: int | None = None, counts: dict[str, int] | None = None) -> ScorerSummary:
    """Score the design's answered replies that ``scorer`` has not scored yet, streaming them from the
    store a page at a time (memory flat in the number of replies).

    With ``pool`` (a :class:`ScoringPool` whose workers hold this scorer) the batches are scored in
    the pool's processes while this process stays the one writer of the store: each finished batch
    is committed as it comes back, so a killed run keeps every committed batch and resumes after it.
    The scores do not depend on the number of processes (tested: identical values). ``counts``:
    the scorer's :meth:`RunStore.scoring_counts` when the caller has them (each is a pass over the run).
    """
    info = scorer.info()
    check_identity(store, scorer, info)
    measures = tuple(scorer.measures)
    summ = ScorerSummary(scorer.name, list(measures))
    counts = counts if counts is not None else store.scoring_counts(scorer.name)
    summ.already = counts["scored"]
    page = page or PAGE_ROWS
    batch = int(getattr(scorer, "batch_size", DEFAULT_BATCH))
    if pool is not None:  # smaller batches keep every worker busy to the end and bound what is in flight
        batch = max(1, min(batch, POOL_BATCH))
    bar = None
    if progress and counts["scorable"] > counts["scored"]:
        from tqdm import tqdm

        bar = tqdm(total=counts["scorable"] - counts["scored"], desc=f"score {scorer.name}", unit="reply",
                   file=sys.stderr)

    def store_part(keys: list[str], rows: list[tuple], unscored: int, pending: int, seconds: float) -> None:
        store.put_scores(rows)
        summ.scored += len(keys) - pending
        summ.unscored += unscored
        summ.pending += pending
        summ.seconds += seconds
        if bar is not None:
            bar.update(len(keys))

    t_start = time.perf_counter()
    after = ""
    try:
        while True:
            rows = store.unscored_page(scorer.name, after, page)
            if not rows:
                break
            after = rows[-1][0]
            withheld = [r[0] for r in rows if r[1] == "content_filter"]
            if withheld:
                store.put_scores([(k, scorer.name, m, 1.0 if m == "refusal" else None, "content_filter")
                                  for k in withheld for m in measures])
                summ.content_filter += len(withheld)
                if bar is not None:
                    bar.update(len(withheld))
            ok = [r for r in rows if r[1] == "ok"]
            for i in range(0, len(ok), batch):
                part = ok[i:i + batch]
                keys, posts, texts = [r[0] for r in part], [r[2] for r in part], [r[3] for r in part]
                if pool is not None:
                    for done in pool.submit(scorer.name, keys, posts, texts):
                        store_part(*done)
                else:
                    store_part(keys, *_score_part(scorer, keys, posts, texts, store))
        if pool is not None:
            for done in pool.drain():
                store_part(*done)
    finally:
        if pool is not None:
            pool.cancel()  # after an error or Ctrl-C: nothing more is scored; committed batches stay
        if bar is not None:
            bar.close()
    if pool is not None:  # wall clock: the pool's processes score at the same time
        summ.seconds = time.perf_counter() - t_start
        summ.processes = pool.workers
    if "refusal" in measures:
        summ.refusals = store.scoring_counts(scorer.name)["refusals"]
    return summ


def _score_part(scorer: Any, keys: list[str], posts: list[str], texts: list[str],
                store: RunStore | None = None) -> tuple[list[tuple], int, int, float]:
    """Score one batch: (score rows to store, n unscored, n pending, seconds)."""
    t0 = time.perf_counter()
    if getattr(scorer, "uses_store", False):
        df = scorer.score(posts, texts, store=store, keys=keys)
    else:
        df = scorer.score(posts, texts)
    seconds = time.perf_counter() - t0
    df = check_output(scorer, df, len(keys))
    rows, unscored, pending = _rows(scorer.name, tuple(scorer.measures), keys, df)
    return rows, unscored, pending, seconds


# --------------------------------------------------------------------------- parallel scoring

_WORKER_SCORERS: dict[str, Any] = {}


def _worker_init(blob: bytes) -> None:
    import pickle
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    _WORKER_SCORERS.update(pickle.loads(blob))
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    """End this worker when the process that started it is gone (``kill -9`` of the audit): a worker
    waits on its task queue forever otherwise, since it holds both ends of the queue's pipe."""
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(1)


def _worker_score(name: str, keys: list[str], posts: list[str], texts: list[str]) -> tuple:
    return (keys, *_score_part(_WORKER_SCORERS[name], keys, posts, texts))


def cpu_count() -> int:
    """Cores this process may use (the scheduler affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(workers: int | None, pairs: int) -> int:
    """Processes to score with: ``workers`` when given (0 = one per core); else ``EMPATHY_AUDIT_WORKERS``
    when set; else one per core when at least :data:`PARALLEL_MIN_PAIRS` pairs wait, one otherwise."""
    if workers is None:
        env = os.environ.get("EMPATHY_AUDIT_WORKERS", "").strip()
        if env:
            try:
                workers = int(env)
            except ValueError:
                raise AuditError(f"EMPATHY_AUDIT_WORKERS={env!r} is not a whole number",
                                 where="environment variable EMPATHY_AUDIT_WORKERS",
                                 fix="set it to the number of scoring processes (0 = one per core), or unset it") from None
        else:
            return cpu_count() if pairs >= PARALLEL_MIN_PAIRS else 1
    if workers < 0:
        raise AuditError(f"workers must be 0 (one per core) or more, not {workers}", where="--workers",
                         fix="give the number of scoring processes, 0 for one per core")
    return workers or cpu_count()


class ScoringPool:
    """Worker processes that score batches of (post, reply) pairs for the scorers they were given,
    while the creating process stays the only writer of the run store.

    The scorers are pickled into each worker once (their configuration, e.g. the artifact directory;
    models load in the worker on first use). Processes start with ``spawn`` (no fork of a process that
    holds an open database or a model server) with one thread each for numpy's thread pools. At most
    ``2 x workers`` batches are in flight: :meth:`submit` returns the batches finished meanwhile,
    :meth:`drain` the rest. Why not multiprocessing.Pool.imap: results are written as soon as any
    batch finishes, in whatever order, and an error in a worker stops the pool at once.
    """

    def __init__(self, scorers: list[Any], workers: int):
        import multiprocessing
        import pickle
        from concurrent.futures import ProcessPoolExecutor

        self.workers = workers
        self._pending: set[Any] = set()
        blob = pickle.dumps({sc.name: sc for sc in scorers})
        saved = {v: os.environ.get(v) for v in _THREAD_VARS}
        os.environ.update({v: "1" for v in _THREAD_VARS})
        try:
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init, initargs=(blob,))
            # start every process now, while the thread variables are set for them
            list(self._pool.map(_noop, range(workers)))
        finally:
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old

    def submit(self, name: str, keys: list[str], posts: list[str], texts: list[str]) -> list[tuple]:
        from concurrent.futures import FIRST_COMPLETED, wait

        self._pending.add(self._pool.submit(_worker_score, name, keys, posts, texts))
        if len(self._pending) < 2 * self.workers:
            return []
        done, self._pending = wait(self._pending, return_when=FIRST_COMPLETED)
        return [f.result() for f in done]

    def drain(self) -> list[tuple]:
        from concurrent.futures import wait

        done, self._pending = wait(self._pending), set()
        return [f.result() for f in done[0]]

    def cancel(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pending = set()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ScoringPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _noop(_: int) -> None:
    return None


def parallel_scorers(scorers: list[Any]) -> list[Any]:
    """The scorers that may run in worker processes: those that declare ``parallel_safe = True`` (pure
    functions of the pair, no model calls, no store) and can be pickled."""
    import pickle

    out = []
    for sc in scorers:
        if getattr(sc, "parallel_safe", False) and not getattr(sc, "uses_store", False):
            try:
                pickle.dumps(sc)
            except Exception:  # noqa: BLE001 - a scorer that cannot be sent scores in this process
                continue
            out.append(sc)
    return out


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
              probe: bool | None = None, invariance: bool | None = None, progress: bool = False,
              workers: int | None = None) -> ScoreSummary:
    """Score every stored reply of the run in ``run_dir`` with ``scorers`` (default: ``spec.scoring.scorers``).

    ``spec`` may be None: the spec the run was started with (stored in the run) is used. ``probe``
    and ``invariance`` default to running them only when ``scorers`` is not given (the full stage):
    the probe when ``spec.scoring.inference_probe`` is set, the invariance check for the scorers used
    that read the post (not for llm-judge, whose check costs one judge call per variant and reply:
    run ``empathy-audit scorers invariance --scorer llm-judge`` for it).

    ``workers``: processes for the scorers that can run in worker processes (:func:`resolve_workers`:
    default one per core when at least :data:`PARALLEL_MIN_PAIRS` pairs wait; 1 scores in this process).
    """
    if run_dir is None and spec is None:
        raise AuditError("score_run needs a spec or a run directory", where="score_run(spec, run_dir)",
                         fix="pass the run directory (its stored spec is used) or the spec")
    run_dir = Path(run_dir) if run_dir is not None else spec.run_dir()
    with RunStore(run_dir, create=False) as store:
        return score_store(store, spec if spec is not None else store.latest_spec(), scorers, probe=probe,
                           invariance=invariance, progress=progress, workers=workers)


def score_store(store: RunStore, spec: Any, scorers: list[str] | None = None, *, probe: bool | None = None,
                invariance: bool | None = None, progress: bool = False, workers: int | None = None) -> ScoreSummary:
    """:func:`score_run` on an open store."""
    with ExitStack() as stack:
        names = list(dict.fromkeys(scorers or spec.scoring.scorers))
        objs = [get_scorer(n, spec) for n in names]  # fail on a bad name before scoring anything
        full_stage = scorers is None
        run_probe_now = probe if probe is not None else (full_stage and spec.scoring.inference_probe)
        counts = {sc.name: store.scoring_counts(sc.name) for sc in objs}
        first = counts[objs[0].name]
        if not first["replies"]:
            raise AuditError("the run store holds no replies to score", where=str(store.path),
                             fix="generate replies first (empathy-audit generate SPEC)")
        if _needs_embedded(spec, objs, run_probe_now):
            from .backends.embedded import embedded_session

            stack.enter_context(embedded_session(progress=progress))  # one server for judge and probe
        summary = ScoreSummary(str(store.run_dir), first["replies"], first["answered"],
                               first["replies"] - first["scorable"])
        movable = parallel_scorers(objs)
        waiting = sum(counts[sc.name]["scorable"] - counts[sc.name]["scored"] for sc in movable)
        n_workers = resolve_workers(workers, waiting) if movable else 1
        pool = stack.enter_context(ScoringPool(movable, n_workers)) if n_workers > 1 and waiting else None
        summary.workers = n_workers if pool is not None else 1
        for sc in objs:
            summary.scorers.append(score_with(store, sc, pool=pool if sc in movable else None, progress=progress,
                                              counts=counts[sc.name]))
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
        summ = score_store(store, ctx.spec, progress=ctx.progress, workers=ctx.options.get("workers"))
        after = store.count_scores()
        extra = []
        if summ.probe:
            extra.append("probe " + ", ".join(f"{k} {v}" for k, v in list(summ.probe.items())[:8]
                                              if isinstance(v, (int, float, str))))
        if summ.invariance:
            extra.append("invariance: " + "; ".join(f"{k} {v.split(';')[0]}" for k, v in summ.invariance.items()))
        detail = f"{after} scores stored ({after - before} new)" + (f" [{' | '.join(extra)}]" if extra else "")
        return StageSummary("done" if after > before else "skipped", detail, summ)
