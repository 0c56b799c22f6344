"""Helpers shared by the reports of the suites other than empathy (stigma, appropriateness): value
formatting, the stored analysis meta, and writing the report files (HTML and Markdown from the
suite's Jinja templates, results.json, figures, CSV tables through ``csv_safe``), staged in a
temporary directory and published atomically as the empathy report does (:mod:`audit.report.build`).
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..jsonable import jsonable


def pct(x: Any) -> str:
    """A proportion as a whole percentage ('n/a' when missing)."""
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * float(x):.0f}%"


def pp(x: Any) -> str:
    """A difference of proportions in signed percentage points."""
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * float(x):+.1f} pp"


def pval(x: Any) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.2g}" if x >= 1e-4 else "<0.0001"


def records(df: pd.DataFrame | None) -> list[dict[str, Any]]:
    return [] if df is None else jsonable(df.to_dict("records"))


def stored_meta(store: Any, table: str) -> dict[str, Any]:
    """A ``key, value`` meta table of the store as a dict (JSON values decoded)."""
    t = store.table_df(table)
    if t is None:
        return {}
    out = {}
    for k, v in zip(t["key"], t["value"]):
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def models_meta(store: Any) -> dict[str, Any]:
    try:
        return json.loads(store.get_meta("models", "{}"))
    except ValueError:
        return {}


def write_report(run_dir: Path, *, template: str, ctx: dict[str, Any], results: dict[str, Any], figures: list[Any],
                 tables: dict[str, pd.DataFrame | None]) -> dict[str, Path]:
    """Write ``report.html`` (``<template>.html.j2``), ``report.md`` (``<template>.md.j2``),
    ``results.json``, ``figures/*.png`` and ``tables/<name>.csv`` into ``run_dir`` atomically."""
    from .build import TEMPLATES, _environment, _publish, _write
    from ..untrusted import csv_safe

    stage = Path(tempfile.mkdtemp(prefix=".report-", dir=run_dir))
    try:
        css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
        _write(stage / "report.html", _environment(markdown=False).get_template(f"{template}.html.j2").render(css=css, **ctx))
        (stage / "figures").mkdir()
        for f in figures:
            if f.data_uri:
                (stage / "figures" / f"{f.id.removeprefix('fig-')}.png").write_bytes(
                    base64.b64decode(f.data_uri.split(",", 1)[1]))
        _write(stage / "report.md", _environment(markdown=True).get_template(f"{template}.md.j2").render(**ctx))
        _write(stage / "results.json", json.dumps(results, indent=1, ensure_ascii=False, allow_nan=False))
        (stage / "tables").mkdir()
        for name, df in tables.items():
            if df is not None:
                csv_safe(df).to_csv(stage / "tables" / f"{name}.csv", index=False)
        staged = [p for p in stage.rglob("*") if p.is_file()]
        paths = _publish(stage, run_dir, staged)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return paths


__all__ = ["models_meta", "pct", "pp", "pval", "records", "stored_meta", "write_report"]
