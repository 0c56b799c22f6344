"""The README's promise "bad input gets one clear line" for every command of its command table
(issue 28): a missing or broken input is one line on stderr and exit status 2, never a traceback,
and nothing is written. A new row in the table without a case here fails the first test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from audit.cli import main

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = {"batch": ["status", "submit", "poll", "collect", "cancel", "run-local"],
               "scorers": ["list", "train", "validate", "invariance"]}


def table_commands() -> list[str]:
    """Command names of the README's command table (``batch status``, ``ratings packet``, ``run`` ...)."""
    names: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\|\s*`empathy-audit ([a-z-]+)((?: [a-z-]+)?)((?:\\?\|[a-z-]+| / [a-z-]+)*)", line)
            if not m:
                continue
            first, second = m.group(1), m.group(2).strip()
            if first in SUBCOMMANDS:
                names.update(f"{first} {s}" for s in SUBCOMMANDS[first])
            elif second and first in ("ratings", "stigma", "appropriateness", "judge", "pcsa"):
                names.add(f"{first} {second}")
            else:
                names.add(first)
        if names:
            return sorted(names)
    return sorted(names)


def _bad(tmp: Path) -> dict[str, list[list[str]]]:
    """For each command, command lines with bad input (missing files, a directory that is no run, a spec
    that is not YAML, an alias bomb)."""
    gone = str(tmp / "missing")
    spec_gone = str(tmp / "missing.yaml")
    notyaml = tmp / "broken.yaml"
    notyaml.write_text("name: [unclosed\n", encoding="utf-8")
    bomb = tmp / "bomb.yaml"
    bomb.write_text("name: b\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9 if i else ['"x"'] * 9) + "]\n" for i in range(9)),
        encoding="utf-8")
    empty_dir = tmp / "not-a-run"
    empty_dir.mkdir()
    table = tmp / "t.csv"
    table.write_text("a,b\n1,2\n", encoding="utf-8")
    out = str(tmp / "out")
    cases: dict[str, list[list[str]]] = {
        "run": [["run", spec_gone], ["run", str(notyaml)], ["run", str(bomb)]],
        "report": [["report", gone], ["report", str(empty_dir)]],
        "variants": [["variants", spec_gone], ["variants", str(bomb)]],
        "plan": [["plan", spec_gone], ["plan", str(notyaml)], ["plan", str(bomb)],
                 ["plan", "demo", "--price-in", "1"]],
        "generate": [["generate", str(notyaml)]],
        "export": [["export", gone, "--out", f"{out}.csv"], ["export", str(empty_dir), "--table", "tidy",
                                                              "--out", f"{out}.parquet"]],
        "compare": [["compare", gone, str(empty_dir), "--out", out]],
        "score": [["score", gone], ["score", str(empty_dir)]],
        "score-table": [["score-table", gone + ".csv", "--post", "p", "--reply", "r", "--scorers", "length",
                         "--out", f"{out}.csv"],
                        ["score-table", str(table), "--post", "p", "--reply", "r", "--scorers", "length",
                         "--out", f"{out}.csv"]],
        "scorers list": [["scorers", "list", "--no-such-flag"]],
        "scorers train": [["scorers", "train", "--data", gone, "--no-cv"]],
        "scorers validate": [["scorers", "validate", "--mechanism", "ER", "--data", gone + ".csv"]],
        "scorers invariance": [["scorers", "invariance", spec_gone]],
        "analyze": [["analyze", gone + ".csv", "--outcome", "y", "--group", "g", "--control", "c", "--cluster", "p"],
                    ["analyze", str(table), "--outcome", "y", "--group", "g", "--control", "c", "--cluster", "p"]],
        "power": [["power", spec_gone, "--gap", "5%"], ["power", str(bomb), "--ratings-ci", "0.1"],
                  ["power", "demo", "--gap", "500%"]],
        "ratings packet": [["ratings", "packet", gone, "--n", "10", "--raters", "2", "--out", out]],
        "ratings import": [["ratings", "import", gone, str(table), "--rater", "r1"]],
        "ratings agreement": [["ratings", "agreement", gone]],
        "import": [["import", "--spec", spec_gone, "--out", out], ["import", "--spec", str(bomb), "--out", out],
                   ["import", str(table), "--reply", "nope", "--out", out]],
        "stigma reanalyze": [["stigma", "reanalyze", gone + ".csv"], ["stigma", "reanalyze", str(table)]],
        "appropriateness reanalyze": [["appropriateness", "reanalyze", gone + ".csv"]],
        "judge validate": [["judge", "validate", "--data", gone + ".csv"], ["judge", "validate", "--data", str(table)]],
        "pcsa validation-table": [["pcsa", "validation-table", gone, "--out", f"{out}.csv"]],
    }
    for sub in SUBCOMMANDS["batch"]:
        cases[f"batch {sub}"] = [["batch", sub, gone], ["batch", sub, str(empty_dir)]]
    return cases


def test_every_command_of_the_table_has_a_bad_input_case(tmp_path):
    names = table_commands()
    assert len(names) >= 20, names
    missing = sorted(set(names) - set(_bad(tmp_path)))
    assert not missing, f"commands of the README's table without a bad-input case here: {missing}"


@pytest.mark.parametrize("command", table_commands())
def test_bad_input_is_one_clear_line_and_exit_2(command, tmp_path, capsys):
    before = None
    for argv in _bad(tmp_path)[command]:
        before = sorted(p.name for p in tmp_path.iterdir())
        rc = main(argv)
        cap = capsys.readouterr()
        lines = [ln for ln in cap.err.splitlines() if ln.strip()]
        assert rc == 2, (argv, rc, cap.err, cap.out[-500:])
        assert len(lines) == 1 and lines[0].startswith("empathy-audit"), (argv, cap.err)
        assert "Traceback" not in cap.err
        assert sorted(p.name for p in tmp_path.iterdir()) == before, f"{argv} wrote files"
