"""The features package imports in one direction: no module reaches back to one that imports it.

Imports inside functions count too: a deferred import hides a cycle from Python, not from readers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("features", "training", "serving", "reports")
ROOT = Path(__file__).resolve().parents[2]


def _imports(package: str) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).glob("*.py")):
        module = f"{package}.{path.stem}"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[module] = {t for t in targets if t.split(".")[0] in PACKAGES}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target in graph and state.get(target) is None:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if state.get(module) is None:
            found = visit(module)
            if found:
                return found
    return None


def test_features_modules_form_no_import_cycle():
    assert _cycle(_imports("features")) is None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_imports_flow_one_way_between_packages():
    """features <- training <- reports; serving uses features, never training."""
    allowed = {
        "features": {"features"},
        "training": {"features", "training"},
        "serving": {"features", "serving"},
        "reports": {"features", "training", "reports"},
    }
    for package in PACKAGES:
        for module, targets in _imports(package).items():
            reached = {t.split(".")[0] for t in targets}
            assert reached <= allowed[package], (module, reached - allowed[package])
