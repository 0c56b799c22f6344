"""The empathy suite: do replies to posts that signal a demographic group carry less empathy?

The design of Gabriel et al., "Can AI Relate" (Findings of EMNLP 2024): neutral support posts get
explicit or implicit demographic cues (``variants``); the audited model replies to each variant in
each prompt style (``generate``); empathy scorers score every reply in the context of its post
(``score``); mixed-effects models test each group against the control (``analyze``); the report
states what was found (``report``).
"""

from __future__ import annotations

from ..counterfactual import VariantsStage
from ..generate import RepliesStage
from ..report import ReportStage
from ..scoring import ScoreStage
from ..stats.stage import AnalyzeStage
from ..stages import Suite

EMPATHY = Suite(
    name="empathy",
    description="counterfactual demographic cues in support posts -> replies -> empathy scores -> mixed models",
    stages=(VariantsStage(), RepliesStage(), ScoreStage(), AnalyzeStage(), ReportStage()),
)

__all__ = ["EMPATHY"]
