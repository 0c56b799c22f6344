"""empathy-audit: audit LLMs used for mental-health support for demographic bias.

The flow (see README): spec -> variants -> prompts -> replies -> scores -> models -> report.
Every stage reads from and writes to the run store, so any stage can be resumed or re-run.

The functions a notebook needs are attributes of this package, imported on first use (PEP 562), so
``import audit`` stays cheap:

======================  ==============================================================
``load_spec``           a spec file (or a built-in name such as ``demo``) -> a validated spec
``run``                 run or resume the whole audit of a spec
``build_variants``      the counterfactual variant table of a spec
``gap_test``            mixed-model gaps of every group to the control (one table)
``analyze_table``       every outcome's gaps, Holm/BH-adjusted over the family
``read_table``          read a long table (CSV, TSV, JSONL, parquet)
``adjust_family``       Holm and Benjamini-Hochberg adjusted p-values
``power``               posts and samples needed to detect a relative gap (simulation)
``score_run``           the score stage of a run directory (``workers=N``: in N processes)
``analyze_run``         the analysis stage of a run directory
``ppi_gap``             automated, prediction-powered (human-corrected) and human-only gaps
``get_scorer``          a scorer by name
``RunStore``            the SQLite run store of a run directory
``render``              the report of a run directory, from its store alone (``pdf=True``: and report.pdf)
``rating_packet``       a blinded, stratified human rating packet of a run's replies
``import_ratings``      a rater's filled CSV or Label Studio export into the run store
``rating_agreement``    raters' agreement and the scorer's error by group, from the store
``load_import_spec``    an import spec (YAML) -> a validated ImportSpec
``import_release``      import released replies (and their scores) into a run store
``reanalyze_stigma``    the stigma suite's parser, coder and analysis on a table of raw answers
``tidy_table``          a run as one long table: one row per (request, scorer, measure)
``compare_runs``        compare finished runs: closed, opened and unchanged gaps
``validate_judge``      agreement of an LLM judge's yes/no labels with human labels (kappa)
``AuditError``          the one error type for what a user can fix
======================  ==============================================================

``reanalyze_appropriateness``: the appropriateness suite's judge and analysis on a table of raw replies.
``pcsa_validation_table``: a PCSA run's judged conversations as a blinded labelling table (judge validation).

>>> import audit, pandas as pd
>>> audit.adjust_family(pd.DataFrame({"p_value": [0.01, 0.04]}))["p_holm"].tolist()
[0.02, 0.04]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "load_spec": ("audit.spec", "load_spec"),
    "run": ("audit.pipeline", "run"),
    "build_variants": ("audit.counterfactual", "build_variants"),
    "gap_test": ("audit.stats.gaps", "gap_test"),
    "analyze_table": ("audit.stats.longtable", "analyze_table"),
    "read_table": ("audit.stats.longtable", "read_table"),
    "adjust_family": ("audit.stats.corrections", "adjust_family"),
    "power": ("audit.stats.planner", "plan_power"),
    "score_run": ("audit.scoring", "score_run"),
    "analyze_run": ("audit.stats.stage", "analyze_run"),
    "ppi_gap": ("audit.stats.ppi", "ppi_gap"),
    "get_scorer": ("audit.scorers", "get_scorer"),
    "RunStore": ("audit.store", "RunStore"),
    "render": ("audit.report", "render"),
    "rating_packet": ("audit.ratings", "make_packet"),
    "import_ratings": ("audit.ratings", "import_ratings"),
    "rating_agreement": ("audit.ratings", "run_ratings_summary"),
    "load_import_spec": ("audit.importer", "load_import_spec"),
    "import_release": ("audit.importer", "import_release"),
    "reanalyze_stigma": ("audit.stigma.replicate", "reanalyze_stigma"),
    "tidy_table": ("audit.tidy", "tidy_table"),
    "compare_runs": ("audit.compare", "compare_runs"),
    "reanalyze_appropriateness": ("audit.appropriateness.replicate", "reanalyze_appropriateness"),
    "validate_judge": ("audit.appropriateness.validation", "validate_judge"),
    "pcsa_validation_table": ("audit.pcsa.validation", "validation_table"),
    "AuditError": ("audit.errors", "AuditError"),
    "batch_submit": ("audit.batch", "submit"),
    "batch_poll": ("audit.batch", "poll"),
    "batch_collect": ("audit.batch", "collect"),
    "batch_cancel": ("audit.batch", "cancel"),
    "batch_run_local": ("audit.batch", "run_local"),
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names are imported on first use
    from .batch import cancel as batch_cancel
    from .batch import collect as batch_collect
    from .batch import poll as batch_poll
    from .batch import run_local as batch_run_local
    from .batch import submit as batch_submit
    from .compare import compare_runs
    from .counterfactual import build_variants
    from .errors import AuditError
    from .importer import import_release, load_import_spec
    from .pipeline import run
    from .ratings import import_ratings
    from .ratings import make_packet as rating_packet
    from .ratings import run_ratings_summary as rating_agreement
    from .report import render
    from .scorers import get_scorer
    from .scoring import score_run
    from .spec import load_spec
    from .stats.corrections import adjust_family
    from .stats.gaps import gap_test
    from .stats.longtable import analyze_table, read_table
    from .stats.planner import plan_power as power
    from .stats.ppi import ppi_gap
    from .stats.stage import analyze_run
    from .store import RunStore
    from .tidy import tidy_table


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'audit' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
