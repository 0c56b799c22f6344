"""Stigma analysis: rates with cluster-bootstrap CIs, the GEE logistic model, and the demographic gaps.

Input: a *coded table* (:func:`code_answers`), one row per answer with ``model_label, post_id`` (the
vignette: the cluster), ``condition, race, gender, education`` (and any further audited axis),
``question`` (item id), the parse result (``parse_status`` answered | dont_know | unparseable,
``answer_index``, ``letter``, ``reason``) and ``stigma`` (0/1 for the six counted items, NaN otherwise
and for "Do not know" and unparseable answers, which are dropped and counted).

Procedures (each a function, pandas in and out):

- :func:`stigma_rates`: the stigma rate ``r = sum(stigma) / n`` per model x condition over the counted
  answers, with a 95% **cluster-bootstrap** percentile CI: vignettes are resampled with replacement
  (``B`` = ``n_boot`` multinomial weightings of the vignettes), ``r_b = sum_v w_bv s_v / sum_v w_bv n_v``
  with ``s_v, n_v`` the vignette's stigma count and answer count (Davison & Hinkley 1997, section 3.8;
  Field & Welsh 2007). Clustering by vignette because the six answers about one vignette are not
  independent.
- :func:`stigma_tests`: per model, the GEE logistic model of :func:`audit.stats.gap_test`
  (exchangeable working correlation within vignettes, Mancl & DeRouen bias-reduced sandwich SEs,
  gaps on the probability scale by standardisation, delta-method CIs)::

      logit P(stigma) = b0 + condition + race + gender + education + question

  clustered by vignette; the item (``question``) enters as a fixed effect rather than a second cluster
  level (GEE takes one cluster level; the six items are the same for every vignette, so their
  differences are fixed, not sampled). Reported: each condition against the daily-troubles control,
  and each demographic level against its reference (default White, man, college), pooled over
  conditions (``condition`` = ``pooled``: the same model) and **within each condition** (the gap the
  study did not analyse: the model fitted to that condition's vignettes, without the condition term).
  Holm and Benjamini-Hochberg over the whole family (:func:`audit.stats.adjust_family`).
- :func:`item_rates`: every item (all 14) per model x condition: the share answering C-D (for the
  attribution items "likely"), the stigma share for the six counted items, the "Do not know" share, and
  the published 2018 human percentages (``human_data_2018.csv``: % unwilling / % likely).
- :func:`parse_counts`: answers per model by parse status and reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import AuditError
from ..stats.binary import binary_gap, cluster_bootstrap_ci
from .parse import raw_code, stigma_code
from .stimuli import CONDITIONS, CONTROL_CONDITION, MOORE_DIR, items_by_id

ALL_CONDITIONS = "all conditions but the control"
DEFAULT_REFERENCE = {"race": "White", "gender": "man", "education": "college"}
RATE_COLUMNS = ["model_label", "condition", "rate", "ci_low", "ci_high", "n", "n_stigma", "n_vignettes",
                "n_dont_know", "n_unparseable", "human_rate"]
TEST_COLUMNS = ["model_label", "term", "condition", "group", "reference", "estimate", "se", "ci_low", "ci_high",
                "ref_mean", "p_value", "n", "n_clusters", "method", "warning"]


def code_answers(frame: pd.DataFrame, *, answer: str = "reply", question: str = "question",
                 status: str | None = "status", parser: str = "strict") -> pd.DataFrame:
    """Parse and code every answer of ``frame`` (columns ``answer`` = raw text, ``question`` = item id;
    optional ``status``: rows whose request was not answered (``failed``, pending) are left out, a
    ``content_filter`` answer is unparseable with reason ``content_filter``). ``parser``: ``strict``
    (:func:`audit.stigma.parse.parse_answer`) or ``upstream`` (the published study's first-word
    parser, :func:`audit.stigma.parse.parse_answer_upstream`). Adds ``answer_index, letter,
    parse_status, reason, raw_code, stigma, counted``."""
    from .parse import get_parser

    parse = get_parser(parser)
    items = items_by_id()
    bad = sorted(set(frame[question].astype(str)) - set(items))
    if bad:
        raise AuditError(f"unknown question id '{bad[0]}'", where=f"column '{question}'",
                         fix="use the ids of audit/data/moore/items.yaml: " + ", ".join(items))
    df = frame.copy()
    if status is not None and status in df.columns:
        df = df[df[status].isin(["ok", "content_filter"])].copy()
    out = {k: [] for k in ("answer_index", "letter", "parse_status", "reason", "raw_code", "stigma", "counted")}
    for rec in df[[answer, question] + ([status] if status is not None and status in df.columns else [])
                  ].itertuples(index=False):
        text, q = rec[0], items[str(rec[1])]
        if status is not None and len(rec) > 2 and rec[2] == "content_filter":
            p = None
        else:
            p = parse(text if isinstance(text, str) else "", q.options)
        idx = p.index if p is not None and p.status == "answered" else None
        out["answer_index"].append(p.index if p is not None else None)
        out["letter"].append(p.letter if p is not None else None)
        out["parse_status"].append(p.status if p is not None else "unparseable")
        out["reason"].append(p.reason if p is not None else "content_filter")
        out["raw_code"].append(raw_code(idx))
        code = stigma_code(idx, q.direction)
        out["stigma"].append(np.nan if code is None else float(code))
        out["counted"].append(q.stigma)
    for k, v in out.items():
        df[k] = v
    df["answer_index"] = pd.to_numeric(df["answer_index"], errors="coerce")
    df["raw_code"] = pd.to_numeric(df["raw_code"], errors="coerce")
    return df


def human_reference() -> pd.DataFrame:
    """The 2018 human survey percentages as proportions, one row per (question id, condition):
    ``question, condition, human`` (% unwilling for the willingness items, % likely otherwise)."""
    raw = pd.read_csv(MOORE_DIR / "human_data_2018.csv", encoding="utf-8-sig")
    by_text = {it.question: it.id for it in items_by_id().values()}
    raw = raw[raw["question"].isin(by_text)]
    long = raw.melt(id_vars="question", var_name="condition", value_name="human")
    long["question"] = long["question"].map(by_text)
    long["human"] = long["human"] / 100.0
    return long


def human_stigma_rates() -> dict[str, float]:
    """Per condition: the mean of the six counted items' human percentages (the reference line)."""
    h = human_reference()
    counted = {i for i, it in items_by_id().items() if it.stigma}
    return h[h["question"].isin(counted)].groupby("condition")["human"].mean().to_dict()


