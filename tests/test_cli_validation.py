"""One validation layer for every command-line number and path (issue 28, item 1 and H8).

Every numeric flag of every command has a declared range, every output path is checked before any
work, and every refusal is one line with exit status 2 (no traceback, no usage block)."""

from __future__ import annotations

import argparse

import pytest

from audit.cli import build_parser, main
from audit.cliargs import LIFT_CAPS_ENV, Bounded, OutputPath


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for every (sub)command with its own options."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path:
        yield path, parser
    for s in subs:
        for name, p in s.choices.items():
            yield from _commands(p, (*path, name))


COMMANDS = list(_commands(build_parser()))
OPTIONS = [(words, a) for words, p in COMMANDS for a in p._actions if a.option_strings]


def _one_line_refusal(capsys, argv, *expect):
    rc = main(argv)
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert rc == 2, (argv, rc, cap.err)
    assert len(lines) == 1, (argv, cap.err)
    assert "Traceback" not in cap.err and "usage:" not in cap.err
    for e in expect:
        assert e in lines[0], (argv, lines[0])
    return lines[0]


def test_every_numeric_flag_declares_a_range():
    bare = [f"{' '.join(w)} {a.option_strings[0]}" for w, a in OPTIONS if a.type in (int, float)]
    assert not bare, f"numeric flags without a declared range (use audit.cliargs.bounded_*): {bare}"
    assert len([1 for _, a in OPTIONS if isinstance(a.type, Bounded)]) >= 30


def test_every_output_path_is_checked_before_any_work():
    outs = [f"{' '.join(w)} {a.option_strings[0]}" for w, a in OPTIONS
            if a.dest in ("out", "json") and a.nargs is None and not isinstance(a, argparse._StoreTrueAction)
            and not isinstance(a.type, OutputPath)]
    assert not outs, f"output paths not checked by audit.cliargs.output_file/output_dir: {outs}"


NUMERIC = [(w, a) for w, a in OPTIONS if isinstance(a.type, Bounded)]


@pytest.mark.parametrize("words,action", NUMERIC, ids=[f"{' '.join(w)} {a.option_strings[0]}" for w, a in NUMERIC])
def test_out_of_range_numbers_are_one_line_and_exit_2(words, action, capsys, monkeypatch):
    monkeypatch.delenv(LIFT_CAPS_ENV, raising=False)
    flag = action.option_strings[0]
    for bad in action.type.out_of_range():
        _one_line_refusal(capsys, [*words, flag, bad], f"argument {flag}", f"empathy-audit {' '.join(words)}")


def test_a_cap_says_how_to_go_past_it_and_the_variable_lifts_it(monkeypatch):
    sims = next(a for w, a in NUMERIC if w == ("power",) and a.dest == "sims")
    monkeypatch.delenv(LIFT_CAPS_ENV, raising=False)
    with pytest.raises(argparse.ArgumentTypeError, match=LIFT_CAPS_ENV):
        sims.type("1000000000")
    monkeypatch.setenv(LIFT_CAPS_ENV, "1")
    assert sims.type("1000000000") == 1_000_000_000
    with pytest.raises(argparse.ArgumentTypeError):  # a domain is not a cap
        sims.type("0")


