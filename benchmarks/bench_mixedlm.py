"""Fit time of the standard random-intercept gap model: ours vs lme4 (and statsmodels MixedLM).

Model: ``value ~ group + (1 | post_id)`` with 9 groups (control + 8), REML, on synthetic audit
tables (:func:`audit.stats.simulate.simulate_audit_table`). Three timings per size, best of
``--repeats``:

* ``ours_fit``   - :func:`audit.stats.fastlmm.fit_nested_ri` on the design matrix (what lmer's time
  is comparable to: R's time is measured inside R around ``lmer()`` only);
* ``ours_test``  - :func:`audit.stats.gap_test` end to end from the DataFrame (validation, design
  matrix, fit, effect sizes and CIs);
* ``lme4``       - ``lme4::lmer`` inside R (mean of ``--repeats`` fits; start-up and CSV reading
  excluded);
* ``mixedlm``    - statsmodels ``MixedLM`` (only up to ``--mixedlm-max`` rows; it is slow).

Prints the ratios ours/lme4 at every size (the target: <= 2 at 40,000 rows) and the scaling of our
time with rows, and checks that the estimates agree with lme4's.

Run: ``python benchmarks/bench_mixedlm.py`` (``--sizes 10000 40000 160000 400000``); ``--nested`` times
the model with the variant variance component (3 samples per variant) instead.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from audit.stats import gap_test  # noqa: E402
from audit.stats.fastlmm import fit_nested_ri  # noqa: E402
from audit.stats.gaps import design_matrix  # noqa: E402
from audit.stats.lme4 import fit_lme4, lme4_available  # noqa: E402
from audit.stats.simulate import simulate_audit_table  # noqa: E402

GROUPS = [f"g{i}" for i in range(8)]


def table(rows: int, seed: int = 0, samples: int = 1):
    per_post = (1 + len(GROUPS) * 4) * samples  # control + 8 groups x 4 cue types = 33 variants per post
    n_posts = max(rows // per_post, 5)
    return simulate_audit_table(n_posts=n_posts, groups=GROUPS, cue_types=["a", "b", "c", "d"], samples=samples,
                                gaps={"g0": -0.05}, sd_variant=0.2 if samples > 1 else 0.0, seed=seed)


def best_of(f, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 160_000, 400_000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mixedlm-max", type=int, default=40_000)
    ap.add_argument("--nested", action="store_true",
                    help="the nested model (1|post_id) + (1|post_id:variant_id), 3 samples per variant")
    args = ap.parse_args(argv)
    inner_col = "variant_id" if args.nested else None
    formula = "value ~ group + (1 | post_id)" + (" + (1 | post_id:variant_id)" if args.nested else "")
    print(f"model: {formula}")
    ok, why = lme4_available()
    print(f"lme4: {why if ok else 'not available: ' + why}")
    print(f"{'rows':>8} {'posts':>6} {'ours_fit_s':>10} {'ours_test_s':>11} {'lme4_s':>8} {'mixedlm_s':>9} "
          f"{'fit/lme4':>8} {'test/lme4':>9} {'max|dfe|':>9} {'max|dse|':>9}")
    base = None
    for rows in args.sizes:
        t = table(rows, samples=3 if args.nested else 1)
        X, names, _ = design_matrix(t, "group", "control")
        y = t["value"].to_numpy()
        g = t["post_id"].to_numpy()
        v = t["variant_id"].to_numpy() if args.nested else None
        fit_s = best_of(lambda: fit_nested_ri(y, X, g, v), args.repeats)
        test_s = best_of(lambda: gap_test(t, outcome="value", inner=inner_col), args.repeats)
        f = fit_nested_ri(y, X, g, v)
        lme4_s = dfe = dse = float("nan")
        if ok:
            r = fit_lme4(t[["value", "group", "post_id", "variant_id"]], formula, factors=("group",),
                         reference=("group", "control"), repeats=args.repeats)
            lme4_s = r["elapsed_s"]
            dfe = float(np.max(np.abs(f.params - r["fixef"].to_numpy())))
            dse = float(np.max(np.abs(f.bse - r["se"].to_numpy())))
        mlm_s = float("nan")
        if rows <= args.mixedlm_max and not args.nested:
            from statsmodels.regression.mixed_linear_model import MixedLM

            mlm_s = best_of(lambda: MixedLM(y, X, groups=g).fit(reml=True), 1)
        print(f"{len(t):>8} {t.post_id.nunique():>6} {fit_s:>10.4f} {test_s:>11.4f} {lme4_s:>8.4f} {mlm_s:>9.3f} "
              f"{fit_s / lme4_s:>8.2f} {test_s / lme4_s:>9.2f} {dfe:>9.1e} {dse:>9.1e}")
        if base is None:
            base = (len(t), test_s)
        else:
            print(f"{'':>8} scaling: rows x{len(t) / base[0]:.1f} -> our end-to-end time x{test_s / base[1]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
