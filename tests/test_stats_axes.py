"""Pooled axis contrasts (audit/stats/axes.py, issue 27 C6): the contrast is the mean of the within-level
differences of the cell gaps of the one fit, recovers a planted axis effect, and covers the truth at about
the nominal rate; for 0/1 outcomes on the probability scale of the GEE gaps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.stats import gap_test
from audit.stats.axes import axis_contrasts, axis_references

CELLS = ["control", "Black man", "Black woman", "White man", "White woman"]
AXES = pd.DataFrame({"race": ["Black", "Black", "White", "White"], "gender": ["man", "woman"] * 2}, index=CELLS[1:])


def _table(seed: int, n_posts: int = 30, effect: float = -0.5, binary: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = pd.DataFrame([(p, g) for p in range(n_posts) for g in CELLS for _ in range(2)], columns=["post_id", "group"])
    lin = rng.normal(0, 1, n_posts)[d.post_id] + effect * d.group.str.startswith("Black") + 0.3 * (d.group == "White man")
    if binary:
        d["value"] = (rng.random(len(d)) < 1 / (1 + np.exp(-lin))).astype(float)
    else:
        d["value"] = lin + rng.normal(0, 0.5, len(d))
    return d


@pytest.mark.parametrize("binary", [False, True])
def test_the_pooled_contrast_is_the_mean_of_the_cell_gap_differences_of_one_fit(binary):
    d = _table(1, binary=binary)
    r = axis_contrasts(d, outcome="value", axes_of=AXES, reference_group="White man").set_index("axis")
    gaps = gap_test(d, outcome="value", group="group", control="control", cluster="post_id").set_index("group")
    g = gaps["estimate"]
    assert r.loc["race", "estimate"] == pytest.approx(
        ((g["Black man"] - g["White man"]) + (g["Black woman"] - g["White woman"])) / 2, abs=1e-9)
    assert r.loc["gender", "estimate"] == pytest.approx(
        ((g["Black woman"] - g["Black man"]) + (g["White woman"] - g["White man"])) / 2, abs=1e-9)
    assert (r["reference"].to_dict(), r["n_pairs"].tolist()) == ({"gender": "man", "race": "White"}, [2, 2])
    # a contrast of two cells' gaps has a smaller SE than the sum of their SEs (shared control, same posts)
    assert 0 < r.loc["race", "se"] < gaps.loc["Black man", "se"] + gaps.loc["White man", "se"]


def test_the_pooled_race_contrast_covers_the_planted_effect_at_about_the_nominal_rate():
    """Truth: Black - White pooled over gender = -0.5 - 0.3 / 2 = -0.65 (White man is 0.3 higher)."""
    cover = 0
    for seed in range(60):
        r = axis_contrasts(_table(seed, n_posts=20), outcome="value", axes_of=AXES,
                           reference_group="White").set_index("axis")
        cover += r.loc["race", "ci_low"] <= -0.65 <= r.loc["race", "ci_high"]
    assert 51 <= cover <= 60  # 95% nominal: 57 expected; 51 is more than 2.5 binomial SDs below


def test_references_come_from_the_reference_group_else_the_first_level():
    assert axis_references(AXES, "White woman") == {"race": "White", "gender": "woman"}
    assert axis_references(AXES, "White") == {"race": "White", "gender": "man"}
    assert axis_references(AXES, None) == {"race": "Black", "gender": "man"}
    assert axis_contrasts(_table(0), outcome="value", axes_of=AXES[["race"]]).empty  # one axis: nothing to pool
