"""``empathy-audit analyze`` (any long table, or a run directory) and ``empathy-audit power``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import AuditError

JSON_FIELDS = ["outcome", "group", "by", "reference", "estimate", "se", "ci_low", "ci_high", "ref_mean", "relative_gap",
               "rel_ci_low", "rel_ci_high", "std_effect", "z", "p_value", "p_holm", "p_bh", "significant_holm", "n",
               "n_posts", "method", "converged", "warning"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="mixed-model gap tests on any long table (CSV/parquet) or on a run directory",
        description="Fit the audit's gap models to TABLE (a long CSV, TSV, JSONL or parquet file with one row per "
        "observation) and print every group's gap to the control level: absolute and relative gap with 95%% CI, "
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
    p.add_argument("--alpha", type=float, default=0.05, help="level for CIs and Holm significance (default 0.05)")
    p.add_argument("--json", action="store_true", help="print a JSON list of result objects")
    p.set_defaults(func=cmd_analyze)

    w = sub.add_parser(
        "power", help="posts and samples needed to detect a relative gap (simulation)",
        description="Estimate by simulation, with the audit's own mixed model, the power to detect a relative gap "
        "of --gap (e.g. 5%%) for one group against the control, for a grid of numbers of posts and samples, at the "
        "Bonferroni level alpha / family size (a conservative stand-in for Holm). Variance components come from "
        "a pilot run (RUN_DIR or --pilot) or are stated (--sd-post, --sd-resid, --ref-mean).",
    )
    w.add_argument("target", metavar="SPEC|RUN_DIR", help="audit spec (design) or a run directory (design + pilot)")
    w.add_argument("--gap", required=True, metavar="G", help="relative gap to detect: 5%% or 0.05")
    w.add_argument("--pilot", metavar="RUN_DIR", help="run directory whose scores give the variance components")
    w.add_argument("--outcome", metavar="NAME", help="pilot outcome (default: epitome.empathy or the first)")
    w.add_argument("--sd-post", type=float, help="SD of the post random intercept")
    w.add_argument("--sd-variant", type=float, default=None, help="SD of the variant intercept (default 0)")
    w.add_argument("--sd-resid", type=float, help="residual SD")
    w.add_argument("--ref-mean", type=float, help="mean outcome of the control")
    w.add_argument("--posts", type=int, nargs="+", metavar="N", help="numbers of posts to try (default: doubling)")
    w.add_argument("--samples", type=int, nargs="+", metavar="S", help="samples per variant to try (default: spec)")
    w.add_argument("--groups", type=int, metavar="G", help="number of groups (default: from the spec)")
    w.add_argument("--cue-types", type=int, metavar="C", help="number of cue types (default: from the spec)")
    w.add_argument("--family-size", type=int, metavar="M", help="number of tests in the family (default: from the spec)")
    w.add_argument("--power", type=float, default=0.8, help="target power (default 0.8)")
    w.add_argument("--alpha", type=float, default=None, help="family-wise level (default: the spec's, 0.05)")
    w.add_argument("--sims", type=int, default=200, help="simulated audits per design point (default 200)")
    w.add_argument("--seed", type=int, default=None, help="simulation seed (default: the spec's seed)")
    w.add_argument("--json", action="store_true", help="print the result as one JSON object")
    w.set_defaults(func=cmd_power)


# --------------------------------------------------------------------------- helpers


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(float(v)) else float(v)
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a long table (.csv, .tsv, .txt, .jsonl/.ndjson, .json, .parquet) with clear errors."""
    p = Path(path)
    if not p.exists():
        raise AuditError("table file not found", where=str(p), fix="check the path")
    suffix = "".join(p.suffixes[-2:]).lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True)
        elif suffix == ".json":
            df = pd.read_json(p)
        elif suffix in (".tsv", ".tab"):
            df = pd.read_csv(p, sep="\t")
        else:
            df = pd.read_csv(p, sep=None, engine="python") if suffix in (".txt",) else pd.read_csv(p)
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AuditError(f"cannot read the table: {first}", where=str(p),
                         fix="give a CSV (comma-separated, header row), TSV, JSONL or parquet file") from None
    if df.empty:
        raise AuditError("the table has no rows", where=str(p), fix="give a table with one row per observation")
    return df


