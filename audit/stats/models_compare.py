"""Differences of gaps between models (or runs): is model B's gap different from the reference model's?

One function per procedure, pandas in and out:

* :func:`gap_interaction` - the group x model (or group x run) interaction in one mixed model on the
  same posts and variants, with every model's gap and its difference from the reference model's gap.
* :func:`models_table` - the ``results_models`` table of a run with several models (every outcome),
  ready to join the correction family (:func:`join_family`).
* :func:`sampling_variability` - the within-variant sampling variance (``samples > 1``, or repeated
  runs of one model) and the share of the gap's uncertainty it explains, with the samples-versus-posts
  advice (:func:`samples_vs_posts`).

Model
-----
With ``M`` the model (levels ``m``; reference model ``r``) and ``G`` the group (reference: the control)::

    y = b0 + sum_g b_g [G = g] + sum_m a_m [M = m] + sum_{g,m} d_gm [G = g][M = m]
          + factors + u_post (+ v_{post:variant:model}) + e

fitted by REML with the same exact random-intercept fitter as the gap tests
(:func:`audit.stats.fastlmm.fit_nested_ri` through :func:`audit.stats.gaps._fit_lmm`, including its
fallbacks). Every model replied to the same variants of the same posts, so the post intercept
``u_post`` is shared across models and the comparison is within post. ``b_g`` is the gap of group ``g``
in the reference model; ``b_g + d_gm`` the gap in model ``m``; ``d_gm`` the **difference of gaps**
``gap_m - gap_r`` with Wald ``z = d / se(d)``, two-sided normal p-value and ``d +- z_{1-alpha/2} se``
CI (as the gap tests). With repeated samples of a variant the inner intercept is per (variant, model):
a model's replies to one variant share that model's variant effect, not the other model's.

Cue type is not a fixed effect here although the issue's formula names it: against the control it is
collinear with the group dummies (the control has its own cue type, every other row one of the cue
types, so the cue dummies sum to the group dummies). The models saw the same variants, so the mix of
cue types is the same in every model and the pooled difference of gaps is not confounded by it; it
is the difference of the ``pooled`` gaps of ``results``. Prompt style is a fixed effect when there
are several styles. 0/1 outcomes: the same linear model on the 0/1 values (a linear probability
model: gaps and their difference in probability points, with the mixed model's SEs); the gap tests'
GEE-standardised gaps of each model stay in ``results``.

Example
-------
>>> import pandas as pd
>>> from audit.stats.simulate import simulate_audit_table
>>> a = simulate_audit_table(n_posts=40, gaps={"A": -0.5}, model_label="v1", seed=1)
>>> b = simulate_audit_table(n_posts=40, gaps={"A": 0.0}, model_label="v2", seed=2)
>>> r = gap_interaction(pd.concat([a, b]), outcome="value", between="model_label", reference_level="v1")
>>> row = r[r.group == "A"].iloc[0]
>>> bool(row.ci_low < 0.5 < row.ci_high), bool(row.p_value < 0.05)
(True, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import AuditError
from .cells import Cells, cell_weights, cells_binary
from .degenerate import attach_warnings, captured
from .gaps import _fit_lmm, validate_table
from .missing import match_level
from .textcodes import block_rows, text_codes, text_factorize

__all__ = ["gap_interaction", "models_table", "join_family", "sampling_variability", "samples_vs_posts",
           "MODELS_COLUMNS", "reference_model_of"]

MODELS_COLUMNS = [
    "family_id", "outcome", "model_label", "reference_model", "style", "cue_type", "group", "reference",
    "gap_reference_model", "gap_reference_model_se", "gap", "gap_se", "gap_ci_low", "gap_ci_high",
    "estimate", "se", "ci_low", "ci_high", "z", "p_value", "p_holm", "p_bh", "significant_holm", "n", "n_posts",
    "method", "converged", "warning",
]


def reference_model_of(models: list[str], stated: str | None, *,
                       where: str = "spec key analysis.reference_model") -> str:
    """The reference model: ``stated`` (``analysis.reference_model``) or else the first model in the
    spec's order. A stated label that is not one of ``models`` is an error."""
    if stated is None:
        return models[0]
    if stated not in models:
        raise AuditError(f"reference model '{stated}' is not one of the run's models ({', '.join(models)})",
                         where=where, fix="name one of the model labels of the spec's models list")
    return stated


