"""Appropriateness analysis: rates with cluster-bootstrap CIs, and the demographic gap tests.

Input: a *judged table*, one row per reply: ``model_label, stimulus`` (the cluster), ``condition,
context, prefix, group`` (``control``: no demographic cue), ``cue_type``, the audited axes,
``judge_status`` (judged | unparseable | unanswered) and ``appropriate`` (0/1; an unparseable or
unanswered judgement is 0, as upstream, and counted separately).

Procedures (pandas in and out):

- :func:`appropriateness_rates`: the appropriate rate ``r = sum(appropriate) / n`` per model x
  condition (and over all conditions), per model x context and per model x group, each with the 95%
  **cluster-bootstrap** percentile CI of :func:`audit.stats.binary.cluster_bootstrap_ci`, clusters =
  stimuli (the replies to one stimulus, across contexts and cues, are not independent). With 10
  stimuli the CIs are wide, and a condition (2 stimuli) has a CI only in the loose sense of
  resampling two clusters; the table says how many clusters each rate rests on.
- :func:`appropriateness_tests`: per model, the GEE logistic model of :func:`audit.stats.gap_test`
  (exchangeable working correlation within stimuli, Mancl & DeRouen bias-reduced sandwich SEs, gaps
  on the probability scale by standardisation, delta-method CIs)::

      logit P(appropriate) = b0 + group + context

  clustered by stimulus, each demographic group against the no-cue control, pooled over cue types
  and within each cue type (explicit, implicit, ...); Holm and Benjamini-Hochberg over the whole
  family (:func:`audit.stats.adjust_family`).
- :func:`judge_counts`: judgements per model by status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..stats.binary import binary_gap, rate_table
from .stimuli import CONDITIONS, CONTROL

ALL_CONDITIONS = "all conditions"
RATE_COLUMNS = ["model_label", "by", "level", "rate", "ci_low", "ci_high", "n", "n_clusters", "n_unparseable",
                "n_unanswered"]
TEST_COLUMNS = ["model_label", "scope", "group", "reference", "estimate", "se", "ci_low", "ci_high", "ref_mean",
                "p_value", "n", "n_clusters", "method", "warning"]
FORMULA = "logit P(appropriate) = group + context; GEE, exchangeable within stimulus; group vs the no-cue control"


def _rates(judged: pd.DataFrame, by: str, n_boot: int, seed: int) -> pd.DataFrame:
    t = rate_table(judged, "appropriate", ["model_label", by], "stimulus", n_boot=n_boot, seed=seed)
    bad = judged.groupby(["model_label", by])["judge_status"].agg(
        n_unparseable=lambda s: int((s == "unparseable").sum()), n_unanswered=lambda s: int((s == "unanswered").sum()))
    t = t.merge(bad.reset_index(), on=["model_label", by], how="left")
    return t.rename(columns={by: "level"}).assign(by=by)[RATE_COLUMNS]


def appropriateness_rates(judged: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Rates per model x condition (plus ``all conditions``), x context and x group (module docstring)."""
    parts = [_rates(judged, "condition", n_boot, seed),
             _rates(judged.assign(condition=ALL_CONDITIONS), "condition", n_boot, seed)]
    for by in ("context", "group"):
        if judged[by].nunique() > 1:
            parts.append(_rates(judged, by, n_boot, seed))
    out = pd.concat(parts, ignore_index=True)
    order = {c: i for i, c in enumerate([*CONDITIONS, ALL_CONDITIONS])}
    out["_o"] = [order.get(lv, 99) if b == "condition" else 100 for b, lv in zip(out["by"], out["level"])]
    out["_b"] = out["by"].map({"condition": 0, "context": 1, "group": 2})
    return out.sort_values(["model_label", "_b", "_o", "level"]).drop(columns=["_o", "_b"]).reset_index(drop=True)


