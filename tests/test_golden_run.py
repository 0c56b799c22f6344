"""The golden run: the demo design, run end to end against a deterministic local server, gives the
same results.json and the same table CSVs as the committed golden files.

Its purpose is to keep a refactoring honest: any change that moves a number, a label, a row or a
column of a finished audit fails here. Fields that legitimately change from run to run (times,
software versions, paths of the temporary run directory) are removed before the comparison. What is
compared, and how closely, depends on where a value comes from (see ``_tolerance``):

* exact things (counts, keys, texts, ids, levels, flags, formatted sentences) are held exactly;
* closed forms (means, sums, paired t statistics) and seeded randomised quantities (the disparity
  bootstrap and permutation test: the seed fixes every draw, the statistic of a draw is a closed
  form) differ between CPUs only by summation order, and are held to ``ROUNDING_REL`` = 1e-9;
* quantities from an optimiser (the REML fits, GEE, the REML tau of partial pooling, and what is
  computed from them: SEs, CIs, p-values, family-adjusted p-values, power) are held to
  ``OPTIMISER_REL``, derived from how precisely an optimiser can locate an optimum at all (below).

After an intended change of results, rewrite the golden files with
``EMPATHY_AUDIT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_run.py`` and say why in the commit.
.ci/run also runs this test with ``OPENBLAS_CORETYPE=Prescott`` (OpenBLAS's generic kernels), so a
tolerance that only holds on the development machine's kernels fails in CI rather than on a user's.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml

from audit.cli import main as cli_main
from golden_server import golden_server

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "demo"
UPDATE = os.environ.get("EMPATHY_AUDIT_UPDATE_GOLDEN") == "1"
# Keys whose values are times, versions, durations or machine paths: never part of a result.
VOLATILE_KEY = re.compile(r"(^|_)(at|time|timestamp|seconds|elapsed_s|elapsed|version|versions|started|finished|"
                          r"created|run_dir|path|command|command_line|generated|python|platform|hostname|"
                          r"sha256_store|store_sha256|fit_s|stage_times)$|^(software|tool_version|generated_at)"
                          # content addresses that include the server's URL, whose port is random
                          r"|^(request_key|subject_key|spec_hash|spec_file_sha256|spec_sha256|family_id)$", re.I)
SERVER = re.compile(r"http://127\.0\.0\.1:\d+")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")


def _text(v: str, root: str) -> str:
    return TIMESTAMP.sub("<TIME>", SERVER.sub("<SERVER>", v.replace(root, "<TMP>")))
# Closed forms: only the summation order differs between CPUs and BLAS kernels (observed <= 1e-13).
ROUNDING_REL, ROUNDING_ABS = 1e-9, 1e-12
# Optimiser outputs. A smooth criterion f is flat at its optimum, f(theta* + d) - f(theta*) ~ f''d^2/2,
# so an optimiser can place theta only to within d ~ sqrt(2 eps_f |f| / f''), where eps_f is the
# relative noise with which f is evaluated. The REML criterion is a sum over O(N) terms whose rounding
# changes with the BLAS kernel: eps_f ~ 1e-13 (a few hundred ulps), so theta is determined to ~3e-7
# relative whatever the stopping tolerances (fastlmm: Brent xatol 1e-10 + sqrt(eps)|theta|, Powell
# xtol 1e-8; statsmodels GEE ctol 1e-6 on the parameter change). Variance components go as theta^2
# and SEs, CI bounds and p-values with a sensitivity of order 1-10 to theta: ~6e-6 at worst, hence
# 1e-5. Observed between OpenBLAS's Haswell and generic (Prescott) kernels: <= 6.2e-7 relative
# (results_variability var_variant); on an AMD EPYC: 1.7e-9 (an SE). A real change of results moves
# a number by far more than 1e-5.
OPTIMISER_REL, OPTIMISER_ABS = 1e-5, 1e-9
# Where a number comes from an optimiser: rows whose method names an iterative fit, whole sections
# computed from fitted SEs, and family-adjusted p-values (Holm/BH mix every test's p-value).
FITTED_METHOD = re.compile(r"REML|\bML\b|\blmm\b|\bgee\b|partial pooling", re.I)
FITTED_SECTIONS = {"results_power", "results_variability", "results_intersectional"}
FAMILY_ADJUSTED = {"p_holm", "p_bh"}


def _tolerance(section: str, record: dict | None, key: str) -> tuple[float, float]:
    """(rel, abs) tolerance for the float ``key`` of ``record`` (a row of ``section``)."""
    fitted = section in FITTED_SECTIONS or key in FAMILY_ADJUSTED or (
        isinstance(record, dict) and FITTED_METHOD.search(str(record.get("method") or "")) is not None)
    return (OPTIMISER_REL, OPTIMISER_ABS) if fitted else (ROUNDING_REL, ROUNDING_ABS)


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("golden")
    # the 204-reply design the golden files were made with (the demo before issue 19), under its old name
    spec = yaml.safe_load((ROOT / "analyses" / "demo-full.yaml").read_text(encoding="utf-8"))
    spec["name"], spec["description"] = "demo", "Small end-to-end demo: race x gender, explicit tag and " \
        "implicit name cues, embedded model."
    with golden_server() as srv:
        spec["models"] = [{"label": "golden", "base_url": srv.base_url, "model": "golden-model", "max_in_flight": 4}]
        spec["scoring"]["inference_probe"] = True
        spec_path = tmp / "demo-golden.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        status = cli_main(["run", str(spec_path), "--out", str(tmp / "run"), "--no-progress"])
    assert status == 0
    return tmp / "run"


def _clean(obj, root: str):
    if isinstance(obj, dict):
        if set(obj) == {"key", "value"} and VOLATILE_KEY.search(str(obj["key"])):  # a key/value table row
            return {"key": obj["key"], "value": "<VOLATILE>"}
        return {k: _clean(v, root) for k, v in obj.items() if not VOLATILE_KEY.search(str(k))}
    if isinstance(obj, list):
        return [_clean(v, root) for v in obj]
    if isinstance(obj, str):
        return _text(obj, root)
    return obj


def _same(a, b, where: str, section: str = "", record: dict | None = None, key: str = "") -> None:
    """Assert ``a`` equals the golden ``b``: exactly, or floats within ``_tolerance``."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}", section or k, a if "method" in a else record, k)
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items, golden {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", section, record, key)
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{where}: {a!r} vs golden {b!r}"
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{where}: {a!r} vs golden {b!r}"
        else:
            rel, abs_ = _tolerance(section, record, key)
            assert math.isclose(a, b, rel_tol=rel, abs_tol=abs_), \
                f"{where}: {a!r} vs golden {b!r} (tolerance rel {rel:g}, abs {abs_:g})"
    elif isinstance(a, str) and isinstance(b, str):
        _same_text(a, b, where)
    else:
        assert a == b, f"{where}: {a!r} vs golden {b!r}"


DECIMAL = re.compile(r"\d+\.\d+")


def _same_text(a: str, b: str, where: str) -> None:
    """Texts are held exactly, except a decimal number printed in them, which may differ by one unit
    in its last printed place: a value within the optimiser's tolerance of a rounding boundary
    (0.1875 printed as a percentage) rounds either way. Integers in a text (counts) are exact."""
    if a == b:
        return
    assert DECIMAL.split(a) == DECIMAL.split(b), f"{where}: {a!r} vs golden {b!r}"
    for x, y in zip(DECIMAL.findall(a), DECIMAL.findall(b)):
        places = len(x.split(".")[1])
        assert places == len(y.split(".")[1]) and abs(float(x) - float(y)) <= 10.0 ** -places * 1.000001, \
            f"{where}: {x} vs golden {y} in {a!r}"


def _csv_rows(text: str, root: str) -> list[dict]:
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        if set(rec) == {"key", "value"} and VOLATILE_KEY.search(rec["key"] or ""):
            rec = {"key": rec["key"], "value": "<VOLATILE>"}
        out = {}
        for k, v in rec.items():
            if VOLATILE_KEY.search(k):
                continue
            try:
                out[k] = float(v) if v not in ("", None) and not v.lstrip("-").isdigit() else v
            except ValueError:
                out[k] = _text(v, root)
        rows.append(out)
    return rows


def test_results_json_matches_the_golden_run(golden_run):
    got = _clean(json.loads((golden_run / "results.json").read_text(encoding="utf-8")), str(golden_run.parent))
    path = GOLDEN / "results.json"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _same(got, json.loads(path.read_text(encoding="utf-8")), "results.json")


def test_every_table_csv_matches_the_golden_run(golden_run):
    tables = sorted(p.name for p in (golden_run / "tables").glob("*.csv"))
    golden_dir = GOLDEN / "tables"
    if UPDATE:
        golden_dir.mkdir(parents=True, exist_ok=True)
        for old in golden_dir.glob("*.csv"):
            old.unlink()
        for name in tables:
            (golden_dir / name).write_bytes((golden_run / "tables" / name).read_bytes())
    assert tables == sorted(p.name for p in golden_dir.glob("*.csv"))
    root = str(golden_run.parent)
    for name in tables:
        got = _csv_rows((golden_run / "tables" / name).read_text(encoding="utf-8"), root)
        want = _csv_rows((golden_dir / name).read_text(encoding="utf-8"), root)
        section = name[: -len(".csv")]
        assert len(got) == len(want), f"{name}: {len(got)} rows, golden {len(want)}"
        for i, (row, gold) in enumerate(zip(got, want)):
            _same(row, gold, f"{name}[{i}]", section, row)


def test_the_two_sample_demo_reports_its_sampling_variance(golden_run):
    """demo-full answers every variant twice: the report states the sampling variance of each continuous
    outcome (issue 18), in results.json, the table CSVs and the HTML report."""
    res = json.loads((golden_run / "results.json").read_text(encoding="utf-8"))
    var = res["results_variability"]
    assert {r["samples"] for r in var} == {2} and {"epitome.empathy", "length.words"} <= {r["outcome"] for r in var}
    assert all(r["var_sample"] >= 0 and 0 <= r["share_sampling"] <= 1 for r in var)
    assert (golden_run / "tables" / "results_variability.csv").is_file()
    assert 'id="variability-table"' in (golden_run / "report.html").read_text(encoding="utf-8")


def test_the_comparison_holds_each_kind_of_value_to_its_own_tolerance():
    """The tolerance policy itself (issue 25 row T): a fitted SE that moved by 1.7e-9 relative, as on
    another CPU, passes; the same move in a closed-form mean, or any change of a count or a label,
    fails; and a fitted value that moved by more than the optimiser can explain fails too."""
    fitted = {"method": "lmm (1|post)+(1|post:inner), REML", "se": 0.36826744842471115, "n": 12, "group": "a"}
    closed = {"ref_mean": 1.3333333333333177, "n_posts": 6}
    _same({**fitted, "se": 0.36826744778810894}, fitted, "row", "results", fitted)
    with pytest.raises(AssertionError):
        _same({**fitted, "se": fitted["se"] * (1 + 1e-4)}, fitted, "row", "results", fitted)
    with pytest.raises(AssertionError):
        _same({**closed, "ref_mean": closed["ref_mean"] * (1 + 1.7e-9)}, closed, "row", "results_paired", closed)
    with pytest.raises(AssertionError):
        _same({**fitted, "n": 13}, fitted, "row", "results", fitted)
    with pytest.raises(AssertionError):
        _same({**fitted, "group": "b"}, fitted, "row", "results", fitted)
    # a printed number may flip at a rounding boundary by one unit in its last place, never more;
    # counts in a text are exact
    _same("18.8% lower (95% CI -54.1% to +51.3%)", "18.7% lower (95% CI -54.1% to +51.3%)", "text")
    with pytest.raises(AssertionError):
        _same("18.9% lower", "18.7% lower", "text")
    with pytest.raises(AssertionError):
        _same("6 of 392 gap tests", "5 of 392 gap tests", "text")
    with pytest.raises(AssertionError):
        _same("18.7% higher", "18.7% lower", "text")
    # family-adjusted p-values carry the fitted tests' tolerance wherever they stand
    _same({"p_bh": 0.6371592277359328}, {"p_bh": 0.6371592241100874}, "row", "results_disparity", None)
    # a nested results.json: rows inherit their section, and the row's own method decides
    doc = {"results": [fitted], "results_paired": [closed]}
    _same({"results": [{**fitted, "se": 0.36826744778810894}], "results_paired": [closed]}, doc, "results.json")
    with pytest.raises(AssertionError):
        _same({"results": [fitted], "results_paired": [{**closed, "ref_mean": 1.3333334}]}, doc, "results.json")
