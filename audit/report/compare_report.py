"""The comparison report of :func:`audit.compare.compare_runs`: ``compare.html``, ``compare.md``,
``compare.json`` and ``tables/compare_{gaps,differences,variability}.csv``.

Rendered with the run report's Jinja environments (autoescape and visible control characters in HTML,
Markdown escaping in Markdown) and CSS; its figures are the multi-version forest plot and the
version x group heat map of :mod:`audit.report.models_section`. Everything untrusted (run labels,
group names, scorer fields) is text.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .. import __version__
from ..jsonable import jsonable
from ..store import now_iso
from ..untrusted import csv_safe
from .models_section import _num, _p, fmt_ci, forest_by_level, gap_heatmap

__all__ = ["write_comparison_report", "comparison_context"]

RULE = ("closed: the reference run's gap is significant (Holm), the difference of gaps is significant (Holm) toward "
        "zero and the other run's 95% CI contains 0; opened: the reference run's 95% CI contains 0, the other run's "
        "gap is significant and the difference is significant away from zero; reversed: the difference is "
        "significant and both CIs exclude 0 with opposite signs; narrowed / widened: the difference is significant "
        "and the gap shrank / grew otherwise; unchanged: the difference of gaps is not significant. A gap that only "
        "lost significance is unchanged: absence of evidence is not evidence of absence.")


def comparison_context(result, figures: bool = True) -> dict[str, Any]:
    comp = result.comparability
    figs = []
    if figures:
        gaps = result.gaps.assign(run=result.gaps["run"].astype(str))
        for fn, fid, title in ((forest_by_level, "fig-compare-forest", "Gaps by run, with 95% confidence intervals"),
                               (gap_heatmap, "fig-compare-heatmap", "Run x group heat map of the gaps")):
            figs.append(fn(gaps, "run", fig_id=fid, title=title, what="run", levels=comp.versions))
    rows = []
    for r in result.differences.sort_values(["outcome", "group", "run"]).to_dict("records"):
        rows.append(dict(outcome=r["outcome"], group=r["group"], run=r["run"], status=r["status"],
                         gap_a=_num(r["gap_reference_run"]),
                         gap_a_ci=fmt_ci(r["gap_reference_run"] - 1.959964 * r["gap_reference_run_se"],
                                         r["gap_reference_run"] + 1.959964 * r["gap_reference_run_se"]),
                         gap_b=_num(r["gap"]), gap_b_ci=fmt_ci(r["gap_ci_low"], r["gap_ci_high"]),
                         diff=_num(r["estimate"]), diff_ci=fmt_ci(r["ci_low"], r["ci_high"]), p=_p(r["p_value"]),
                         p_holm=_p(r["p_holm"])))
    groups = {k: [r for r in rows if r["status"] == k] for k in ("closed", "opened", "reversed", "narrowed", "widened",
                                                              "unchanged")}
    counts = result.counts
    lead = (f"Compared with {result.reference_version}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
            + f" ({len(rows)} gaps, {len(comp.outcomes)} outcome{'s' if len(comp.outcomes) != 1 else ''}). "
            + comp.overlap_statement + ".")
    var_rows = []
    for r in result.variability.to_dict("records") if not result.variability.empty else []:
        var_rows.append(dict(outcome=r["outcome"], unit=r["model_label"], replicate=r.get("source") or r["replicate"],
                             var_variant=f"{r['var_variant']:.4f}", var_sample=f"{r['var_sample']:.4f}",
                             samples=r["samples"], share=f"{100 * r['share_sampling']:.0f}%", advice=r["advice"]))
    return dict(title="Empathy audit: runs compared (" + " vs ".join(comp.versions) + ")", version=__version__,
                generated_at=now_iso(), lead=lead, rule=RULE, comparability=comp, runs=result.runs,
                reference_version=result.reference_version, rows=rows, groups=groups, counts=counts, figures=figs,
                variability=var_rows, alpha=result.alpha,
                formula="value ~ C(group, Treatment(control)) * C(run, Treatment(" + result.reference_version
                        + ")) [+ C(style)] + (1 | post_id) [+ (1 | post_id:variant_id:run)], REML")


def comparison_json(result, ctx: dict[str, Any]) -> dict[str, Any]:
    comp = result.comparability
    return jsonable(dict(
        tool="empathy-audit", version=__version__, generated_at=ctx["generated_at"], kind="comparison",
        reference_run=result.reference_version, versions=comp.versions, runs=result.runs,
        comparability=dict(variants=comp.variants, shared_variants=comp.shared_variants,
                           overlap=comp.overlap_statement, outcomes=comp.outcomes, styles=comp.styles,
                           differences=comp.differences, warnings=comp.warnings, notes=comp.notes,
                           same_model_and_spec=comp.same_model_and_spec),
        rule=RULE, formula=ctx["formula"], counts=ctx["counts"], alpha=result.alpha,
        differences=result.differences.to_dict("records"), gaps=result.gaps.to_dict("records"),
        variability=result.variability.to_dict("records") if not result.variability.empty else [],
    ))


def write_comparison_report(result, out_dir: Path, figures: bool = True) -> dict[str, Path]:
    from .build import TEMPLATES, _environment, _write

    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = comparison_context(result, figures=figures)
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    html = _environment(markdown=False).get_template("compare.html.j2").render(css=css, **ctx)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    for f in ctx["figures"]:
        if f.data_uri:
            (fig_dir / f"{f.id.removeprefix('fig-')}.png").write_bytes(base64.b64decode(f.data_uri.split(",", 1)[1]))
    md = _environment(markdown=True).get_template("compare.md.j2").render(**ctx)
    tdir = out_dir / "tables"
    tdir.mkdir(exist_ok=True)
    for name, df in (("compare_gaps", result.gaps), ("compare_differences", result.differences),
                     ("compare_variability", result.variability)):
        if isinstance(df, pd.DataFrame) and not df.empty:
            csv_safe(df).to_csv(tdir / f"{name}.csv", index=False)
    paths = {"markdown": _write(out_dir / "compare.md", md),
             "json": _write(out_dir / "compare.json", json.dumps(comparison_json(result, ctx), indent=1,
                                                                 ensure_ascii=False, allow_nan=False)),
             "tables": tdir, "figures": fig_dir}
    paths["html"] = _write(out_dir / "compare.html", html)  # last: its presence means the report is complete
    return paths
