"""Plan an audit: how many posts and samples are needed to detect a given relative gap?

:func:`plan_power` is the library behind ``empathy-audit power`` (and ``audit.power``). It simulates
audits of a planned design with :func:`~audit.stats.power.power_grid` (the audit's own exact mixed
model, tested at the Bonferroni level ``alpha / m`` with ``m`` the family size, a conservative
stand-in for Holm) for a grid of numbers of posts and samples per variant, from variance components
that are stated or estimated from a pilot run (:func:`~audit.stats.power.pilot_components`).

Where the grid brackets the target power, the number of posts needed is also extrapolated from the
grid point closest to the target with the normal approximation ``power = Phi(k sqrt(n) - z)``::

    n_needed = n * ((z + z_power) / (z + Phi^-1(power_n)))^2,      z = z_{1 - alpha / (2 m)}

Before any run: variance components that are neither stated nor given by a pilot come from the
suite's planning defaults (``audit/data/power/defaults.yaml``: values from published audits, each
with its source, chosen to err towards more posts); :func:`planning_defaults` reads them. The
family size is the one the analysis will count (:func:`planned_family_size`), or, where the spec's
run has been analysed, the run's own (``analysis_meta.family_size``).

Reference for the design of power simulations for mixed models: Arnold, Hogan, Colford & Hubbard
(2011), Simulation methods to estimate design power, BMC Medical Research Methodology 11:94.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import AuditError
from .power import pilot_components, power_grid

__all__ = ["plan_power", "PowerPlan", "parse_gap", "spec_design", "DEFAULT_POSTS", "planning_defaults",
           "planned_family_size"]

# Numbers of posts tried when none are given: doubling until the target power is reached.
DEFAULT_POSTS = (10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120)


def parse_gap(gap: str | float) -> float:
    """A relative gap written as ``"5%"``, ``"0.05"`` or ``0.05`` -> 0.05 (its absolute value).

    >>> parse_gap("5%"), parse_gap(-0.1)
    (0.05, 0.1)
    """
    t = str(gap).strip()
    try:
        g = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise AuditError(f"cannot read the gap {gap!r}", where="gap", fix="write it as 5% or 0.05") from None
    if not 0 < abs(g) < 1:
        raise AuditError(f"the relative gap {gap!r} is not between 0 and 100%", where="gap",
                         fix="write it as 5% or 0.05")
    return abs(g)


def spec_design(spec: Any) -> dict[str, Any]:
    """Posts, groups, cue types, samples, styles, models and the number of outcomes a spec implies.

    Keys: ``samples, styles, models, n_posts, n_groups, n_cue_types, n_outcomes, notes`` (``n_posts``
    and ``n_groups`` are None, with a note, when the spec's design cannot be resolved).
    """
    from ..corpus import load_posts
    from ..counterfactual import resolve_design
    from ..scorers import available_scorers

    design: dict[str, Any] = dict(samples=spec.samples, styles=len(spec.styles), models=len(spec.models),
                                  n_posts=None, n_groups=None, n_cue_types=len(spec.demographics.cue_types))
    notes = []
    try:
        d = resolve_design(spec)
        design["n_groups"] = len(d.groups)
        design["n_cue_types"] = len(d.cue_types)
        design["n_posts"] = int(len(load_posts(spec)))
    except AuditError as exc:
        notes.append(f"could not resolve the design ({exc.message}); give --groups / --cue-types / --posts")
    if spec.analysis.outcomes:
        n_out = len(spec.analysis.outcomes)
    else:
        known = {s["name"]: len(s["measures"]) for s in available_scorers()}
        n_out = sum(known.get(s, 1) for s in spec.scoring.scorers)
    design["n_outcomes"] = n_out
    design["notes"] = notes
    return design


def planning_defaults(suite: str = "empathy", outcome: str | None = None) -> dict[str, Any]:
    """The suite's planning defaults (``audit/data/power/defaults.yaml``): ``outcome, ref_mean,
    sd_resid, sd_post, source``.

    >>> d = planning_defaults("empathy"); d["outcome"], d["ref_mean"] > 0, "Sharma" in d["source"]
    ('epitome.empathy', True, True)
    """
    import yaml

    path = Path(__file__).resolve().parents[1] / "data" / "power" / "defaults.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if suite not in data:
        raise AuditError(f"no planning defaults for suite '{suite}'", where=str(path),
                         fix="state the variance components with --assume sd_post=.. sd_resid=.. ref_mean=..")
    out = {**data[suite], "file": "audit/data/power/defaults.yaml"}
    per = (data.get(f"{suite}_measures") or {}).get(outcome or "")
    if per:  # an EPITOME mechanism: its own mean and SD from the same annotations
        out.update(outcome=outcome, **per)
    return out


def planned_family_size(spec: Any, design: dict[str, Any] | None = None) -> int:
    """The number of tests the analysis of ``spec`` will adjust together, counted as
    :func:`audit.stats.stage.analyze_scores` counts them: per outcome (every scorer measure, plus the
    derived "any level" share of each ordinal measure), model and style block, each group against
    the control and against its reference group (``analysis.reference_group``) and every extra
    reference, per cue type and pooled (with one cue type, only it), plus one max - min disparity
    per outcome and model. Tests that turn out not to be estimable (a constant outcome) drop out of
    the run's family, so the run's own count can be smaller; the run's is then the one to quote."""
    from ..counterfactual import resolve_design
    from ..scorers import available_scorers
    from .disparity import reference_map

    design = design or spec_design(spec)
    d = resolve_design(spec)
    names = [g.name for g in d.groups]
    per_block = len(names) * (1 + len(spec.analysis.extra_references))
    if spec.analysis.reference_group:
        axes = pd.DataFrame([dict(g.attrs) for g in d.groups], index=names)
        try:
            per_block += len(reference_map(names, spec.analysis.reference_group, axes))
        except AuditError:
            pass
    n_cue = len(d.cue_types)
    cue_factor = n_cue + 1 if n_cue > 1 else 1
    declared = {s["name"]: s.get("declared") or [{"name": m, "kind": "continuous"} for m in s["measures"]]
                for s in available_scorers()}
    outcomes = []
    for sc in spec.scoring.scorers:
        for m in declared.get(sc, [{"name": sc, "kind": "continuous"}]):
            outcomes.append(f"{sc}.{m['name']}")
            if m.get("kind") == "ordinal":
                outcomes.append(f"{sc}.{m['name']}>0")
    if spec.analysis.outcomes:
        wanted = set(spec.analysis.outcomes)
        outcomes = [o for o in outcomes if o in wanted or o.split(".")[-1] in wanted]
    styles = design["styles"]
    style_blocks = 1 + (styles if spec.analysis.by_style and styles > 1 else 0)
    n_out, models = max(len(outcomes), 1), design["models"]
    disparities = n_out * models if spec.analysis.reference == "control" else 0
    return int(n_out * models * style_blocks * per_block * cue_factor + disparities)


def _run_family(pilot_dir: Path | None) -> tuple[int | None, str | None]:
    """(family size, primary outcome) of an analysed run, from its ``analysis_meta`` and results."""
    from ..store import STORE_FILENAME, RunStore

    if pilot_dir is None or not (Path(pilot_dir) / STORE_FILENAME).exists():
        return None, None
    import json

    with RunStore(pilot_dir, create=False) as store:
        meta = store.table_df("analysis_meta")
    if meta is None or meta.empty:
        return None, None
    vals = dict(zip(meta["key"].astype(str), meta["value"]))
    try:
        m = int(json.loads(str(vals.get("family_size"))))
    except (TypeError, ValueError):
        m = None
    return m, None


@dataclass
class PowerPlan:
    """The result of :func:`plan_power`: the simulated grid and the posts needed per number of samples."""

    gap: float
    target_power: float
    alpha: float
    family_size: int
    components: dict[str, float]
    components_source: str
    n_groups: int
    n_cue_types: int
    spec_posts: int | None
    needed_posts: dict[int, int | None]
    estimated_posts: dict[int, int | None]
    grid: pd.DataFrame
    sims: int
    notes: list[str] = field(default_factory=list)
    outcome: str = ""
    family_source: str = "the spec"

    def as_dict(self) -> dict[str, Any]:
        """Plain data (what ``empathy-audit power --json`` prints)."""
        return dict(gap=self.gap, target_power=self.target_power, alpha=self.alpha, family_size=self.family_size,
                    family_source=self.family_source, outcome=self.outcome,
                    components=self.components, components_source=self.components_source, n_groups=self.n_groups,
                    n_cue_types=self.n_cue_types, spec_posts=self.spec_posts,
                    needed_posts={str(k): v for k, v in self.needed_posts.items()},
                    estimated_posts={str(k): v for k, v in self.estimated_posts.items()}, notes=self.notes,
                    grid=self.grid[["n_posts", "samples", "n_rows", "power", "mc_se"]].to_dict("records"))

    def lines(self) -> list[str]:
        """The plan in plain lines (what ``empathy-audit power`` prints)."""
        c, m = self.components, self.family_size
        out = [f"power to detect a {100 * self.gap:g}% gap for one group vs control "
               f"(level {self.alpha:g}/{m} = {self.alpha / m:.2g}, {self.sims} simulated audits per row)",
               f"primary outcome: {self.outcome or 'as stated'}; family of {m} tests ({self.family_source})",
               f"variance components ({self.components_source}): sd_post={c['sd_post']:.4g} "
               f"sd_variant={c.get('sd_variant', 0):.4g} sd_resid={c['sd_resid']:.4g} control mean={c['ref_mean']:.4g}",
               f"design: {self.n_groups} groups x {self.n_cue_types} cue types (+ control) per post", "",
               f"{'posts':>6} {'samples':>7} {'rows':>8} {'power':>6} {'+-':>5}"]
        for r in self.grid.to_dict("records"):
            out.append(f"{r['n_posts']:>6} {r['samples']:>7} {r['n_rows']:>8} {r['power']:>6.2f} {r['mc_se']:>5.2f}")
        for s, n in self.needed_posts.items():
            msg = (f"{n} posts suffice (first grid point at the target)" if n
                   else f"more than {int(self.grid['n_posts'].max())} posts")
            est = self.estimated_posts.get(s)
            out += ["", f"with {s} sample(s) per variant: {msg} for {100 * self.target_power:g}% power"
                    + (f"; about {est} posts by the normal approximation" if est else "")
                    + (f" (the spec has {self.spec_posts})" if self.spec_posts else "")]
        out += [f"note: {note}" for note in self.notes]
        return out


def _spec_and_pilot(spec: Any, pilot: str | Path | None) -> tuple[Any, Path | None, str]:
    """The spec (object, file or the run directory it was stored in) and the pilot run, if any."""
    from ..spec import load_spec
    from ..store import STORE_FILENAME, RunStore

    pilot_dir = Path(pilot) if pilot else None
    if spec is None or not isinstance(spec, (str, Path)):
        return spec, pilot_dir, "the spec"
    target = Path(spec)
    if target.is_dir() and (target / STORE_FILENAME).exists():
        with RunStore(target, create=False) as store:
            return store.latest_spec(), pilot_dir or target, str(target)
    loaded = load_spec(target)
    default_run = loaded.run_dir()
    if pilot_dir is None and (default_run / STORE_FILENAME).exists():
        pilot_dir = default_run
    return loaded, pilot_dir, str(target)


def _components(pilot_dir: Path | None, outcome: str | None, stated: dict[str, float | None],
                sd_variant: float | None, where: str, suite: str = "empathy") -> tuple[dict[str, float], str]:
    """Variance components: all stated; else from the pilot run; else the suite's planning defaults
    (:func:`planning_defaults`, with their sources); stated values override either."""
    from ..store import RunStore
    from .stage import analysis_table

    if all(v is not None for v in stated.values()):
        return dict(stated, sd_variant=sd_variant or 0.0), "stated"
    if pilot_dir is None:
        d = planning_defaults(suite, outcome)
        comps = {k: float(d[k]) for k in ("sd_post", "sd_resid", "ref_mean")}
        comps.update({k: v for k, v in stated.items() if v is not None})
        comps["sd_variant"] = sd_variant or 0.0
        given = [k for k, v in stated.items() if v is not None]
        return comps, (f"no pilot run: planning defaults for {d['outcome']} from {d['file']}"
                       + (f", with {', '.join(given)} stated" if given else "")
                       + f"; source: {' '.join(str(d['source']).split())}")
    with RunStore(pilot_dir, create=False) as store:
        table = analysis_table(store)
    if table.empty:
        raise AuditError("the pilot run has no scores", where=str(pilot_dir),
                         fix="score the pilot run, or state --assume sd_post=.. sd_resid=.. ref_mean=..")
    outcomes = sorted(table["outcome"].unique())
    outcome = outcome if outcome in outcomes else ("epitome.empathy" if "epitome.empathy" in outcomes else outcomes[0])
    pc = pilot_components(table, outcome)
    comps = {k: pc[k] for k in ("sd_post", "sd_variant", "sd_resid", "ref_mean")}
    comps.update({k: v for k, v in stated.items() if v is not None})
    if sd_variant is not None:
        comps["sd_variant"] = sd_variant
    return comps, f"pilot {pilot_dir} (outcome {outcome}, {pc['n_posts']} posts)"


def _primary(spec: Any, suite: str) -> str:
    """The outcome the plan is for, by the report's rule (``audit.report.headline.primary_outcome``):
    ``analysis.primary``, else the first of ``analysis.outcomes``, else the scored measure with the
    strongest declared validity evidence (never a composite), else the suite's default."""
    import math

    from ..scorers.measures import builtin_catalog

    a = getattr(spec, "analysis", None) if spec is not None else None
    for names in (getattr(a, "primary", None), getattr(a, "outcomes", None)):
        if names:
            n = str(names[0])
            return n if "." in n or suite != "empathy" else f"epitome.{n}"
    if spec is not None and suite == "empathy":
        cat = builtin_catalog()
        names = sorted((f"{sc}.{m}" for sc in spec.scoring.scorers for m in (
            list(cat._by_scorer.get(sc, {})))),
            key=cat.sort_key)

        def strength(o: str) -> float:
            m = cat.declared(o)
            return m.evidence.strength if m is not None and getattr(m, "evidence", None) is not None else -math.inf

        if names and math.isfinite(max(strength(o) for o in names)):
            return max(names, key=strength)
    return str(planning_defaults(suite)["outcome"]) if suite in ("empathy", "stigma", "appropriateness", "pcsa") \
        else "epitome.empathy"


def plan_power(
    spec: Any = None,
    *,
    gap: float | str,
    pilot: str | Path | None = None,
    outcome: str | None = None,
    sd_post: float | None = None,
    sd_variant: float | None = None,
    sd_resid: float | None = None,
    ref_mean: float | None = None,
    posts: Sequence[int] | None = None,
    samples: Sequence[int] | None = None,
    groups: int | None = None,
    cue_types: int | None = None,
    family_size: int | None = None,
    power: float = 0.8,
    alpha: float | None = None,
    sims: int = 200,
    seed: int | None = None,
) -> PowerPlan:
    """Simulated power to detect a relative ``gap`` for one group against the control, and the posts needed.

    Parameters
    ----------
    spec : the planned audit: a spec object, a spec file, or a run directory (its spec, and its scores
        as the pilot); None to state the design (``groups``, ``cue_types``) by hand.
    gap : relative gap to detect, ``0.05`` or ``"5%"``.
    pilot, outcome : run directory whose scores give the variance components, and its outcome
        (default ``epitome.empathy`` or the first).
    sd_post, sd_variant, sd_resid, ref_mean : stated variance components (SDs of the post intercept,
        the variant intercept and the residual) and the control mean; stated values override the pilot's.
    posts, samples : numbers of posts (default: doubling from 10 until the target is met) and of
        samples per variant (default: the spec's) to simulate.
    groups, cue_types, family_size : override the design read from the spec; the family size defaults
        to groups x (cue types + 1) x style blocks x models x references x outcomes.
    power, alpha, sims, seed : target power, family-wise level (default the spec's, else 0.05),
        simulated audits per grid point, simulation seed (default the spec's, else 0).

    The simulation and the normal-approximation extrapolation are stated in the module docstring.

    Example
    -------
    >>> plan = plan_power(gap=0.5, groups=2, cue_types=1, sd_post=0.3, sd_resid=0.5, ref_mean=1.0,
    ...                   posts=[10, 40], sims=20, seed=1)
    >>> plan.family_size, plan.grid["power"].tolist(), plan.needed_posts
    (4, [0.4, 0.95], {1: 40})
    """
    gap = parse_gap(gap)
    spec, pilot_dir, where = _spec_and_pilot(spec, pilot)
    suite = str(getattr(spec, "suite", "empathy") or "empathy") if spec is not None else "empathy"
    if spec is not None:
        design = spec_design(spec)
        style_blocks = 1 + (design["styles"] if spec.analysis.by_style and design["styles"] > 1 else 0)
        refs = 1 + len(spec.analysis.extra_references)
        alpha = alpha if alpha is not None else spec.analysis.alpha
        seed = seed if seed is not None else spec.seed
    else:
        design = dict(samples=1, models=1, n_posts=None, n_groups=None, n_cue_types=1, n_outcomes=1, notes=[])
        style_blocks, refs = 1, 1
        alpha = alpha if alpha is not None else 0.05
        seed = seed if seed is not None else 0
    n_groups = groups or design["n_groups"]
    n_cue = cue_types or design["n_cue_types"]
    if not n_groups:
        raise AuditError("the number of groups could not be read from the spec", where=where,
                         fix="give the number of groups (--groups)")
    # the run's own family only when the run IS the planned audit (a run directory, or the spec's own run);
    # a pilot given with --pilot/--from is a smaller design: the plan keeps the spec's family
    run_m, _ = _run_family(pilot_dir) if pilot is None else (None, None)
    if family_size:
        family, family_source = int(family_size), "stated"
    elif run_m:
        family, family_source = run_m, f"the analysed run {pilot_dir}"
    elif spec is not None and suite == "empathy" and not design["notes"]:
        family, family_source = planned_family_size(spec, design), "as the analysis will count it for this spec"
    else:
        family = int(n_groups * (n_cue + 1) * style_blocks * design["models"] * refs * (design["n_outcomes"] or 1))
        family_source = "groups x (cue types + 1) x style blocks x models x references x outcomes"
    primary = outcome or _primary(spec, suite)
    comps, source = _components(pilot_dir, primary, dict(sd_post=sd_post, sd_resid=sd_resid, ref_mean=ref_mean),
                                sd_variant, where, suite)
    if comps["ref_mean"] == 0:
        raise AuditError("the control mean is 0, so a relative gap is undefined", where="ref_mean",
                         fix="choose an outcome with a non-zero control mean")
    sample_list = list(samples or [design["samples"]])
    post_list = sorted(set(posts)) if posts else list(DEFAULT_POSTS)
    kw = dict(n_groups=n_groups, n_cue_types=n_cue, sd_post=comps["sd_post"], sd_resid=comps["sd_resid"],
              sd_variant=comps.get("sd_variant", 0.0), ref_mean=comps["ref_mean"], rel_gap=gap, alpha=alpha,
              family_size=family, n_sims=sims, seed=seed)
    rows = []
    needed: dict[int, int | None] = {}
    for s in sample_list:
        needed[s] = None
        for n in post_list:
            r = power_grid([n], [s], target=power, **kw).iloc[0].to_dict()
            rows.append(r)
            if r["power"] >= power and needed[s] is None:
                needed[s] = n
                if not posts:
                    break
    grid = pd.DataFrame(rows)
    zc = stats.norm.ppf(1 - alpha / (2 * family))
    estimated: dict[int, int | None] = {}
    for s in sample_list:
        g = grid[(grid["samples"] == s) & grid["power"].between(0.05, 0.98)]
        if g.empty:
            estimated[s] = None
            continue
        r = g.loc[(g["power"] - power).abs().idxmin()]
        k = zc + stats.norm.ppf(r["power"])
        estimated[s] = int(np.ceil(r["n_posts"] * ((zc + stats.norm.ppf(power)) / k) ** 2)) if k > 0 else None
    notes = list(design["notes"])
    if suite != "empathy":
        notes.append(f"the {suite} suite's own design (stimuli, conditions) is not simulated: this plan uses a "
                     "design of the same shape as an empathy audit (groups x cue types per post) with the "
                     f"suite's share as a linear-probability outcome; read it as a rough guide and pilot the suite")
    if sd_variant is not None or (pilot_dir is not None and comps.get("sd_variant", 0.0) > 0):
        # the variant and sampling variances are both known (stated, or a pilot with repeated samples)
        from .models_compare import samples_vs_posts

        adv = samples_vs_posts(comps.get("sd_variant", 0.0) ** 2, comps["sd_resid"] ** 2,
                               n_posts=design["n_posts"] or post_list[0], samples=sample_list[0])
        notes.append(f"samples versus posts: sampling the replies is {100 * adv['share_sampling']:.0f}% of a gap's "
                     f"variance; {adv['advice']} (audit.stats.models_compare.samples_vs_posts)")
    return PowerPlan(gap=gap, target_power=power, alpha=alpha, family_size=family, components=comps,
                     components_source=source, n_groups=n_groups, n_cue_types=n_cue,
                     spec_posts=design["n_posts"] if suite == "empathy" else None,
                     needed_posts=needed, estimated_posts=estimated, grid=grid, sims=sims, notes=notes,
                     outcome=primary, family_source=family_source)
