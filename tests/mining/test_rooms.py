"""``mining/`` stands in rooms (its docstring draws them): a room imports only the rooms
below it, so no two import each other; the contracts (``mining/interfaces.py``)
import no room. Every import counts, a function's own included, as in ``test_layers``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_layers import parse

MINING = Path(__file__).resolve().parents[2] / "mining"
ROOM = {"interfaces": 0, "encoders": 1, "search": 2, "scores": 3, "datasets": 4}


def _room(module: str) -> str | None:
    """The room of a ``mining`` module; None for ``mining`` itself and modules of no room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mining" and parts[1] in ROOM else None


def _imports(source: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "mining":  # from mining import search
                out |= {f"mining.{a.name}" for a in node.names}
    return out


def _upward(sources: dict[str, str]) -> dict[str, str]:
    """``importer -> imported`` for each import of a room above the importer's."""
    out = {}
    for module, source in sources.items():
        here = _room(module)
        for name in _imports(source) if here is not None else ():
            there = _room(name)
            if there is not None and ROOM[there] > ROOM[here]:
                out[f"{module} -> {name}"] = f"{here} imports {there}"
    return out


def test_every_module_sits_in_a_room() -> None:
    loose = [p.name for p in MINING.glob("*.py") if p.stem not in ("__init__", "interfaces")]
    assert not loose, f"modules outside the rooms {sorted(ROOM)}: {loose}"


def test_each_room_imports_only_the_rooms_below_it() -> None:
    sources = {
        ".".join(("mining", *p.relative_to(MINING).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): p.read_text()
        for p in sorted(MINING.rglob("*.py"))
    }
    assert len(sources) > 30, "the walk found the modules"
    upward = _upward(sources)
    assert not upward, upward


def test_the_room_check_finds_an_upward_import() -> None:
    lazy = "def f():\n    from mining.datasets.curation import DatasetQuery\n"
    assert _upward({"mining.search.queries": lazy}) == {
        "mining.search.queries -> mining.datasets.curation": "search imports datasets"
    }
    assert _upward({"mining.datasets.shards": "from mining.search import serving"}) == {}
    assert _upward({"mining.encoders.embed": "from mining import scores"})
    assert _upward({"mining.interfaces": "import mining.encoders.params"})