def appropriateness_tests(judged: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """Each demographic group against the no-cue control, per model, pooled and per cue type; Holm and
    BH over the whole family (module docstring)."""
    from ..stats.corrections import adjust_family

    parts = []
    d0 = judged[judged["appropriate"].notna()].copy()
    d0["group"] = d0["group"].astype(str)
    for m, dm in d0.groupby("model_label", sort=True):
        cue_types = sorted(set(dm["cue_type"]) - {CONTROL})
        scopes = [("pooled", dm)] + ([(ct, dm[dm["cue_type"].isin([ct, CONTROL])]) for ct in cue_types]
                                     if len(cue_types) > 1 else [])
        for scope, d in scopes:
            r = binary_gap(d, outcome="appropriate", term="group", reference=CONTROL, factors=["context"],
                           cluster="stimulus", where=f"model {m}, {scope}")
            if len(r):
                r.insert(0, "model_label", m), r.insert(1, "scope", scope)
                parts.append(r)
    if not parts:
        return pd.DataFrame(columns=TEST_COLUMNS + ["p_holm", "p_bh", "significant_holm"])
    out = pd.concat(parts, ignore_index=True)
    for col in TEST_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    return adjust_family(out[TEST_COLUMNS], alpha=alpha)


def judge_counts(judged: pd.DataFrame) -> pd.DataFrame:
    """Judgements per model by status (judged, unparseable, unanswered)."""
    g = judged.groupby(["model_label", "judge_status"]).size().reset_index(name="n")
    return g.sort_values(["model_label", "judge_status"]).reset_index(drop=True)


@dataclass
class AppropriatenessResult:
    """``judged`` (one row per reply), ``rates``, ``tests``, ``judge`` (counts), ``references`` (the
    user's reference rates), ``validation`` (judge-validation summary rows, if any), ``meta``."""

    judged: pd.DataFrame
    rates: pd.DataFrame
    tests: pd.DataFrame
    judge: pd.DataFrame
    references: pd.DataFrame
    validation: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The store tables (``appropriateness_*``) of this result."""
        import json

        from ..jsonable import jsonable

        meta = pd.DataFrame({"key": list(self.meta), "value": [v if isinstance(v, str) else json.dumps(jsonable(v))
                                                              for v in self.meta.values()]})
        out = {"appropriateness_rates": self.rates, "appropriateness_tests": self.tests,
               "appropriateness_judge": self.judge, "appropriateness_references": self.references,
               "appropriateness_meta": meta}
        if self.validation is not None:
            out["appropriateness_validation"] = self.validation
        return out


def analyze_appropriateness(judged: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05,
                            reference_rates: dict[str, float] | None = None,
                            validation: pd.DataFrame | None = None,
                            margins: dict[str, Any] | None = None) -> AppropriatenessResult:
    """Rates, tests and judge counts of a judged table (module docstring). ``margins``
    (``analysis.margins``, key ``appropriate``, e.g. ``"5pp"``): every test gets a TOST verdict
    (:func:`audit.stats.equivalence.rate_verdicts`)."""
    need = ["model_label", "stimulus", "condition", "context", "group", "cue_type", "judge_status", "appropriate"]
    missing = [c for c in need if c not in judged.columns]
    if missing:
        raise AuditError(f"the judged table lacks {missing}", where="analyze_appropriateness",
                         fix="build it with audit.appropriateness.answers.judged_from_store or reanalyze_appropriateness")
    if judged.empty:
        raise AuditError("no judged reply to analyse", where="the appropriateness verdicts",
                         fix="run the replies and the judge first")
    rates = appropriateness_rates(judged, n_boot=n_boot, seed=seed)
    tests = appropriateness_tests(judged, alpha=alpha)
    if margins:
        from ..stats.equivalence import rate_verdicts

        tests = rate_verdicts(tests, "appropriate", margins, alpha=alpha)
    refs = pd.DataFrame({"label": list((reference_rates or {}).keys()),
                         "rate": [float(v) for v in (reference_rates or {}).values()]})
    counts = judge_counts(judged)
    meta = {"formula": FORMULA, "n_boot": n_boot, "seed": seed, "alpha": alpha,
            "family_size": int(tests["p_value"].notna().sum()),
            "n_significant_holm": int(tests["significant_holm"].sum()) if len(tests) else 0,
            "n_replies": len(judged), "n_unparseable": int((judged["judge_status"] == "unparseable").sum()),
            "n_unanswered": int((judged["judge_status"] == "unanswered").sum()),
            "n_stimuli": int(judged["stimulus"].nunique())}
    return AppropriatenessResult(judged, rates, tests, counts, refs, validation, meta)


__all__ = ["ALL_CONDITIONS", "AppropriatenessResult", "FORMULA", "analyze_appropriateness", "appropriateness_rates",
           "appropriateness_tests", "judge_counts"]
