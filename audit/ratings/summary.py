"""Everything the human ratings say about a run, as tables and sentences: what ``empathy-audit ratings
agreement`` prints, results.json's ``human_ratings`` key and the report's section "Does the scorer
treat groups alike?" show.

:func:`ratings_summary` takes the stored rating rows (:meth:`audit.store.RunStore.ratings_df`), the
run's long scores and its replies (current design) and returns a :class:`RatingsSummary`, or None
when no rating of a current reply is stored. :func:`run_ratings_summary` does the same from a run
directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..jsonable import jsonable
from .agreement import inter_rater_agreement, pairwise_kappa
from .validity import FORMULA, differential_error_test, scorer_validity, validity_frame

HOW_TO = ("No human ratings were imported for this run, so whether the scorer measures empathy equally well for "
          "every group is not known. To find out: empathy-audit ratings packet RUN_DIR --n 200 --raters 3 --out "
          "PACKET_DIR, have the raters fill in their packets, then empathy-audit ratings import RUN_DIR FILE --rater "
          "ID for each file (see docs/ratings.md).")
MEANING = ("Why it matters: a scorer that scores replies to one group lower than people do creates a gap that is "
           "not in the replies; a gap of the same size and direction as the scorer's group difference in error "
           "may be the scorer's, not the model's.")


@dataclass
class RatingsSummary:
    """Counts, agreement between raters, scorer validity by group and the test of differential error."""

    n_ratings: int
    n_replies: int
    raters: list[str]
    n_harmful: int
    inter_rater: pd.DataFrame
    pairwise: pd.DataFrame
    validity: pd.DataFrame
    group_test: pd.DataFrame
    sentences: list[str] = field(default_factory=list)
    formula: str = FORMULA

    def as_json(self) -> dict[str, Any]:
        """The ``human_ratings`` key of results.json."""
        return jsonable(dict(n_ratings=self.n_ratings, n_replies=self.n_replies, raters=self.raters,
                             n_harmful=self.n_harmful, inter_rater=self.inter_rater.to_dict("records"),
                             pairwise=self.pairwise.to_dict("records"), validity=self.validity.to_dict("records"),
                             group_test=self.group_test.to_dict("records"), sentences=self.sentences,
                             formula=self.formula))


def ratings_summary(ratings: pd.DataFrame | None, scores: pd.DataFrame, replies: pd.DataFrame, *,
                    alpha: float = 0.05, n_boot: int = 500, n_perm: int = 1999) -> RatingsSummary | None:
    """The summary (module docstring) of ``ratings`` (rows of table ``ratings``) on the replies in
    ``replies``; None when none of them is rated."""
    if ratings is None or ratings.empty or replies is None or replies.empty:
        return None
    current = set(replies["request_key"])
    rows = ratings[ratings["request_key"].isin(current)]
    levels = rows[rows["value"].notna()][["request_key", "rater", "measure", "value"]].astype({"value": float})
    if rows.empty:
        return None
    frame = validity_frame(scores, levels, replies)
    validity = scorer_validity(frame, levels)
    test = differential_error_test(frame, alpha=alpha, n_perm=n_perm)
    harmful = rows[rows["harmful"] == 1]["request_key"].nunique()
    s = RatingsSummary(n_ratings=len(levels), n_replies=int(rows["request_key"].nunique()),
                       raters=sorted(rows["rater"].unique()), n_harmful=int(harmful),
                       inter_rater=inter_rater_agreement(levels, n_boot=n_boot), pairwise=pairwise_kappa(levels),
                       validity=validity, group_test=test)
    s.sentences = _sentences(s, alpha)
    return s


def _sentences(s: RatingsSummary, alpha: float) -> list[str]:
    out = [f"{s.n_replies} replies carry {s.n_ratings} human ratings from {len(s.raters)} rater"
           f"{'s' if len(s.raters) != 1 else ''}; {s.n_harmful} repl{'ies were' if s.n_harmful != 1 else 'y was'} "
           "flagged harmful by at least one rater."]
    if s.group_test.empty:
        out.append("No scorer measure with a human counterpart (ER, IP, EX, empathy) was scored on the rated replies, "
                   "so no scorer could be checked.")
        return out
    tested = s.group_test[s.group_test["p_value"].notna()]
    flagged = tested[tested["differs"] == True]  # noqa: E712 - object column with None
    if tested.empty:
        reasons = sorted({str(r) for r in s.group_test["reason"].dropna() if str(r)}) \
            if "reason" in s.group_test else []
        out.append("Whether the scorer's error differs by group could not be tested: "
                   + ("; ".join(reasons) if reasons else "no scorer measure had rated replies of two groups") + ".")
    elif flagged.empty:
        worst = tested.sort_values("p_value").iloc[0]
        out.append(f"The scorer's error did not differ detectably between groups for any of the {len(tested)} "
                   f"scorer measures tested (smallest Holm-adjusted p = {_fmt(worst['p_holm'], 3)}, "
                   f"{worst['scorer']}.{worst['measure']}); with {int(worst['n_items'])} rated replies a small "
                   "difference can still go unseen.")
    else:
        for r in flagged.itertuples():
            out.append(f"The error of {r.scorer}.{r.measure} differs by group ({r.method}, "
                       f"Holm-adjusted p = {_fmt(r.p_holm, 3)}): against the human consensus it scores replies to "
                       f"{r.lowest_group} lowest ({_fmt(r.lowest_bias, 2, signed=True)} levels) and to "
                       f"{r.highest_group} highest ({_fmt(r.highest_bias, 2, signed=True)} levels), so its gap "
                       f"between these groups is off by about {_fmt(r.highest_bias - r.lowest_bias, 2)} levels.")
    out.append(MEANING)
    return out


def _fmt(x: Any, digits: int, signed: bool = False) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def run_ratings_summary(run_dir: str | Path, **kwargs: Any) -> RatingsSummary | None:
    """:func:`ratings_summary` of the run in ``run_dir`` (its current design)."""
    from ..store import RunStore

    with RunStore(run_dir, create=False) as store:
        return ratings_summary(store.ratings_df(), store.scores_df(), store.replies_df("reply", include_failed=False),
                               **kwargs)


def section_context(s: RatingsSummary | None) -> dict[str, Any]:
    """What the report's section "Does the scorer treat groups alike?" shows: formatted rows (text)."""
    if s is None:
        return dict(present=False, how_to=HOW_TO)
    inter = [dict(measure=r.measure, raters=str(r.n_raters), n_items=str(r.n_items_multi), alpha=_fmt(r.alpha, 2),
                  alpha_ci=f"{_fmt(r.alpha_ci_low, 2)} to {_fmt(r.alpha_ci_high, 2)}",
                  kappa=_fmt(r.mean_weighted_kappa, 2), exact=_pct(r.mean_exact))
             for r in s.inter_rater.itertuples()]
    overall = [dict(scorer=r.scorer, measure=r.measure, n_items=str(r.n_items), accuracy=_pct(r.accuracy),
                    kappa=_fmt(r.weighted_kappa, 2), bias=_fmt(r.bias, 2, signed=True),
                    bias_ci=f"{_fmt(r.bias_ci_low, 2, True)} to {_fmt(r.bias_ci_high, 2, True)}")
               for r in s.validity[s.validity["group"] == "all"].itertuples()]
    by_group = [dict(scorer=r.scorer, measure=r.measure, group=r.group, n_items=str(r.n_items), posts=str(r.n_posts),
                     human=_fmt(r.human_mean, 2), scorer_mean=_fmt(r.scorer_mean, 2), bias=_fmt(r.bias, 2, True),
                     bias_ci=f"{_fmt(r.bias_ci_low, 2, True)} to {_fmt(r.bias_ci_high, 2, True)}",
                     accuracy=_pct(r.accuracy), kappa=_fmt(r.weighted_kappa, 2))
                for r in s.validity[s.validity["group"] != "all"].itertuples()]
    tests = [dict(scorer=r.scorer, measure=r.measure, n_items=str(r.n_items), posts=str(r.n_posts),
                  groups=str(r.n_groups), statistic=_fmt(r.statistic, 3), p=_fmt(r.p_value, 4), p_holm=_fmt(r.p_holm, 4),
                  differs="yes" if r.differs is True else "no" if r.differs is False else f"n/a: {r.reason}"
                  if isinstance(r.reason, str) and r.reason else "n/a",
                  method=str(r.method))
             for r in s.group_test.itertuples()]
    return dict(present=True, sentences=s.sentences, inter=inter, overall=overall, by_group=by_group, tests=tests,
                formula=s.formula, raters=s.raters, n_replies=s.n_replies, n_ratings=s.n_ratings)


