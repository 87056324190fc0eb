"""The package's import graph: no cycles inside ``pipeline/``, and no module imports another's private names.

Read from the source with ``ast``, so every import counts: module level, inside functions (lazy imports)
and under ``if TYPE_CHECKING:``. An edge goes to the module that is imported (``from pipeline import
report`` is an edge to ``pipeline.report``; ``from pipeline import __version__`` to ``pipeline`` itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of a ``pipeline`` module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target:
                    found.append((target, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            source = absolute(node, name, path.name == "__init__.py")
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    found.append((submodule, None, node.lineno))
                elif source in known:
                    found.append((source, alias.name, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {target for target, _, _ in imports(name, path, known) if target != name}
            for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def test_the_checker_finds_cycles_and_resolves_relative_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    node = ast.parse("from ..io import write_json").body[0]
    assert absolute(node, "pipeline.formats.coco", is_package=False) == "pipeline.io"
    node = ast.parse("from . import blocks").body[0]
    assert absolute(node, "pipeline.nn", is_package=True) == "pipeline.nn"


def test_the_checker_sees_private_names_and_lazy_imports(tmp_path):
    source = tmp_path / "stage.py"
    source.write_text("from pipeline.io import _umask, write_json\n\n\ndef f():\n"
                      "    from pipeline import report\n    import pipeline.nn.blocks\n")
    known = {"pipeline", "pipeline.io", "pipeline.report", "pipeline.nn", "pipeline.nn.blocks"}
    assert imports("pipeline.stage", source, known) == [
        ("pipeline.io", "_umask", 1), ("pipeline.io", "write_json", 1), ("pipeline.report", None, 5),
        ("pipeline.nn.blocks", None, 6)]


def test_the_graph_sees_lazy_and_package_level_imports():
    edges = graph()
    assert "pipeline.nn.ultralytics" in edges["pipeline"]  # pipeline/__init__ imports it inside a method
    assert "pipeline.errors" in edges["pipeline.cli"]


def test_no_import_cycle_in_the_package():
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(component) for component in found)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_private_name_is_imported_from_another_module(name):
    path = modules()[name]
    private = [f"line {line}: from {target} import {imported}"
               for target, imported, line in imports(name, path, set(modules()))
               if imported and imported.startswith("_") and not imported.startswith("__") and target != name]
    assert not private, f"{path.relative_to(PACKAGE.parent)} imports private names: {private}"
