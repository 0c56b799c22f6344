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
from ..store import STORE_FILENAME, RunStore
from ..scorers.measures import MeasureCatalog
from .findings import measure_of

RESULT_TABLES = ("results", "results_paired", "results_intersectional", "results_power", "analysis_meta",
                 "results_disparity", "results_ppi", "results_models",
              "results_variability", "results_axes")
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


@dataclass
class ReportData:
    run_dir: Path
    spec: Any  # AuditSpec or None
    spec_yaml: str
    spec_hash: str | None
    meta: dict[str, str]
    variants: pd.DataFrame
    replies: pd.DataFrame
    scores: pd.DataFrame
    scorer_info: dict[str, dict[str, Any]]
    tables: dict[str, pd.DataFrame | None]
    probe: pd.DataFrame | None
    probe_summary: pd.DataFrame | None
    invariance: pd.DataFrame | None
    store_sha256: str
    agreement: pd.DataFrame | None = None
    store_tables: list[str] = field(default_factory=list)
    ratings: pd.DataFrame | None = None  # human ratings (table ratings, audit/ratings/); None when none stored
    spend: dict[str, Any] | None = None  # tokens reported and their cost (audit.costs.spend); None without prices
    _reader: RunStore | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ texts, read when shown
    def texts(self, keys: list[str]) -> pd.DataFrame:
        """The prompt, reply, post and cue texts of the requests ``keys``, indexed by request key:
        :attr:`replies` holds none (a million replies are ~3 GB of text), so the sections that show
        texts read the few they show, and ``tables/replies.csv`` reads them a chunk at a time."""
        if self._reader is None:  # opened once, without the integrity check collect() has just made
            self._reader = RunStore(self.run_dir, create=False, check=False)
        return self._reader.texts_by_key(keys).set_index("request_key")

    def close(self) -> None:
        """Close the store connection :meth:`texts` opened (the last connection to close a store in
        WAL mode folds its log into store.sqlite)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @cached_property
    def scores_wide(self) -> pd.DataFrame:
        """The stored scores as one row per request and one column per ``scorer.measure``."""
        sc = self.scores
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
    def models(self) -> pd.DataFrame:
        """One row per audited model: label, endpoint, model name, reported name, runtime, parameters."""
        r = self.replies
        if r.empty:
            return pd.DataFrame(columns=["model_label", "endpoint_id", "model_name", "model_reported", "runtime",
                                         "runtime_version", "params", "embedded"])
        rows = []
        for label, d in r.groupby("model_label", sort=True):
            ok = d[d["status"].notna()]
            first = (ok if not ok.empty else d).iloc[0]
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
        if not self.replies.empty:
            return bool(self.replies["endpoint_id"].astype(str).str.startswith("embedded").any())
        if self.spec is not None:
            return any(m.is_embedded for m in self.spec.models)
        return False

    @property
    def status_counts(self) -> pd.DataFrame:
        """Replies per model and status ('ok', 'content_filter', 'failed', 'not answered')."""
        r = self.replies
        if r.empty:
            return pd.DataFrame(columns=["model_label", "status", "n"])
        s = r.assign(status=r["status"].fillna("not answered"))
        return s.groupby(["model_label", "status"]).size().rename("n").reset_index()

    @cached_property
    def analysis_frame(self) -> pd.DataFrame:
        """Answered replies joined with their scores, long: one row per (request, scorer.measure) with a
        value. Text columns are categoricals (a code per row; a million replies x seven measures would
        otherwise hold every request key and label seven times over)."""
        r = self.replies
        if r.empty or self.scores.empty:
            return pd.DataFrame(columns=["request_key", "group", "cue_type", "style", "model_label", "post_id",
                                         "outcome", "measure", "value"])
        keep = ["request_key", "group", "cue_type", "style", "model_label", "post_id", "sample_index",
                *[a for a in self.axes if a in r.columns]]
        ok = r.loc[r["status"] == "ok", keep].reset_index(drop=True)
        ok = ok.astype({c: "category" for c in keep if c != "sample_index"})
        sc = self.scores[self.scores["value"].notna()]
        pos = pd.Index(ok["request_key"].astype(str)).get_indexer(sc["request_key"].astype(str))
        sc = sc[pos >= 0]
        df = ok.take(pos[pos >= 0]).reset_index(drop=True)
        df["outcome"] = (sc["scorer"].astype(str) + "." + sc["measure"].astype(str)).astype("category").to_numpy()
        df["measure"] = sc["measure"].astype("category").to_numpy()
        df["value"] = sc["value"].to_numpy(dtype=float)
        return df

    @property
    def outcomes(self) -> list[str]:
        """Measures in the order the report shows them (from results when present, else from scores)."""
        res = self.results
        if res is not None and not res.empty:
            return sorted(res["outcome"].astype(str).unique(), key=self.measures.sort_key)
        if self.scores.empty:
            return []
        return sorted({f"{s}.{m}" for s, m in zip(self.scores["scorer"], self.scores["measure"])},
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

    @property
    def design(self) -> dict[str, Any]:
        v, r = self.variants, self.replies
        groups = sorted(g for g in v["group"].unique() if g != "control") if not v.empty else []
        cue_types = sorted(c for c in v["cue_type"].unique() if c != "control") if not v.empty else []
        return dict(
            posts=int(v["post_id"].nunique()) if not v.empty else 0,
            variants=int(len(v)),
            groups=groups,
            cue_types=cue_types,
            styles=sorted(r["style"].dropna().unique()) if not r.empty else (self.spec.styles if self.spec else []),
            models=sorted(r["model_label"].unique()) if not r.empty else [],
            samples=int(r["sample_index"].max() + 1) if not r.empty else (self.spec.samples if self.spec else 0),
            requests=int(len(r)),
            answered=int((r["status"] == "ok").sum()) if not r.empty else 0,
            scored=int(self.scores["request_key"].nunique()) if not self.scores.empty else 0,
        )




def collect(run_dir: str | Path) -> ReportData:
    run_dir = Path(run_dir)
    if not (run_dir / STORE_FILENAME).exists():
        raise AuditError("no run store found", where=str(run_dir),
                         fix="give the run directory of an audit (it contains store.sqlite), or run the audit first")
    with RunStore(run_dir, create=False) as store:
        names = store.table_names()
        _refuse_stale_analysis(store, run_dir)
        meta = store.meta_dict()
        spec, spec_yaml = None, ""
        if meta.get("spec_hash"):
            try:
                spec = store.latest_spec()
                spec_yaml = spec._source_text or ""
            except Exception:  # noqa: BLE001 - an old or foreign spec still gets a report
                spec_yaml = store.spec_yaml(meta["spec_hash"])
        variants = store.variants_df()
        replies = store.replies_df("reply", texts=False)  # texts are read where shown (ReportData.texts)
        # a code per row for the repeated texts: a million replies' seven scores are ~120 MB, not ~900
        scores = store.scores_df().astype({"request_key": "category", "scorer": "category", "measure": "category",
                                           "detail": "category"})
        tables = {t: store.table_df(t) for t in RESULT_TABLES}
        probe = store.table_df("probe")
        invariance = store.table_df("invariance")
        agreement = agreement_table(scores)  # between scorers that share a measure (e.g. epitome vs llm-judge)
        return ReportData(
            run_dir=run_dir, spec=spec, spec_yaml=spec_yaml, spec_hash=meta.get("spec_hash"), meta=meta,
            variants=variants, replies=replies, scores=scores, scorer_info=store.scorer_info(), tables=tables,
            probe=probe, probe_summary=probe_summary(store), invariance=invariance,
            store_sha256=store.content_sha256(), store_tables=names,
            agreement=agreement if agreement is not None and not agreement.empty else None,
            ratings=_ratings(store), spend=_spend(store, spec),
        )


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
