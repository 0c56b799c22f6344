"""The README is a front door (issue 29): its two set-up commands are the ones CI and users run, it
stays short, its numbers are tested against the code (so they cannot go stale), its links resolve,
and the Python examples that moved to docs/guide/python.md still run as printed."""

from __future__ import annotations

import re

import yaml

MAX_LINES = 250


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
    # and CI builds the documentation site strictly, after the tests (broken links and tables fail)
    after = ci[m.end():]
    assert re.search(r"^mkdocs build --strict\b", after, flags=re.M), "CI must run `mkdocs build --strict`"


def test_readme_first_command_runs_the_demo_on_the_embedded_model(repo_root):
    _, blocks = _readme_commands(repo_root)
    first = blocks[0]
    assert "pip install ." in first
    assert "empathy-audit run analyses/demo.yaml" in first
    demo = (repo_root / "analyses" / "demo.yaml").read_text(encoding="utf-8")
    assert "base_url" not in demo, "the demo must run on the embedded default model"


def test_readme_is_a_short_front_door(repo_root):
    text = (repo_root / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_LINES
    for heading in ("## Two commands", "## Reading the first screen", "## Auditing a real model, step by step",
                    "## The suites"):
        assert heading in text
    steps = text[text.index("## Auditing a real model"):text.index("## The suites")]
    for step in ("**Write the spec.**", "**Plan.**", "**Pilot.**", "**Run.**", "**Human ratings.**", "**Report.**"):
        assert step in steps


def test_readme_and_docs_links_resolve(repo_root):
    for page in [repo_root / "README.md"]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


def test_readme_figures_match_the_code(repo_root):
    """Every number the README states about the code is computed here from the code."""
    import audit
    from audit.backends.weights import model_card

    text = (repo_root / "README.md").read_text(encoding="utf-8")
    mb = re.search(r"fetches the (\d+) MB model", text)
    assert mb and int(mb.group(1)) == round(model_card()["size_bytes"] / 1e6)
    # the suites table names every built-in spec, each once
    table = text[text.index("## The suites"):text.index("## More")]
    named = set(re.findall(r"`analyses/([\w-]+)\.yaml`", table))
    assert named == {p.stem for p in (repo_root / "analyses").glob("*.yaml")}
    for suite in ("empathy", "stigma", "appropriateness", "PCSA"):
        assert f"| {suite}" in table
    # the built-in designs' counts in the moved spec page
    specs = (repo_root / "docs" / "guide" / "specs.md").read_text(encoding="utf-8")
    for name in ("demo", "can-ai-relate"):
        spec = audit.load_spec(repo_root / "analyses" / f"{name}.yaml")
        n_var = len(audit.build_variants(spec))
        replies = n_var * len(spec.styles) * spec.samples
        row = next(ln for ln in specs.splitlines() if ln.startswith(f"| `analyses/{name}.yaml`"))
        assert f"{n_var:,} variants" in row and f"{replies:,} replies" in row, (row, n_var, replies)


def test_mkdocs_nav_names_existing_pages_and_every_readme_section_moved(repo_root):
    cfg = yaml.safe_load((repo_root / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav):
        for item in nav:
            v = list(item.values())[0] if isinstance(item, dict) else item
            yield from (pages(v) if isinstance(v, list) else [v])

    listed = set(pages(cfg["nav"]))
    have = {str(p.relative_to(repo_root / "docs")) for p in (repo_root / "docs").rglob("*.md")}
    assert listed <= have, sorted(listed - have)
    # the README's former sections are pages of the guide, each in the nav
    for page in ("overview", "commands", "specs", "models", "scorers", "human-ratings", "statistics", "replicating",
                 "comparing", "stigma", "appropriateness", "pcsa", "python", "reports", "large-audits",
                 "performance", "limits", "data-and-licenses"):
        assert f"guide/{page}.md" in listed


def test_python_examples_run_as_printed(repo_root, monkeypatch):
    """The "Use it from Python" examples (docs/guide/python.md) run from the repository root and print what they show."""
    import doctest

    monkeypatch.chdir(repo_root)
    result = doctest.testfile(str(repo_root / "docs" / "guide" / "python.md"), module_relative=False,
                              optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6 and result.failed == 0


def test_readme_pilot_sizes_match_the_code(repo_root, tmp_path):
    """The pilot recipe's reply counts (step 3) are what the code builds from the flagship spec."""
    import audit

    text = (repo_root / "README.md").read_text(encoding="utf-8")
    m = re.search(r"\(10 posts × (\d+) variants × (\d) styles = ([\d,]+) replies;.*?for ([\d,]+)\)", text, flags=re.S)
    assert m, "the pilot's size must be stated"
    base = yaml.safe_load((repo_root / "analyses" / "can-ai-relate.yaml").read_text(encoding="utf-8"))

    def replies(**change):
        spec = {**base, "name": "pilot", "samples": 1, "posts": {**base["posts"], "limit": 10}}
        if change.get("small"):
            spec["demographics"] = {**base["demographics"], "alternatives": 1}
            spec["styles"] = ["plain"]
        p = tmp_path / "pilot.yaml"
        p.write_text(yaml.safe_dump(spec), encoding="utf-8")
        s = audit.load_spec(p)
        return len(audit.build_variants(s)), len(s.styles)

    n_var, n_styles = replies()
    assert (int(m.group(1)) * 10, int(m.group(2))) == (n_var, n_styles)
    assert int(m.group(3).replace(",", "")) == n_var * n_styles
    n_small, styles_small = replies(small=True)
    assert int(m.group(4).replace(",", "")) == n_small * styles_small
