"""The house's shape: no import circle anywhere in harness/ (function-level imports count too;
only `if TYPE_CHECKING:` blocks are left out), and the folders show the pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "harness"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, here: str, is_package: bool, known: set[str]) -> set[str]:
    """harness modules a module imports at any level (TYPE_CHECKING blocks aside), with the
    packages whose __init__ each import runs."""
    found: set[str] = set()

    def add(name: str) -> None:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first,
            prefix = ".".join(parts[:i])  # but not when they are this module's own packages (already running)
            own_package = i < len(parts) and here.startswith(prefix + ".")
            if prefix in known and not own_package:
                found.add(prefix)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".") if is_package else here.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            add(module)
            for alias in node.names:  # `from harness import cell` imports the module harness.cell
                if f"{module}.{alias.name}" in known:
                    add(f"{module}.{alias.name}")
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(here)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {
        name: _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py", known)
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), and self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def strongconnect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                strongconnect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    return groups


def test_no_import_cycle_in_harness() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (function-level imports count): " + "; ".join(" <-> ".join(g) for g in found)


def test_the_cycle_finder_sees_function_level_and_package_imports(tmp_path: Path) -> None:
    """The finder is not vacuous: a circle held together by an import inside a function, and
    one through a package's __init__, are both found."""
    a = ast.parse("def f():\n    from harness import b\n")
    b = ast.parse("import harness.pkg.c\n")
    init = ast.parse("from harness import a\n")
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness import a\n")
    known = {"harness", "harness.a", "harness.b", "harness.pkg", "harness.pkg.c"}
    graph = {
        "harness.a": _imports(a, "harness.a", False, known),
        "harness.b": _imports(b, "harness.b", False, known),
        "harness.pkg": _imports(init, "harness.pkg", True, known),
        "harness.pkg.c": _imports(guarded, "harness.pkg.c", False, known),
    }
    assert graph["harness.b"] >= {"harness.pkg", "harness.pkg.c"}
    assert graph["harness.pkg.c"] == set()  # a TYPE_CHECKING import is no edge
    assert cycles(graph) == [["harness.a", "harness.b", "harness.pkg"]]


def test_the_folders_show_the_pipeline() -> None:
    for package in (
        "stages",
        "stages/serving",
        "stages/evaluate",
        "results",
        "report",
        "executors",
        "plan",
        "formats",
        "engines",
    ):
        assert (PACKAGE / package / "__init__.py").is_file(), package
    for module in ("calibration", "quantize", "bench", "workload", "models"):
        assert (PACKAGE / "stages" / f"{module}.py").is_file(), module
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= 22, f"{len(flat)} flat modules under harness/: {flat}"