def analyze_long_table(
    df: pd.DataFrame, outcomes: list[str], group: str, control: str, cluster: str, *, factors: list[str] = (),
    inner: str | None = None, by: str | None = None, method: str = "auto", reml: bool = True, alpha: float = 0.05,
    where: str = "the table", extra_references: list[str] = (),
) -> pd.DataFrame:
    """Gap tests of every outcome, Holm/BH-adjusted over the whole family. The library behind ``analyze``."""
    from ..stats import adjust_family, gap_test

    parts = []
    for out in outcomes:
        for ref in [control, *extra_references]:
            r = gap_test(df, out, group, str(ref), cluster, factors=list(factors), inner=inner, by=by, method=method,
                         reml=reml, alpha=alpha, where=where)
            if by:
                r = r.rename(columns={by: "by"})
            r.insert(0, "outcome", out)
            parts.append(r)
    res = adjust_family(pd.concat(parts, ignore_index=True), alpha=alpha)
    return res


def _fmt(x: Any, spec: str = ".3f") -> str:
    try:
        return "n/a" if x is None or not math.isfinite(float(x)) else format(float(x), spec)
    except (TypeError, ValueError):
        return "n/a"


def _print_results(res: pd.DataFrame, alpha: float) -> None:
    cols = ["outcome", "group"] + (["by"] if "by" in res.columns else []) + (
        ["reference"] if res["reference"].nunique() > 1 else [])
    head = [*cols, "estimate", f"{100 * (1 - alpha):g}% CI", "relative", "rel. CI", "std", "p", "p_holm", "p_bh", "n"]
    rows = []
    for r in res.to_dict("records"):
        rows.append([str(r[c]) for c in cols] + [
            _fmt(r["estimate"], "+.4f"), f"[{_fmt(r['ci_low'], '+.4f')}, {_fmt(r['ci_high'], '+.4f')}]",
            _fmt(100 * r["relative_gap"] if r["relative_gap"] is not None else None, "+.1f") + "%",
            f"[{_fmt(100 * r['rel_ci_low'], '+.1f')}, {_fmt(100 * r['rel_ci_high'], '+.1f')}]%",
            _fmt(r["std_effect"], "+.3f"), _fmt(r["p_value"], ".2g"), _fmt(r["p_holm"], ".2g") + (
                " *" if r.get("significant_holm") else ""), _fmt(r["p_bh"], ".2g"), str(r["n"]),
        ])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    methods = sorted(set(res["method"].astype(str)))
    print(f"\nfamily: {int(res['p_value'].notna().sum())} tests; Holm (FWER) and Benjamini-Hochberg (FDR) over all of "
          f"them; * = significant after Holm at {alpha:g}")
    print("method: " + "; ".join(methods))
    warns = sorted({w for w in res["warning"].dropna().astype(str) if w})
    for w in warns:
        print(f"warning: {w}")


# --------------------------------------------------------------------------- analyze


def cmd_analyze(args: argparse.Namespace) -> int:
    target = Path(args.table)
    if target.is_dir():
        return _analyze_run_dir(target, args)
    missing = [f"--{n}" for n in ("outcome", "group", "control", "cluster") if not getattr(args, n)]
    if missing:
        raise AuditError(f"missing option(s) {', '.join(missing)}", where="empathy-audit analyze",
                         fix="name the outcome, group, control level and cluster columns of the table")
    df = read_table(target)
    res = analyze_long_table(df, args.outcome, args.group, str(args.control), args.cluster, factors=args.factor,
                             inner=args.inner, by=args.by, method=args.method, reml=not args.ml, alpha=args.alpha,
                             where=str(target), extra_references=args.extra_reference)
    if args.json:
        cols = [c for c in JSON_FIELDS if c in res.columns]
        print(json.dumps([_clean(r) for r in res[cols].to_dict("records")], indent=1))
    else:
        _print_results(res, args.alpha)
    return 0


def _analyze_run_dir(run_dir: Path, args: argparse.Namespace) -> int:
    from ..stats import analyze_run
    from ..store import RunStore

    with RunStore(run_dir, create=False) as store:
        spec = store.latest_spec()
    result = analyze_run(spec, run_dir)
    res = result.results
    if args.json:
        print(json.dumps([_clean(r) for r in res.to_dict("records")], indent=1))
    else:
        shown = res[(res["style"] == "pooled") & (res["cue_type"] == "pooled")]
        _print_results(shown, spec.analysis.alpha)
        print(f"\nall {len(res)} rows (per style and cue type as well) stored in table 'results' of {run_dir}")
    return 0