def report_section(ratings: pd.DataFrame | None, scores: pd.DataFrame, replies: pd.DataFrame, *,
                   alpha: float = 0.05) -> dict[str, Any]:
    """The report's section (:func:`section_context`) plus ``json``: results.json's ``human_ratings``
    (None, and the key left out of results.json, when no ratings are stored)."""
    s = ratings_summary(ratings, scores, replies, alpha=alpha)
    ctx = section_context(s)
    ctx["json"] = s.as_json() if s is not None else None
    return ctx


def _pct(x: Any) -> str:
    v = _fmt(x, 3)
    return v if v == "n/a" else f"{100 * float(x):.1f}%"


def summary_text(s: RatingsSummary | None) -> str:
    """Plain-text tables for the terminal (``empathy-audit ratings agreement``)."""
    if s is None:
        return HOW_TO
    ctx = section_context(s)
    parts = ["\n".join(s.sentences), "", "Agreement between raters (ordinal Krippendorff's alpha, 95% bootstrap CI; "
             "mean pairwise quadratic-weighted kappa and exact agreement):",
             _table(ctx["inter"], ["measure", "raters", "n_items", "alpha", "alpha_ci", "kappa", "exact"]), "",
             "Scorer against the human consensus (bias = scorer - human, levels, 95% CI clustered by post):",
             _table(ctx["overall"], ["scorer", "measure", "n_items", "accuracy", "kappa", "bias", "bias_ci"]), "",
             "By group:",
             _table(ctx["by_group"], ["scorer", "measure", "group", "n_items", "posts", "human", "scorer_mean", "bias",
                                      "bias_ci", "accuracy", "kappa"]), "",
             f"Does the error differ by group? ({s.formula}; Holm over the rows)",
             _table(ctx["tests"], ["scorer", "measure", "method", "n_items", "posts", "groups", "statistic", "p",
                                   "p_holm", "differs"])]
    return "\n".join(parts)


def _table(rows: list[dict[str, str]], cols: list[str]) -> str:
    if not rows:
        return "  (none)"
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda vals: "  " + "  ".join(str(v).ljust(widths[c]) for c, v in zip(cols, vals))  # noqa: E731
    return "\n".join([line(cols)] + [line([r[c] for c in cols]) for r in rows])


__all__ = ["HOW_TO", "RatingsSummary", "ratings_summary", "report_section", "run_ratings_summary", "section_context", "summary_text"]