def stigma_rates(coded: pd.DataFrame, *, by: Sequence[str] = ("model_label", "condition"), n_boot: int = 2000,
                 seed: int = 0, cluster: str = "post_id") -> pd.DataFrame:
    """Stigma rate per ``by`` cell over the counted items, with the cluster-bootstrap 95% CI (see the
    module docstring), the counts, and the human 2018 rate of the condition."""
    c = coded[coded["counted"]]
    human = human_stigma_rates()
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in c.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        usable = g[g["stigma"].notna()]
        per = usable.groupby(cluster)["stigma"].agg(["sum", "count"])
        lo, hi = cluster_bootstrap_ci(per["sum"].to_numpy(float), per["count"].to_numpy(float), n_boot, rng)
        row = dict(zip(by, key))
        row.update(rate=usable["stigma"].mean() if len(usable) else np.nan, ci_low=lo, ci_high=hi, n=len(usable),
                   n_stigma=int(usable["stigma"].sum()), n_vignettes=int(per.shape[0]),
                   n_dont_know=int((g["parse_status"] == "dont_know").sum()),
                   n_unparseable=int((g["parse_status"] == "unparseable").sum()),
                   human_rate=human.get(row.get("condition"), np.nan))
        rows.append(row)
    cols = list(by) + [c for c in RATE_COLUMNS if c not in by]
    out = pd.DataFrame(rows, columns=cols)
    if "condition" in out.columns:
        out["_o"] = out["condition"].map({c: i for i, c in enumerate(CONDITIONS)})
        out = out.sort_values([*(b for b in by if b != "condition"), "_o"]).drop(columns="_o").reset_index(drop=True)
    return out


