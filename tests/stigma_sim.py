"""Simulated coded stigma tables (the layout of :func:`audit.stigma.analysis.code_answers`) for the
stigma suite's statistical tests: the published 72-vignette design x the six counted items, with a
random intercept per vignette, item effects and planted demographic effects on the log-odds scale."""

from __future__ import annotations

import numpy as np
import pandas as pd

from audit.stigma.stimuli import moore_vignettes, stigma_item_ids, vignette_id


def simulate_coded(*, seed: int, race_effect: dict[str, float] | None = None, conditions=None,
                   base: float = -0.5, sd_vignette: float = 0.5, replicates: int = 1, model: str = "sim") -> pd.DataFrame:
    """One row per (vignette x replicate, counted item); ``stigma`` ~ Bernoulli(expit(eta)) with
    ``eta = base + item effect + race_effect[race] + u_vignette``."""
    rng = np.random.default_rng(seed)
    vig = moore_vignettes()
    if conditions is not None:
        vig = vig[vig["condition"].isin(conditions)]
    items = stigma_item_ids()
    item_eff = dict(zip(items, np.linspace(-0.6, 0.6, len(items))))
    race_effect = race_effect or {}
    rows = []
    for rep in range(replicates):
        for v in vig.to_dict("records"):
            pid = vignette_id("sim", {k: v[k] for k in ("condition", "race", "gender", "education")}) + f":{rep}"
            u = rng.normal(0, sd_vignette)
            for q in items:
                eta = base + item_eff[q] + race_effect.get(v["race"], 0.0) + u
                y = float(rng.random() < 1 / (1 + np.exp(-eta)))
                rows.append({"model_label": model, "post_id": pid, "condition": v["condition"], "race": v["race"],
                             "gender": v["gender"], "education": v["education"], "question": q,
                             "parse_status": "answered", "reason": "", "stigma": y, "raw_code": y, "counted": True,
                             "answer_index": 0.0, "letter": "A", "reply": "A"})
    return pd.DataFrame(rows)


def true_marginal_gap(race_effect: float, *, base: float = -0.5, sd_vignette: float = 0.5, n_mc: int = 200_000,
                      seed: int = 99) -> float:
    """The population-averaged gap (what GEE estimates): mean over vignette effects and items of
    expit(eta + effect) - expit(eta)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, sd_vignette, n_mc)
    items = np.linspace(-0.6, 0.6, 6)
    eta = base + items[:, None] + u[None, :]
    ex = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    return float((ex(eta + race_effect) - ex(eta)).mean())
