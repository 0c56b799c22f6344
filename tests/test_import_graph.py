"""The audit package has no import cycle.

The import graph is read from the source with ``ast`` (nothing is imported): an edge A -> B for every
``import audit.B`` / ``from .B import x`` / ``from . import B`` in module A. Top-level edges are those
that run when A is imported (module body, including ``try``/``if`` blocks, but not ``if TYPE_CHECKING``);
function-level edges are the imports inside functions and methods, which run later.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "audit"


def _module_names(pkg_dir: Path) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package (packages by their __init__)."""
    out = {}
    for f in sorted(pkg_dir.rglob("*.py")):
        parts = list(f.relative_to(pkg_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, top_level: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run at import time (``top_level``) or inside functions (not)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for sub in child.orelse:
                    visit_stmt(sub, in_function)
                continue
            visit_stmt(child, in_function)

    def visit_stmt(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if in_function != top_level:
                found.append(node)
            return
        visit(node, in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def import_graph(pkg_dir: Path = PACKAGE_DIR, *, top_level: bool = True) -> dict[str, set[str]]:
    """{module: modules of the same package it imports}, top-level imports or function-level ones."""
    modules = _module_names(pkg_dir)
    root = pkg_dir.name
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree, top_level):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
                targets = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name and t.split(".")[0] == root)
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _merged(*graphs: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for g in graphs:
        for k, v in g.items():
            out.setdefault(k, set()).update(v)
    return out


def test_the_graph_reader_sees_relative_absolute_and_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from . import b\nimport pkg.sub.c\n\ndef f():\n    from .sub import d\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n")
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("from ..b import x\n")
    (pkg / "sub" / "d.py").write_text("try:\n    from .. import a\nexcept ImportError:\n    pass\n")
    assert import_graph(pkg, top_level=True) == {
        "pkg": {"pkg.a"}, "pkg.a": {"pkg.b", "pkg.sub.c"}, "pkg.b": set(),
        "pkg.sub": {"pkg.sub.c"}, "pkg.sub.c": {"pkg.b"}, "pkg.sub.d": {"pkg.a"},
    }
    assert import_graph(pkg, top_level=False)["pkg.a"] == {"pkg.sub.d"}
    with pytest.raises(graphlib.CycleError):  # a -> sub.d (in f) -> a
        graphlib.TopologicalSorter(_merged(import_graph(pkg, top_level=True),
                                           import_graph(pkg, top_level=False))).prepare()


def test_top_level_imports_of_the_package_have_no_cycle():
    graph = import_graph(top_level=True)
    assert "audit.counterfactual" in graph and "audit.corpus" in graph["audit.counterfactual"]
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle at module level: {' -> '.join(exc.args[1])}")


def test_corpus_and_counterfactual_do_not_import_each_other_even_inside_functions():
    graph = _merged(import_graph(top_level=True), import_graph(top_level=False))
    assert "audit.corpus" in _reachable(graph, "audit.counterfactual")
    assert "audit.counterfactual" not in _reachable(graph, "audit.corpus")


def test_no_cycle_even_counting_imports_inside_functions():
    graph = _merged(import_graph(top_level=True), import_graph(top_level=False))
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle through a function-level import: {' -> '.join(exc.args[1])}")