def gap_interaction(
    data: pd.DataFrame,
    *,
    outcome: str,
    between: str = "model_label",
    reference_level: str | None = None,
    group: str = "group",
    control: str = "control",
    cluster: str = "post_id",
    factors: tuple[str, ...] | list[str] = (),
    inner: str | None = None,
    alpha: float = 0.05,
    where: str = "the table",
    cells: Cells | None = None,
) -> pd.DataFrame:
    """Gaps of every group in every level of ``between`` and their differences from the reference level.

    ``outcome ~ C(group, Treatment(control)) * C(between, Treatment(reference_level)) + factors
    + (1 | cluster) [+ (1 | cluster:inner:between)]``, REML (see the module docstring).
    ``reference_level`` defaults to the first level in order of appearance. Rows with a missing
    outcome are left out (the run's gap tests count and test them per group). ``cells``: the rows are
    cells of observations (:mod:`audit.stats.cells`), fitted exactly from their sufficient statistics.

    Returns one row per (group, non-reference level): ``group, reference, <between>, reference_level,
    gap_reference_model, gap_reference_model_se, gap, gap_se, gap_ci_low, gap_ci_high, estimate`` (the
    difference of gaps ``gap - gap_reference_model``) ``, se, ci_low, ci_high, z, p_value, n, n_posts,
    method, converged, warning``.
    """
    if between not in data.columns:
        raise AuditError(f"column '{between}' not found", where=where, fix="give the column of the models or runs")
    d = validate_table(data, outcome, group, control, cluster, list(factors) + [between], inner, where=where,
                       cells=cells)
    w = cell_weights(d, cells)
    ctrl = match_level(d[group], control) or str(control)
    bcode, blev = text_factorize(d[between])  # levels in order of appearance
    order = [str(v) for v in blev]
    ref = str(reference_level) if reference_level is not None else order[0]
    if ref not in order:
        raise AuditError(f"reference level '{ref}' of '{between}' has no rows (levels: {', '.join(order)})",
                         where=where, fix="name a level that occurs")
    others = [lv for lv in order if lv != ref]
    if not others:
        raise AuditError(f"column '{between}' has only the level '{ref}': there is nothing to compare", where=where,
                         fix="give rows of at least two models or runs")
    gcode, gall = text_factorize(d[group])
    glev = [lv for lv in sorted(set(gall)) if lv != ctrl]
    # every label as an integer code (a text comparison per level and row took seconds at a million cells):
    # g_of[i] the index of row i's group in glev (-1: the control), b_of[i] its level's in `others` (-1: ref)
    g_of = np.array([glev.index(v) if v in glev else -1 for v in gall], dtype=np.intp)[gcode]
    b_of = np.array([others.index(v) if v in others else -1 for v in order], dtype=np.intp)[bcode]
    fcodes, flen = [], []  # per factor: each row's level beyond the first (sorted; -1: the first), their count
    for f in factors:
        fc, fu = text_factorize(d[f])
        flev = sorted(fu)
        fcodes.append(np.array([flev.index(v) - 1 for v in fu], dtype=np.intp)[fc])
        flen.append(len(flev) - 1)
    ng_, nb_ = len(glev), len(others)
    # a row of X is fixed by its group, level and factor levels: the fit takes X as its distinct rows D and
    # each row's index (X = D[rows] is never built: ~45 columns of a million rows took seconds to fill)
    key = (g_of + 1).astype(np.int64) * (nb_ + 1) + (b_of + 1)
    for fc, k in zip(fcodes, flen):
        key = key * (k + 1) + (fc + 1)
    _, first, rows = np.unique(key, return_index=True, return_inverse=True)
    rows = rows.ravel()
    D = np.zeros((len(first), 1 + ng_ + nb_ + ng_ * nb_ + sum(flen)))
    D[:, 0] = 1.0
    gi, bj = g_of[first], b_of[first]
    for u in range(len(first)):
        if gi[u] >= 0:
            D[u, 1 + gi[u]] = 1.0
        if bj[u] >= 0:
            D[u, 1 + ng_ + bj[u]] = 1.0
        if gi[u] >= 0 and bj[u] >= 0:
            D[u, 1 + ng_ + nb_ + gi[u] * nb_ + bj[u]] = 1.0
    col = 1 + ng_ + nb_ + ng_ * nb_
    for fc, k in zip(fcodes, flen):
        lv = fc[first]
        for u in range(len(first)):
            if lv[u] >= 0:
                D[u, col + lv[u]] = 1.0
        col += k
    # X'X from the distinct rows and their counts: the same integers as X.T @ X (sums of 0/1 products)
    if np.linalg.matrix_rank(D.T @ (D * np.bincount(rows)[:, None])) < D.shape[1]:
        raise AuditError("the group x model design is collinear (some group was not asked of some model?)",
                         where=where, fix="compare models on the same variants (the same posts and groups)")
    y = d[outcome].to_numpy(dtype=float)
    clusters = text_codes(d[cluster])  # the posts as integers, in the order of their texts
    inn = None
    if inner is not None:
        inn = pd.factorize(d[inner])[0] * len(order) + bcode  # (inner unit, model)
        pair = clusters.astype(np.int64) * (int(inn.max()) + 1) + inn
        pcode = pd.factorize(pair)[0]
        if (pcode.max() + 1 == len(d)) if w is None else np.bincount(pcode, w).max() == 1:
            inn = None  # one row per (variant, model): no inner variance to identify
    with captured() as caught:  # numerical warnings: stated on the rows (audit.stats.degenerate), never printed
        fit = _fit_lmm(y, (D, rows), clusters, inn, True, w, float(d[cells.ss].sum()) if w is not None else 0.0)
        binary = cells_binary(d, cells) if cells is not None else _binary(y)
        rows = _interaction_rows(fit, clusters, g_of, b_of, glev, others, ctrl, ref, between, alpha, w, binary)
    return pd.DataFrame(attach_warnings(rows, caught))


