"""Partial pooling of intersectional cell estimates (race x gender, ...).

Small cells produce noisy gap estimates, and the most extreme raw estimates are the noisiest.
:func:`partial_pool` shrinks each cell's gap towards the precision-weighted mean of all cells by
empirical Bayes (normal-normal hierarchical model, Morris 1983; as in random-effects meta-analysis)::

    est_c ~ N(theta_c, se_c^2),   theta_c ~ N(mu, tau^2)
    tau^2 by REML:  maximise  -1/2 sum log(se_c^2 + tau^2) - 1/2 log sum w_c - 1/2 sum w_c (est_c - mu)^2
    w_c = 1 / (se_c^2 + tau^2),  mu = sum w_c est_c / sum w_c
    B_c = se_c^2 / (se_c^2 + tau^2)                        (shrinkage factor, 0 = none, 1 = full)
    pooled_c = mu + (1 - B_c) (est_c - mu)
    var_c = (1 - B_c) se_c^2 + B_c^2 / sum w_c             (Morris: adds the uncertainty of mu)

A cell with a large standard error is pulled further towards the common mean; with ``tau = 0``
every cell gets the common mean. Reference: Morris, C. N. (1983), Parametric empirical Bayes
inference, JASA 78(381); Raudenbush & Bryk (2002), Hierarchical Linear Models, ch. 4.

Example
-------
>>> import pandas as pd
>>> from audit.stats import partial_pool
>>> cells = pd.DataFrame({"estimate": [-0.2, 0.0, 0.1, -0.9], "se": [0.1, 0.1, 0.1, 0.6]})
>>> out = partial_pool(cells)
>>> bool(abs(out["pooled_estimate"].iloc[3]) < 0.9)
True
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

__all__ = ["partial_pool"]


def _reml_tau2(est: np.ndarray, se2: np.ndarray) -> float:
    def nll(tau2: float) -> float:
        w = 1.0 / (se2 + tau2)
        mu = np.sum(w * est) / np.sum(w)
        return 0.5 * (np.sum(np.log(se2 + tau2)) + np.log(np.sum(w)) + np.sum(w * (est - mu) ** 2))

    hi = max(float(np.var(est)) * 10, float(np.max(se2)) * 10, 1e-12)
    res = optimize.minimize_scalar(nll, bounds=(0.0, hi), method="bounded", options={"xatol": 1e-14 + hi * 1e-10})
    tau2 = float(res.x)
    return 0.0 if nll(0.0) <= nll(tau2) else tau2


def partial_pool(cells: pd.DataFrame, estimate: str = "estimate", se: str = "se", alpha: float = 0.05) -> pd.DataFrame:
    """Shrink cell estimates towards their common mean (empirical Bayes, REML ``tau``).

    Returns a copy of ``cells`` with ``raw_estimate, raw_se, pooled_estimate, pooled_se,
    pooled_ci_low, pooled_ci_high, shrinkage (B_c), tau, pooled_mean``. Cells with a missing
    estimate or standard error are passed through with missing pooled values.
    """
    out = cells.copy()
    e = pd.to_numeric(out[estimate], errors="coerce").to_numpy(dtype=float)
    s = pd.to_numeric(out[se], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(e) & np.isfinite(s) & (s > 0)
    for c in ("pooled_estimate", "pooled_se", "pooled_ci_low", "pooled_ci_high", "shrinkage", "tau", "pooled_mean"):
        out[c] = np.nan
    out["raw_estimate"] = e
    out["raw_se"] = s
    if ok.sum() < 2:
        return out
    est, se2 = e[ok], s[ok] ** 2
    tau2 = _reml_tau2(est, se2)
    w = 1.0 / (se2 + tau2)
    mu = float(np.sum(w * est) / np.sum(w))
    B = se2 / (se2 + tau2) if tau2 > 0 else np.ones_like(se2)
    pooled = mu + (1 - B) * (est - mu)
    var = (1 - B) * se2 + B ** 2 / np.sum(w)
    z = stats.norm.ppf(1 - alpha / 2)
    out.loc[ok, "pooled_estimate"] = pooled
    out.loc[ok, "pooled_se"] = np.sqrt(var)
    out.loc[ok, "pooled_ci_low"] = pooled - z * np.sqrt(var)
    out.loc[ok, "pooled_ci_high"] = pooled + z * np.sqrt(var)
    out.loc[ok, "shrinkage"] = B
    out.loc[ok, "tau"] = np.sqrt(tau2)
    out.loc[ok, "pooled_mean"] = mu
    return out
