"""One family, one headline (issue 29): the closing lines of `run`, the report's summary, results.json
and `power` on the run name the same primary outcome and the same family size (the tests adjusted
together: every estimable gap and the max - min disparities)."""

from __future__ import annotations

import json
import re

import pytest

from audit.cli import main as cli_main
from demo_run import golden_demo_run


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one-headline")
    return golden_demo_run(tmp), tmp / "demo.yaml"


def test_closing_lines_summary_results_json_and_power_agree(demo, capsys):
    run, spec = demo
    capsys.readouterr()
    # every stage is stored: running the spec again resumes, skips every stage and ends with the closing lines
    assert cli_main(["run", str(spec), "--out", str(run), "--no-progress"]) == 0
    closing = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("headline:")][-1]
    m = re.search(r"primary outcome (\S+); .*?family's (\d+) tests", closing)
    assert m, closing
    run_outcome, run_m = m.group(1), int(m.group(2))

    doc = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert doc["summary"]["primary_outcome"] == doc["headline"]["primary_outcome"] == run_outcome
    assert doc["summary"]["family_size"] == run_m
    meta = {r["key"]: r["value"] for r in doc["analysis_meta"]}
    assert int(json.loads(meta["family_size"])) == run_m
    assert {int(r["family_size"]) for r in doc["results_power"]} == {run_m}
    # the family is what the name says: every gap with a p-value plus every disparity test
    n_p = sum(r["p_value"] is not None for r in doc["results"]) + sum(
        r["p_value"] is not None for r in doc["results_disparity"])
    assert n_p == run_m

    md = (run / "report.md").read_text(encoding="utf-8")
    s = re.search(r"\*\*Tests:\*\*.*?the family adjusted together has (\d+) tests.*?primary outcome is ([^,(]+)", md)
    assert s, md[:2000]
    assert int(s.group(1)) == run_m
    from audit.report.findings import outcome_label
    assert outcome_label(run_outcome).startswith(s.group(2).strip())

    assert cli_main(["power", str(run), "--gap", "50%", "--posts", "10", "--sims", "10", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["family_size"] == run_m and plan["outcome"] == run_outcome
    assert "analysed run" in plan["family_source"] and f"outcome {run_outcome}" in plan["components_source"]
