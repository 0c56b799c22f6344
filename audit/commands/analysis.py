"""``empathy-audit analyze`` (any long table, or a run directory) and ``empathy-audit power``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..cliargs import bounded_float, bounded_int, probability, seed
from ..errors import AuditError
from ..jsonable import jsonable

JSON_FIELDS = ["outcome", "group", "by", "reference", "estimate", "se", "ci_low", "ci_high", "ref_mean", "relative_gap",
               "rel_ci_low", "rel_ci_high", "std_effect", "z", "p_value", "p_holm", "p_bh", "significant_holm", "n",
               "n_posts", "n_missing", "ref_n_missing", "n_clusters", "design", "method", "converged", "warning"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="mixed-model gap tests on any long table (CSV/parquet) or on a run directory",
        description="Fit the audit's gap models to TABLE (a long CSV, TSV, JSONL or parquet file with one row per "
        "observation) and print every group's gap to the control level: absolute and relative gap with 95% CI, "
        "standardised gap, raw, Holm and Benjamini-Hochberg adjusted p-values over the whole family printed. "
        "Model: OUTCOME ~ GROUP (control as reference) + FACTORs + (1 | CLUSTER) [+ (1 | CLUSTER:INNER)], REML; "
        "0/1 outcomes: GEE logistic clustered by CLUSTER. Given a run directory instead of a table, runs the "
        "audit's analysis stage and stores the results in its run store.",
    )
    p.add_argument("table", metavar="TABLE", help="long table file (.csv .tsv .jsonl .parquet) or a run directory")
    p.add_argument("--outcome", nargs="+", metavar="COL", help="outcome column(s); each is part of the family")
    p.add_argument("--group", metavar="COL", help="column with the group of each row")
    p.add_argument("--control", metavar="LEVEL", help="reference level of --group (the control)")
    p.add_argument("--cluster", metavar="COL", help="column with the cluster (base post) of each row")
    p.add_argument("--extra-reference", action="append", default=[], metavar="LEVEL",
                   help="also compare every group with this level (repeatable); part of the family")
    p.add_argument("--factor", action="append", default=[], metavar="COL",
                   help="further categorical fixed effect (repeatable), e.g. prompt style")
    p.add_argument("--inner", metavar="COL",
                   help="inner cluster nested in --cluster (e.g. variant id when variants were sampled repeatedly)")
    p.add_argument("--by", metavar="COL", help="also report the gaps per level of COL (e.g. cue_type), beside pooled")
    p.add_argument("--method", default="auto", choices=["auto", "fast", "mixedlm", "gee", "ols"],
                   help="auto: exact fast LMM (GEE logistic for 0/1 outcomes); mixedlm: statsmodels (slow); "
                   "ols: cluster-robust OLS")
    p.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    p.add_argument("--alpha", type=probability("alpha"), default=0.05,
                   help="level for CIs and Holm significance (default 0.05)")
    p.add_argument("--allow-missing", action="store_true",
                   help="analyse even when the share of missing outcomes differs between a group and the control "
                   "(refused by default: the gap would be computed on differently selected rows)")
    p.add_argument("--fold-case", action="store_true", help="treat group labels that differ only by case as one "
                   "label (the most frequent spelling), with a warning; by default they are refused")
    p.add_argument("--json", action="store_true", help="print a JSON list of result objects")
    p.set_defaults(func=cmd_analyze)

    w = sub.add_parser(
        "power", help="posts and samples needed to detect a relative gap (simulation)",
        description="Estimate by simulation, with the audit's own mixed model, the power to detect a relative gap "
        "of --gap (e.g. 5%) for one group against the control, for a grid of numbers of posts and samples, at the "
        "Bonferroni level alpha / family size (a conservative stand-in for Holm). Variance components come from "
        "a pilot run (RUN_DIR or --pilot), are stated (--assume sd_post=0.3 sd_resid=0.5 ref_mean=1.2, or "
        "--sd-post, --sd-resid, --ref-mean), or, before any run, are the suite's planning defaults from published "
        "audits (audit/data/power/defaults.yaml, each with its source). See docs/planning.md for a pilot.",
    )
    w.add_argument("target", metavar="SPEC|RUN_DIR", help="audit spec (design) or a run directory (design + pilot)")
    w.add_argument("--gap", metavar="G", help="relative gap to detect: 5%% or 0.05")
    w.add_argument("--ratings-ci", type=bounded_float(0, lo_open=True, cap=1e6), metavar="X",
                   help="instead: how many human ratings give a prediction-powered gap CI of +-X (outcome units, "
                        "e.g. 0.1 level)")
    w.add_argument("--rho", type=bounded_float(-1, 1, lo_open=True, hi_open=True),
                   help="--ratings-ci: scorer-human correlation (default 0.6)")
    w.add_argument("--sd", type=bounded_float(0, lo_open=True, cap=1e6),
                   help="--ratings-ci: SD of the human values (default 0.7)")
    w.add_argument("--deff", type=bounded_float(1, cap=1000),
                   help="--ratings-ci: design effect of clustering by post (default 1.5)")
    w.add_argument("--replies", type=bounded_int(2, cap=10_000_000),
                   help="--ratings-ci: replies in the two arms of one gap (default 1000)")
    w.add_argument("--arms", metavar="GROUP,REFERENCE",
                   help="--ratings-ci: replies of the group and of the reference arm when they differ (sets --replies)")
    w.add_argument("--allocation", choices=["equal", "proportional"], default="equal",
                   help="--ratings-ci: ratings split equally between the arms (as a rating packet draws them; "
                        "default) or in proportion to their replies (a random sample of all replies)")
    w.add_argument("--from", dest="ratings_from", metavar="RUN_DIR",
                   help="--ratings-ci: take rho, sd, deff and replies from this run's human ratings; with --gap: "
                        "the pilot run whose scores give the variance components (as --pilot)")
    w.add_argument("--assume", nargs="+", metavar="KEY=VALUE", default=[],
                   help="stated assumptions: sd_post, sd_variant, sd_resid, ref_mean (gap planning) or rho, sd, "
                        "deff, replies (--ratings-ci); e.g. --assume sd_post=0.3 sd_resid=0.5 ref_mean=1.2")
    w.add_argument("--pilot", metavar="RUN_DIR", help="run directory whose scores give the variance components")
    w.add_argument("--outcome", metavar="NAME", help="pilot outcome (default: epitome.empathy or the first)")
    w.add_argument("--sd-post", type=bounded_float(0, cap=1e6), help="SD of the post random intercept")
    w.add_argument("--sd-variant", type=bounded_float(0, cap=1e6), default=None,
                   help="SD of the variant intercept (default 0)")
    w.add_argument("--sd-resid", type=bounded_float(0, lo_open=True, cap=1e6), help="residual SD")
    w.add_argument("--ref-mean", type=bounded_float(cap=1e9), help="mean outcome of the control")
    w.add_argument("--posts", type=bounded_int(2, cap=100_000), nargs="+", metavar="N",
                   help="numbers of posts to try (default: doubling)")
    w.add_argument("--samples", type=bounded_int(1, cap=1000), nargs="+", metavar="S",
                   help="samples per variant to try (default: spec)")
    w.add_argument("--groups", type=bounded_int(1, cap=10_000), metavar="G",
                   help="number of groups (default: from the spec)")
    w.add_argument("--cue-types", type=bounded_int(1, cap=100), metavar="C",
                   help="number of cue types (default: from the spec)")
    w.add_argument("--family-size", type=bounded_int(1, cap=1_000_000), metavar="M",
                   help="number of tests in the family (default: from the spec)")
    w.add_argument("--power", type=probability("power"), default=0.8, help="target power (default 0.8)")
    w.add_argument("--alpha", type=probability("alpha"), default=None, help="family-wise level (default: the spec's, 0.05)")
    w.add_argument("--sims", type=bounded_int(10, cap=100_000), default=200,
                   help="simulated audits per design point (default 200)")
    w.add_argument("--seed", type=seed(), default=None, help="simulation seed (default: the spec's seed)")
    w.add_argument("--json", action="store_true", help="print the result as one JSON object")
    w.set_defaults(func=cmd_power)


# --------------------------------------------------------------------------- helpers


def _fmt(x: Any, spec: str = ".3f") -> str:
    try:
        return "n/a" if x is None or not math.isfinite(float(x)) else format(float(x), spec)
    except (TypeError, ValueError):
        return "n/a"


def _print_results(res: pd.DataFrame, alpha: float) -> None:
    cols = ["outcome", "group"] + (["by"] if "by" in res.columns else []) + (
        ["reference"] if res["reference"].nunique() > 1 else [])
    head = [*cols, "estimate", f"{100 * (1 - alpha):g}% CI", "relative", "rel. CI", "std", "p", "p_holm", "p_bh", "n",
            "missing", "posts", "clusters"]
    rows = []
    for r in res.to_dict("records"):
        rows.append([str(r[c]) for c in cols] + [
            _fmt(r["estimate"], "+.4f"), f"[{_fmt(r['ci_low'], '+.4f')}, {_fmt(r['ci_high'], '+.4f')}]",
            _fmt(100 * r["relative_gap"] if r["relative_gap"] is not None else None, "+.1f") + "%",
            f"[{_fmt(100 * r['rel_ci_low'], '+.1f')}, {_fmt(100 * r['rel_ci_high'], '+.1f')}]%",
            _fmt(r["std_effect"], "+.3f"), _fmt(r["p_value"], ".2g"), _fmt(r["p_holm"], ".2g") + (
                " *" if r.get("significant_holm") else ""), _fmt(r["p_bh"], ".2g"), _count(r["n"]),
            f"{_count(r.get('n_missing'))} (ref {_count(r.get('ref_n_missing'))})", _count(r.get("n_posts")),
            _count(r.get("n_clusters")),
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    methods = sorted(set(res["method"].astype(str)))
    print(f"\nfamily: {int(res['p_value'].notna().sum())} tests; Holm (FWER) and Benjamini-Hochberg (FDR) over all of "
          f"them; * = significant after Holm at {alpha:g}; posts: the group's own posts; clusters: the posts of the "
          "group and its reference (the effective sample size of the gap)")
    print("method: " + "; ".join(methods))
    warns = sorted({w for w in res["warning"].dropna().astype(str) if w})
    for w in warns:
        print(f"warning: {w}")


def _count(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else str(int(x))


# --------------------------------------------------------------------------- analyze


def cmd_analyze(args: argparse.Namespace) -> int:
    target = Path(args.table)
    if target.is_dir():
        return _analyze_run_dir(target, args)
    missing = [f"--{n}" for n in ("outcome", "group", "control", "cluster") if not getattr(args, n)]
    if missing:
        raise AuditError(f"missing option(s) {', '.join(missing)}", where="empathy-audit analyze",
                         fix="name the outcome, group, control level and cluster columns of the table")
    from ..stats import analyze_table, read_table
    from ..stats.designs import detect_design

    table = read_table(target, text_columns=[args.group, args.cluster])
    label_warnings: list[str] = []
    res = analyze_table(table, outcome=args.outcome, group=args.group, control=str(args.control),
                        cluster=args.cluster, extra_references=args.extra_reference, factors=args.factor,
                        inner=args.inner, by=args.by, method=args.method, reml=not args.ml, alpha=args.alpha,
                        where=str(target), allow_missing=args.allow_missing, fold_case=args.fold_case,
                        warnings=label_warnings)
    for w in label_warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.by:
        res = res.rename(columns={args.by: "by"})
    if args.json:
        cols = [c for c in JSON_FIELDS if c in res.columns]
        print(json.dumps(jsonable(res[cols].to_dict("records")), indent=1))
    else:
        _print_results(res, args.alpha)
        print("design: " + detect_design(table, args.group, args.cluster).statement())
        _print_scorer_flags(res)
    return 0


def _print_scorer_flags(res: pd.DataFrame) -> None:
    """Outcome columns of two scorers of one measure (``epitome.ER``, ``published.ER``): which
    conclusions depend on the scorer (:mod:`audit.report.scorer_comparison`)."""
    from ..report.scorer_comparison import comparison_table, scorer_flags

    if "model_label" not in res.columns:
        res = res.assign(model_label="table")
    flags = scorer_flags(comparison_table(res))
    if flags.empty:
        return
    dep = flags[flags["depends"]]
    print(f"scorers compared: {len(flags)} gaps measured by two or more scorers of one measure; "
          f"{len(dep)} depend on the scorer")
    for f in dep.to_dict("records"):
        print(f"depends on the scorer: {f['mechanism']}, {f['group']} vs {f['reference']}: {f['reason']}")


def _analyze_run_dir(run_dir: Path, args: argparse.Namespace) -> int:
    from ..stats import analyze_run
    from ..store import RunStore

    with RunStore(run_dir, create=False) as store:
        spec = store.latest_spec()
    result = analyze_run(spec, run_dir)
    res = result.results
    if args.json:
        print(json.dumps(jsonable(res.to_dict("records")), indent=1))
    else:
        shown = res[(res["style"] == "pooled") & (res["cue_type"] == "pooled")]
        _print_results(shown, spec.analysis.alpha)
        print(f"\nall {len(res)} rows (per style and cue type as well) stored in table 'results' of {run_dir}")
        for line in run_summary_lines(run_dir, result, spec):
            print(line)
    return 0


def run_summary_lines(run_dir: Path, result: Any, spec: Any) -> list[str]:
    """What ``analyze RUN_DIR`` prints after the table: the design statement, the headline the
    report will lead with (:func:`audit.report.headline.headline_result`, the same function) and, with
    human ratings, one corrected line per rated outcome and group (automated, prediction-powered and
    human-only gaps with 95% CIs, from ``results_ppi``)."""
    from ..report.headline import corrected_sentences, headline_result, primary_outcome
    from ..scorers.measures import MeasureCatalog
    from ..store import RunStore

    meta = dict(zip(result.meta["key"], result.meta["value"])) if not result.meta.empty else {}
    out = [f"design: {meta['design_statement']}"] if meta.get("design_statement") else []
    with RunStore(run_dir, create=False) as store:
        catalog = MeasureCatalog.from_scorer_info(store.scorer_info())
    ppi = result.ppi
    primary = primary_outcome(result.results, spec.analysis.outcomes, catalog, primary=spec.analysis.primary)
    lead = headline_result(result.results, result.disparity, ppi, primary, catalog=catalog)
    if lead is not None and lead["kind"] == "corrected":
        out.append("headline (as the report leads): " + corrected_sentences(lead)[0])
    if ppi is None or ppi.empty:
        if meta.get("design_statement"):
            out.append("corrected gaps: none (no human ratings stored; empathy-audit ratings packet RUN_DIR ...)")
        return out
    out.append("corrected with human ratings (prediction-powered PPI++, human scale; 95% CIs, post jackknife):")
    for (outcome, model, group, ref), d in ppi.groupby(["outcome", "model_label", "group", "reference"], sort=True):
        k = d.set_index("kind")

        def cell(kind: str) -> str:
            if kind not in k.index or not _finite(k.loc[kind, "estimate"]):
                return "n/a"
            e = k.loc[kind]
            return f"{float(e['estimate']):+.3f} [{_fmt(e['ci_low'], '+.3f')}, {_fmt(e['ci_high'], '+.3f')}]"

        why = k.loc["ppi", "warning"] if "ppi" in k.index and isinstance(k.loc["ppi", "warning"], str) \
            and k.loc["ppi", "warning"] else ""
        out.append(f"  {outcome} {group} vs {ref}" + (f" ({model})" if ppi["model_label"].nunique() > 1 else "")
                   + f": corrected {cell('ppi')}; automated {cell('automated')}; human-only {cell('human')}; "
                   f"{int(d['n_rated'].max())} rated of {int(d['n_all'].max())}" + (f" ({why})" if why else ""))
    return out


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- power


_ASSUMABLE = {"sd_post": "sd_post", "sd_variant": "sd_variant", "sd_resid": "sd_resid", "ref_mean": "ref_mean",
              "rho": "rho", "sd": "sd", "deff": "deff", "replies": "replies"}


def _apply_assume(args: argparse.Namespace) -> None:
    """``--assume KEY=VALUE ...`` onto the matching options (an explicit option wins over nothing only)."""
    for item in args.assume or []:
        key, sep, value = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _ASSUMABLE:
            raise AuditError(f"cannot read --assume {item!r}", where="--assume",
                             fix="write KEY=VALUE with KEY one of " + ", ".join(_ASSUMABLE))
        try:
            v = float(value)
        except ValueError:
            raise AuditError(f"--assume {key}: {value!r} is not a number", where="--assume",
                             fix=f"write e.g. {key}=0.5") from None
        if not math.isfinite(v) or (key != "ref_mean" and v < 0) or (key == "rho" and not -1 <= v <= 1):
            raise AuditError(f"--assume {key}={value} is out of range", where="--assume",
                             fix="standard deviations and counts are >= 0, rho lies in [-1, 1]")
        attr = "ratings_sd" if key == "sd" else key
        setattr(args, attr if hasattr(args, attr) else key, int(v) if key == "replies" else v)


def cmd_power(args: argparse.Namespace) -> int:
    from ..stats import plan_power

    _apply_assume(args)
    if args.ratings_ci is None and args.ratings_from and not args.pilot:
        args.pilot = args.ratings_from  # `power SPEC --gap G --from PILOT_RUN`: the pilot recipe's spelling
    if args.ratings_ci is not None:
        return _ratings_power(args)
    if args.gap is None:
        raise AuditError("give --gap (posts and samples to detect a gap) or --ratings-ci (human ratings for a CI)",
                         fix="e.g. `empathy-audit power SPEC --gap 5%` or `empathy-audit power SPEC --ratings-ci 0.1`")

    plan = plan_power(args.target, gap=args.gap, pilot=args.pilot, outcome=args.outcome, sd_post=args.sd_post,
                      sd_variant=args.sd_variant, sd_resid=args.sd_resid, ref_mean=args.ref_mean, posts=args.posts,
                      samples=args.samples, groups=args.groups, cue_types=args.cue_types,
                      family_size=args.family_size, power=args.power, alpha=args.alpha, sims=args.sims, seed=args.seed)
    print(json.dumps(jsonable(plan.as_dict()), indent=1) if args.json else "\n".join(plan.lines()))
    return 0


def _ratings_power(args: argparse.Namespace) -> int:
    """``power --ratings-ci X``: human ratings needed for a PPI gap CI of +-X (:func:`audit.stats.power.ratings_plan`)."""
    from ..stats.power import RATINGS_DEFAULTS, ratings_assumptions, ratings_plan

    assumed = dict(RATINGS_DEFAULTS)
    source = "defaults"
    if args.ratings_from:
        from ..stats.stage import _human_from_store, analysis_table
        from ..store import RunStore

        with RunStore(Path(args.ratings_from), create=False) as store:
            human = _human_from_store(store)
            if human is None:
                raise AuditError("the run has no human ratings", where=str(args.ratings_from),
                                 fix="import ratings first, or leave out --from and state --rho, --sd, --deff")
            table = analysis_table(store)
            spec = store.latest_spec()
        got = ratings_assumptions(table, human, args.outcome, reference=spec.analysis.reference)
        assumed.update({k: got[k] for k in ("sd", "rho", "deff", "replies", "share", "rated_share")})
        source = (f"{args.ratings_from} ({got['n_rated']} rated replies of {got['outcome']}; arms "
                  + ", ".join(f"{g} {n}" for g, n in got["arms"].items()) + ")")
    for k in ("rho", "sd", "deff", "replies"):
        if getattr(args, k) is not None:
            assumed[k] = getattr(args, k)
    if args.arms:
        try:
            ng, nr = (int(x) for x in args.arms.split(","))
            if ng < 1 or nr < 1:
                raise ValueError
        except ValueError:
            raise AuditError(f"--arms {args.arms!r} is not two positive counts", where="--arms",
                             fix="give the replies of the group and of the reference, e.g. --arms 300,900") from None
        assumed.update(replies=ng + nr, share=ng / (ng + nr))
    if args.arms or args.allocation == "proportional":
        assumed["rated_share"] = assumed.get("share", 0.5) if args.allocation == "proportional" else None
    plan = ratings_plan(args.ratings_ci, alpha=args.alpha or 0.05, **assumed)
    if args.json:
        print(json.dumps(jsonable({**plan, "source": source}), indent=1))
        return 0
    print(f"Human ratings for a prediction-powered gap CI of +-{args.ratings_ci:g}: {plan['needed']} "
          f"(both arms together; assumptions from {source}: rho {plan['rho']:.2f}, sd {plan['sd']:.2f}, "
          f"design effect {plan['deff']:.2f}, {plan['replies']} replies in the two arms"
          + ("" if plan["share"] == 0.5 else f", {plan['share']:.0%} of them the group's") + ").")
    print("ratings  PPI half-width  human-only half-width")
    for r in plan["table"]:
        print(f"{r['ratings']:>7}  {r['ppi_halfwidth']:>14.3f}  {r['human_only_halfwidth']:>21.3f}")
    print("Assumptions: " + plan["assumptions"] + ".")
    return 0