def _sums(d: pd.DataFrame, keys: list[str], weight: str | None) -> np.ndarray:
    """The count of rows (or sum of ``weight``) of each distinct combination of ``keys`` that occurs (in no
    particular order): ``d.groupby(keys)[weight].sum()``'s values, from integer codes."""
    code = np.zeros(len(d), dtype=np.int64)
    keep = np.ones(len(d), dtype=bool)
    for k in keys:
        c, u = pd.factorize(d[k])
        keep &= c >= 0  # a missing key: left out, as by groupby
        code = pd.factorize(code * (len(u) + 1) + (c + 1))[0].astype(np.int64)
    code = pd.factorize(code[keep])[0]
    if not len(code):
        return np.zeros(0)
    return np.bincount(code, None if weight is None else d[weight].to_numpy(dtype=float)[keep])


def _largest_sum(d: pd.DataFrame, keys: list[str], weight: str | None) -> float:
    """The largest count of rows (or sum of ``weight``) over the distinct combinations of ``keys``:
    ``d.groupby(keys)[weight].sum().max()``, from integer codes (a group-by of text columns is slow)."""
    sums = _sums(d, keys, weight)
    return float(sums.max()) if len(sums) else 0.0


def _interaction_rows(fit, clusters, g_of, b_of, glev, others, ctrl, ref, between, alpha, w, binary) -> list[dict]:
    b, V = fit.params, fit.cov
    zc = stats.norm.ppf(1 - alpha / 2)
    ng, nb = len(glev), len(others)
    ccodes = clusters  # integer codes 0..posts-1 (text_codes)
    ncl = int(ccodes.max()) + 1
    # observations and posts per (group, level): cell (i, j + 1) is group i at level j of `others`, (i, 0) the
    # reference level (groups x levels x posts booleans: 8 x 5 x 7,408 for a million replies)
    gb = np.where(g_of >= 0, g_of * (nb + 1) + b_of + 1, -1)
    has = gb >= 0
    n_gb = np.bincount(gb[has], None if w is None else w[has], minlength=ng * (nb + 1))
    seen = np.zeros((ng * (nb + 1), ncl), dtype=bool)  # seen[k, post]: the post has rows in cell k
    seen[gb[has], ccodes[has]] = True
    rows = []
    for i, gl in enumerate(glev):
        jg = 1 + i
        for j, lv in enumerate(others):
            jd = 1 + ng + nb + i * nb + j
            c = np.zeros(len(b))
            c[jg] = c[jd] = 1.0
            gap, gse = float(c @ b), float(np.sqrt(c @ V @ c))
            est, se = float(b[jd]), float(np.sqrt(V[jd, jd]))
            z = est / se if se > 0 else np.nan
            k_lv, k_ref = i * (nb + 1) + j + 1, i * (nb + 1)  # this group at the level and at the reference
            n_in = n_gb[k_lv] + n_gb[k_ref]
            rows.append({
                "group": gl, "reference": ctrl, between: lv, "reference_level": ref,
                "gap_reference_model": float(b[jg]), "gap_reference_model_se": float(np.sqrt(V[jg, jg])),
                "gap": gap, "gap_se": gse, "gap_ci_low": gap - zc * gse, "gap_ci_high": gap + zc * gse,
                "estimate": est, "se": se, "ci_low": est - zc * se, "ci_high": est + zc * se, "z": float(z),
                "p_value": float(2 * stats.norm.sf(abs(z))) if np.isfinite(z) else np.nan,
                "n": int(n_in if w is None else round(float(n_in))),
                "n_posts": int(np.count_nonzero(seen[k_lv] | seen[k_ref])),
                "method": "lmm group x " + between + ", " + fit.method
                          + (" (linear probability model on the 0/1 outcome)" if binary else ""),
                "converged": bool(fit.converged), "warning": "; ".join(dict.fromkeys(fit.warnings)) or None,
            })
    return rows