# --------------------------------------------------------------------------- power


def parse_gap(text: str) -> float:
    t = str(text).strip()
    try:
        g = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise AuditError(f"cannot read the gap {text!r}", where="--gap", fix="write it as 5% or 0.05") from None
    if not 0 < abs(g) < 1:
        raise AuditError(f"the relative gap {text!r} is not between 0 and 100%", where="--gap",
                         fix="write it as 5% or 0.05")
    return abs(g)


def _spec_design(spec: Any) -> dict:
    """Posts, groups, cue types, samples, styles, models and the family size a spec implies."""
    design: dict[str, Any] = dict(samples=spec.samples, styles=len(spec.styles), models=len(spec.models),
                                  n_posts=None, n_groups=None, n_cue_types=len(spec.demographics.cue_types))
    notes = []
    try:
        from ..corpus import load_posts
        from ..counterfactual import resolve_design

        d = resolve_design(spec)
        design["n_groups"] = len(d.groups)
        design["n_cue_types"] = len(d.cue_types)
        design["n_posts"] = int(len(load_posts(spec)))
    except ImportError:  # the variants stage is not installed in this build
        notes.append("design read from the spec only (variants module unavailable)")
    except AuditError as exc:
        notes.append(f"could not resolve the design ({exc.message}); give --groups / --cue-types / --posts")
    n_out = None
    if spec.analysis.outcomes:
        n_out = len(spec.analysis.outcomes)
    else:
        try:
            from ..scorers import available_scorers

            known = {s["name"]: len(s["measures"]) for s in available_scorers()}
            n_out = sum(known.get(s, 1) for s in spec.scoring.scorers)
        except Exception:  # noqa: BLE001 - an estimate only
            n_out = len(spec.scoring.scorers)
    design["n_outcomes"] = n_out
    design["notes"] = notes
    return design