@pytest.mark.parametrize("argv,expect", [
    (["power", "x.yaml", "--sims", "1e9"], "cap"),
    (["power", "x.yaml", "--posts", "10", "1000000000"], "cap"),
    (["power", "x.yaml", "--sd", "0"], "out of range"),
    (["power", "x.yaml", "--rho", "2"], "out of range"),
    (["power", "x.yaml", "--power", "-0.5"], "out of range"),
    (["power", "x.yaml", "--ratings-ci", "inf"], "not finite"),
    (["power", "x.yaml", "--sd-resid", "1e400"], "not finite"),
    (["analyze", "t.csv", "--alpha", "2"], "out of range"),
    (["analyze", "t.csv", "--alpha", "0"], "out of range"),
    (["stigma", "reanalyze", "t.csv", "--n-boot", "0"], "out of range"),
    (["appropriateness", "reanalyze", "t.csv", "--seed", "1e23"], "whole number"),
    (["ratings", "packet", "r", "--n", "-5", "--raters", "2", "--out", "p"], "out of range"),
])
def test_h8_and_the_number_family(argv, expect, capsys):
    _one_line_refusal(capsys, argv, expect)


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
    (tmp_path / "existing.csv").write_text("a\n1\n")
    sub = tmp_path / "adir"
    sub.mkdir()
    base = ["score-table", str(tmp_path / "missing-input.csv"), "--post", "p", "--reply", "r", "--scorers", "length"]
    _one_line_refusal(capsys, [*base, "--out", str(sub)], "is a directory")
    _one_line_refusal(capsys, [*base, "--out", str(tmp_path / "nowhere" / "x.csv")], "does not exist")
    _one_line_refusal(capsys, [*base, "--out", str(tmp_path / "x.xlsx")], "'.xlsx'")
    _one_line_refusal(capsys, ["export", str(tmp_path), "--out", str(tmp_path / "x.xlsx")], "'.xlsx'")
    _one_line_refusal(capsys, ["variants", "demo", "--out", str(sub)], "is a directory")
    _one_line_refusal(capsys, ["pcsa", "validation-table", str(tmp_path), "--out", str(tmp_path / "t.xlsx")], ".xlsx")
    _one_line_refusal(capsys, ["compare", "a", "b", "--out", str(tmp_path / "existing.csv")], "existing file")
    _one_line_refusal(capsys, ["run", "demo", "--out", str(tmp_path / "existing.csv")], "existing file")
    (sub / "x").write_text("x")
    _one_line_refusal(capsys, ["ratings", "packet", str(tmp_path), "--n", "4", "--raters", "2", "--out", str(sub)],
                      "not empty")
    _one_line_refusal(capsys, ["judge", "validate", "--data", "d.csv", "--json", str(tmp_path / "o.txt")], ".txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "existing.csv"]  # nothing written


def test_an_option_given_twice_with_different_values_is_refused(tmp_path, capsys):
    """argparse keeps the last of two values silently: --out a --out b wrote to b."""
    _one_line_refusal(capsys, ["export", str(tmp_path), "--out", "a.csv", "--out", "b.csv"], "given twice", "a.csv")
    _one_line_refusal(capsys, ["analyze", "t.csv", "--alpha", "0.05", "--alpha", "0.01"], "given twice")
    _one_line_refusal(capsys, ["analyze", "t.csv", "--group", "race", "--group", "gender"], "--group")


def test_argparse_usage_errors_are_one_line_too(capsys):
    _one_line_refusal(capsys, ["analyze"], "required")
    _one_line_refusal(capsys, ["report"], "required")
    _one_line_refusal(capsys, ["run", "demo", "--no-such-flag"], "unrecognized")
    _one_line_refusal(capsys, ["ratings", "packet", "r", "--n", "ten", "--raters", "2", "--out", "p"], "'ten'")


def test_a_yaml_alias_bomb_is_refused_at_once_and_a_few_aliases_still_work(tmp_path):
    from audit.errors import AuditError
    from audit.spec import load_spec

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: b\n" + "".join(
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9 if i else ['"lol"'] * 9) + "]\n" for i in range(9)),
        encoding="utf-8")
    with pytest.raises(AuditError, match="expand to more than 100,000 values"):
        load_spec(bomb)
    many = tmp_path / "many.yaml"
    many.write_text("name: m\nx: &x 1\ny: [" + ", ".join(["*x"] * 101) + "]\n", encoding="utf-8")
    with pytest.raises(AuditError, match="more than 100 aliases"):
        load_spec(many)
    ok = tmp_path / "ok.yaml"
    ok.write_text("name: ok\nsuite: stigma\ndemographics: {axes: &a [race]}\nstigma: {stimuli: own, axes: *a}\n",
                  encoding="utf-8")
    assert load_spec(ok).stigma.axes == ["race"]