def _binary(y: np.ndarray) -> bool:
    return bool(np.isin(np.unique(y), (0.0, 1.0)).all())


def models_table(table: pd.DataFrame, *, reference_model: str | None = None, reference: str = "control",
                 alpha: float = 0.05, pre_registered: bool = False,
                 model_order: list[str] | None = None, cells: Cells | None = None) -> tuple[pd.DataFrame, list[str]]:
    """``results_models`` of an :func:`audit.stats.analysis_table` with several models: per outcome, the
    model x group interaction (styles and cue types pooled, style a fixed effect when there are several)
    against ``reference_model`` (default: the first of ``model_order`` that has rows, else the first model
    in the table). Empty when the table has one model.

    ``pre_registered``: the comparisons may join the confirmatory family (column ``pre_registered``;
    see :func:`audit.stats.family.split_families`). Returns ``(table, notes)``: an outcome whose
    interaction cannot be fitted is left out and named in ``notes``. p-values are not yet adjusted
    (:func:`join_family` adjusts them with the rest of the family). ``cells``: ``table`` is a cell table
    (:mod:`audit.stats.cells`).
    """
    seen = [str(v) for v in pd.unique(table["model_label"])]  # in order of appearance
    models = [m for m in (model_order or []) if m in seen] + [m for m in seen if m not in (model_order or [])]
    if len(models) < 2:
        return pd.DataFrame(), []
    ref = reference_model_of(models, reference_model)
    parts, notes = [], []
    # only the columns the fits read (each outcome's rows are copied out of a table of ~3M cells)
    cols = [c for c in dict.fromkeys(["outcome", "value", "group", "post_id", "variant_id", "model_label", "style",
                                      *([] if cells is None else [cells.n, cells.missing, cells.ss, cells.lo,
                                                                   cells.hi, cells.binary])]) if c in table.columns]
    def outcomes():
        """Each outcome's observed rows in the sorted order of a group-by, taken one at a time by their
        numbers (copying the columns and iterating a group-by held two more copies of the table: ~420 MB
        at a million replies)."""
        for rows in block_rows(table, ["outcome"], table["value"].notna().to_numpy()):
            d = table.iloc[rows][cols]
            yield d["outcome"].iloc[0], d

    for outcome, d in outcomes():
        factors = ["style"] if d["style"].nunique() > 1 else []
        inner = "variant_id" if _largest_sum(d, ["variant_id", "model_label", "style"],
                                             None if cells is None else cells.n) > 1 else None
        try:
            r = gap_interaction(d, outcome="value", between="model_label", reference_level=ref, control=reference,
                                factors=factors, inner=inner, alpha=alpha, where=f"outcome {outcome}, models",
                                cells=cells)
        except AuditError as exc:
            notes.append(f"outcome {outcome}, model comparison: {exc.what}")
            continue
        r = r.rename(columns={"reference_level": "reference_model"})
        r.insert(0, "outcome", outcome)
        r["style"], r["cue_type"] = "pooled", "pooled"
        parts.append(r)
    if not parts:
        return pd.DataFrame(), notes
    out = pd.concat(parts, ignore_index=True)
    out["pre_registered"] = bool(pre_registered)
    for c in MODELS_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out[MODELS_COLUMNS + ["pre_registered"]], notes


