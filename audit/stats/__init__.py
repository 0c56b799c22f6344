"""Statistics: mixed-effects gap tests, corrections, effect sizes, paired checks, pooling, power.

One function per procedure, pandas in and pandas out (see ``docs/statistics.md``):

* :func:`gap_test` - gaps of each group to the reference in a mixed model (exact fast REML path;
  GEE logistic for 0/1 outcomes), with absolute, relative and standardised effect sizes.
* :func:`adjust_family` - Holm and Benjamini-Hochberg over the whole family of tests.
* :func:`read_table`, :func:`analyze_table` - any long table: every outcome's gaps, adjusted over
  the family (the one family loop :func:`audit.stats.family.fit_family`, shared with the run).
* :func:`paired_contrasts` - within-post paired t-tests (pingouin) as a robustness check.
* :func:`partial_pool` - empirical-Bayes partial pooling of intersectional cells.
* :func:`detectable_gap`, :func:`simulate_power`, :func:`power_grid` - power;
  :func:`plan_power` - the posts and samples a planned audit needs (``empathy-audit power``).
* :func:`fit_nested_ri` - the exact random-intercept LMM on sufficient statistics.
* :func:`ppi_gap`, :func:`ppi_table` - gaps corrected with human ratings (prediction-powered
  inference, PPI++, clustered jackknife CIs); :func:`ratings_needed` - ratings for a CI width.
* :func:`analysis_table`, :func:`analyze_scores`, :func:`analyze_run` - the pipeline stage.
"""

from .corrections import adjust_family
from .fastlmm import NestedRIFit, fit_nested_ri
from .family import Block, fit_family
from .gaps import gap_test, validate_table
from .longtable import analyze_table, read_table
from .paired import paired_contrasts
from .planner import PowerPlan, plan_power
from .pooling import partial_pool
from .power import detectable_gap, pilot_components, power_grid, simulate_power
from .ppi import ppi_gap, ppi_table, ratings_needed
from .simulate import permute_within, simulate_audit_table
from .stage import AnalysisResult, analysis_table, analyze_run, analyze_scores

__all__ = [
    "adjust_family", "fit_nested_ri", "NestedRIFit", "gap_test", "validate_table", "paired_contrasts",
    "partial_pool", "detectable_gap", "simulate_power", "power_grid", "analysis_table", "analyze_run",
    "analyze_scores", "analyze_table", "read_table", "Block", "fit_family", "AnalysisResult", "pilot_components",
    "simulate_audit_table", "permute_within", "plan_power", "PowerPlan", "ppi_gap", "ppi_table", "ratings_needed",
]
