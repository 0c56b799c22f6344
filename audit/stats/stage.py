"""The analysis stage: scores in the run store -> the family of gap tests -> results tables.

:func:`analysis_table` joins the replies with their scores (long per outcome);
:func:`analyze_scores` fits every test of the audit's family on that table; :func:`analyze_run` does
both for a run and writes ``results``, ``results_paired``, ``results_intersectional``,
``results_power`` and ``analysis_meta`` into the store (replacing earlier analysis tables in one
transaction; the analysis is a pure function of the stored scores and the spec).

The family (what Holm and BH correct over) is every row of ``results``: outcomes x models x styles
(``pooled`` plus each style when ``analysis.by_style`` and there is more than one) x cue types
(``pooled`` plus each) x groups x references (the control plus ``analysis.extra_references``, plus each
group's matched ``analysis.reference_group``), and one max - min disparity test per outcome and model
(``results_disparity``, :mod:`audit.stats.disparity`), and, in a run with several models, every
difference of gaps against the reference model (``results_models``, :mod:`audit.stats.models_compare`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from threadpoolctl import threadpool_limits

from .. import __version__
from ..errors import AuditError
from ..report.provenance import software_versions
from ..scorers.measures import ANY_LEVEL, MeasureCatalog
from ..stages import StageContext, StageSummary
from ..store import RunStore, canonical_json, now_iso
from .axes import axis_contrasts as axis_contrasts_of
from .cells import CELL_STATS, CELLS, cells_binary, cells_from_rows
from .corrections import adjust_family
from .designs import detect_design
from .textcodes import block_rows, first_rows, text_factorize
from .disparity import DisparityBlocks, adjust_with, keep_matched, reference_map
from .family import Block, family_table, fit_block, split_families
from .models_compare import models_family, models_meta, models_table, sampling_variability
from .intervals import ADJ_COLUMNS, clip_to_range, holm_intervals
from .paired import paired_contrasts
from ..memory import release_free_memory
from ..parallel import Beside, SharedTasks, parallel_enabled, part_result, run_parts
from .pooling import partial_pool
from .power import detectable_gap
from .ppi import ppi_table

__all__ = ["analysis_table", "analysis_cells", "analyze_cells", "table_cells", "analyze_run", "analyze_store",
           "analyze_scores", "analysis_fingerprint", "analysis_predates_ratings", "ratings_fingerprint",
           "AnalysisResult", "AnalyzeStage", "RESULTS_COLUMNS"]

RESULTS_COLUMNS = [
    "family_id", "outcome", "model_label", "style", "cue_type", "group", "reference", "estimate", "se", "ci_low",
    "ci_high", "ref_mean", "relative_gap", "rel_ci_low", "rel_ci_high", "std_effect", "z", "p_value", "p_holm",
    "p_bh", "significant_holm", "n", "n_posts", "n_missing", "ref_n_missing", "n_clusters", "design", "method",
    "converged", "warning", "ref_se", "cov_gap_ref", *ADJ_COLUMNS,
]
_KEYS = ["family_id", "outcome", "model_label", "style", "cue_type", "group", "reference"]
_BASE_COLS = ["request_key", "post_id", "variant_id", "group", "cue_type", "style", "model_label", "sample_index"]
_NOT_AXES = set(_BASE_COLS) | {
    "purpose", "subject_key", "endpoint_id", "model_name", "style_hash", "messages_json", "params_json", "status",
    "reply", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s", "attempts", "model_reported",
    "runtime", "runtime_version", "error", "replied_at", "flags", "topic", "risk", "group_name", "alternative", "cue_text",
    "post_text",
}


ANALYSIS_TABLES = ("results", "results_paired", "results_intersectional", "results_power", "analysis_meta", "results_axes",
                   "results_disparity", "results_ppi", "results_models", "results_variability")


@dataclass
class AnalysisResult:
    results: pd.DataFrame
    paired: pd.DataFrame
    intersectional: pd.DataFrame
    power: pd.DataFrame
    meta: pd.DataFrame
    axes: list[str] = field(default_factory=list)
    disparity: pd.DataFrame = field(default_factory=pd.DataFrame)
    ppi: pd.DataFrame = field(default_factory=pd.DataFrame)
    models: pd.DataFrame = field(default_factory=pd.DataFrame)
    variability: pd.DataFrame = field(default_factory=pd.DataFrame)
    axis_contrasts: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        t = {"results": self.results, "results_paired": self.paired,
             "results_intersectional": self.intersectional, "results_power": self.power,
             "analysis_meta": self.meta, "results_disparity": self.disparity}
        if not self.ppi.empty:  # only where human ratings exist (a run without them is unchanged)
            t["results_ppi"] = self.ppi
        if not self.models.empty:  # only with several models (a one-model run is unchanged)
            t["results_models"] = self.models
        if not self.variability.empty:  # only with repeated samples of a variant (samples > 1)
            t["results_variability"] = self.variability
        if not self.axis_contrasts.empty:  # pooled axis contrasts (audit.stats.axes), where computed
            t["results_axes"] = self.axis_contrasts
        return t


def _match_outcomes(available: list[str], wanted: list[str] | None, where: str) -> list[str]:
    if not wanted:
        return sorted(available)
    out = []
    for w in wanted:
        hits = [a for a in available if a == w] or [a for a in available if a.split(".")[-1] == w]
        if len(hits) != 1:
            raise AuditError(
                f"analysis outcome '{w}' " + ("is ambiguous: " + ", ".join(hits) if hits else "has no stored scores"),
                where=where, fix="use one of: " + ", ".join(sorted(available)),
            )
        out.append(hits[0])
    return list(dict.fromkeys(out))


def analysis_table(store: RunStore, spec: Any = None, *, compact: bool = False) -> pd.DataFrame:
    """Replies joined with their scores, long per outcome; missing outcomes kept as NaN.

    Columns: ``request_key, post_id, variant_id, group, cue_type, style, model_label, sample_index,
    outcome, value`` plus the axis columns (race, gender, ...). Every reply request of the run's design
    gets one row per outcome (``scorer.measure`` of the stored scores): ``value`` is NaN where the
    reply failed or was never answered, where the scorer has not scored it, or where its score is
    NULL (e.g. withheld by a content filter, an unparseable judge answer). Nothing is dropped here:
    the gap tests count the missing values per group and refuse differential missingness
    (:mod:`audit.stats.missing`) unless ``analysis.allow_missing``. Level outcomes (declared ordinal
    by their scorer, e.g. ``epitome.ER``) also get a binary ``epitome.ER>0`` (level > 0, NaN where the
    level is missing); the declarations are read from the run's ``scorer_info``.

    ``compact``: the text columns as categoricals (a code per cell, each distinct text once), which
    keeps a million replies x ten outcomes in a few hundred MB instead of several GB; the analysis
    stage reads it so. Its memory otherwise: the texts are never read (:meth:`RunStore.reply_units_df`)
    and the scores come in chunks (:meth:`RunStore.score_matrix`).
    """
    rep = store.reply_units_df()
    axes = [c for c in rep.columns if c not in _NOT_AXES]
    empty = pd.DataFrame(columns=_BASE_COLS + ["outcome", "value"] + axes)
    if rep.empty:
        return empty
    rep = rep[rep["post_id"].notna()].reset_index(drop=True)
    names, values = store.score_matrix(rep["request_key"])
    if not names:
        return empty
    values[~rep["status"].isin(["ok", "content_filter"]).to_numpy(), :] = np.nan  # a failed reply has no outcome
    catalog = MeasureCatalog.from_scorer_info(store.scorer_info())
    derived = [(j, f"{n}{ANY_LEVEL}") for j, n in enumerate(names) if _is_level(values[:, j], catalog.declared(n))]
    outcomes = names + [d for _, d in derived]
    if spec is not None and getattr(spec, "analysis", None) is not None and spec.analysis.outcomes:
        keep = set(_match_outcomes(sorted(outcomes), spec.analysis.outcomes, "spec key analysis.outcomes"))
    else:
        keep = set(outcomes)
    order = sorted(outcomes)  # categories in text order: a groupby over codes then visits outcomes as over texts
    rep["style"] = rep["style"].fillna("default")
    base = _compact(rep[_BASE_COLS + axes])  # the repeated rows below are codes, whatever ``compact`` says
    n, k = len(rep), len(names)
    parts = []
    # every reply with every outcome, reply by reply (the order the gap tests have always seen) ...
    cols = [j for j in range(k) if names[j] in keep]
    if cols:
        part = base.take(np.repeat(np.arange(n), len(cols))).reset_index(drop=True)
        part["outcome"] = pd.Categorical.from_codes(np.tile(np.array([order.index(names[j]) for j in cols]), n),
                                                    categories=order)
        part["value"] = values[:, cols].ravel()
        parts.append(part)
    # ... then the derived "any level" outcomes, one after the other
    for j, name in derived:
        if name in keep:
            v = values[:, j]
            part = base.copy()
            part["outcome"] = pd.Categorical.from_codes(np.full(n, order.index(name)), categories=order)
            part["value"] = np.where(np.isnan(v), np.nan, (v > 0) * 1.0)
            parts.append(part)
    if not parts:
        return empty
    out = pd.concat(parts, ignore_index=True)
    if not compact:
        for c in out.columns:
            if isinstance(out[c].dtype, pd.CategoricalDtype):
                out[c] = out[c].astype(object).where(out[c].notna(), None) if c in axes else out[c].astype(object)
    return out


def analysis_cells(store: RunStore, spec: Any = None, *, group_summary: bool = False) -> Any:
    """The cells of the run's :func:`analysis_table` (the same outcomes, derived ``>0`` outcomes and
    missing values), computed in one streaming pass over the store (:meth:`RunStore.score_cells`)
    instead of from the reply rows: one row per (variant, style, model, outcome), in the order of
    :func:`table_cells`, with the columns :func:`analyze_cells` reads. The text columns are categoricals.
    ``group_summary``: return ``(cells, summary)``, with the report's per-group score summary made
    from the same sums (:func:`group_summary_of_sums`; None where it cannot be).
    """
    units, stats = store.score_cells()
    release_free_memory()  # the pass's request keys and chunks are freed: its heap back to the system
    if not group_summary:
        return _cells_of_sums(store, spec, units, stats)
    summary = group_summary_of_sums(units, stats)  # before the cells: they free the sums as they go
    return _cells_of_sums(store, spec, units, stats), summary


def _cells_of_sums(store: RunStore, spec: Any, units: pd.DataFrame,
                   stats: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """:func:`analysis_cells` from the units and sums of :meth:`RunStore.score_cells`."""
    axes = [c for c in units.columns if c not in _NOT_AXES | {"n_requests", "n_any", "group"}]
    cols = _CELL_COLS + axes + ["value"] + CELL_STATS + ["n_any"]
    if units.empty or not stats:
        return pd.DataFrame(columns=cols)
    names = sorted(stats)
    catalog = MeasureCatalog.from_scorer_info(store.scorer_info())
    per: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        st = stats.pop(name)  # each outcome's sums freed once its cell statistics are made
        n = st["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_c = st["sum"] / n
            ss = np.where(n > 0, np.maximum(st["sumsq"] - st["sum"] * mean_c, 0.0), 0.0)
        seen = n > 0
        per[name] = dict(value=np.where(seen, mean_c + st["shift"], np.nan), n=n, ss=ss,
                         vmin=np.where(seen, st["min"], np.nan), vmax=np.where(seen, st["max"], np.nan),
                         all01=st["not01"] == 0)
        declared = catalog.declared(name)
        if declared is not None:
            levels = declared.kind == "ordinal" and declared.range is not None and declared.range[0] == 0
        else:
            levels = bool(seen.any()) and float(st["not012"].sum()) == 0
        if levels and seen.any() and float(np.max(st["max"][seen])) > 1:
            pos = st["pos"]
            with np.errstate(invalid="ignore", divide="ignore"):
                per[f"{name}{ANY_LEVEL}"] = dict(
                    value=np.where(seen, pos / n, np.nan), n=n, ss=np.where(seen, pos * (n - pos) / n, 0.0),
                    vmin=np.where(seen, (st["min"] > 0) * 1.0, np.nan),
                    vmax=np.where(seen, (st["max"] > 0) * 1.0, np.nan),
                    all01=np.ones(len(n), dtype=bool))
    outcomes = sorted(per)
    if spec is not None and getattr(spec, "analysis", None) is not None and spec.analysis.outcomes:
        keep = set(_match_outcomes(outcomes, spec.analysis.outcomes, "spec key analysis.outcomes"))
        outcomes = [o for o in outcomes if o in keep]
    if not outcomes:
        return pd.DataFrame(columns=cols)
    U, K = len(units), len(outcomes)
    rep = np.repeat(np.arange(U), K)
    base = _compact(units[["post_id", "variant_id", "group", "cue_type", "style", "model_label"] + axes])
    data: dict[str, Any] = {}
    for c in _CELL_COLS + axes:  # built column by column, in order: a million replies are ~3M cells
        if c == "outcome":
            data[c] = pd.Categorical.from_codes(np.tile(np.arange(K), U), categories=outcomes)
        else:
            col = base[c]
            data[c] = pd.Categorical.from_codes(col.cat.codes.to_numpy()[rep], dtype=col.dtype) \
                if isinstance(col.dtype, pd.CategoricalDtype) else col.to_numpy()[rep]
    def column(c: str) -> np.ndarray:  # one statistic of every outcome, cell by cell; the per-outcome arrays freed
        out = np.column_stack([per[o][c] for o in outcomes]).ravel()
        for o in outcomes:
            per[o].pop(c)
        return out

    data["value"] = column("value")
    n = column("n").astype(np.int64)
    data["n"] = n
    data["n_missing"] = np.repeat(units["n_requests"].to_numpy(), K) - n
    for c in ("ss", "vmin", "vmax", "all01"):
        data[c] = column(c)
    data["n_any"] = np.repeat(units["n_any"].to_numpy(), K)
    out = pd.DataFrame(data, columns=cols, copy=False)  # each column as made: consolidating copied ~180 MB at 1M
    del data, per
    release_free_memory()
    return out


#: The report's per-group score summary, stored by :func:`analyze_store` (:func:`group_summary_of_sums`)
#: with the fingerprint of its inputs in meta ``group_summary_inputs_sha256`` (:func:`inputs_fingerprints`).
GROUP_SUMMARY_TABLE = "group_summary"
GROUP_SUMMARY_COLUMNS = ["model_label", "outcome", "group", "cue_type", "mean", "sd", "n", "sum"]


def group_summary_of_sums(units: pd.DataFrame, stats: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Mean, SD, n and sum of every score per model, outcome, group and cue type, from the per-unit sums
    of :meth:`RunStore.score_cells`: the table :meth:`audit.report.facts.ReplyFacts.group_summary` makes
    with a SQL ``GROUP BY`` over the replies (58 s at a million replies), made here from ~70k units.

    The sums are of ``value - shift`` per unit; a group pools its units (Chan, Golub & LeVeque 1979):
    ``n = sum n_u``, ``mean = sum s_u / n + shift``, ``M2 = sum_u [(q_u - s_u^2 / n_u) + n_u (s_u / n_u -
    (mean - shift))^2]`` (``s_u``, ``q_u``: sum and sum of squares of the unit's shifted values), SD =
    sqrt(M2 / (n - 1)), NaN for a single value. Where the SQL's integer sums make its figures exact,
    these are too: a group whose values are all 0 or 1 takes its sum from the count of positive values
    and SD = sqrt((s - s^2 / n) / (n - 1)), the SQL's own arithmetic (the same bits); a group of one
    value repeated has that value as its mean and SD 0. Other means and SDs differ from the SQL's by
    rounding (~1e-15 relative): the SQL's textbook one-pass formula on raw values is the less accurate.

    The sums count every answered reply (status ok or content_filter); the SQL's summary counts status
    ok only. A caller stores this table only for a run with no content-filtered reply
    (:func:`inputs_fingerprints` tells)."""
    rows: list[tuple] = []
    if units.empty or not stats:
        return pd.DataFrame(columns=GROUP_SUMMARY_COLUMNS)
    keys = units[["model_label", "group", "cue_type"]].astype(object)
    gid = keys.groupby(list(keys.columns), sort=True, dropna=False).ngroup().to_numpy()
    firsts = keys.groupby(gid, sort=True).first()
    G = len(firsts)
    for name in sorted(stats):
        st = stats[name]
        n_u = np.asarray(st["n"], dtype=float)
        seen = n_u > 0
        if not seen.any():
            continue
        shift = float(st["shift"])
        g = gid[seen]
        nu, su, qu = n_u[seen], np.asarray(st["sum"], float)[seen], np.asarray(st["sumsq"], float)[seen]
        n = np.bincount(g, nu, minlength=G)
        s = np.bincount(g, su, minlength=G)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_u = su / nu
            mean_c = s / n
            m2 = np.bincount(g, np.maximum(qu - su * mean_u, 0.0) + nu * (mean_u - mean_c[g]) ** 2, minlength=G)
        vmin = np.full(G, np.inf)
        vmax = np.full(G, -np.inf)
        np.minimum.at(vmin, g, np.asarray(st["min"], float)[seen])
        np.maximum.at(vmax, g, np.asarray(st["max"], float)[seen])
        not01 = np.bincount(g, np.asarray(st["not01"], float)[seen], minlength=G)
        pos = np.bincount(g, np.asarray(st["pos"], float)[seen], minlength=G)
        for k in np.flatnonzero(n > 0):
            nk = int(round(n[k]))
            if not01[k] == 0:  # 0/1 values: the sum is the count of ones, exactly as SQL sums them
                s1 = float(pos[k])
                mean = s1 / nk
                sd = math.sqrt(max((s1 - s1 * s1 / nk) / (nk - 1), 0.0)) if nk > 1 else math.nan
            elif vmin[k] == vmax[k]:  # one value repeated
                mean, sd = float(vmin[k]), (0.0 if nk > 1 else math.nan)
                s1 = mean * nk
            else:
                mean = float(mean_c[k]) + shift
                sd = math.sqrt(max(float(m2[k]), 0.0) / (nk - 1)) if nk > 1 else math.nan
                s1 = float(s[k]) + nk * shift
            model, grp, cue = firsts.iloc[k]
            rows.append((model, name, grp, cue, mean, sd, nk, s1))
    rows.sort(key=lambda r: (str(r[0]), r[1], str(r[2]), str(r[3])))  # the SQL's ORDER BY 1, 2, 3, 4
    return pd.DataFrame(rows, columns=GROUP_SUMMARY_COLUMNS)


