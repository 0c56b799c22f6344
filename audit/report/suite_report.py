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


def rate_dots(ax: Any, d: pd.DataFrame, *, row: str, rows: list[str], est: str, lo: str, hi: str,
              spacing: float = 0.18) -> None:
    """One dot per (row, model) at ``est`` with its CI ``[lo, hi]`` as a horizontal error bar; the models
    of a row side by side, ``spacing`` apart, one colour each (:func:`audit.report.figures.series_palette`).
    Rows of ``d`` whose ``row`` is not in ``rows`` are not drawn; a missing CI draws no bar."""
    from .figures import mpl_text, series_palette

    models = sorted(d["model_label"].unique())
    pal = series_palette(len(models))
    for k, m in enumerate(models):
        dm = d[(d["model_label"] == m) & d[row].isin(rows)]
        y = np.array([rows.index(r) for r in dm[row]]) + (k - (len(models) - 1) / 2) * spacing
        e = dm[est].to_numpy(float)
        err = np.nan_to_num(np.vstack([e - dm[lo].to_numpy(float), dm[hi].to_numpy(float) - e])).clip(min=0)
        ax.errorbar(e, y, xerr=err, fmt="o", color=pal[k], capsize=3, label=mpl_text(m))


def gap_dots(ax: Any, d: pd.DataFrame, *, labels: list[str], rows: list[str], xlabel: str) -> None:
    """A forest plot of gaps: ``d``'s ``estimate`` with its CI ``[ci_low, ci_high]`` (probability scale,
    drawn in percentage points) on the row ``labels[i]`` of each of its rows; the models of a row side
    by side, one colour each; filled where ``significant_holm``, hollow otherwise; the no-gap line at 0,
    the row labels and ``xlabel``. The caller orders the rows top to bottom."""
    from .figures import mpl_text, series_palette

    models = sorted(d["model_label"].unique())
    pal = series_palette(len(models))
    for k, m in enumerate(models):
        sel = (d["model_label"] == m).to_numpy()
        y = np.array([rows.index(lab) for lab, s in zip(labels, sel) if s]) + (k - (len(models) - 1) / 2) * 0.2
        dm = d[sel]
        est, lo, hi = (100 * dm[c].to_numpy(float) for c in ("estimate", "ci_low", "ci_high"))
        ax.errorbar(est, y, xerr=np.nan_to_num(np.vstack([est - lo, hi - est])).clip(min=0), fmt="none",
                    ecolor=pal[k], capsize=2)
        sig = dm["significant_holm"].astype(bool).to_numpy()
        ax.scatter(est[sig], y[sig], color=pal[k], zorder=3, label=mpl_text(m))
        ax.scatter(est[~sig], y[~sig], facecolor="white", edgecolor=pal[k], zorder=3,
                   label=None if sig.any() else mpl_text(m))
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [mpl_text(r) for r in rows], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.legend(loc="lower right", fontsize=7)


def rate_axis(ax: Any, rows: list[str], xlabel: str, *, fontsize: float | None = None) -> None:
    """The axis of a rate dot plot: ``rows`` top to bottom, x from 0 to 1 (a little margin), ``xlabel``."""
    from .figures import mpl_text

    ax.set_yticks(range(len(rows)), [mpl_text(r) for r in rows], **({"fontsize": fontsize} if fontsize else {}))
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(xlabel)


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


__all__ = ["models_meta", "pct", "pp", "pval", "rate_axis", "rate_dots", "records", "stored_meta", "write_report"]