def join_family(res: pd.DataFrame, others: list[pd.DataFrame], *,
                alpha: float = 0.05) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Holm/BH over ``res`` and every table of ``others`` together (one family, each table keeps its rows)."""
    from .disparity import adjust_with

    present = [o for o in others if o is not None and not o.empty]
    if not present:
        return res, others
    both = pd.concat([o[["p_value"]] for o in present], ignore_index=True)
    res, adj = adjust_with(res, both, alpha=alpha)
    out, k = [], 0
    for o in others:
        if o is None or o.empty:
            out.append(o)
            continue
        o = o.copy()
        for c in ("p_holm", "p_bh", "significant_holm"):
            o[c] = adj[c].iloc[k:k + len(o)].to_numpy()
        k += len(o)
        out.append(o)
    return res, out


def models_family(res: pd.DataFrame, disparity: pd.DataFrame, models: pd.DataFrame, primary: list[str] | None,
                  alpha: float) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The analysis stage's family with ``results_models`` in it: Holm/BH over gaps, disparities and
    differences of gaps together; with ``primary`` the split of :func:`audit.stats.family.split_families`
    (a difference of gaps is confirmatory only where its row is ``pre_registered``)."""
    from .family import split_families

    fid = res["family_id"].iloc[0]
    models = models.assign(family_id=fid)
    if not disparity.empty:
        disparity = disparity.assign(family_id=fid)
    if not primary:
        res, (disparity, models) = join_family(res, [disparity, models], alpha=alpha)
        return res, disparity, models
    others = pd.concat([disparity, models], ignore_index=True, sort=False) if not disparity.empty else models
    res, oth = split_families(res, others, primary, alpha=alpha)
    nd = len(disparity)
    disparity = oth.iloc[:nd][list(disparity.columns) + ["family", "significant_bh"]].reset_index(drop=True) \
        if nd else disparity
    models = oth.iloc[nd:][list(models.columns) + ["family", "significant_bh"]].reset_index(drop=True)
    return res, disparity, models


def models_meta(models: pd.DataFrame) -> dict:
    """``analysis_meta`` entries of a run with several models."""
    return {
        "models_formula": "value ~ C(group, Treatment(reference)) * C(model_label, Treatment(reference_model)) "
                          "[+ C(style)] + (1 | post_id) [+ (1 | post_id:variant_id:model_label)]",
        "reference_model": str(models["reference_model"].iloc[0]),
        "models_compared": sorted(set(models["model_label"].astype(str))),
        "models_family": "every difference of gaps (group x model, styles and cue types pooled) is a member of "
                         "the correction family",
    }


# --------------------------------------------------------------------------- sampling variability

def samples_vs_posts(var_variant: float, var_sample: float, *, n_posts: int, samples: int,
                     cost_variant: float = 0.0) -> dict:
    """What buys precision of a gap: more posts or more samples per variant?

    A gap compares variants of the same post, so the post intercept cancels and, per compared pair of
    variants, ``Var(gap) = 2 (s2_v + s2_e / S) / P`` (``s2_v`` the between-variant variance, ``s2_e``
    the within-variant sampling variance, ``S`` samples, ``P`` posts). Doubling posts halves it;
    doubling samples only shrinks the ``s2_e / S`` part. With a reply costing 1 and a new variant
    (a post to write, check or rate) costing ``cost_variant`` replies, the variance at a fixed budget is
    smallest at ``S* = sqrt(cost_variant * s2_e / s2_v)`` (two-stage sampling, Cochran 1977, eq. 10.8;
    Snijders & Bosker 2012, sec. 11.2), rounded to at least 1; with ``cost_variant = 0`` (only replies
    cost) one sample per variant is best whenever ``s2_v > 0``.

    Returns ``share_sampling`` (``(s2_e / S) / (s2_v + s2_e / S)``: the share of the gap's variance
    that sampling the replies explains), the SE ratios of doubling posts or samples (1 = no gain) and
    ``best_samples``.
    """
    vv, ve = max(float(var_variant), 0.0), max(float(var_sample), 0.0)
    S, P = max(int(samples), 1), max(int(n_posts), 1)
    per = vv + ve / S
    share = (ve / S) / per if per > 0 else np.nan
    se_posts = float(np.sqrt(0.5)) if per > 0 else np.nan
    se_samples = float(np.sqrt((vv + ve / (2 * S)) / per)) if per > 0 else np.nan
    if vv > 0:
        best = max(1, int(round(np.sqrt(cost_variant * ve / vv)))) if cost_variant > 0 else 1
    else:
        best = np.nan  # no variant variance: samples and posts buy the same; the cost decides
    if per <= 0:
        advice = "no variance left to reduce"
    elif se_samples > 0.95:
        advice = (f"add posts, not samples: doubling the samples per variant ({S} -> {2 * S}) would shrink the gap's "
                  f"standard error by {100 * (1 - se_samples):.0f}%, doubling the posts ({P} -> {2 * P}) by 29%")
    else:
        advice = (f"sampling noise is a large share ({100 * share:.0f}%) of the gap's variance: doubling the samples "
                  f"per variant shrinks the standard error by {100 * (1 - se_samples):.0f}%, doubling the posts by 29%; "
                  "posts also widen what the audit generalises to")
    return dict(var_variant=vv, var_sample=ve, n_posts=P, samples=S, share_sampling=float(share),
                se_ratio_double_posts=se_posts, se_ratio_double_samples=se_samples, best_samples=best,
                cost_variant=float(cost_variant), advice=advice)


