"""Degenerate outcomes in one place: is an outcome (or one arm of a comparison) constant?

Every suite's gap tests (:func:`audit.stats.gap_test` and through it the stigma, appropriateness and
PCSA suites), the paired contrasts, ``compare`` (:func:`audit.stats.models_compare.gap_interaction`)
and the sampling-variability table judge constancy with :func:`is_constant`, so an outcome is
constant for all of them or for none.

The rule
--------
Values ``y_1..y_n`` (missing and non-finite values left out) are **constant** when their range is
within a tolerance relative to their scale::

    max(y) - min(y) <= RTOL * max(|y|)        (RTOL = 1e-9)

``np.nanstd(y) == 0`` is not this rule: an outcome that is one value a double cannot hold exactly
(every reply scored 1/3 or 2/3, a mean of three ratings) comes out of arithmetic as two or more
neighbouring doubles, with a standard deviation of ~1e-17 instead of 0. A model fitted to it has a
residual variance of ~1e-33 and returns standard errors of ~1e-25 and arbitrary p-values (seen: p = 1
in one run, p = 0 and "sig. 0.0% different" in another). A double carries ~16 significant digits
(machine epsilon 2.2e-16); the rounding of a sum or mean of ``n`` values is at most ~``n * eps`` of
its scale, so 1e-9 leaves room for sums of millions of values and stays far below any difference a
score can mean (scores have at most a few decimals). The tolerance is relative, so the rule is the same
for an outcome in [0, 1] and one in [0, 1000]; an all-zero outcome is constant.

A **zero-variance arm**: the rows of one group are constant. When a group and its reference are both
constant arms the gap is a difference of two constants: there is no variation to estimate a standard
error from, so no p-value (a model returns SE 0 and p = 0, or an artefact of the other groups'
variance). Such a row is "not fitted: constant" (:func:`constant_pair_reason`); the estimate stays
the difference of the two values, descriptively.

Numerical warnings (:func:`captured`, :func:`attach_warnings`) are the other face of a degenerate
fit: a covariance matrix that is numerically indefinite (a negative variance under a square root), an
optimiser that did not converge. They are caught where the fit runs and stated on the rows it
produced, never printed to the console.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["RTOL", "SE_RTOL", "Captured", "attach_warnings", "captured", "constant_arms", "constant_pair_reason",
           "constant_value", "is_constant", "no_standard_error", "CONSTANT"]

#: Relative tolerance of :func:`is_constant` (see the module docstring for why 1e-9).
RTOL = 1e-9
#: The method label of a row that is not fitted because its outcome does not vary.
CONSTANT = "not fitted: constant"


def _finite(values: Any) -> np.ndarray:
    v = pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce").to_numpy(dtype=float)
    return v[np.isfinite(v)]


def is_constant(values: Any, *, rtol: float = RTOL, scale: float | None = None) -> bool:
    """Whether the finite values are one value up to ``rtol`` of their scale (module docstring):
    ``max - min <= rtol * scale``, ``scale = max(|y|)`` unless given (differences of an outcome, or
    one arm of it, are judged on the outcome's scale: pass it). No finite value: ``True``.

    >>> is_constant([1 / 3, 1 - 2 / 3, (1 / 3) * 3 / 3])
    True
    >>> is_constant([0.0, 1e-6])
    False
    """
    v = _finite(values)
    if len(v) == 0:
        return True
    lo, hi = float(v.min()), float(v.max())
    return hi - lo <= rtol * (max(abs(lo), abs(hi)) if scale is None else abs(float(scale)))


def constant_value(values: Any) -> float:
    """The value of a constant outcome, rounded to the tolerance's digits (NaN without finite values)."""
    v = _finite(values)
    return float(np.round(np.median(v), 9)) if len(v) else float("nan")


def constant_arms(values: Any, groups: Any, *, rtol: float = RTOL) -> dict[str, float]:
    """``{group: value}`` of every group whose finite values are constant (a zero-variance arm), judged
    on the scale of the whole outcome (``max |y|`` over every group)."""
    y = pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce").to_numpy(dtype=float)
    g = np.asarray(groups).ravel()
    finite = np.isfinite(y)
    y, g = y[finite], g[finite]
    scale = float(np.abs(y).max()) if len(y) else 0.0
    # each distinct label's text once (a text per row took ~30 ms a call at a million replies); labels
    # that read the same are one group, as after astype(str)
    codes, labels = pd.factorize(g)
    text_of = [str(v) for v in labels]
    out = {}
    for text in sorted(set(text_of)):
        v = y[np.isin(codes, [i for i, t in enumerate(text_of) if t == text])]
        if is_constant(v, rtol=rtol, scale=scale):
            out[text] = constant_value(v)
    return out


def constant_pair_reason(arms: dict[str, float], group: str, reference: str) -> str | None:
    """The reason a gap of ``group`` to ``reference`` is not fitted when both are constant arms, else None."""
    if str(group) not in arms or str(reference) not in arms:
        return None
    a, r = arms[str(group)], arms[str(reference)]
    return (f"{CONSTANT}: every value of '{group}' is {a:g} and every value of '{reference}' is {r:g}; "
            "with no variation in either arm there is no standard error and no p-value (the gap is their difference)")


# --------------------------------------------------------------------------- numerical warnings

class Captured(list):
    """The numerical warnings raised inside :func:`captured`, as short texts ("RuntimeWarning: invalid
    value encountered in sqrt"), first occurrence of each, in order."""

    def reason(self) -> str:
        return "; ".join(f"numerical warning during the fit: {w}" for w in self)


@contextmanager
def captured():
    """Catch the warnings of a fit where they arise (scipy / numpy ``RuntimeWarning``, statsmodels
    ``ConvergenceWarning``, ``HessianInversionWarning``, ``DomainWarning``, ...) instead of letting them
    print: yields a :class:`Captured` list the caller turns into a stated reason on the rows the fit
    produced (:func:`attach_warnings`). Nothing is printed to the console."""
    import warnings

    out = Captured()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield out
    for w in numerical_only(caught):
        text = f"{w.category.__name__}: {str(w.message).splitlines()[0].strip()}"
        if text not in out:
            out.append(text)


def is_numerical(category: type) -> bool:
    """Whether a warning category speaks about a fit: numpy/scipy ``RuntimeWarning`` (overflow,
    invalid value) and statsmodels' ``ModelWarning`` family (convergence, Hessian, domain,
    separation). Others (a ``ResourceWarning`` from the garbage collector closing some unrelated
    event loop mid-fit, deprecations) say nothing about the fit and must not become a row's reason."""
    from statsmodels.tools.sm_exceptions import ModelWarning

    return issubclass(category, (RuntimeWarning, ModelWarning))


def numerical_only(caught) -> list:
    """The numerical warnings among ``caught`` (``warnings.catch_warnings(record=True)``); every other
    warning is raised again as if never caught, so Python's own filters decide what happens to it."""
    import warnings

    keep = []
    for w in caught:
        if is_numerical(w.category):
            keep.append(w)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    return keep


def attach_warnings(rows: list[dict[str, Any]], caught: Captured) -> list[dict[str, Any]]:
    """State the captured warnings on the rows they affect: the square root of a negative variance on
    the rows left without a standard error; warnings about the fit as a whole (convergence, a singular
    Hessian, overflow) on every row of the fit."""
    if not caught:
        return rows
    sqrt = [w for w in caught if "sqrt" in w]
    fit_wide = Captured(w for w in caught if "sqrt" not in w)
    for r in rows:
        se = r.get("se")
        texts = []
        if sqrt and (se is None or not np.isfinite(float(se))):
            texts.append(f"the estimated variance of the gap was negative by rounding ({sqrt[0]})")
        if fit_wide:
            texts.append(fit_wide.reason())
        if texts:
            r["warning"] = "; ".join(x for x in (r.get("warning"), *texts) if isinstance(x, str) and x)
    return rows


#: A standard error at most this share of the outcome's scale is no standard error (see
#: :func:`no_standard_error`).
SE_RTOL = 1e-6


def no_standard_error(se: Any, scale: float) -> bool:
    """Whether a fitted gap has no usable standard error: missing, not finite, or at most ``SE_RTOL``
    of the outcome's scale (``max |y|``).

    A gap whose group and reference agree within every cluster (every post's, or persona's, replies of
    the two groups score the same) has a cluster-robust variance of exactly 0 in exact arithmetic; in
    floating point it comes out as +-1e-16, so the SE is 1e-8 (and p = 1) on one CPU and the square
    root of a negative number (NaN) on another. An SE of 1e-6 of the scale would need ~1e11 replies
    of a 0/1 outcome; below it, the "SE" is rounding, and the row gets no p-value.
    """
    try:
        v = float(se)
    except (TypeError, ValueError):
        return True
    return not np.isfinite(v) or v <= SE_RTOL * abs(float(scale))
