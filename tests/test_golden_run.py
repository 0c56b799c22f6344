"""The golden run: the demo design, run end to end against a deterministic local server, gives the
same results.json and the same table CSVs as the committed golden files.

Its purpose is to keep a refactoring honest: any change that moves a number, a label, a row or a
column of a finished audit fails here. Fields that legitimately change from run to run (times,
software versions, paths of the temporary run directory) are removed before the comparison, and
numbers are compared to 1e-9 relative (floating-point rounding differs between CPUs; a real change
moves a number by far more). After an intended change of results, rewrite the golden files with
``EMPATHY_AUDIT_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_run.py`` and say why in the commit.
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
REL_TOL = 1e-9


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


def _same(a, b, where: str) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        assert sorted(a) == sorted(b), f"{where}: keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items, golden {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), f"{where}: {a!r} vs golden {b!r}"
        if math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{where}: {a!r} vs golden {b!r}"
        else:
            assert math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12), f"{where}: {a!r} vs golden {b!r}"
    else:
        assert a == b, f"{where}: {a!r} vs golden {b!r}"


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
        _same(got, want, name)


def test_the_two_sample_demo_reports_its_sampling_variance(golden_run):
    """demo-full answers every variant twice: the report states the sampling variance of each continuous
    outcome (issue 18), in results.json, the table CSVs and the HTML report."""
    res = json.loads((golden_run / "results.json").read_text(encoding="utf-8"))
    var = res["results_variability"]
    assert {r["samples"] for r in var} == {2} and {"epitome.empathy", "length.words"} <= {r["outcome"] for r in var}
    assert all(r["var_sample"] >= 0 and 0 <= r["share_sampling"] <= 1 for r in var)
    assert (golden_run / "tables" / "results_variability.csv").is_file()
    assert 'id="variability-table"' in (golden_run / "report.html").read_text(encoding="utf-8")
