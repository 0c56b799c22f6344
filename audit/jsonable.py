"""One JSON cleaner: numpy, pandas and float values to strict JSON (no NaN, no Infinity).

Used wherever the project writes JSON a user or another program reads: ``results.json``, the
``--json`` output of every command, stored meta values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["jsonable"]


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None, numpy scalars and arrays as Python values, ``pd.NA`` and
    ``pd.NaT`` as None, timestamps as ISO text, dict keys as text and anything else unknown as its text.

    >>> jsonable({"p": np.float64("nan"), "n": np.int64(3), "ok": np.bool_(True), 1: np.array([0.5, np.inf])})
    {'p': None, 'n': 3, 'ok': True, '1': [0.5, None]}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return str(obj)
