"""Imports only go downward: the pure domain packages name neither Ray, aiohttp nor the layers above
them, in an import or in a string (an importlib registry is an import too)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ("cluster", "play", "learn", "nn", "stats", "sync", "ops")
ABOVE = ("ray", "aiohttp", "actors", "orchestrator.gateway")
# Within the domain layer, the direction DESIGN.md gives: learn uses play and nn, play uses nn, never the reverse.
NOT_BELOW = {"nn": ("orchestrator.play", "orchestrator.learn"), "play": ("orchestrator.learn",),
             "stats": ("orchestrator.cluster", "orchestrator.play", "orchestrator.learn", "orchestrator.nn"),
             "cluster": ("orchestrator.learn",)}


def _names(tree: ast.AST) -> list[tuple[int, str]]:
    """Every module an import statement names, and every string constant that looks like a module path."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and " " not in node.value:
            found.append((node.lineno, node.value.split(":")[0]))
    return found


def _offences(package: str, forbidden: tuple[str, ...]) -> list[str]:
    offences = []
    for path in sorted((ROOT / "orchestrator" / package).rglob("*.py")):
        for line, name in _names(ast.parse(path.read_text(), str(path))):
            if any(name == bad or name.startswith(bad + ".") for bad in forbidden):
                offences.append(f"{path.relative_to(ROOT)}:{line} names {name}")
    return offences


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_name_nothing_above_them(package):
    assert _offences(package, ABOVE + NOT_BELOW.get(package, ())) == []


def test_the_check_sees_imports_in_functions_and_importlib_strings(tmp_path):
    source = "def f():\n    import ray\n\nREGISTRY = {'x': 'actors.catalog:JOB_TYPES'}\nfrom aiohttp import web\n"
    names = [name for _, name in _names(ast.parse(source))]
    assert {"ray", "actors.catalog", "aiohttp"} <= set(names)
