"""Compare finished runs: did version 2 close the gap version 1 had? (``empathy-audit compare``)

:func:`compare_runs` reads two or more run directories (their stores only), checks that their designs
are comparable (:func:`check_comparable`), fits the run x group interaction on the variants they share
(:func:`audit.stats.models_compare.gap_interaction`, the same mixed model as the comparison of models
in one run, with ``run`` in place of ``model``) and classifies every gap (:func:`classify`).
:func:`write_comparison` writes the comparison report (HTML, Markdown, JSON, CSV) into a directory.

Comparability (what is checked, and what happens)
-------------------------------------------------
* **Variants** by content hash (``variant_id`` is the SHA-256 of the variant's text and design): no
  shared variant -> refused (:class:`~audit.errors.AuditError`); some not shared -> a warning that
  states the overlap (``n`` shared of each run's total) and only the shared variants are analysed.
* **Outcomes** (``scorer.measure``): none shared -> refused; the shared ones are analysed.
* **Scorers and their versions** (the stored ``scorer_info``): every field that differs is named, with
  each run's value, as a warning (a changed scorer moves every group's scores, and the gap only where
  it scores groups differently, so a difference of gaps may be the scorer's).
* **Decoding** (the parameters sent with the requests: temperature, max_tokens, seed, ...) and the
  **prompt styles** (name and text hash): differences are named as warnings; styles not shared by
  every run are left out.

Each compared unit (a *version*) is one run, or one (run, model) where a run holds several models;
the first is the reference.

The classification rule
-----------------------
With ``A`` the reference version's gap of a group, ``B`` the other version's gap (both from the
interaction model, with 95% CIs), ``D = B - A`` the difference of gaps. The per-version gaps are
Holm-adjusted together, and so are the differences (two families of the comparison):

* **closed**: ``A`` significant (Holm), ``D`` significant (Holm) toward zero (``|B| < |A|``, and
  ``D`` of the opposite sign to ``A``), and ``B``'s 95% CI contains 0;
* **opened**: ``A``'s 95% CI contains 0, ``B`` significant (Holm) and ``D`` significant away from zero
  (``|B| > |A|``);
* **reversed**: ``D`` significant and both CIs exclude 0 with opposite signs;
* **narrowed** / **widened**: ``D`` significant, ``|B|`` smaller / larger than ``|A|``, and none of
  the above (the gap changed but did not vanish or appear);
* **unchanged**: ``D`` not significant (the data show no change; its CI says how large a change they
  rule out).

Loss of significance alone is never "closed": a gap that is no longer significant because the second
run is smaller or noisier is "unchanged" unless the difference of gaps itself is significant
(absence of evidence is not evidence of absence; Altman & Bland 1995, Gelman & Stern 2006).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import AuditError
from .stats.corrections import adjust_family
from .stats.models_compare import gap_interaction, sampling_variability
from .store import STORE_FILENAME, RunStore

__all__ = ["compare_runs", "check_comparable", "classify", "write_comparison", "Comparison", "Comparability",
           "CLASSES"]

CLASSES = ("closed", "opened", "reversed", "narrowed", "widened", "unchanged")


@dataclass
class _Run:
    label: str
    run_dir: Path
    table: pd.DataFrame
    scorer_info: dict[str, dict[str, Any]]
    decoding: dict[str, list[str]]
    styles: dict[str, str]
    models: dict[str, str]   # model_label -> "model_name @ endpoint"
    spec_hash: str | None
    replies_sha: str = ""    # SHA-256 of every reply's (request key, status, text)
    record_sha: str = ""     # SHA-256 of every reply's (request key, time received, latency): a copy has the same


@dataclass
class Comparability:
    """What the runs share and what differs (every difference spelled out)."""

    versions: list[str]
    variants: dict[str, int]
    shared_variants: int
    outcomes: list[str]
    styles: list[str]
    differences: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    same_model_and_spec: bool = False
    notes: list[str] = field(default_factory=list)   # said in the report, nothing for the user to act on
    identical: list[tuple[str, str]] = field(default_factory=list)   # runs with identical replies

    @property
    def overlap_statement(self) -> str:
        each = ", ".join(f"{k}: {v}" for k, v in self.variants.items())
        return f"{self.shared_variants} variants shared by every run ({each} variants in each)"


@dataclass
class Comparison:
    comparability: Comparability
    gaps: pd.DataFrame           # per version and group: gap with CI (from the interaction model)
    differences: pd.DataFrame    # per non-reference version and group: difference of gaps, class
    variability: pd.DataFrame    # within-variant sampling variance (samples > 1, or replicate runs)
    reference_version: str
    runs: list[dict[str, Any]]
    alpha: float = 0.05

    @property
    def counts(self) -> dict[str, int]:
        c = self.differences["status"].value_counts().to_dict() if not self.differences.empty else {}
        return {k: int(c.get(k, 0)) for k in CLASSES}


def _load(run_dir: Path, label: str) -> _Run:
    from .stats.stage import analysis_table

    if not (run_dir / STORE_FILENAME).exists():
        raise AuditError("no run store found", where=str(run_dir),
                         fix="give the run directory of a finished audit (it contains store.sqlite)")
    with RunStore(run_dir, create=False) as st:
        spec = None
        try:
            spec = st.latest_spec()
        except AuditError:
            pass
        table = analysis_table(st, spec)
        rep = st.replies_df("reply")
        info = st.scorer_info()
        spec_hash = st.get_meta("spec_hash")
    if table.empty or table["value"].notna().sum() == 0:
        raise AuditError("the run has no scored replies", where=str(run_dir),
                         fix="finish the run (`empathy-audit run SPEC`) before comparing it")
    decoding: dict[str, set] = {}
    for pj in rep["params_json"].dropna().unique():
        for k, v in json.loads(pj).items():
            decoding.setdefault(k, set()).add(json.dumps(v, sort_keys=True))
    styles = (rep.drop_duplicates("style").set_index("style")["style_hash"].astype(str).to_dict()
              if "style_hash" in rep else {})
    found = {str(r["model_label"]): f"{r['model_name']} @ {r['endpoint_id']}"
             for r in rep.drop_duplicates("model_label").to_dict("records")}
    order = [m.label for m in spec.models] if spec is not None else []
    models = {k: found[k] for k in [*order, *sorted(found)] if k in found}  # the spec's order
    return _Run(label, run_dir, table, info, {k: sorted(v) for k, v in decoding.items()},
                {str(k): v for k, v in styles.items()}, models, spec_hash,
                _digest(rep, ["request_key", "status", "reply"]), _digest(rep, ["request_key", "replied_at", "latency_s"]))


def _digest(rep: pd.DataFrame, cols: list[str]) -> str:
    """SHA-256 of the columns ``cols`` of the replies, in request-key order ('' without replies)."""
    import hashlib

    if rep.empty or any(c not in rep.columns for c in cols):
        return ""
    d = rep[cols].sort_values("request_key")
    h = hashlib.sha256()
    for row in d.itertuples(index=False):
        h.update(json.dumps([None if pd.isna(v) else v for v in row], default=str).encode("utf-8") + b"\n")
    return h.hexdigest()


def check_distinct(runs: list[_Run]) -> list[tuple[str, str]]:
    """Refuse a run given twice (the same directory, or a copy of its store: every reply received at the
    same moment with the same latency); return the pairs of distinct runs whose replies are identical
    (a deterministic model rerun, or replies copied): they are not independent replicates."""
    identical = []
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            same_dir = a.run_dir.resolve() == b.run_dir.resolve()
            if same_dir or (a.record_sha and a.record_sha == b.record_sha):
                how = "the same directory" if same_dir else \
                    "a copy of it: every reply has the same text, time received and latency"
                raise AuditError(
                    f"run '{b.label}' is the same run as '{a.label}' ({how}): a run compared with itself shows no "
                    "change by construction, and its replies are not replicates of each other",
                    where=f"compare {a.run_dir} {b.run_dir}",
                    fix="compare different runs; to measure run-to-run noise, run the same spec again into a new "
                        "directory (empathy-audit run SPEC --out NEW_DIR) and compare with that")
            if a.replies_sha and a.replies_sha == b.replies_sha:
                identical.append((a.label, b.label))
    return identical


def _labels(run_dirs: list[Path], labels: list[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(run_dirs) or len(set(labels)) != len(labels):
            raise AuditError(f"{len(labels)} labels for {len(run_dirs)} runs (or a label repeats)",
                             where="--labels", fix="give one distinct label per run, in the order of the runs")
        return list(labels)
    out: list[str] = []
    for p in run_dirs:
        name = p.resolve().name or str(p)
        out.append(name if name not in out else f"{name}-{len(out) + 1}")
    return out


def _diff_dicts(name: str, per_run: dict[str, dict[str, Any]]) -> list[str]:
    """One line per key whose value differs between the runs: 'name key: A=..., B=...'."""
    keys = sorted(set().union(*[set(d) for d in per_run.values()]))
    lines = []
    for k in keys:
        vals = {r: d.get(k, "(absent)") for r, d in per_run.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in vals.values()}) > 1:
            shown = "; ".join(f"{r}: {_short(v)}" for r, v in vals.items())
            lines.append(f"{name} '{k}' differs ({shown})")
    return lines


def _short(v: Any, n: int = 80) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= n else s[:n - 1] + "…"


def check_comparable(runs: list[_Run]) -> Comparability:
    """Variants by content hash, outcomes, scorers and versions, decoding and prompt styles of the runs.
    Refuses (AuditError) what cannot be compared; warns, naming each difference, about the rest."""
    names = [r.label for r in runs]
    where = "compare " + " ".join(str(r.run_dir) for r in runs)
    variants = {r.label: set(r.table["variant_id"].astype(str)) for r in runs}
    shared = set.intersection(*variants.values())
    if not shared:
        raise AuditError(
            "the runs share no variant (no post variant with the same content hash): their gaps were measured on "
            "different stimuli and cannot be compared within post", where=where,
            fix="compare runs of the same spec design (same posts, groups, cue types and templates); "
                "`empathy-audit variants SPEC` lists a design's variants")
    outcomes = sorted(set.intersection(*[set(r.table["outcome"].astype(str)) for r in runs]))
    if not outcomes:
        have = "; ".join(f"{r.label}: {', '.join(sorted(r.table['outcome'].unique()))}" for r in runs)
        raise AuditError(f"the runs share no scored outcome ({have})", where=where,
                         fix="score the runs with a common scorer (`empathy-audit score RUN_DIR`)")
    c = Comparability(names, {k: len(v) for k, v in variants.items()}, len(shared), outcomes, [])
    if any(len(v) != len(shared) for v in variants.values()):
        c.warnings.append(f"partial overlap: {c.overlap_statement}; only the shared variants are analysed")
    scorers = sorted(set.union(*[set(r.scorer_info) for r in runs]))
    for s in scorers:
        c.differences += _diff_dicts(f"scorer {s}:", {r.label: r.scorer_info.get(s, {}) for r in runs})
    c.differences += _diff_dicts("decoding", {r.label: r.decoding for r in runs})
    styles = set.intersection(*[set(r.styles) for r in runs])
    for s in sorted(set.union(*[set(r.styles) for r in runs])):
        if s not in styles:
            c.warnings.append(f"prompt style '{s}' is not in every run; it is left out")
        elif len({r.styles[s] for r in runs}) > 1:
            c.differences.append(f"prompt style '{s}' has a different prompt text (style hash) in "
                                 + ", ".join(f"{r.label}: {r.styles[s][:12]}" for r in runs))
    if not styles:
        raise AuditError("the runs share no prompt style", where=where, fix="compare runs of the same styles")
    c.styles = sorted(styles)
    c.warnings += [f"not comparable as measured: {d}" for d in c.differences]
    c.same_model_and_spec = (not c.differences and len({tuple(sorted(r.models.values())) for r in runs}) == 1)
    return c


def classify(a: float, a_lo: float, a_hi: float, a_sig: bool, b: float, b_lo: float, b_hi: float, b_sig: bool,
             d_sig: bool) -> str:
    """The class of one gap's change (module docstring): closed, opened, reversed, narrowed, widened or
    unchanged."""
    if not d_sig:
        return "unchanged"
    a0, b0 = a_lo <= 0 <= a_hi, b_lo <= 0 <= b_hi
    if a_sig and b0 and abs(b) < abs(a):
        return "closed"
    if a0 and b_sig and abs(b) > abs(a):
        return "opened"
    if not a0 and not b0 and np.sign(a) != np.sign(b):
        return "reversed"
    return "narrowed" if abs(b) < abs(a) else "widened"


def compare_runs(run_dirs: list[str | Path], *, labels: list[str] | None = None, reference: str = "control",
                 alpha: float = 0.05, outcomes: list[str] | None = None) -> Comparison:
    """Compare finished runs on the variants they share; the first run (or its first model) is the reference.

    Returns a :class:`Comparison`: ``gaps`` (each version's gap of each group, pooled over styles and
    cue types, with 95% CI and Holm over the gaps), ``differences`` (each later version's difference of
    gaps from the reference, CI, p, Holm, and ``status``: closed / opened / reversed / narrowed / widened /
    unchanged, see the module docstring), ``variability`` and the ``comparability`` checks.
    """
    dirs = [Path(p) for p in run_dirs]
    if len(dirs) < 2:
        raise AuditError("compare needs at least two run directories", fix="give RUN_A RUN_B [...]")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise AuditError(f"alpha must be between 0 and 1 (exclusive), not {alpha!r}", where="--alpha",
                         fix="give a level such as 0.05")
    runs = [_load(p, lab) for p, lab in zip(dirs, _labels(dirs, labels))]
    identical = check_distinct(runs)
    comp = check_comparable(runs)
    comp.identical = identical
    for a, b in identical:
        comp.notes.append(f"runs {a} and {b} replied identically to every request (a deterministic model, or "
                          "copied replies): they are compared, but they are not independent replicates, so no "
                          "sampling variance is estimated from them")
    shared = set.intersection(*[set(r.table["variant_id"].astype(str)) for r in runs])
    parts = []
    for r in runs:
        t = r.table[r.table["variant_id"].astype(str).isin(shared) & r.table["outcome"].isin(comp.outcomes)
                    & r.table["style"].isin(comp.styles)].copy()
        several = t["model_label"].nunique() > 1
        t["run"] = (r.label + ":" + t["model_label"].astype(str)) if several else r.label
        rank = {m: i for i, m in enumerate(r.models)}
        t = t.iloc[np.argsort(t["model_label"].astype(str).map(rank).fillna(len(rank)).to_numpy(), kind="stable")]
        t["run_dir"] = str(r.run_dir)
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    if outcomes:
        keep = [o for o in comp.outcomes if o in outcomes or o.rpartition(".")[2] in outcomes]
        if not keep:
            raise AuditError(f"none of the outcomes {outcomes} is shared by the runs", where="--outcome",
                             fix="use one of: " + ", ".join(comp.outcomes))
        table = table[table["outcome"].isin(keep)]
        comp.outcomes = keep
    versions = list(dict.fromkeys(table["run"]))
    comp.versions = versions
    ref = versions[0]
    diffs, gaps = [], []
    for outcome, d in table[table["value"].notna()].groupby("outcome", sort=True):
        factors = ["style"] if d["style"].nunique() > 1 else []
        inner = "variant_id" if d.groupby(["variant_id", "run", "style"]).size().max() > 1 else None
        try:
            r = gap_interaction(d, outcome="value", between="run", reference_level=ref, control=reference,
                                factors=factors, inner=inner, alpha=alpha, where=f"outcome {outcome}, runs compared")
        except AuditError as exc:
            # an outcome that does not vary has nothing to compare: said, nothing to act on
            (comp.notes if _is_constant_reason(exc.what) else comp.warnings).append(
                f"outcome {outcome} not compared: {exc.what}")
            continue
        r.insert(0, "outcome", outcome)
        diffs.append(r)
        z = r["gap_reference_model"] / r["gap_reference_model_se"]
        from scipy import stats as _st
        zc = _st.norm.ppf(1 - alpha / 2)
        first = r.drop_duplicates("group")
        gaps.append(pd.DataFrame({
            "outcome": outcome, "run": ref, "group": first["group"], "estimate": first["gap_reference_model"],
            "se": first["gap_reference_model_se"],
            "ci_low": first["gap_reference_model"] - zc * first["gap_reference_model_se"],
            "ci_high": first["gap_reference_model"] + zc * first["gap_reference_model_se"],
            "p_value": 2 * _st.norm.sf(np.abs(z.loc[first.index]))}))
        gaps.append(pd.DataFrame({"outcome": outcome, "run": r["run"], "group": r["group"], "estimate": r["gap"],
                                  "se": r["gap_se"], "ci_low": r["gap_ci_low"], "ci_high": r["gap_ci_high"],
                                  "p_value": 2 * _st.norm.sf(np.abs(r["gap"] / r["gap_se"]))}))
    if not diffs:
        raise AuditError("no run x group interaction could be fitted on the shared variants",
                         where="compare", fix="; ".join(comp.warnings) or "check the runs' scores")
    differences = adjust_family(pd.concat(diffs, ignore_index=True), alpha=alpha)
    gap_df = adjust_family(pd.concat(gaps, ignore_index=True), alpha=alpha)
    gap_df["significant"] = gap_df["significant_holm"].astype(bool)
    key = gap_df.set_index(["outcome", "run", "group"])
    status = []
    for row in differences.to_dict("records"):
        a = key.loc[(row["outcome"], ref, row["group"])]
        b = key.loc[(row["outcome"], row["run"], row["group"])]
        status.append(classify(a["estimate"], a["ci_low"], a["ci_high"], bool(a["significant"]), b["estimate"],
                               b["ci_low"], b["ci_high"], bool(b["significant"]), bool(row["significant_holm"])))
    differences["status"] = status
    differences = differences.rename(columns={"reference_level": "reference_run",
                                              "gap_reference_model": "gap_reference_run",
                                              "gap_reference_model_se": "gap_reference_run_se"})
    variability = _variability(table, comp, differences, alpha)
    run_info = [dict(label=r.label, run_dir=str(r.run_dir), models=r.models, spec_hash=r.spec_hash,
                     variants=comp.variants[r.label]) for r in runs]
    return Comparison(comp, gap_df, differences, variability, ref, run_info, alpha)


def _is_constant_reason(what: str) -> bool:
    return "is constant" in what


def _shift_p(d: pd.DataFrame, ref: str, other: str) -> float:
    """p-value of a shift of the mean between two versions, paired by (variant, style): the one-sample t
    test of the per-(variant, style) differences of the versions' means (NaN with fewer than 2 pairs).
    When every difference is one value up to rounding (:mod:`audit.stats.degenerate`) the t test has no
    spread to work with: 1 when that value is 0 (no shift at all), 0 otherwise (every variant moved by
    the same amount: a change, not noise). Hand-written around ``scipy.stats.ttest_1samp`` for that
    degenerate case, which scipy answers with NaN and a RuntimeWarning."""
    from scipy import stats as _st

    from .stats.degenerate import RTOL, is_constant

    m = d[d["run"].isin([ref, other])].groupby(["variant_id", "style", "run"])["value"].mean().unstack("run")
    if ref not in m or other not in m:
        return float("nan")
    diff = (m[other] - m[ref]).dropna().to_numpy(float)
    if len(diff) < 2:
        return float("nan")
    scale = float(np.nanmax(np.abs(m.to_numpy(float)))) if m.size else 0.0
    if is_constant(diff, scale=scale):
        return 1.0 if abs(float(np.mean(diff))) <= RTOL * scale else 0.0
    return float(_st.ttest_1samp(diff, 0.0).pvalue)


def _variability(table: pd.DataFrame, comp: Comparability, differences: pd.DataFrame | None = None,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Sampling variance from repeated samples within each run and, for runs of the same model and spec,
    from the runs as replicates of each other, only where they show no change beyond noise.

    Per outcome, a later version is pooled with the reference version as a replicate only when none of
    its differences of gaps is significant (Holm, ``differences``), the paired shift of its mean from the
    reference's is not significant at ``alpha`` (:func:`_shift_p`), and its replies are not identical
    to the reference's (``comp.identical``: not independent). Otherwise the runs' difference is a
    change (or no information), not sampling noise: the sampling variance is the within-run samples'
    (when a run has samples > 1), and ``comp.notes`` says which source each outcome's variance came
    from. The column ``source`` of the result says it per row.
    """
    parts = [sampling_variability(table.assign(model_label=table["run"]), replicate="sample_index")]
    within = set(parts[0]["outcome"]) if not parts[0].empty else set()
    if not parts[0].empty:
        parts[0]["source"] = "within-run samples (replies to the same variant in one run)"
    if comp.same_model_and_spec:
        identical = {frozenset(p) for p in comp.identical}
        versions = list(dict.fromkeys(table["run"]))
        ref = versions[0]
        for outcome, d in table[table["value"].notna()].groupby("outcome", sort=True):
            pool, reasons = [ref], []
            for v in versions[1:]:
                sig = pd.DataFrame()
                if differences is not None and not differences.empty:
                    sig = differences[(differences["outcome"] == outcome) & (differences["run"] == v)
                                      & differences["significant_holm"].astype(bool)]
                p_shift = _shift_p(d, ref, v)
                if frozenset((ref, v)) in identical:
                    reasons.append(f"{v} replied identically to {ref}")
                elif len(sig):
                    reasons.append(f"{v} differs from {ref} beyond noise: {len(sig)} difference(s) of gaps "
                                   f"significant (Holm), e.g. {sig['group'].iloc[0]}")
                elif np.isfinite(p_shift) and p_shift < alpha:
                    reasons.append(f"{v} differs from {ref} beyond noise: its mean shifted (paired t test by "
                                   f"variant, p = {p_shift:.2g})")
                else:
                    pool.append(v)
            if len(pool) >= 2:
                sub = d[d["run"].isin(pool)]
                v = sampling_variability(sub.assign(model_label="runs " + ", ".join(pool)), replicate="run")
                if not v.empty:
                    v["source"] = ("runs " + ", ".join(pool) + " as replicates of one another (same model and "
                                   "spec, no change beyond noise between them)")
                    parts.append(v)
            if reasons:
                src = ("the sampling variance is the within-run samples'" if outcome in within else
                       "no run has repeated samples, so the sampling variance is not estimated (sample each "
                       "variant more than once, or rerun the spec identically, to estimate it)")
                comp.notes.append(f"outcome {outcome}: not pooled as replicates: " + "; ".join(reasons)
                                  + f"; {src}")
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def write_comparison(result: Comparison, out_dir: str | Path, *, figures: bool = True) -> dict[str, Path]:
    """Write ``compare.html``, ``compare.md``, ``compare.json`` and ``tables/*.csv`` into ``out_dir``."""
    from .report.compare_report import write_comparison_report

    return write_comparison_report(result, Path(out_dir), figures=figures)
