"""The packages stand in floors: a package imports only those below it, so no two import
each other (a circle makes every change on one side a change on the other).

storage  <  ingest, mining  <  jobs  <  api  <  fleetmine (the CLI, the benchmarks: the top)
fleetmine_reader stands alone: trainers install it without the rest; fleetmine_scenarios
too: a recorder in a car runs the lake's scenario definitions with it.

Every import counts, a function's own included (the lazy ones keep start-up fast, but
they are dependencies all the same).
"""

from __future__ import annotations

import ast
import gc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLOOR = {
    "storage": 0,
    "ingest": 1,
    "mining": 1,
    "jobs": 2,
    "api": 3,
    "fleetmine": 4,
    "fleetmine_reader": 0,
    "fleetmine_scenarios": 0,
}


def parse(source: str) -> ast.Module:
    """``ast.parse`` with the collector paused: on CPython 3.11.7 a finalizer the collector
    runs mid-parse (asammdf's ``MDF4.__del__`` did, in CI) breaks the AST constructor's
    recursion bookkeeping and the parse raises ``SystemError`` (fixed in 3.11.8)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        if enabled:
            gc.enable()


def _imports() -> dict[str, dict[str, str]]:
    """package -> {imported package: a file that imports it}."""
    out: dict[str, dict[str, str]] = {p: {} for p in FLOOR}
    for package in FLOOR:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in FLOOR and top != package:
                        out[package].setdefault(top, str(path.relative_to(REPO)))
    return out


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of packages, if there is one."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [*path, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_circle_between_top_level_packages() -> None:
    imports = _imports()
    assert imports["api"] and imports["fleetmine"], "the walk found the imports"  # it can fail
    circle = _circle({p: set(found) for p, found in imports.items()})
    assert circle is None, " -> ".join(circle or [])


def test_each_package_imports_only_the_floors_below_it() -> None:
    upward = {
        f"{package} -> {other}": where
        for package, found in _imports().items()
        for other, where in found.items()
        if FLOOR[other] >= FLOOR[package]
    }
    assert not upward, upward


def test_the_circle_check_finds_a_circle() -> None:
    assert _circle({"api": {"jobs"}, "jobs": {"api"}}) in (["api", "jobs", "api"], ["jobs", "api", "jobs"])
    assert _circle({"a": {"b"}, "b": set()}) is None