def _compact(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns as categoricals (see :func:`analysis_table`)."""
    out = df.copy()
    for c in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c])):
            out[c] = out[c].astype("category")
    return out


def _is_level(v: np.ndarray, declared: Any) -> bool:
    """Whether an outcome's values are levels from 0 that get a derived binary ``<outcome>>0``
    (:func:`audit.scorers.measures.any_level`): "any emotional reaction / interpretation / exploration
    at all" for EPITOME's ER/IP/EX.

    A level outcome is one its scorer declares ``ordinal`` with levels from 0 (an undeclared one: values
    in {0, 1, 2}); it is derived only where some value is above 1 (else the outcome is already 0/1).
    A missing level stays missing.
    """
    seen = v[~np.isnan(v)]
    if declared is not None:
        levels = declared.kind == "ordinal" and declared.range is not None and declared.range[0] == 0
    else:
        levels = bool(len(seen)) and bool(np.isin(seen, (0.0, 1.0, 2.0)).all())
    return bool(levels and len(seen) and (seen > 1).any())


def _family_id(res: pd.DataFrame) -> str:
    keys = res[["outcome", "model_label", "style", "cue_type", "group", "reference"]].astype(str)
    text = "\n".join(sorted("|".join(r) for r in keys.itertuples(index=False)))
    return "F-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def analyze_scores(
    table: pd.DataFrame,
    *,
    human: pd.DataFrame | None = None,
    **options: Any,
) -> AnalysisResult:
    """Fit the whole family on an :func:`analysis_table` and return the result tables.

    The table is first reduced to its cells (:func:`table_cells`: one row per variant, style, model and
    outcome with the counts, mean and within-cell sum of squares of its replies) and every test is
    fitted from those by :func:`analyze_cells` (whose keyword arguments ``options`` are); the results
    are those of the replies themselves. ``human`` (``request_key, measure, value``): human ratings of
    some replies; they are matched to replies, so the prediction-powered gaps use the rows of ``table``.
    """
    return analyze_cells(table_cells(table), human=human, rows=table if human is not None else None, **options)


def table_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The cells of an :func:`analysis_table` (:func:`audit.stats.cells.cells_from_rows`), in the order of
    their first reply in the table, with ``n_any`` (the cell's replies with at least one observed
    outcome) beside the statistics."""
    if table.empty:
        return pd.DataFrame(columns=_CELL_COLS + ["value"] + CELL_STATS + ["n_any"])
    t = table.copy()
    for c in ("outcome", "model_label", "variant_id", "style", "group", "cue_type", "post_id"):
        if c in t.columns and isinstance(t[c].dtype, pd.CategoricalDtype):
            t[c] = t[c].astype(object)
    axes = [c for c in t.columns if c not in set(_BASE_COLS) | {"outcome", "value"}]
    keys = ["variant_id", "style", "model_label"]
    unit = t.groupby(keys, sort=False, observed=True, dropna=False).ngroup().to_numpy()
    t["__unit__"] = unit
    t["__first__"] = pd.Series(np.arange(len(t))).groupby(unit).transform("min").to_numpy()
    cells = cells_from_rows(t, ["__first__", "outcome"] + keys)
    first = t.groupby("__unit__", sort=True).head(1).set_index("__first__")
    for c in ["post_id", "group", "cue_type"] + axes:
        cells[c] = cells["__first__"].map(first[c]).to_numpy()
    obs = t[t["value"].notna()]
    any_req = obs.drop_duplicates(["__unit__", "request_key"]).groupby("__first__").size()
    cells["n_any"] = cells["__first__"].map(any_req).fillna(0).astype(np.int64).to_numpy()
    cells = cells.sort_values(["__first__", "outcome"], kind="stable").drop(columns="__first__")
    return cells[_CELL_COLS + axes + ["value"] + CELL_STATS + ["n_any"]].reset_index(drop=True)


_CELL_COLS = ["post_id", "variant_id", "group", "cue_type", "style", "model_label", "outcome"]


def analyze_cells(
    table: pd.DataFrame,
    *,
    reference: str = "control",
    extra_references: list[str] | tuple[str, ...] = (),
    alpha: float = 0.05,
    by_style: bool = True,
    paired_check: bool = True,
    power: float = 0.8,
    power_gap: float = 0.05,
    reference_group: str | None = None,
    seed: int = 0,
    primary: list[str] | None = None,
    human: pd.DataFrame | None = None,
    allow_missing: bool = False,
    reference_model: str | None = None,
    model_order: list[str] | None = None,
    rows: pd.DataFrame | None = None,
    margins: dict[str, Any] | None = None,
    axis_contrasts: bool = False,
    ranges: dict[str, tuple[float, float] | None] | None = None,
) -> AnalysisResult:
    """Fit the whole family on a cell table and return the result tables.

    ``table``: one row per cell (variant, style, model, outcome) with ``post_id, group, cue_type``, the
    axis columns, ``value`` (the mean of the cell's observed outcomes) and the statistics of
    :mod:`audit.stats.cells` (``n, n_missing, ss, vmin, vmax, all01``) and ``n_any`` (the cell's
    replies with any observed outcome): :meth:`audit.store.RunStore.score_cells` or
    :func:`table_cells`. Every test is fitted from the cells, exactly (no reply row is read): the mixed
    models and the model comparisons from the sufficient statistics, GEE from the cells' counts of
    ones and zeros, the disparities and paired contrasts from the per-post cell sums. ``rows``: the
    reply rows (:func:`analysis_table`), needed only with ``human`` ratings (the prediction-powered
    gaps match ratings to replies); ``meta['row_fallback']`` says when they were used.

    The gap tests go through the one family loop (:func:`audit.stats.family.fit_family`), the same
    as :func:`audit.stats.analyze_table` on any long table; a block is one (outcome, model, style).
    ``primary`` (``analysis.primary``): split the family into a confirmatory and an exploratory one
    (:func:`_pre_registered`). ``human`` (``request_key, measure, value``; several raters allowed):
    human ratings of some replies, which add the ``results_ppi`` table (:func:`_with_human`).

    Rows with a missing ``value`` are counted per group beside every gap (``n_missing``,
    ``ref_n_missing``); a block whose groups differ in their share of missing outcomes (Fisher exact
    test, :func:`audit.stats.missing.differential_missingness`) is not fitted, with the reason, unless
    ``allow_missing``. The paired contrasts, disparities and power use the observed rows.

    With several models, ``results_models`` (:func:`audit.stats.models_compare.models_table`) holds the
    differences of gaps against ``reference_model`` (default: the first of ``model_order``, the spec's
    models list, else the first model in the table), in the same correction family (exploratory unless
    ``primary`` is given and ``reference_model`` is stated: a pre-registration that names the reference
    model pre-registers the comparison with it).

    ``ranges`` (``{outcome: (min, max)}``, from the scorers' declarations; binary outcomes are (0, 1)
    anyway): every interval is clipped to what the outcome can take, and ``results`` gets the
    Holm-consistent intervals ``ci_level_adj, ci_low_adj, ci_high_adj, rel_ci_low_adj,
    rel_ci_high_adj`` (:mod:`audit.stats.intervals`), which exclude 0 exactly when ``p_holm < alpha``.

    ``margins`` (``analysis.margins``): every gap and disparity of an outcome with a margin gets a TOST
    verdict (:func:`verdicts`, :mod:`audit.stats.equivalence`): the columns of
    :data:`EQUIVALENCE_COLUMNS` in ``results`` and ``results_disparity``.

    ``axis_contrasts`` (on for imported runs, :func:`analyze_store`): with two or more axes,
    ``results_axes`` (:func:`audit.stats.axes.axis_contrasts`) holds each axis's levels against that
    axis's reference, averaged over the other axes, from the same model as the cell gaps (styles and
    cue types pooled), with Holm and BH within that table (exploratory, outside the gap family).
    """
    # one BLAS thread: the fits' matrices are small (tens of columns), and OpenBLAS's threads spin on the
    # cores the forked part of the analysis needs (a million replies: 35 s of CPU for 24 s of fits with two
    # threads, 22 s for 23 s with one). The same setting everywhere, so the numbers do not depend on the cores.
    with threadpool_limits(limits=1, user_api="blas"):
        return _analyze_cells(
            table, reference=reference, extra_references=extra_references, alpha=alpha, by_style=by_style,
            paired_check=paired_check, power=power, power_gap=power_gap, reference_group=reference_group, seed=seed,
            primary=primary, human=human, allow_missing=allow_missing, reference_model=reference_model,
            model_order=model_order, rows=rows, margins=margins, axis_contrasts=axis_contrasts, ranges=ranges)


def _analyze_cells(
    table: pd.DataFrame,
    *,
    reference: str,
    extra_references: list[str] | tuple[str, ...],
    alpha: float,
    by_style: bool,
    paired_check: bool,
    power: float,
    power_gap: float,
    reference_group: str | None,
    seed: int,
    primary: list[str] | None,
    human: pd.DataFrame | None,
    allow_missing: bool,
    reference_model: str | None,
    model_order: list[str] | None,
    rows: pd.DataFrame | None,
    margins: dict[str, Any] | None,
    axis_contrasts: bool,
    ranges: dict[str, tuple[float, float] | None] | None,
) -> AnalysisResult:
    axes = [c for c in table.columns if c not in set(_BASE_COLS) | {"outcome", "value", "n_any"} | set(CELL_STATS)]
    # the observed cells (n > 0) as a mask, not a copy: a copy was another ~240 MB at a million replies
    observed_rows = table["n"].to_numpy() > 0

    # Three kinds of independent parts, each a pure function of the table (and of its number, for a seed):
    # the gap tests of each (outcome, model) with their paired contrasts, the model comparisons and the
    # sampling variability (``work``), and the disparity tests between the demographic groups (the control,
    # where there is one, left out; whatever the reference: a release without a control has them too). At
    # scale (audit.parallel) a forked process starts on the disparity blocks and this one on ``work``; each,
    # when its own kind is handed out, takes what the other has left (two shared counters), so both cores
    # stay busy to the end. The results are put back in order: the same tables as one process, number for
    # number (tests/test_stats_parallel.py).
    disparity_blocks = DisparityBlocks(table, control="control", alpha=alpha, seed=seed, weight="n", keep=observed_rows)
    ax = [a for a in axes if a in table.columns]
    group_axes = first_rows(table, ["group"]).set_index("group")[ax] if ax else None
    between = (reference_map(sorted(text_factorize(table["group"])[1]), reference_group, group_axes)
               if reference_group else {})
    keep_all = [reference, *extra_references]
    references = list(dict.fromkeys([*keep_all, *sorted(set(between.values()))]))
    om_rows = list(block_rows(table, ["outcome", "model_label"]))  # one (outcome, model) block's rows each

    def gap_part(j: int) -> tuple[list[pd.DataFrame], list[str], list[pd.DataFrame], set[str], dict]:
        """The gap tests of (outcome, model) block ``j``: pooled styles and each style (the blocks of
        :func:`audit.stats.family.fit_family`), with their paired contrasts and model formulas. The block is
        taken out of the table by its rows (a group-by's iteration would copy the whole table)."""
        d_om = table.take(om_rows[j])
        outcome, model = d_om["outcome"].iloc[0], d_om["model_label"].iloc[0]
        seen_om = d_om[d_om["n"] > 0]  # the observed cells: the power table's counts of posts and replies
        size = (int(seen_om["post_id"].nunique()), int(seen_om["n"].sum()))
        styles = sorted(d_om["style"].unique())
        style_blocks = [("pooled", d_om)]
        if by_style and len(styles) > 1:
            style_blocks += [(s, d_om[d_om["style"] == s]) for s in styles]
        parts, notes, paired, formulas = [], [], [], set()
        for style, d in style_blocks:
            factors = ["style"] if style == "pooled" and len(styles) > 1 else []
            seen = d[d["n"] > 0]
            inner = "variant_id" if len(seen) and seen.groupby("variant_id")["n"].sum().max() > 1 else None
            formulas.add(
                "value ~ C(group, Treatment(reference))" + "".join(f" + C({f})" for f in factors)
                + " + (1 | post_id)" + (" + (1 | post_id:variant_id)" if inner else "")
            )
            if paired_check:
                p = paired_contrasts(seen, "value", "group", reference, "post_id", by="cue_type", weight="n")
                p.insert(0, "outcome", outcome)
                p.insert(1, "model_label", model)
                p.insert(2, "style", style)
                paired.append(p)
            block = Block({"outcome": outcome, "model_label": model, "style": style}, d, "value", tuple(factors),
                          inner, where=f"outcome {outcome}, model {model}, style {style}", cells=CELLS)
            r, n = fit_block(block, group="group", references=references, cluster="post_id", by="cue_type",
                             alpha=alpha, strict=False, allow_missing=allow_missing)
            parts += r
            notes += n
        return parts, notes, paired, formulas, {(outcome, model): size}

    def models_part():
        out = models_table(table, reference_model=reference_model, reference=reference, alpha=alpha,
                           pre_registered=bool(primary) and reference_model is not None, model_order=model_order,
                           cells=CELLS)
        release_free_memory()  # each part's peak starts from what is in use, not from the last one's heap
        return out

    def variability_part():
        out = _variability(table, observed_rows, reference)
        release_free_memory()
        return out

    # the two longest parts first: whoever is free takes the short ones last
    work = [models_part, variability_part, *[(lambda j=j: gap_part(j)) for j in range(len(om_rows))]]
    fork = parallel_enabled(len(table))
    release_free_memory()  # before the fork: the child starts from what is in use
    work_tasks = SharedTasks(len(work)) if fork else None
    disparity_tasks = SharedTasks(disparity_blocks.n) if fork else None

    def beside_part():
        if not fork:
            return disparity_blocks.rows(), {}
        return disparity_blocks.rows(disparity_tasks.take), run_parts(work, work_tasks.take)

    side = Beside(beside_part, fork)
    try:  # a failure here stops the forked part too
        done = run_parts(work, work_tasks.take if work_tasks else None)
        mine = disparity_blocks.rows(disparity_tasks.take) if disparity_tasks else {}
        side_disparity, side_done = side.result()
    except BaseException:
        side.cancel()
        raise
    done.update(side_done)
    parts, notes, paired_parts, formulas = [], [], [], set()
    sizes: dict[tuple[str, str], tuple[int, int]] = {}  # (outcome, model): observed posts and replies
    for j in range(len(om_rows)):
        p, n, pc, f, sz = part_result(done, 2 + j)
        parts += p
        notes += n
        paired_parts += pc
        formulas |= f
        sizes.update(sz)
    res = family_table(parts, alpha=alpha)
    if between and not res.empty:
        res = adjust_family(keep_matched(res, between, keep_all), alpha=alpha)
    if res.empty:
        raise AuditError("no scored replies to analyse", fix="run `empathy-audit score` first")
    if res["p_value"].isna().all():
        first = notes[0] if notes else "no test could be fitted"
        raise AuditError(f"no gap test could be fitted ({len(res)} tests); first reason: {first}",
                         fix="score more posts (a random-intercept model needs at least 5) or check the scores")
    models, model_notes = part_result(done, 0)
    variability = part_result(done, 1)
    disparity = disparity_blocks.table_of({**side_disparity, **mine})
    res["family_id"] = _family_id(res)
    if not models.empty:  # several models: the differences of gaps join the family (audit.stats.models_compare)
        notes = notes + model_notes
        res, disparity, models = models_family(res, disparity, models, primary, alpha)
    else:
        if not disparity.empty:  # the max - min tests are members of the same correction family
            res, disparity = adjust_with(res, disparity, alpha=alpha)
            disparity["family_id"] = res["family_id"].iloc[0]
        res, disparity = _pre_registered(res, disparity, primary, alpha)
    ppi = pd.DataFrame()
    if human is not None and not human.empty:
        if rows is None:
            raise AuditError("the prediction-powered gaps need the reply rows beside the cells",
                             where="analyze_cells", fix="pass rows=analysis_table(store)")
        ppi = _with_human(rows[rows["value"].notna()], human, reference, alpha)
    if margins:
        res, disparity = verdicts(res, disparity, ppi, margins, alpha=alpha, reference=reference)
    binary = _binary_outcomes(table)  # it reads the observed cells only
    rng = {o: (0.0, 1.0) for o in binary}
    rng.update({o: tuple(r) for o, r in (ranges or {}).items() if r is not None})
    res = holm_intervals(clip_to_range(res, rng), alpha=alpha, ranges=rng,
                         others=[t for t in (disparity, models) if t is not None and not t.empty])
    for c in RESULTS_COLUMNS:
        if c not in res.columns:
            res[c] = np.nan
    res = res[RESULTS_COLUMNS + [c for c in _FAMILY_COLUMNS + EQUIVALENCE_COLUMNS if c in res.columns]]
    m = int(res["p_value"].notna().sum()) + (int(disparity["p_value"].notna().sum()) if not disparity.empty else 0) \
        + (int(models["p_value"].notna().sum()) if not models.empty else 0)

    paired = pd.concat(paired_parts, ignore_index=True) if paired_parts else pd.DataFrame()
    if not paired.empty:
        paired["family_id"] = res["family_id"].iloc[0] + "-paired"
        paired = adjust_family(paired, alpha=alpha)
        front = ["family_id", "outcome", "model_label", "style", "cue_type", "group", "reference"]
        paired = paired[front + [c for c in paired.columns if c not in front]]

    # intersectional cells: pooled style, pooled cue type, reference = control
    inter_parts = []
    cells = res[(res["style"] == "pooled") & (res["cue_type"] == "pooled") & (res["reference"] == reference)]
    for (outcome, model), c in cells.groupby(["outcome", "model_label"], sort=True):
        c = c[["outcome", "model_label", "group", "estimate", "se", "ref_mean", "n"]].copy()
        pooled = partial_pool(c)
        if group_axes is not None:
            for a in ax:
                pooled[a] = pooled["group"].map(group_axes[a])
        pooled["relative_gap"] = pooled["pooled_estimate"] / pooled["ref_mean"]
        inter_parts.append(pooled)
    inter = pd.concat(inter_parts, ignore_index=True) if inter_parts else pd.DataFrame()
    if not inter.empty:
        inter = inter.rename(columns={"estimate": "raw_gap", "se": "raw_gap_se"}).drop(columns=["raw_estimate", "raw_se"])
        inter["estimate"] = inter["pooled_estimate"]
        inter["se"] = inter["pooled_se"]
        inter["ci_low"] = inter["pooled_ci_low"]
        inter["ci_high"] = inter["pooled_ci_high"]
        inter = inter.drop(columns=["pooled_estimate", "pooled_se", "pooled_ci_low", "pooled_ci_high"])
        inter["method"] = "empirical Bayes partial pooling (normal-normal, REML tau) of the pooled gaps"

    # pooled axis contrasts (audit.stats.axes): each axis's levels against its reference, over the other axes
    axes_df = pd.DataFrame()
    if axis_contrasts and group_axes is not None and len(ax) >= 2:
        parts = []
        for (outcome, model), d_om in table.groupby(["outcome", "model_label"], sort=True):
            seen = d_om[d_om["n"] > 0]
            inner = "variant_id" if len(seen) and seen.groupby("variant_id")["n"].sum().max() > 1 else None
            factors = ["style"] if d_om["style"].nunique() > 1 else []
            try:
                r = axis_contrasts_of(d_om, outcome="value", axes_of=group_axes.drop(index=reference, errors="ignore"),
                                      control=reference, factors=factors, inner=inner,
                                      reference_group=reference_group, alpha=alpha, cells=CELLS)
            except AuditError as exc:
                notes = notes + [f"axis contrasts of {outcome}, {model}: {exc.message}"]
                continue
            r.insert(0, "outcome", outcome)
            r.insert(1, "model_label", model)
            parts.append(r)
        axes_df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    # detectable gap of the audit that was run
    pw_rows = []
    for (outcome, model), c in cells.groupby(["outcome", "model_label"], sort=True):
        c = c[c["se"].notna()]
        if c.empty:
            continue
        se = float(c["se"].median())
        ref_mean = float(c["ref_mean"].median())
        mde, rel = detectable_gap(se, ref_mean, alpha=alpha, family_size=m, power=power)
        zc = stats.norm.ppf(1 - alpha / (2 * max(m, 1)))
        pw_gap = float(stats.norm.cdf(abs(power_gap * ref_mean) / se - zc)) if se > 0 else np.nan
        n_posts, n_rows = sizes[(outcome, model)]
        pw_rows.append(dict(outcome=outcome, model_label=model, ref_mean=ref_mean, se=se, detectable_gap=mde,
                            detectable_relative_gap=rel, power=power, alpha=alpha, family_size=m,
                            gap=power_gap, power_at_gap=pw_gap,
                            n_posts=n_posts, n_rows=n_rows,
                            method="(z_{1-alpha/(2m)} + z_power) * median SE of the pooled gaps; "
                                   "power_at_gap = Phi(|gap * ref_mean| / SE - z_{1-alpha/(2m)})"))
    power_df = pd.DataFrame(pw_rows)

    units = first_rows(table, ["variant_id", "style", "model_label"])
    design = detect_design(units[units["n_any"] > 0], "group", "post_id", weight="n_any")
    fallbacks = res.loc[res["method"].astype(str).str.contains("fallback|ols|not fitted"), "method"]
    meta = {
        "formula": sorted(formulas),
        "formula_binary": "logit P(value=1) ~ C(group, Treatment(reference)) [+ C(style)]; GEE, exchangeable "
                          "working correlation within post_id, robust SE; gap on the probability scale",
        "binary_outcomes": binary,
        "estimation": "REML; exact random-intercept fit on per-cluster sufficient statistics (audit.stats.fastlmm), "
                      "identical to lme4::lmer / statsmodels MixedLM",
        "tests": "two-sided Wald z tests; 95% CIs (unadjusted); relative gaps with Fieller CIs where the reference "
                 "mean is safely off 0",
        "intervals": "ci_low/ci_high: unadjusted 95%; ci_low_adj/ci_high_adj: at the Holm-consistent level "
                     "1 - alpha / max(m - R, 1) of the row's family (m tests, R rejected), so they exclude 0 exactly "
                     "when p_holm < alpha; every interval clipped to the outcome's range",
        "family_id": res["family_id"].iloc[0],
        "family_size": m,
        "family": "outcomes x models x styles (pooled + each) x cue types (pooled + each) x groups x references, "
                  "plus one max - min disparity per outcome x model",
        "family_outcomes": sorted(res["outcome"].unique()),
        "references": [reference, *extra_references],
        "reference_group": reference_group,
        "between_group_references": between,
        "disparity": "max - min and min / max of within-post group means per outcome and model (styles and cue "
                     "types pooled); cluster-bootstrap CIs; permutation p-values in the correction family",
        "corrections": ["holm (FWER)", "bh (FDR)"],
        "alpha": alpha,
        "n_significant_holm": int(res["significant_holm"].sum())
        + (int(disparity["significant_holm"].sum()) if not disparity.empty else 0),
        "fallbacks_used": fallbacks.value_counts().to_dict(),
        "singular_fits": int(res["warning"].astype(str).str.contains("singular").sum()),
        "not_fitted": notes,
        "n_rows": int(table["n"].sum()),  # the empty cells add 0
        "design": design.kind,
        "design_statement": design.statement(),
        "software": software_versions(),
        "analyzed_at": now_iso(),
    }
    if primary:
        meta.update(_family_meta(res, disparity, primary))
    if not models.empty:
        meta.update(models_meta(models))
    if margins:
        meta["margins"] = dict(margins)
        meta["equivalence"] = ("TOST (Schuirmann 1987): within margin when the 1 - 2 alpha CI lies inside +-margin, "
                               "exceeds margin when it lies wholly outside, both on p-values adjusted in the gap "
                               "tests' families (Holm; BH in an exploratory family); relative margins by the "
                               "Fieller-type test of gap - c * reference mean; disparities from their bootstrap CI; "
                               "gaps corrected with human ratings where they exist (audit.stats.equivalence)")
    if human is not None and not human.empty:
        meta["row_fallback"] = ("the prediction-powered gaps (results_ppi) match human ratings to replies, so they "
                                "were fitted from the reply rows; every other test from the cells")
    if not ppi.empty:
        meta["ppi"] = ("automated, prediction-powered (PPI++, power-tuned lambda per arm) and human-only gaps of the "
                       "rated outcomes; styles and cue types pooled; delete-one-post jackknife CIs (audit.stats.ppi)")
    meta_df = pd.DataFrame({"key": list(meta), "value": [v if isinstance(v, str) else json.dumps(v, default=str)
                                                         for v in meta.values()]})
    return AnalysisResult(res, paired, inter, power_df, meta_df, axes=ax, disparity=disparity, ppi=ppi,
                          models=models, variability=variability, axis_contrasts=axes_df)


def _binary_outcomes(observed: pd.DataFrame) -> list[str]:
    """The outcomes whose observed cells are 0/1 (:func:`audit.stats.cells.cells_binary` per outcome),
    sorted, from per-outcome aggregates of four columns (iterating a groupby copies the whole table)."""
    seen = observed.loc[observed[CELLS.n] > 0, ["outcome", CELLS.binary, CELLS.lo, CELLS.hi]]
    if seen.empty:
        return []
    g = seen.groupby("outcome", observed=True).agg(b=(CELLS.binary, "all"), lo=(CELLS.lo, "min"), hi=(CELLS.hi, "max"))
    return sorted(str(o) for o, r in g.iterrows() if bool(r["b"]) and r["lo"] == 0.0 and r["hi"] == 1.0)


def _variability(table: pd.DataFrame, seen: np.ndarray, reference: str) -> pd.DataFrame:
    """``results_variability``: with repeated samples of a variant (``samples > 1``), the within-variant
    sampling variance of every continuous outcome and model, the share of a gap's variance it explains
    and the advice on samples versus posts (:func:`audit.stats.models_compare.sampling_variability`);
    empty with one sample per variant. ``seen``: the observed cells (n > 0), the rows it reads."""
    if not seen.any() or table["n"].max() < 2:
        return pd.DataFrame()
    flags = table.loc[seen, ["outcome", CELLS.n, CELLS.binary, CELLS.lo, CELLS.hi]]  # a group-by copies its slices
    cont = [o for o, d in flags.groupby("outcome") if not cells_binary(d)]
    del flags
    cols = [c for c in table.columns if c in {"outcome", "model_label", "value", "group", "post_id", "variant_id",
                                               "style", *CELL_STATS}]  # the rows are copied: only what it reads
    return sampling_variability(table.loc[seen & table["outcome"].isin(cont).to_numpy(), cols],
                                replicate="sample_index", reference=reference, cells=CELLS)


# --------------------------------------------------------------------------- pre-registration, human ratings

_FAMILY_COLUMNS = ["family", "significant_bh"]


def _pre_registered(res: pd.DataFrame, disparity: pd.DataFrame, primary: list[str] | None,
                    alpha: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """With ``analysis.primary``: the confirmatory family (the primary outcomes' pooled gaps and
    disparities; Holm) and the exploratory one (everything else; BH), each adjusted on its own
    (:func:`audit.stats.family.split_families`). Without it the one family stays as it is."""
    if not primary:
        return res, disparity
    have = set(res["outcome"].astype(str))
    missing = [p for p in primary if not any(o == p or o.rpartition(".")[2] == p for o in have)]
    if missing:
        raise AuditError(f"analysis.primary names {missing}, which the stored scores do not have",
                         where="spec key analysis.primary", fix="use one of: " + ", ".join(sorted(have)))
    res, disparity = split_families(res, disparity if not disparity.empty else None, primary, alpha=alpha)
    return res, disparity if disparity is not None else pd.DataFrame()


def _family_meta(res: pd.DataFrame, disparity: pd.DataFrame, primary: list[str]) -> dict[str, Any]:
    both = pd.concat([res[["family", "p_value", "significant_holm", "significant_bh"]],
                      disparity[["family", "p_value", "significant_holm", "significant_bh"]] if not disparity.empty
                      else None], ignore_index=True)
    size = both[both["p_value"].notna()].groupby("family").size().to_dict()
    return {"primary": list(primary),
            "families": "confirmatory: the primary outcomes' gaps with style and cue type pooled (every group, "
                        "reference and model) and their max - min disparities, Holm (FWER); exploratory: every "
                        "other test, BH (FDR) in its own family",
            "family_sizes": {k: int(v) for k, v in size.items()},
            "n_significant_confirmatory": int(both.loc[both["family"] == "confirmatory", "significant_holm"].sum()),
            "n_significant_exploratory_bh": int(both.loc[both["family"] == "exploratory", "significant_bh"].sum())}


def _with_human(table: pd.DataFrame, human: pd.DataFrame | None, reference: str, alpha: float) -> pd.DataFrame:
    """``results_ppi`` (:func:`audit.stats.ppi.ppi_table`) when human ratings exist, else empty."""
    if human is None or human.empty:
        return pd.DataFrame()
    return ppi_table(table, human, reference=reference, alpha=alpha)


# --------------------------------------------------------------------------- equivalence margins

#: Columns of ``results`` and ``results_disparity`` with ``analysis.margins`` (absent without).
EQUIVALENCE_COLUMNS = ["margin", "margin_kind", "margin_abs", "verdict_source", "verdict_estimate", "tost_ci_low",
                       "tost_ci_high", "p_within", "p_exceed", "p_within_adj", "p_exceed_adj", "verdict",
                       "posts_more", "ratings_more"]


def headline_gaps(results: pd.DataFrame, ppi: pd.DataFrame | None, reference: str = "control") -> pd.DataFrame:
    """The gaps a verdict is made on: ``results`` with, where human ratings give a prediction-powered
    (PPI++) gap of the same outcome, model and group against the control (styles and cue types pooled;
    :mod:`audit.stats.ppi`), that corrected gap's ``estimate, se, ci_low, ci_high``; ``verdict_source``
    says which (``model`` or ``ppi``; ``n_rated`` the ratings behind a corrected gap). The one place
    that picks the corrected gap over the automated one for the verdicts."""
    out = results.copy()
    out["verdict_source"] = "model"
    out["n_rated"] = np.nan
    if ppi is None or ppi.empty:
        return out
    p = ppi[ppi["kind"] == "ppi"].astype({"reference": str}).set_index(["outcome", "model_label", "group",
                                                                          "reference"])
    pooled = (out["style"].astype(str) == "pooled") & (out["cue_type"].astype(str) == "pooled")
    for i in out.index[pooled]:  # the same comparison: outcome, model, group and reference (the control)
        key = (out.at[i, "outcome"], out.at[i, "model_label"], out.at[i, "group"], str(out.at[i, "reference"]))
        if key in p.index and np.isfinite(float(p.loc[key, "se"])):
            row = p.loc[key]
            for c in ("estimate", "se", "ci_low", "ci_high"):
                out.at[i, c] = float(row[c])
            out.at[i, "verdict_source"] = "ppi"
            out.at[i, "n_rated"] = float(row["n_rated"])
    return out


def verdicts(res: pd.DataFrame, disparity: pd.DataFrame, ppi: pd.DataFrame | None, margins: dict[str, Any], *,
             alpha: float, reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """TOST verdicts of every gap (on :func:`headline_gaps`) and disparity with a margin
    (:func:`audit.stats.equivalence.equivalence_table`), and for each undecided one (inconclusive, or
    a gap of undetermined size) the posts (``posts_more``) or, for a corrected gap, the human ratings
    (``ratings_more``) more that would decide it with 80% power if the true gap were the estimate
    (:func:`audit.stats.power.tost_units_needed`, at the Bonferroni level alpha / m of its family)."""
    from .equivalence import INCONCLUSIVE, UNDETERMINED, equivalence_table
    from .power import tost_units_needed

    basis = headline_gaps(res, ppi, reference)
    eq, dis = equivalence_table(basis, disparity if not disparity.empty else None, margins, alpha=alpha,
                                reference=reference)
    out = res.copy()
    for c in EQUIVALENCE_COLUMNS:
        if c in eq.columns:
            out[c] = eq[c].to_numpy()
    out["verdict_estimate"] = eq["estimate"].to_numpy()
    sizes = _family_sizes(eq, dis)
    more_p, more_r = np.full(len(out), np.nan), np.full(len(out), np.nan)
    for j, rec in enumerate(eq.to_dict("records")):
        if rec["verdict"] not in (INCONCLUSIVE, UNDETERMINED):
            continue
        level = alpha / sizes.get(str(rec.get("family", "all")), 1)
        ppi_row = rec["verdict_source"] == "ppi"
        n_now = rec["n_rated"] if ppi_row else rec.get("n_posts")
        need = tost_units_needed(rec["estimate"], rec["se"], int(n_now) if n_now == n_now and n_now else 0,
                                 rec["margin_abs"], level=level)
        if need is not None:
            (more_r if ppi_row else more_p)[j] = need - int(n_now)
    out["posts_more"], out["ratings_more"] = more_p, more_r
    if dis is not None:
        dis = dis.copy()
        dis["verdict_source"] = "model"
        dis["verdict_estimate"] = dis["estimate"]
        dis["posts_more"] = [_disparity_posts_more(r, alpha / sizes.get(str(r.get("family", "all")), 1), alpha)
                             for r in dis.to_dict("records")]
        dis["ratings_more"] = np.nan
    return out, (dis if dis is not None else disparity)


def _family_sizes(eq: pd.DataFrame, dis: pd.DataFrame | None) -> dict[str, int]:
    both = pd.concat([eq, dis] if dis is not None else [eq], ignore_index=True, sort=False)
    both = both[both["p_within"].notna()]
    fam = both["family"].astype(str) if "family" in both.columns else pd.Series("all", index=both.index)
    return {k: int(v) for k, v in fam.value_counts().items()}


def _disparity_posts_more(rec: dict[str, Any], level: float, alpha: float) -> float:
    """Posts more that would decide an undecided disparity (its bootstrap CI's upper half read as a
    normal SE, scaled by 1 / sqrt(posts))."""
    from .equivalence import INCONCLUSIVE, UNDETERMINED
    from .power import tost_units_needed

    if rec.get("verdict") not in (INCONCLUSIVE, UNDETERMINED):
        return np.nan
    z = stats.norm.ppf(1 - alpha / 2)  # the bootstrap CI's level
    est, m = float(rec["estimate"]), float(rec["margin_abs"])
    # the half of the interval that decides: the upper one for "within", the lower one for "exceeds"
    se = ((float(rec["ci_high"]) - est) if est < m else (est - float(rec["ci_low"]))) / z
    need = tost_units_needed(rec["estimate"], se, int(rec.get("n_posts") or 0), rec["margin_abs"], level=level)
    return float(need - int(rec["n_posts"])) if need is not None else np.nan


def _checked_margins(margins: dict[str, Any] | None, table: pd.DataFrame) -> dict[str, Any] | None:
    """``analysis.margins`` whose every key names a stored outcome (else an AuditError naming it)."""
    if not margins:
        return None
    have = sorted(str(o) for o in text_factorize(table["outcome"])[1])
    for key in margins:
        if not any(o == key or ("." not in key and o.rpartition(".")[2] == key) for o in have):
            raise AuditError(f"analysis.margins names '{key}', which the stored scores do not have",
                             where="spec key analysis.margins", fix="use one of: " + ", ".join(have))
    return dict(margins)


def _human_from_store(store: RunStore) -> pd.DataFrame | None:
    """The run's human ratings (``request_key, measure, value``: the raters' consensus per reply and
    measure, :func:`audit.ratings.consensus`), or None when the store keeps none."""
    h = store.human_ratings_df()
    if h.empty:
        return None
    from ..ratings import consensus
    return consensus(h)[["request_key", "measure", "value"]]


def ratings_fingerprint(store: RunStore) -> str | None:
    """SHA-256 of the human ratings an analysis reads (their consensus per reply and measure), or None
    when the store keeps none. :func:`analyze_store` records it as meta ``analysis_ratings_sha256``;
    :func:`analysis_predates_ratings` compares."""
    human = _human_from_store(store)
    if human is None:
        return None
    return hashlib.sha256(pd.util.hash_pandas_object(human.sort_values(list(human.columns)).reset_index(drop=True),
                                                     index=False).values.tobytes()).hexdigest()


def analysis_predates_ratings(store: RunStore) -> bool:
    """Whether the stored results were fitted before the ratings now stored (ratings imported, replaced
    or removed since): the corrected gaps in them, or their absence, would be stale. False without
    stored results."""
    if "results" not in store.table_names():
        return False
    return store.get_meta("analysis_ratings_sha256") != ratings_fingerprint(store)


def analyze_run(spec: Any, run_dir: str | Path | None = None) -> AnalysisResult:
    """Fit the audit's family of tests on the run in ``run_dir`` and store the results tables
    (``spec`` None: the spec stored in the run)."""
    rd = spec.run_dir(run_dir) if spec is not None else Path(run_dir)
    with RunStore(rd, create=False) as store:
        return analyze_store(store, spec if spec is not None else store.latest_spec())


def analyze_store(store: RunStore, spec: Any, *, fingerprints: dict[str, Any] | None = None) -> AnalysisResult:
    """Fit the audit's family of tests on the scores in ``store`` and replace its results tables; store
    the report's per-group summary (:data:`GROUP_SUMMARY_TABLE`) made from the same sums, with the
    fingerprint of its inputs (``fingerprints``: :func:`inputs_fingerprints` of the store as it is now,
    taken before the scores are read; computed here when not given)."""
    from ..parallel import fork_available
    from ..store import StoreDigests

    digests = None
    if fingerprints is not None:
        fp = fingerprints
    elif fork_available():  # the pass keeps this connection open (it reads in a forked child)
        # the summary's fingerprint hashed beside the pass and the fits (before it, it was ~10 s at a million
        # replies, ~140 s at 10M): both read the store as it is unless another connection commits meanwhile,
        # which PRAGMA data_version on this connection reveals (then no summary is stored: never wrongly fresh)
        version = store.conn.execute("PRAGMA data_version").fetchone()[0]
        digests = StoreDigests(store.path, inputs=True, content=False)
    else:  # before the scores are read: scores stored during the analysis make the summary stale
        fp = inputs_fingerprints(store)
    try:
        table, summary = analysis_cells(store, spec, group_summary=True)
        if table.empty:
            raise AuditError("the run store has no scored replies to analyse", where=str(store.run_dir),
                             fix="run `empathy-audit generate` and `empathy-audit score` first")
        result = _analyze_store_cells(store, spec, table)
        if digests is not None:
            fp = inputs_fingerprints(store, digest=digests.inputs())
            if store.conn.execute("PRAGMA data_version").fetchone()[0] != version:
                summary = None  # the store changed while it was read: the report makes its summary itself
    finally:
        if digests is not None:
            digests.close()
    store.drop_tables(["results_ppi", "results_models", "results_variability", "results_axes"])  # ratings removed since the last analysis: no stale corrected gaps
    store.replace_tables(result.tables)
    store_group_summary(store, None if fp["content_filter"] else summary, fp["group_summary"])
    store.set_meta("analyzed_at", now_iso())
    fp = ratings_fingerprint(store)
    if fp is None:
        store.delete_meta("analysis_ratings_sha256")
    else:
        store.set_meta("analysis_ratings_sha256", fp)
    return result


def _analyze_store_cells(store: RunStore, spec: Any, table: pd.DataFrame) -> AnalysisResult:
    """:func:`analyze_cells` of a store's cell table with the spec's analysis settings."""
    a = spec.analysis
    human = _human_from_store(store)
    rows = analysis_table(store, spec, compact=True) if human is not None else None  # PPI matches ratings to replies
    result = analyze_cells(table, rows=rows, reference=a.reference, extra_references=list(a.extra_references),
                            alpha=a.alpha, by_style=a.by_style, paired_check=a.paired_check,
                            power_gap=a.power_gap, reference_group=a.reference_group, seed=spec.seed,
                            primary=a.primary, human=human,
                            allow_missing=a.allow_missing,
                            reference_model=a.reference_model, model_order=[m.label for m in spec.models],
                            margins=_checked_margins(a.margins, table),
                            axis_contrasts=store.get_meta("import") is not None,
                            ranges=_declared_ranges(store, table))
    return result


def store_group_summary(store: RunStore, summary: pd.DataFrame | None, fingerprint: str) -> None:
    """Store the per-group summary with the fingerprint of its inputs, or (``summary`` None: a run with
    content-filtered replies, whose summary the sums cannot give) remove a stored one, so that the
    report computes it from the replies."""
    if summary is None:
        store.delete_meta("group_summary_inputs_sha256")
        store.drop_tables([GROUP_SUMMARY_TABLE])
        return
    store.replace_tables({GROUP_SUMMARY_TABLE: summary})
    store.set_meta("group_summary_inputs_sha256", fingerprint)


def stored_group_summary(store: RunStore, fingerprint: str | None) -> pd.DataFrame | None:
    """The stored per-group summary when it was made from the inputs with ``fingerprint``
    (:func:`inputs_fingerprints` ``group_summary`` of the store now); None when absent or stale."""
    if fingerprint is None or GROUP_SUMMARY_TABLE not in store.table_names() or \
            store.get_meta("group_summary_inputs_sha256") != fingerprint:
        return None
    df = store.table_df(GROUP_SUMMARY_TABLE)
    if df is None or list(df.columns) != GROUP_SUMMARY_COLUMNS:
        return None
    return df.astype({"mean": float, "sd": float, "n": "int64", "sum": float})


def _declared_ranges(store: RunStore, table: pd.DataFrame) -> dict[str, tuple[float, float] | None]:
    """``{outcome: (min, max)}`` of every outcome in ``table`` from its scorer's measure declaration."""
    catalog = MeasureCatalog.from_scorer_info(store.scorer_info())
    # the distinct texts in order of appearance from the categorical's codes (astype(str) made a string per cell:
    # ~250 MB at a million replies)
    return {str(o): catalog.measure(str(o)).range for o in text_factorize(table["outcome"])[1]}


def analysis_fingerprint(store: RunStore, spec: Any) -> str:
    """SHA-256 of everything the analysis reads: the tool version (a new version refits), the spec's
    analysis settings, every stored score and every reply's status (failed replies are missing outcomes;
    :meth:`audit.store.RunStore.analysis_inputs_lines`)."""
    return inputs_fingerprints(store, spec)["analysis"]


def inputs_fingerprints(store: RunStore, spec: Any = None, *,
                        digest: tuple[str, bool] | None = None) -> dict[str, Any]:
    """Fingerprints of what the analysis reads:

    - ``group_summary``: SHA-256 of what the stored per-group summary (:data:`GROUP_SUMMARY_TABLE`) is
      made of: the design and :func:`audit.store.store_inputs_sha256` (every score and every reply's
      status; ``digest``: that, already computed, else computed now in a process of its own,
      :class:`audit.store.StoreDigests`), so that the report uses the stored summary only while the
      store holds the same scores and answers (a request's model and variant are fixed by its key, a
      variant's group and cue type by its id: both are insert-only);
    - ``content_filter``: whether a reply has status ``content_filter`` (the summary's sums would count
      its scores, which the report's summary leaves out);
    - ``analysis``: :func:`analysis_fingerprint` (only when ``spec`` is given).
    """
    from ..store import StoreDigests

    if digest is None:
        digests = StoreDigests(store.path, inputs=True, content=False)
        try:
            digest = digests.inputs()
        finally:
            digests.close()
    g = hashlib.sha256(b"group summary inputs 2\n")
    g.update(f"design {store.get_meta('design_id')}\n".encode())
    g.update(digest[0].encode())
    out: dict[str, Any] = {"group_summary": g.hexdigest(), "content_filter": digest[1]}
    if spec is not None:
        h = hashlib.sha256()
        h.update(f"empathy-audit {__version__}\n".encode())
        h.update(canonical_json(spec.analysis.model_dump(mode="json")).encode())
        h.update(f"design {store.get_meta('design_id')}\n".encode())  # the rows the analysis works on
        for lines in store.analysis_inputs_lines():
            h.update(lines.encode())
        human = _human_from_store(store)
        if human is not None:  # new ratings refit the corrected gaps (a run without ratings: hash unchanged)
            h.update(b"human ratings\n")
            h.update(pd.util.hash_pandas_object(human.sort_values(list(human.columns)), index=False).values.tobytes())
        out["analysis"] = h.hexdigest()
    return out


class AnalyzeStage:
    """The ``analyze`` stage: refit only when the scores or the analysis settings changed since the
    stored results were made (or ``ctx.options['force_analysis']``). A model that cannot be fitted
    is a ``failed`` stage, not an error: the report is still written and says why."""

    name = "analyze"

    def run(self, ctx: StageContext) -> StageSummary:
        store, spec = ctx.store, ctx.spec
        if store.count_scores(non_null=True) == 0:
            return StageSummary("skipped", "no scores to analyse")
        fps = inputs_fingerprints(store, spec)
        fp = fps["analysis"]
        if (store.get_meta("analysis_inputs_sha256") == fp and "results" in store.table_names()
                and not ctx.options.get("force_analysis") and not analysis_predates_ratings(store)):
            return StageSummary("skipped", f"inputs unchanged; {store.count_rows('results')} stored tests")
        try:
            res = analyze_store(store, spec, fingerprints=fps)
        except AuditError as exc:
            # results of earlier inputs must not be reported as if they were this run's
            store.drop_tables(ANALYSIS_TABLES)
            store.delete_meta("analysis_inputs_sha256")
            store.set_meta("analysis_error", exc.message)
            return StageSummary("failed", f"the analysis could not be fitted: {exc.message}", exc)
        store.set_meta("analysis_inputs_sha256", fp)
        store.delete_meta("analysis_error")
        r = res.results
        if len(r):
            meta = dict(zip(res.meta["key"], res.meta["value"])) if len(res.meta) else {}
            m = int(json.loads(meta["family_size"])) if "family_size" in meta else len(r)
            sig = int(json.loads(meta["n_significant_holm"])) if "n_significant_holm" in meta else \
                int(r["significant_holm"].fillna(False).astype(bool).sum())
            detail = f"{len(r)} gaps; a family of {m} tests, {sig} significant after Holm correction"
        else:
            detail = "no tests"
        return StageSummary("done", detail, res)
