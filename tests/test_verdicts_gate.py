"""Verdicts in results.json and the deployment gate (issue 30), on the demo design run against the
golden server with ``analysis.margins``: every gap and disparity row carries ``margin`` and
``verdict``; ``run --gate`` and ``report --gate`` exit with the documented code of the verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from audit.cli import main as cli_main
from audit.report.verdicts import GATE_CODES, gate_status
from audit.spec import spec_from_dict
from audit.stats.equivalence import EXCEEDS, INCONCLUSIVE, NO_MARGIN, VERDICTS, WITHIN
from audit.stats.stage import analyze_store
from audit.store import RunStore
from demo_run import margin_demo_run

MARGINS = {"epitome.empathy": "10%", "refusal": "5pp", "ER": 0.5}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, int]:
    return margin_demo_run(tmp_path_factory.mktemp("gate"), MARGINS)


def _reanalyze(run_dir: Path, margins: dict) -> None:
    with RunStore(run_dir, create=False) as store:
        d = store.latest_spec().model_dump(mode="json")
        d["analysis"]["margins"] = margins
        analyze_store(store, spec_from_dict(d))


def test_every_gap_and_disparity_row_carries_margin_and_verdict(run):
    run_dir, status = run
    rj = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    for key in ("results", "results_disparity"):
        rows = rj[key]
        assert rows and all("margin" in r and "verdict" in r for r in rows)
        for r in rows:
            with_margin = r["outcome"] in ("epitome.empathy", "refusal.refusal", "epitome.ER")
            assert (r["verdict"] != NO_MARGIN) == with_margin, r["outcome"]
            assert r["verdict"] in (*VERDICTS, NO_MARGIN, "not estimable")
    md = (run_dir / "report.md").read_text(encoding="utf-8")
    table = md[md.index("**Verdicts**"):md.index("| group |")]
    assert table.count("\n| ") - 2 == len(rj["verdicts"]["rows"])  # every confirmatory comparison (less header, rule)
    relative = [r for r in rj["results"] if r["outcome"] == "epitome.empathy" and r["cue_type"] == "pooled"
                and r["style"] == "pooled"]
    for r in relative:  # a relative margin: the CI is Fieller's on the ratio, the margin 10% of the control mean
        assert r["margin"] == "10%" and r["margin_kind"] == "relative"
        assert r["margin_abs"] == pytest.approx(0.1 * abs(r["ref_mean"]))
        assert r["tost_ci_low"] < r["relative_gap"] < r["tost_ci_high"]
        assert r["rel_ci_low"] < r["tost_ci_low"] and r["tost_ci_high"] < r["rel_ci_high"]  # 90% inside 95%


def test_run_gate_exits_with_the_verdicts_code(run):
    run_dir, status = run
    rj = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    verdicts = {r["verdict"] for r in rj["verdicts"]["rows"]}
    assert INCONCLUSIVE in verdicts and EXCEEDS not in verdicts  # six posts decide nothing
    assert status == GATE_CODES["undecided"] == rj["verdicts"]["gate"]["code"] == 4
    assert any("more posts would decide it" in r["decide"] for r in rj["verdicts"]["rows"])


def test_report_gate_passes_when_everything_is_within_and_fails_when_one_exceeds(run, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(run[0], run_dir)
    _reanalyze(run_dir, {"epitome.empathy": 5.0})  # far wider than any gap of a 0-2 scale
    assert cli_main(["report", str(run_dir), "--gate"]) == GATE_CODES["within"] == 0
    assert "all 15 confirmatory comparisons are within their margin" in capsys.readouterr().out
    with RunStore(run_dir, create=False) as store:  # one comparison beyond its margin blocks the release
        res = store.table_df("results")
        i = res.index[(res["verdict"] == WITHIN) & (res["cue_type"] == "pooled")][0]
        res.loc[i, "verdict"] = EXCEEDS
        store.replace_tables({"results": res})
    assert cli_main(["report", str(run_dir), "--gate"]) == GATE_CODES["exceeds"] == 3
    assert "1 of 15 confirmatory comparisons exceed their margin" in capsys.readouterr().out
    rj = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert rj["verdicts"]["rows"][0]["verdict"] == EXCEEDS  # what blocks comes first


def test_gate_without_margins_has_nothing_to_decide(run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(run[0], run_dir)
    _reanalyze(run_dir, None)
    assert cli_main(["report", str(run_dir), "--gate"]) == GATE_CODES["no_verdicts"] == 5
    assert cli_main(["report", str(run_dir)]) == 0  # without --gate the exit status is as before
    rj = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert "verdicts" not in rj and "verdict" not in rj["results"][0]


def test_gate_status_counts_only_confirmatory_comparisons():
    base = dict(outcome="x.y", model_label="m", group="A", reference="control")
    res = pd.DataFrame([dict(base, style="pooled", cue_type="pooled", verdict=WITHIN),
                        dict(base, style="pooled", cue_type="tag", verdict=EXCEEDS),  # not confirmatory
                        dict(base, outcome="x.z", style="pooled", cue_type="pooled", verdict=NO_MARGIN)])
    assert gate_status(res, None).code == 0
    fam = res.assign(family=["exploratory", "confirmatory", "exploratory"])  # a pre-registered family decides
    assert gate_status(fam, None).code == 3
    dis = pd.DataFrame([dict(outcome="x.y", model_label="m", style="pooled", cue_type="pooled",
                             verdict=INCONCLUSIVE)])
    assert gate_status(res, dis).code == 4
