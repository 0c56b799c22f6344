"""The README's two set-up commands are the ones CI and users run: keep them in step."""

from __future__ import annotations

import re


def _readme_commands(repo_root):
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    return text, [b.strip() for b in blocks]


def test_ci_runs_the_readme_test_command(repo_root):
    ci = (repo_root / ".ci" / "run").read_text(encoding="utf-8")
    m = re.search(r"# --- README test command ---\n(.*?)\n# --- end ---", ci, flags=re.S)
    assert m, ".ci/run must mark the README test command"
    ci_cmd = m.group(1).strip()
    _, blocks = _readme_commands(repo_root)
    assert len(blocks) >= 2, "README must start with the two set-up commands"
    assert ci_cmd == blocks[1], "the README's second command (tests) must be exactly what .ci/run runs"


def test_readme_first_command_runs_the_demo_on_the_embedded_model(repo_root):
    _, blocks = _readme_commands(repo_root)
    first = blocks[0]
    assert "pip install ." in first
    assert "empathy-audit run analyses/demo.yaml" in first
    demo = (repo_root / "analyses" / "demo.yaml").read_text(encoding="utf-8")
    assert "base_url" not in demo, "the demo must run on the embedded default model"


def test_readme_python_section_runs_as_printed(repo_root, monkeypatch):
    """The "Use it from Python" examples run from the repository root and print what the README shows."""
    import doctest

    monkeypatch.chdir(repo_root)
    result = doctest.testfile(str(repo_root / "README.md"), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0
