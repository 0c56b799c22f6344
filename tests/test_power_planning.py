"""Planning before a pilot (issue 29): `empathy-audit power SPEC` works on every built-in spec with no
run directory, from the suite's planning defaults (values from published audits, with their source)
or stated --assume values, and names the primary outcome and the family size it plans for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.cli import main as cli_main
from audit.stats.planner import planning_defaults

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "analyses").glob("*.yaml"))


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_power_runs_on_every_builtin_spec_with_no_run_directory(spec, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the spec's default run directory (reports/<name>) does not exist here
    assert not (tmp_path / "reports").exists()
    assert cli_main(["power", str(spec), "--gap", "50%", "--posts", "10", "--sims", "10", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["components_source"].startswith("no pilot run: planning defaults")
    assert "source:" in plan["components_source"] and plan["family_size"] >= 1 and plan["outcome"]
    assert plan["grid"] and 0 <= plan["grid"][0]["power"] <= 1


def test_every_default_names_its_source():
    for suite in ("empathy", "stigma", "appropriateness", "pcsa"):
        d = planning_defaults(suite)
        assert d["sd_resid"] > 0 and d["ref_mean"] > 0 and len(d["source"]) > 40
    assert "Sharma" in planning_defaults("empathy")["source"]


def test_stated_assumptions_override_the_defaults_and_bad_ones_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = str(ROOT / "analyses" / "demo.yaml")
    assert cli_main(["power", spec, "--gap", "20%", "--posts", "10", "--sims", "10", "--json",
                     "--assume", "sd_post=0.3", "sd_resid=0.4", "ref_mean=1.2"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["components_source"] == "stated"
    assert plan["components"]["sd_resid"] == 0.4 and plan["components"]["ref_mean"] == 1.2
    assert cli_main(["power", spec, "--gap", "20%", "--assume", "sd_resid=-1"]) == 2
    assert "--assume sd_resid=-1 is out of range" in capsys.readouterr().err
    assert cli_main(["power", spec, "--gap", "20%", "--assume", "width=3"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_planned_family_size_is_the_one_the_analysis_counts():
    """The demo's planned family (10 outcomes x (8 groups vs control + 6 vs their reference group) x
    (2 cue types + pooled) + 10 disparities = 430) is what the analysis would adjust if every test
    were estimable (the golden run fits 377 of its 392 gaps: the refusal rate is constant there)."""
    from audit.spec import load_spec
    from audit.stats.planner import planned_family_size

    assert planned_family_size(load_spec(ROOT / "analyses" / "demo.yaml")) == 10 * 14 * 3 + 10