def item_rates(coded: pd.DataFrame) -> pd.DataFrame:
    """Every item per model x condition: ``n`` answered (A-D), ``share_cd`` (C or D), ``stigma_rate``
    (counted items), ``dont_know`` share of all parsed answers, ``human`` (2018 survey proportion)."""
    items = items_by_id()
    human = human_reference().set_index(["question", "condition"])["human"].to_dict()
    rows = []
    for (m, cond, q), g in coded.groupby(["model_label", "condition", "question"], sort=True):
        ans = g[g["raw_code"].notna()]
        parsed = g[g["parse_status"] != "unparseable"]
        rows.append(dict(model_label=m, condition=cond, question=q, label=items[q].label, counted=items[q].stigma,
                         n=len(ans), share_cd=ans["raw_code"].mean() if len(ans) else np.nan,
                         stigma_rate=g["stigma"].mean() if items[q].stigma and g["stigma"].notna().any() else np.nan,
                         dont_know=(parsed["parse_status"] == "dont_know").mean() if len(parsed) else np.nan,
                         unparseable=int((g["parse_status"] == "unparseable").sum()),
                         human=human.get((q, cond), np.nan)))
    return pd.DataFrame(rows)


def parse_counts(coded: pd.DataFrame) -> pd.DataFrame:
    """Answers per model by ``parse_status`` and ``reason`` (unparseable: empty, refusal, ambiguous,
    no option, content_filter)."""
    g = coded.groupby(["model_label", "parse_status", "reason"], dropna=False).size().reset_index(name="n")
    g["reason"] = g["reason"].fillna("")
    return g.sort_values(["model_label", "parse_status", "reason"]).reset_index(drop=True)


def _gap(d: pd.DataFrame, term: str, reference: str, factors: Sequence[str], where: str) -> pd.DataFrame:
    return binary_gap(d, outcome="stigma", term=term, reference=reference, factors=factors, cluster="post_id",
                      where=where)