def cmd_power(args: argparse.Namespace) -> int:
    from ..stats.power import pilot_components, power_grid
    from ..stats.stage import analysis_table
    from ..store import STORE_FILENAME, RunStore

    gap = parse_gap(args.gap)
    target = Path(args.target)
    spec = None
    pilot_dir = Path(args.pilot) if args.pilot else None
    if target.is_dir() and (target / STORE_FILENAME).exists():
        with RunStore(target, create=False) as store:
            spec = store.latest_spec()
        pilot_dir = pilot_dir or target
    else:
        from ..spec import load_spec

        spec = load_spec(target)
        default_run = spec.run_dir()
        if pilot_dir is None and (default_run / STORE_FILENAME).exists():
            pilot_dir = default_run
    design = _spec_design(spec)
    alpha = args.alpha if args.alpha is not None else spec.analysis.alpha
    seed = args.seed if args.seed is not None else spec.seed
    n_groups = args.groups or design["n_groups"]
    n_cue = args.cue_types or design["n_cue_types"]
    if not n_groups:
        raise AuditError("the number of groups could not be read from the spec", where=str(target),
                         fix="give --groups")
    style_blocks = 1 + (design["styles"] if spec.analysis.by_style and design["styles"] > 1 else 0)
    refs = 1 + len(spec.analysis.extra_references)
    family = args.family_size or int(n_groups * (n_cue + 1) * style_blocks * design["models"] * refs
                                     * (design["n_outcomes"] or 1))

    stated = {k: getattr(args, k) for k in ("sd_post", "sd_resid", "ref_mean")}
    source = "stated"
    comps: dict[str, Any] = {}
    if all(v is not None for v in stated.values()):
        comps = dict(stated, sd_variant=args.sd_variant or 0.0)
    elif pilot_dir is not None:
        with RunStore(pilot_dir, create=False) as store:
            table = analysis_table(store)
        if table.empty:
            raise AuditError("the pilot run has no scores", where=str(pilot_dir),
                             fix="score the pilot run, or state --sd-post, --sd-resid and --ref-mean")
        outcomes = sorted(table["outcome"].unique())
        outcome = args.outcome or ("epitome.empathy" if "epitome.empathy" in outcomes else outcomes[0])
        pc = pilot_components(table, outcome)
        comps = {k: pc[k] for k in ("sd_post", "sd_variant", "sd_resid", "ref_mean")}
        for k, v in stated.items():
            if v is not None:
                comps[k] = v
        if args.sd_variant is not None:
            comps["sd_variant"] = args.sd_variant
        source = f"pilot {pilot_dir} (outcome {outcome}, {pc['n_posts']} posts)"
    else:
        raise AuditError(
            "no variance components: no pilot run and not all of --sd-post, --sd-resid, --ref-mean given",
            where=str(target),
            fix="run a small pilot and pass --pilot RUN_DIR, or state --sd-post, --sd-resid and --ref-mean "
                "(e.g. from a published audit)",
        )
    if comps["ref_mean"] == 0:
        raise AuditError("the control mean is 0, so a relative gap is undefined", where="--ref-mean",
                         fix="choose an outcome with a non-zero control mean")
    samples = args.samples or [design["samples"]]
    if args.posts:
        posts = sorted(set(args.posts))
    else:
        posts = [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120]
    kw = dict(n_groups=n_groups, n_cue_types=n_cue, sd_post=comps["sd_post"], sd_resid=comps["sd_resid"],
              sd_variant=comps.get("sd_variant", 0.0), ref_mean=comps["ref_mean"], rel_gap=gap, alpha=alpha,
              family_size=family, n_sims=args.sims, seed=seed)
    rows = []
    needed: dict[int, int | None] = {}
    for s in samples:
        needed[s] = None
        for n in posts:
            r = power_grid([n], [s], target=args.power, **kw).iloc[0].to_dict()
            rows.append(r)
            if r["power"] >= args.power and needed[s] is None:
                needed[s] = n
                if not args.posts:
                    break
    grid = pd.DataFrame(rows)
    # scale the best informative grid point by the normal approximation power = Phi(k sqrt(n) - z):
    # n_needed = n (z + z_power)^2 / (z + Phi^-1(power_n))^2
    from scipy import stats as _st

    zc = _st.norm.ppf(1 - alpha / (2 * family))
    estimated: dict[int, int | None] = {}
    for s in samples:
        g = grid[(grid["samples"] == s) & grid["power"].between(0.05, 0.98)]
        if g.empty:
            estimated[s] = None
            continue
        r = g.loc[(g["power"] - args.power).abs().idxmin()]
        k = (zc + _st.norm.ppf(r["power"]))
        estimated[s] = int(np.ceil(r["n_posts"] * ((zc + _st.norm.ppf(args.power)) / k) ** 2)) if k > 0 else None
    out = dict(gap=gap, target_power=args.power, alpha=alpha, family_size=family, components=comps,
               components_source=source, n_groups=n_groups, n_cue_types=n_cue, spec_posts=design["n_posts"],
               needed_posts={str(k): v for k, v in needed.items()},
               estimated_posts={str(k): v for k, v in estimated.items()}, notes=design["notes"],
               grid=grid[["n_posts", "samples", "n_rows", "power", "mc_se"]].to_dict("records"))
    if args.json:
        print(json.dumps(_clean(out), indent=1))
        return 0
    print(f"power to detect a {100 * gap:g}% gap for one group vs control "
          f"(level {alpha:g}/{family} = {alpha / family:.2g}, {args.sims} simulated audits per row)")
    print(f"variance components ({source}): sd_post={comps['sd_post']:.4g} sd_variant={comps.get('sd_variant', 0):.4g} "
          f"sd_resid={comps['sd_resid']:.4g} control mean={comps['ref_mean']:.4g}")
    print(f"design: {n_groups} groups x {n_cue} cue types (+ control) per post\n")
    print(f"{'posts':>6} {'samples':>7} {'rows':>8} {'power':>6} {'+-':>5}")
    for r in out["grid"]:
        print(f"{r['n_posts']:>6} {r['samples']:>7} {r['n_rows']:>8} {r['power']:>6.2f} {r['mc_se']:>5.2f}")
    for s, n in needed.items():
        msg = f"{n} posts suffice (first grid point at the target)" if n else f"more than {max(posts)} posts"
        est = estimated.get(s)
        print(f"\nwith {s} sample(s) per variant: {msg} for {100 * args.power:g}% power"
              + (f"; about {est} posts by the normal approximation" if est else "")
              + (f" (the spec has {design['n_posts']})" if design["n_posts"] else ""))
    for note in design["notes"]:
        print(f"note: {note}")
    return 0
