"""Everything the report shows, read from the run store alone.

:func:`collect` reads the store of a run directory into a :class:`ReportData`: the spec the run was
started with, variants, replies, scores, the analysis tables, the inference probe, scorer identity,
provenance. A table a stage did not write is ``None``, and the report says so instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import AuditError
from ..scorers.agreement import agreement_table
from ..scorers.probe import probe_summary
from ..store import STORE_FILENAME, RunStore, StoreDigests
from ..scorers.measures import MeasureCatalog
from .facts import SAMPLE_REPLIES, ReplyFacts
from .findings import measure_of
from ..stats.stage import GROUP_SUMMARY_TABLE, inputs_fingerprints, stored_group_summary

RESULT_TABLES = ("results", "results_paired", "results_intersectional", "results_power", "analysis_meta",
                 "results_disparity", "results_ppi", "results_models",
              "results_variability", "results_axes")
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
REPORT_CACHE_KIB = 64 * 1024  # SQLite page cache of the report's connections (the store's default: 256 MB)


@dataclass
class ReportData:
    """What the report shows. The per-reply facts are never held whole (a million replies' facts and
    seven million scores were 3.8 GB): :attr:`summary` (reply counts per model, status and style),
    :attr:`group_summary` (score mean, SD and n per model, outcome, group and cue type) and the other
    aggregates are computed by SQLite in :func:`collect`; the few rows a section shows (example replies,
    the first request per model or style, the distribution figure's sample) are read when shown, through
    :attr:`facts` (:mod:`audit.report.facts`)."""

    run_dir: Path
    spec: Any  # AuditSpec or None
    spec_yaml: str
    spec_hash: str | None
    meta: dict[str, str]
    variants: pd.DataFrame
    summary: pd.DataFrame  # ReplyFacts.summary(): one row per (model, status, style, runtime, ...)
    group_summary: pd.DataFrame  # ReplyFacts.group_summary() (with each group's ``sum``)
    score_outcomes: list[tuple[str, str, bool]]  # (scorer, measure, any value) of the design's scores
    scorer_info: dict[str, dict[str, Any]]
    tables: dict[str, pd.DataFrame | None]
    probe: pd.DataFrame | None
    probe_summary: pd.DataFrame | None
    invariance: pd.DataFrame | None
    _store_sha256: str
    agreement: pd.DataFrame | None = None
    store_tables: list[str] = field(default_factory=list)
    ratings: pd.DataFrame | None = None  # human ratings (table ratings, audit/ratings/); None when none stored
    spend: dict[str, Any] | None = None  # tokens reported and their cost (audit.costs.spend); None without prices
    errors: list[dict[str, Any]] = field(default_factory=list)  # distinct errors of failed requests
    errors_left_out: int = 0
    answers_changed: list[dict[str, Any]] = field(default_factory=list)
    rated: tuple[pd.DataFrame, pd.DataFrame] | None = None  # (replies, scores) of the rated replies
    _reader: RunStore | None = field(default=None, repr=False, compare=False)
    _hasher: StoreDigests | None = field(default=None, repr=False, compare=False)

    @property
    def store_sha256(self) -> str:
        """:meth:`RunStore.content_sha256` of the store, computed in a process of its own since
        :func:`collect` (:class:`audit.store.StoreDigests`; waited for here, when first asked)."""
        if self._hasher is not None:
            self._store_sha256 = self._hasher.content()
            self._hasher.close()
            self._hasher = None
        return self._store_sha256

    # ------------------------------------------------------------------ bounded reads, when shown
    @property
    def facts(self) -> ReplyFacts:
        """Queries over the run's reply requests (:class:`audit.report.facts.ReplyFacts`), on a store
        connection opened once, without the integrity check collect() has just made."""
        if self._reader is None:
            self._reader = RunStore(self.run_dir, create=False, check=False)
            self._reader.conn.execute(f"PRAGMA cache_size=-{REPORT_CACHE_KIB}")
        return ReplyFacts(self._reader)

    def texts(self, keys: list[str]) -> pd.DataFrame:
        """The prompt, reply, post and cue texts of the requests ``keys``, indexed by request key (a
        million replies are ~3 GB of text: the sections that show texts read the few they show, and
        ``tables/replies.csv`` reads them a chunk at a time)."""
        return self.facts.store.texts_by_key(keys).set_index("request_key")

    def close(self) -> None:
        """Close the store connection :attr:`facts` opened (the last connection to close a store in
        WAL mode folds its log into store.sqlite) and stop the hashes' process."""
        if self._hasher is not None:
            self._hasher.close()
            self._hasher = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def scores_wide(self, keys: list[str]) -> pd.DataFrame:
        """The stored scores of the requests ``keys`` as one row per request and one column per
        ``scorer.measure`` (a column only for a measure with a value)."""
        sc = self.facts.scores_of(keys)
        if sc.empty:
            return pd.DataFrame()
        col = sc["scorer"].astype(str) + "." + sc["measure"].astype(str)
        return sc.assign(col=col).pivot_table(index="request_key", columns="col", values="value", aggfunc="first")

    # ------------------------------------------------------------------ derived
    @cached_property
    def measures(self) -> MeasureCatalog:
        """What the run's measures mean (labels, kinds, gap units), from the stored scorer info."""
        return MeasureCatalog.from_scorer_info(self.scorer_info)

    @property
    def results(self) -> pd.DataFrame | None:
        return self.tables.get("results")

    @property
    def axes(self) -> list[str]:
        if self.spec is not None:
            return list(self.spec.demographics.axes)
        skip = {"variant_id", "post_id", "topic", "risk", "group_name", "cue_type", "alternative", "cue_text",
                "text", "group"}
        return [c for c in self.variants.columns if c not in skip]

    @property
    def has_replies(self) -> bool:
        return not self.summary.empty

    @property
    def has_scores(self) -> bool:
        return bool(self.score_outcomes)

    @property
    def n_requests(self) -> int:
        return int(self.summary["n"].sum()) if self.has_replies else 0

    @property
    def n_answered(self) -> int:
        """Reply requests answered with status ok."""
        s = self.summary
        return int(s.loc[s["status"] == "ok", "n"].sum()) if self.has_replies else 0

    @cached_property
    def models(self) -> pd.DataFrame:
        """One row per audited model: label, endpoint, model name, reported name, runtime, parameters
        (endpoint, model name and parameters of the model's first answered request, else its first)."""
        s = self.summary
        if s.empty:
            return pd.DataFrame(columns=["model_label", "endpoint_id", "model_name", "model_reported", "runtime",
                                         "runtime_version", "params", "embedded"])
        rows = []
        firsts = self.facts.first_rows("q.model_label", "r.status IS NOT NULL",
                                       values=sorted(s["model_label"].dropna().unique())).drop_duplicates("model_label")
        firsts = firsts.set_index("model_label", drop=False)
        for label, d in s.groupby("model_label", sort=True):
            first = firsts.loc[label].to_dict() if label in firsts.index else {}
            params = json.loads(first["params_json"]) if isinstance(first.get("params_json"), str) else {}
            params = {k: v for k, v in params.items() if k not in ("messages",)}
            rows.append(dict(
                model_label=label,
                endpoint_id=first.get("endpoint_id"),
                model_name=first.get("model_name"),
                model_reported=", ".join(sorted({str(x) for x in d["model_reported"].dropna()})) or None,
                runtime=", ".join(sorted({str(x) for x in d["runtime"].dropna()})) or None,
                runtime_version=", ".join(sorted({str(x) for x in d["runtime_version"].dropna()})) or None,
                params=params,
                embedded=str(first.get("endpoint_id") or "").startswith("embedded"),
            ))
        return pd.DataFrame(rows)

    @property
    def embedded_used(self) -> bool:
        if self.has_replies:
            return bool(self.summary["embedded"].sum() > 0)
        if self.spec is not None:
            return any(m.is_embedded for m in self.spec.models)
        return False

    @property
    def status_counts(self) -> pd.DataFrame:
        """Replies per model and status ('ok', 'content_filter', 'failed', 'not answered')."""
        s = self.summary
        if s.empty:
            return pd.DataFrame(columns=["model_label", "status", "n"])
        s = s.assign(status=s["status"].fillna("not answered"))
        out = s.groupby(["model_label", "status"])["n"].sum().rename("n").reset_index()
        return out.astype({"n": "int64"})

    @property
    def reply_origins(self) -> tuple[int, int]:
        """(imported, generated) answered replies of the design (:func:`audit.report.build.reply_origins`)."""
        s = self.summary
        if s.empty:
            return 0, 0
        answered = s[s["status"].notna()]
        imported = int(answered["imported"].sum())
        return imported, int(answered["n"].sum()) - imported

    @property
    def unscored(self) -> int:
        """Answered (status ok) replies without a non-NULL score (0 when no score is stored)."""
        return int(self.summary["unscored"].sum()) if self.has_replies and self.has_scores else 0

    @property
    def outcomes(self) -> list[str]:
        """Measures in the order the report shows them (from results when present, else from scores)."""
        res = self.results
        if res is not None and not res.empty:
            return sorted(res["outcome"].astype(str).unique(), key=self.measures.sort_key)
        if not self.score_outcomes:
            return []
        return sorted({f"{s}.{m}" for s, m, _ in self.score_outcomes},
                      key=lambda o: self.measures.sort_key(measure_of(o)))

    @property
    def group_attributes(self) -> pd.DataFrame:
        """group -> its axis levels (one row per non-control group)."""
        v = self.variants
        axes = [a for a in self.axes if a in v.columns]
        if v.empty or not axes:
            return pd.DataFrame(columns=["group", *axes])
        g = v[v["group"] != "control"][["group", *axes]].drop_duplicates("group")
        return g.reset_index(drop=True)

    @cached_property
    def design(self) -> dict[str, Any]:
        v, s = self.variants, self.summary
        groups = sorted(g for g in v["group"].unique() if g != "control") if not v.empty else []
        cue_types = sorted(c for c in v["cue_type"].unique() if c != "control") if not v.empty else []
        return dict(
            posts=int(v["post_id"].nunique()) if not v.empty else 0,
            variants=int(len(v)),
            groups=groups,
            cue_types=cue_types,
            styles=sorted(s["style"].dropna().unique()) if not s.empty else (self.spec.styles if self.spec else []),
            models=sorted(s["model_label"].unique()) if not s.empty else [],
            samples=int(s["max_sample"].max() + 1) if not s.empty else (self.spec.samples if self.spec else 0),
            requests=self.n_requests,
            answered=self.n_answered,
            scored=int(s["scored"].sum()) if self.has_scores and not s.empty else 0,
        )

    @cached_property
    def sample(self) -> tuple[pd.DataFrame, int]:
        """(frame, n answered) for the figures drawn from individual replies: the answered replies of the
        sample (:data:`audit.report.facts.SAMPLE_REPLIES`: every one of a smaller run) joined with their
        non-NULL scores, long: one row per (request, ``scorer.measure``), columns ``request_key, group,
        cue_type, style, model_label, post_id, sample_index``, the axes, ``outcome``, ``measure``, ``value``."""
        cols = ["request_key", "group", "cue_type", "style", "model_label", "post_id", "outcome", "measure", "value"]
        n_ok = self.n_answered
        if not n_ok or not self.has_scores:
            return pd.DataFrame(columns=cols), n_ok
        facts = self.facts
        keys = facts.sample_keys(SAMPLE_REPLIES)
        r = facts.rows_of(keys)
        keep = ["request_key", "group", "cue_type", "style", "model_label", "post_id", "sample_index",
                *[a for a in self.axes if a in r.columns]]
        ok = r.loc[r["status"] == "ok", keep].reset_index(drop=True)
        sc = facts.scores_of(keys)
        sc = sc[sc["value"].notna()]
        pos = pd.Index(ok["request_key"].astype(str)).get_indexer(sc["request_key"].astype(str))
        sc = sc[pos >= 0]
        df = ok.take(pos[pos >= 0]).reset_index(drop=True)
        df["outcome"] = (sc["scorer"].astype(str) + "." + sc["measure"].astype(str)).to_numpy()
        df["measure"] = sc["measure"].astype(str).to_numpy()
        df["value"] = sc["value"].to_numpy(dtype=float)
        return df, n_ok


def collect(run_dir: str | Path) -> ReportData:
    run_dir = Path(run_dir)
    if not (run_dir / STORE_FILENAME).exists():
        raise AuditError("no run store found", where=str(run_dir),
                         fix="give the run directory of an audit (it contains store.sqlite), or run the audit first")
    with RunStore(run_dir, create=False) as store:
        names = store.table_names()
        _refuse_stale_analysis(store, run_dir)
        # the aggregates' sorts and look-ups do with a smaller page cache (the OS caches the file too),
        # and the report's memory stays under 1 GB at a million replies
        store.conn.execute(f"PRAGMA cache_size=-{REPORT_CACHE_KIB}")
        # the store's hashes read every row (a million replies: ~7 s of CPU for the analysis inputs, ~27 s for the
        # content), in a process of their own while SQLite computes the aggregates below and the figures
        # are drawn; first the inputs' hash, which tells whether the stored per-group summary is the store's
        stored_summary = (GROUP_SUMMARY_TABLE in names and store.get_meta("group_summary_inputs_sha256") is not None)
        hasher = StoreDigests(run_dir / STORE_FILENAME, inputs=stored_summary, content=True)
        # the reply counts (17 s of SQL at a million replies, most of it looking up each request's reply
        # and scores) on a connection of their own, in a thread, while this one reads the rest (SQLite
        # releases the GIL)
        counts = _Background(run_dir, lambda facts: facts.summary())
        data = None
        try:
            meta = store.meta_dict()
            spec, spec_yaml = None, ""
            if meta.get("spec_hash"):
                try:
                    spec = store.latest_spec()
                    spec_yaml = spec._source_text or ""
                except Exception:  # noqa: BLE001 - an old or foreign spec still gets a report
                    spec_yaml = store.spec_yaml(meta["spec_hash"])
            variants = store.variants_df()
            facts = ReplyFacts(store)
            outcomes = facts.scored_outcomes()
            tables = {t: store.table_df(t) for t in RESULT_TABLES}
            probe = store.table_df("probe")
            invariance = store.table_df("invariance")
            agreement = _agreement(facts, outcomes)  # between scorers that share a measure (e.g. epitome vs llm-judge)
            ratings = _ratings(store)
            summary = counts.result()
            errors, errors_left_out = facts.errors() if (summary["status"] == "failed").any() else ([], 0)
            changed = facts.answers_changed() if summary["flagged"].sum() > 0 else []
            group_summary = None
            if outcomes and not summary.empty:  # stored by the analysis (58 s of SQL at a million replies)
                group_summary = stored_group_summary(store, inputs_fingerprints(
                    store, digest=hasher.inputs())["group_summary"]) if stored_summary else None
                if group_summary is None:  # none stored, or the scores or answers changed since
                    group_summary = facts.group_summary()
            rated = None
            if ratings is not None:  # the rated replies' facts and scores only
                keys = list(dict.fromkeys(ratings["request_key"].astype(str)))
                rated = (facts.rows_of(keys), facts.scores_of(keys))
            data = ReportData(
                run_dir=run_dir, spec=spec, spec_yaml=spec_yaml, spec_hash=meta.get("spec_hash"), meta=meta,
                variants=variants, summary=summary,
                group_summary=group_summary if group_summary is not None else pd.DataFrame(
                    columns=["model_label", "outcome", "group", "cue_type", "mean", "sd", "n"]),
                score_outcomes=outcomes, scorer_info=store.scorer_info(), tables=tables,
                probe=probe, probe_summary=probe_summary(store), invariance=invariance,
                _store_sha256="", store_tables=names,
                agreement=agreement if agreement is not None and not agreement.empty else None,
                ratings=ratings, spend=_spend(store, spec), errors=errors, errors_left_out=errors_left_out,
                answers_changed=changed, rated=rated, _hasher=hasher,
            )
        finally:
            if data is None:  # failed: no process or thread left behind
                hasher.close()
                counts.result(wait_only=True)
        return data


class _Background:
    """``job(ReplyFacts)`` on a store connection of its own, in a thread; :meth:`result` waits for it."""

    def __init__(self, run_dir: Path, job: Any):
        import threading

        self.run_dir, self.job = run_dir, job
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="report-counts", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with RunStore(self.run_dir, create=False, check=False) as st:
                st.conn.execute(f"PRAGMA cache_size=-{REPORT_CACHE_KIB}")
                self.value = self.job(ReplyFacts(st))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = exc

    def result(self, wait_only: bool = False) -> Any:
        self.thread.join()
        if self.error is not None and not wait_only:
            raise self.error
        return self.value


def _agreement(facts: ReplyFacts, outcomes: list[tuple[str, str]]) -> pd.DataFrame | None:
    """:func:`agreement_table` of the scores of the measures two or more scorers share (only those
    scores are read; a run whose scorers share no measure reads none)."""
    by: dict[str, list[str]] = {}
    for s, m, _ in outcomes:
        by.setdefault(m, []).append(s)
    shared = [(s, m) for m, ss in by.items() if len(set(ss)) > 1 for s in ss]
    if not shared:
        return None
    return agreement_table(facts.scores_of_measures(sorted(shared)))


def _spend(store: RunStore, spec: Any) -> dict[str, Any] | None:
    """results.json ``spend`` (:func:`audit.costs.spend`); None when the run never dealt in money."""
    from ..budget import spend

    try:
        return spend(store, spec)
    except AuditError:
        return None


def _refuse_stale_analysis(store: RunStore, run_dir: Path) -> None:
    """A report never fits a model, and must not lead with gaps fitted before the ratings now stored:
    refuse, with the command that refits (:func:`audit.stats.stage.analysis_predates_ratings`)."""
    from ..stats.stage import analysis_predates_ratings

    if analysis_predates_ratings(store):
        import shlex

        when = store.get_meta("analyzed_at") or "before the ratings were stored"
        raise AuditError(f"the analysis (fitted {when}) predates the human ratings now stored, so its corrected "
                         "gaps are missing or stale", where=str(store.path),
                         fix=f"run `empathy-audit analyze {shlex.quote(str(run_dir))}` (it refits with the ratings), "
                             f"then `empathy-audit report {shlex.quote(str(run_dir))}`")


def _ratings(store: RunStore) -> pd.DataFrame | None:
    ratings = store.ratings_df()
    return ratings if not ratings.empty else None
