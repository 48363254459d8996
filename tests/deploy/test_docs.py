"""docs/: the contracts stay those of the code. Every table and column of the registry has
its line in docs/tables.md, every route of the app its heading or row in docs/api.md, and
every drive.json key the ingest reads its line in docs/raw-layout.md; a table, column,
route or key added without its docs fails here (and so does a doc of one that is gone)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.app import create_app
from ingest.can import CAN_SUFFIXES
from ingest.discover import VIDEO_SUFFIXES
from storage import Settings
from storage.tables import TABLES
from storage.tables.signals import CANONICAL

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
METHODS = ("get", "post", "put", "patch", "delete")

# A drive.json (or platform TOML / signal map) key read as ``doc.get("k")``, ``doc["k"]``,
# ``"k" in doc``, ``_number(doc, "k", ...)``, on the names ingest gives those documents.
_KEY_READ = re.compile(
    r"""\b(?:doc|cam_doc|cams|cam|spec)\s*(?:\.get\(\s*|\[\s*)"(\w+)\""""
    r"""|_number\(\s*[\w.]+\s*,\s*"(\w+)\""""
    r"""|"(\w+)"\s+(?:not\s+)?in\s+doc\b"""
)
# Read in ways the pattern cannot see: ``_calibration`` (ingest/drive.py) takes a camera's
# ``intrinsics`` and ``extrinsics`` through a loop over a tuple of names.
_KEYS_READ_OTHERWISE = {"intrinsics", "extrinsics"}
# Keys the pattern must keep finding: if a refactor renames the variables it looks for,
# this fails instead of the key list quietly shrinking.
_KEYS_ANCHOR = {"start_time", "can_time_offset_s", "platform", "dbc", "signals", "cameras", "fps", "sources"}


def _text(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _sections(text: str) -> dict[str, str]:
    """``## `name` `` headings -> the text under each, up to the next ``## ``."""
    out = {}
    for chunk in re.split(r"^## ", text, flags=re.MULTILINE)[1:]:
        head, _, body = chunk.partition("\n")
        m = re.fullmatch(r"`([^`]+)`", head.strip())
        if m:
            out[m[1]] = body
    return out


def test_every_table_and_its_columns_are_in_tables_md() -> None:
    sections = _sections(_text("tables.md"))
    missing = {
        name: [c for c in spec.schema.names if f"| `{c}` |" not in sections.get(name, "")]
        for name, spec in TABLES.items()
    }
    missing = {name: cols for name, cols in missing.items() if cols}
    assert not missing, f"docs/tables.md lacks (a '## `table`' section with a '| `column` |' row): {missing}"
    assert not set(sections) - set(TABLES), (
        f"docs/tables.md documents tables that are gone: {set(sections) - set(TABLES)}"
    )
    summary = _text("tables.md").split("\n## ", 1)[0]
    assert not [n for n in TABLES if f"| `{n}` |" not in summary], "the summary table lacks a table"


@pytest.fixture(scope="module")
def operations(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    spec = create_app(Settings(lake=str(tmp_path_factory.mktemp("lake")))).openapi()
    return {f"{m.upper()} {path}" for path, item in spec["paths"].items() for m in item if m in METHODS}


def test_every_route_of_the_openapi_is_in_api_md(operations: set[str]) -> None:
    text = _text("api.md")
    assert len(operations) > 20  # the app's document was read, not an empty one
    missing = sorted(op for op in operations if f"`{op}`" not in text)
    assert not missing, f"docs/api.md lacks these operations (as `METHOD /path`): {missing}"
    documented = set(re.findall(r"`((?:GET|POST|PUT|PATCH|DELETE) (?:/v1/|/metrics)[^`\s]*)`", text))
    assert not documented - operations, (
        f"docs/api.md documents routes that are gone: {documented - operations}"
    )


def test_every_web_page_is_in_api_md() -> None:
    from api.routes.ui import router

    text = _text("api.md")
    pages = {f"{m} {r.path}" for r in router.routes for m in getattr(r, "methods", ())}
    assert len(pages) > 5  # the router's routes were read
    missing = sorted(page for page in pages if f"`{page}`" not in text)
    assert not missing, f"docs/api.md lacks these web pages: {missing}"


def _keys_read() -> set[str]:
    found: set[str] = set()
    for path in sorted((ROOT / "ingest").glob("*.py")):
        for m in _KEY_READ.finditer(path.read_text(encoding="utf-8")):
            found.add(next(g for g in m.groups() if g))
    return found


def test_every_drive_json_key_the_ingest_reads_is_in_raw_layout_md() -> None:
    found = _keys_read()
    assert found >= _KEYS_ANCHOR, f"the key pattern no longer finds {_KEYS_ANCHOR - found}: update _KEY_READ"
    text = _text("raw-layout.md")
    missing = sorted(k for k in found | _KEYS_READ_OTHERWISE if f"`{k}`" not in text)
    assert not missing, f"docs/raw-layout.md lacks these drive.json / platform keys: {missing}"


def test_raw_layout_md_names_every_suffix_and_canonical_signal() -> None:
    text = _text("raw-layout.md")
    suffixes = [s for s in (*VIDEO_SUFFIXES, *CAN_SUFFIXES) if not re.search(rf"{re.escape(s)}\b", text)]
    assert not suffixes, f"docs/raw-layout.md lacks these file suffixes discovery accepts: {suffixes}"
    signals = [s for s in CANONICAL if f"| `{s}` |" not in text]
    assert not signals, f"docs/raw-layout.md lacks these canonical signals: {signals}"
