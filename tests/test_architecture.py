"""The package's layering, read from the source: imports (also those inside functions) form no cycle,
the pure-math layers never import nnU-Net, and the demo is an entry point, not a library."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nnunet_sdm"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "trainers" not in p.parts}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (a package import counts as its __init__)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            # importing a.b.c runs a/__init__ and a/b/__init__ too
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and prefix != name:
                    found.add(prefix)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, name, set(known)) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # a package's __init__ importing its own submodules is how packages work, not a cycle back
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert "nnunet_sdm.evaluation.compare" in graph["nnunet_sdm.cli"]  # imported inside a command
    assert "nnunet_sdm.plots" in graph["nnunet_sdm.evaluation.compare"]


def test_no_import_cycle_inside_the_package():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_command_line_imports_the_demo():
    importers = {name for name, targets in import_graph().items() if "nnunet_sdm.demo" in targets}
    assert importers == {"nnunet_sdm.cli"}


def test_pure_math_layers_import_no_nnunet_and_no_upper_layer():
    for name, path in modules().items():
        if not name.startswith(("nnunet_sdm.distance", "nnunet_sdm.losses", "nnunet_sdm.checks")):
            continue
        text = path.read_text()
        assert "nnunetv2" not in text, name
        allowed = ("nnunet_sdm.distance", "nnunet_sdm.losses", "nnunet_sdm.checks", "nnunet_sdm")
        for target in imports_of(path, name, set(modules())):
            assert target.startswith(allowed[:3]) or target == allowed[3], f"{name} imports {target}"
