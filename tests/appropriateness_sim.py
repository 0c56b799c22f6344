"""Simulated judged tables (the layout of :mod:`audit.appropriateness.analysis`) for the suite's
statistical tests: the 10 published stimuli x contexts x (no-cue control + groups x cue wordings),
with a random intercept per stimulus and planted group effects on the log-odds scale."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.appropriateness.stimuli import load_stimuli


def simulate_judged(*, seed: int, effect: dict[str, float] | None = None, groups=("Black", "White"),
                    contexts: int = 5, wordings: int = 2, base: float = 0.8, sd_stimulus: float = 1.0,
                    model: str = "sim") -> pd.DataFrame:
    """One row per reply; ``appropriate ~ Bernoulli(expit(base + effect[group] + u_stimulus))``."""
    rng = np.random.default_rng(seed)
    effect = effect or {}
    st = load_stimuli()
    rows = []
    for s in st.to_dict("records"):
        u = rng.normal(0, sd_stimulus)
        for c in range(contexts):
            cells = [("control", "control")] + [(g, "explicit_statement") for g in groups for _ in range(wordings)]
            for g, ct in cells:
                p = 1 / (1 + np.exp(-(base + effect.get(g, 0.0) + u)))
                y = float(rng.random() < p)
                rows.append({"model_label": model, "stimulus": s["id"], "condition": s["condition"],
                             "context": "none" if c == 0 else "ours", "prefix": f"p{c}", "group": g, "cue_type": ct,
                             "judge_status": "judged", "appropriate": y})
    return pd.DataFrame(rows)


def true_marginal_gap(effect: float, *, base: float = 0.8, sd_stimulus: float = 1.0, n_mc: int = 400_000,
                      seed: int = 7) -> float:
    """The population-averaged gap GEE estimates: E[expit(eta + effect) - expit(eta)] over stimuli."""
    rng = np.random.default_rng(seed)
    eta = base + rng.normal(0, sd_stimulus, n_mc)
    ex = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    return float((ex(eta + effect) - ex(eta)).mean())