def sampling_variability(table: pd.DataFrame, *, replicate: str = "sample_index", reference: str = "control",
                         by: tuple[str, ...] = ("outcome", "model_label"), cells: Cells | None = None) -> pd.DataFrame:
    """Within-variant sampling variance of each outcome (and model), from repeated replies to a variant.

    Replicates are the ``samples`` of a run (``replicate="sample_index"``) or, in a table of two runs of
    the same model and spec, the runs (``replicate="run"``). Per block of ``by``: the REML fit of
    ``value ~ group [+ style] + (1 | post_id) + (1 | post_id:variant_id)`` (:func:`audit.stats.fastlmm`)
    gives ``var_post``, ``var_variant`` (between variants of a post beyond their group) and
    ``var_sample`` (the residual: replies to one variant, style and model differ by this much);
    :func:`samples_vs_posts` adds the share of the gap's variance that sampling explains and the
    advice. Blocks with no repeated variant are left out (nothing to estimate from). ``cells``: ``table``
    is a cell table (:mod:`audit.stats.cells`) whose cells are the replicates of one (variant, style,
    model): the residual variance is then the within-cell spread, exactly.
    """
    from .fastlmm import fit_nested_ri
    from .gaps import design_matrix

    rows = []
    keys = [k for k in by if k in table.columns]
    need = [*keys, "value", "group", "post_id", "variant_id", "style", "model_label"] + \
        ([] if cells is None else [cells.n, cells.missing, cells.ss, cells.lo, cells.hi, cells.binary])
    cols = [c for c in dict.fromkeys(need) if c in table.columns]  # each block is copied out: only these

    def blocks():
        """The blocks of ``keys`` in the sorted order of a group-by, taken one at a time by their numbers
        (iterating a group-by first copies the whole table in sorted order: ~400 MB at a million replies)."""
        valid = table["value"].notna().to_numpy()
        if not keys:
            yield (), table.loc[valid, cols]
            return
        for rows in block_rows(table, keys, valid):
            d = table.iloc[rows][cols]
            yield tuple(d[c].iloc[0] for c in keys), d

    for key, d in blocks():
        cell = ["variant_id", "style"] + (["model_label"] if "model_label" not in keys else [])
        reps = _sums(d, cell, None if cells is None else cells.n)
        if reps.max() < 2:
            continue
        factors = ["style"] if d["style"].nunique() > 1 else []
        try:
            dd = validate_table(d, "value", "group", reference, "post_id", factors, where="sampling variability",
                                cells=cells)
        except AuditError:
            continue
        X, _, _ = design_matrix(dd, "group", match_level(dd["group"], reference) or reference, factors)
        # the (variant, style) unit as one integer (equal pairs, equal codes): the fit only compares labels
        sc = pd.factorize(dd["style"])[0]
        inner = pd.factorize(dd["variant_id"])[0].astype(np.int64) * (int(sc.max()) + 1) + sc
        f = fit_nested_ri(dd["value"].to_numpy(float), X, text_codes(dd["post_id"]), inner,
                          weights=None if cells is None else dd[cells.n].to_numpy(float),
                          within_ss=0.0 if cells is None else float(dd[cells.ss].sum()))
        samples = int(round(float(reps.mean())))
        adv = samples_vs_posts(f.var_inner, f.scale, n_posts=dd["post_id"].nunique(), samples=samples)
        label = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        rows.append({**label, "replicate": replicate, "var_post": float(f.var_post), **adv,
                     "n_rows": int(len(dd)) if cells is None else int(dd[cells.n].sum()), "method": "REML value ~ group" + (" + style" if factors else "")
                     + " + (1|post) + (1|post:variant); var_sample = residual variance"})
    return pd.DataFrame(rows)
