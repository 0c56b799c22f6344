"""Cross-check a fit against R's lme4 (``lmer``) on the same data.

Used by the agreement tests and the benchmark; also callable from a notebook to show a regulator
that the toolkit's numbers are lme4's numbers. Needs ``Rscript`` with the ``lme4`` package (Debian:
``apt-get install r-base-core r-cran-lme4``). No R package beyond lme4 is used (results are passed
back as plain text with 17 significant digits, not JSON).

Example
-------
>>> from audit.stats.lme4 import lme4_available, fit_lme4
>>> ok, why = lme4_available()
>>> # fit_lme4(df, "y ~ g + (1 | post)")  -> dict(fixef=Series, se=Series, theta=..., sigma=..., ...)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pandas as pd

__all__ = ["lme4_available", "fit_lme4"]

_R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
suppressPackageStartupMessages(library(lme4))
d <- read.csv(args[1], stringsAsFactors = FALSE)
fcols <- strsplit(args[4], ",")[[1]]
for (cn in fcols) if (nzchar(cn)) d[[cn]] <- factor(d[[cn]])
if (nzchar(args[5])) d[[args[6]]] <- relevel(factor(d[[args[6]]]), ref = args[5])
reml <- args[3] == "TRUE"
ctrl <- lmerControl(check.conv.singular = "ignore")
t0 <- proc.time()[["elapsed"]]
reps <- as.integer(args[7])
for (i in seq_len(reps)) fit <- lmer(as.formula(args[2]), data = d, REML = reml, control = ctrl)
el <- (proc.time()[["elapsed"]] - t0) / reps
fe <- fixef(fit); se <- sqrt(diag(as.matrix(vcov(fit))))
out <- c(
  sprintf("fixef\t%s\t%.17g", names(fe), fe),
  sprintf("se\t%s\t%.17g", names(se), se),
  sprintf("theta\t%s\t%.17g", names(getME(fit, "theta")), getME(fit, "theta")),
  sprintf("sigma\t-\t%.17g", sigma(fit)),
  sprintf("crit\t-\t%.17g", if (reml) REMLcrit(fit) else deviance(fit)),
  sprintf("elapsed\t-\t%.17g", el),
  sprintf("singular\t-\t%d", as.integer(isSingular(fit)))
)
writeLines(out, args[8])
"""


@lru_cache(maxsize=1)
def lme4_available() -> tuple[bool, str]:
    """(True, version) if Rscript and lme4 can be used, else (False, the reason)."""
    rscript = shutil.which("Rscript")
    if not rscript:
        return False, "Rscript not found (install r-base-core and r-cran-lme4)"
    try:
        out = subprocess.run(
            [rscript, "-e", 'suppressPackageStartupMessages(library(lme4)); cat(as.character(packageVersion("lme4")))'],
            capture_output=True, text=True, timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Rscript failed to run: {exc}"
    if out.returncode != 0:
        return False, "R package lme4 not installed (install r-cran-lme4)"
    return True, out.stdout.strip()


def fit_lme4(
    data: pd.DataFrame,
    formula: str,
    *,
    reml: bool = True,
    factors: tuple[str, ...] = (),
    reference: tuple[str, str] | None = None,
    repeats: int = 1,
    timeout: float = 600,
) -> dict:
    """Fit ``formula`` with ``lme4::lmer`` and return its estimates.

    Parameters
    ----------
    data : long table; columns named in ``factors`` are turned into R factors (levels sorted as R
        sorts them); ``reference=(column, level)`` makes ``level`` the reference of that factor.
    formula : lme4 formula, e.g. ``"y ~ group + (1 | post)"``.
    reml : REML (default) or ML.  repeats : fit this many times and report the mean fit time.

    Returns
    -------
    dict with ``fixef`` and ``se`` (pandas Series keyed by lme4's coefficient names), ``theta``
    (Series), ``sigma``, ``crit`` (REML criterion or deviance), ``elapsed_s`` (seconds per fit,
    inside R, excluding start-up and reading the data) and ``singular``.
    """
    ok, why = lme4_available()
    if not ok:
        raise RuntimeError(why)
    with tempfile.TemporaryDirectory(prefix="audit-lme4-") as tmp:
        csv = Path(tmp) / "data.csv"
        script = Path(tmp) / "fit.R"
        out = Path(tmp) / "out.tsv"
        data.to_csv(csv, index=False, float_format="%.17g")
        script.write_text(_R_SCRIPT)
        ref_level, ref_col = ("", "") if reference is None else (reference[1], reference[0])
        proc = subprocess.run(
            ["Rscript", str(script), str(csv), formula, "TRUE" if reml else "FALSE", ",".join(factors),
             ref_level, ref_col, str(int(repeats)), str(out)],
            capture_output=True, text=True, timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"lme4 fit failed: {proc.stderr.strip()[-2000:]}")
        rows = [line.split("\t") for line in out.read_text().splitlines()]
    res: dict = {}
    for key in ("fixef", "se", "theta"):
        res[key] = pd.Series({name: float(v) for k, name, v in rows if k == key})
    scalars = {k: float(v) for k, _, v in rows if k in ("sigma", "crit", "elapsed", "singular")}
    res["sigma"] = scalars["sigma"]
    res["crit"] = scalars["crit"]
    res["elapsed_s"] = scalars["elapsed"]
    res["singular"] = bool(scalars["singular"])
    return res