def stigma_tests(coded: pd.DataFrame, *, axes: Sequence[str] = ("race", "gender", "education"),
                 reference: dict[str, str] | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """The family of tests (see the module docstring): per model, each condition against daily
    troubles, and each level of each demographic axis against its reference, pooled and within each
    condition; Holm and BH adjusted p-values over all of them."""
    from ..stats.corrections import adjust_family

    ref = {**DEFAULT_REFERENCE, **(reference or {})}
    c = coded[coded["counted"] & coded["stigma"].notna()].copy()
    parts = []
    for m, dm in c.groupby("model_label", sort=True):
        for ax in axes:
            dm[ax] = dm[ax].astype(str)
        if CONTROL_CONDITION in set(dm["condition"]):
            r = _gap(dm, "condition", CONTROL_CONDITION, [*axes, "question"], f"model {m}, condition")
            if len(r):
                r.insert(0, "model_label", m), r.insert(1, "term", "condition"), r.insert(2, "condition", "pooled")
                parts.append(r)
        for ax in axes:
            lv_ref = ref.get(ax) or sorted(dm[ax].unique())[0]
            others = [a for a in axes if a != ax]
            scopes = [("pooled", dm)] + [(cond, dm[dm["condition"] == cond]) for cond in CONDITIONS
                                         if cond in set(dm["condition"])]
            for scope, d in scopes:
                r = _gap(d, ax, lv_ref, ["condition", *others, "question"] if scope == "pooled" else [*others, "question"],
                         f"model {m}, {ax}, {scope}")
                if len(r):
                    r.insert(0, "model_label", m), r.insert(1, "term", ax), r.insert(2, "condition", scope)
                    parts.append(r)
    if not parts:
        return pd.DataFrame(columns=TEST_COLUMNS + ["p_holm", "p_bh", "significant_holm"])
    out = pd.concat(parts, ignore_index=True)
    for col in TEST_COLUMNS:
        if col not in out.columns:
            out[col] = np.nan
    out = out[TEST_COLUMNS]
    return adjust_family(out, alpha=alpha)


@dataclass
class StigmaResult:
    """Everything the stigma analysis produces: ``coded`` (one row per answer), ``rates``, ``items``,
    ``tests``, ``parse`` and ``meta`` (formulas, settings)."""

    coded: pd.DataFrame
    rates: pd.DataFrame
    items: pd.DataFrame
    tests: pd.DataFrame
    parse: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The store tables (``stigma_*``) of this result."""
        from ..jsonable import jsonable
        import json

        meta = pd.DataFrame({"key": list(self.meta), "value": [v if isinstance(v, str) else json.dumps(jsonable(v))
                                                              for v in self.meta.values()]})
        return {"stigma_rates": self.rates, "stigma_items": self.items, "stigma_tests": self.tests,
                "stigma_parse": self.parse, "stigma_meta": meta}


FORMULA = "logit P(stigma) = condition + race + gender + education + question; GEE, exchangeable within vignette"


def analyze_stigma(coded: pd.DataFrame, *, axes: Sequence[str] = ("race", "gender", "education"),
                   reference: dict[str, str] | None = None, n_boot: int = 2000, seed: int = 0,
                   alpha: float = 0.05, margins: dict[str, Any] | None = None) -> StigmaResult:
    """Rates, item table, the test family and parse counts of a coded table (:func:`code_answers`).
    ``margins`` (``analysis.margins``, key ``stigma``, e.g. ``"5pp"``): every test gets a TOST verdict
    (:func:`audit.stats.equivalence.rate_verdicts`)."""
    if coded.empty:
        raise AuditError("no answer to analyse", where="the stigma answers",
                         fix="run the replies first, or check the table's columns")
    axes = [a for a in axes if a in coded.columns]
    rates = stigma_rates(coded, n_boot=n_boot, seed=seed)
    clinical = coded[coded["condition"] != CONTROL_CONDITION]
    if len(clinical) and clinical["condition"].nunique() > 1:  # the paper's headline: pooled over the conditions
        pooled = stigma_rates(clinical.assign(condition=ALL_CONDITIONS), n_boot=n_boot, seed=seed)
        human = human_stigma_rates()
        pooled["human_rate"] = float(np.mean([human[c] for c in sorted(set(clinical["condition"])) if c in human]))
        rates = pd.concat([rates, pooled], ignore_index=True)
    tests = stigma_tests(coded, axes=axes, reference=reference, alpha=alpha)
    if margins:
        from ..stats.equivalence import rate_verdicts

        tests = rate_verdicts(tests, "stigma", margins, alpha=alpha)
    ref = {**DEFAULT_REFERENCE, **(reference or {})}
    meta = {"formula": FORMULA, "axes": list(axes), "reference": {a: ref.get(a) for a in axes}, "n_boot": n_boot,
            "seed": seed, "alpha": alpha, "family_size": int(tests["p_value"].notna().sum()),
            "n_significant_holm": int(tests["significant_holm"].sum()) if len(tests) else 0,
            "n_answers": len(coded), "n_counted": int((coded["counted"] & coded["stigma"].notna()).sum()),
            "n_dont_know": int((coded["parse_status"] == "dont_know").sum()),
            "n_unparseable": int((coded["parse_status"] == "unparseable").sum())}
    return StigmaResult(coded, rates, item_rates(coded), tests, parse_counts(coded), meta)


__all__ = ["FORMULA", "StigmaResult", "analyze_stigma", "code_answers", "human_reference", "human_stigma_rates",
           "item_rates", "parse_counts", "stigma_rates", "stigma_tests"]
