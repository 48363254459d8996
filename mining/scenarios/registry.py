"""``scenarios`` rows: add (a new text is a new version; the same text is the same
version), list, resolve ``NAME`` (its latest) or ``NAME@V``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pyarrow as pa

from fleetmine_scenarios import ScenarioError, parse
from storage.errors import ConfigError
from storage.lake import Lake
from storage.sql import literal
from storage.tables import scenarios

__all__ = ["add_scenario", "list_scenarios", "resolve_scenario", "resolve_scenarios", "shipped"]

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

SHIPPED = {
    # The signal triggers ingest names (ingest.features), at its default thresholds
    # (storage.config.Triggers), as scenarios: what they find is in the lake as spans.
    "hard_brake": "accel_mps2 <= -3",
    "sudden_stop": ("brake_pressed and speed_mps >= 0.3 for < 4s then speed_mps < 0.3 for >= 0.5s"),
    # the trigger also wants the creep steady (median |accel| under 0.5 over it); per sample
    # here: without it, every ordinary pull-away from a stop was a creep (17 clips of the demo
    # lake against the trigger's 0)
    "creep": (
        "speed_mps < 0.3 for >= 0.5s"
        " then 0.3 <= speed_mps < 2.5 and abs(accel_mps2) < 0.5 for >= 1s within 3s"
    ),
}
"""Definitions shipped with fleetmine (``fleetmine scenario add --shipped``)."""


def shipped() -> dict[str, str]:
    return dict(SHIPPED)


def add_scenario(lake: Lake, name: str, text: str) -> dict[str, Any]:
    """The version of ``name`` whose canonical text is ``text``'s: the existing one, or
    a new one (versions never change)."""
    if not NAME.match(name):
        raise ConfigError(f"scenario name {name!r}: lowercase letters, digits and _, a letter first")
    try:
        canonical = parse(text).text()
    except ScenarioError as exc:
        raise ConfigError(f"scenario {name}: {exc}") from None
    lake.create_tables(["scenarios"])
    for _ in range(8):  # two adds of one name at once: the loser takes the next number
        rows = lake.read("scenarios", where=f"name = {literal(name)}").to_pylist()
        for r in rows:
            if r["text"] == canonical:
                return r
        row = {
            "name": name,
            "version": max((r["version"] for r in rows), default=0) + 1,
            "text": canonical,
            "created_at": dt.datetime.now(dt.UTC),
        }
        # a version that exists is never rewritten (only_if holds for no row)
        lake.upsert("scenarios", pa.Table.from_pylist([row], schema=scenarios.SPEC.schema), only_if="1 = 0")
    raise ConfigError(f"scenario {name}: could not take a version number (too many adds at once)")


def list_scenarios(lake: Lake) -> list[dict[str, Any]]:
    lake.create_tables(["scenarios"])
    return sorted(lake.read("scenarios").to_pylist(), key=lambda r: (r["name"], r["version"]))


def resolve_scenario(lake: Lake, ref: str) -> dict[str, Any]:
    """``NAME`` (its latest version) or ``NAME@V``."""
    return resolve_scenarios(lake, [ref])[0]


MAX_REFS = 1000


def resolve_scenarios(lake: Lake, refs: list[str]) -> list[dict[str, Any]]:
    """Each of ``refs`` (``NAME`` or ``NAME@V``), from one read of the table."""
    if len(refs) > MAX_REFS:
        raise ConfigError(f"at most {MAX_REFS} scenarios at once, not {len(refs)}")
    every = list_scenarios(lake)
    out = []
    for ref in refs:
        name, _, version = ref.partition("@")
        rows = [r for r in every if r["name"] == name]
        if not rows:
            known = sorted({r["name"] for r in every})
            raise ConfigError(
                f"no scenario {name[:64]!r}; scenarios: {known or 'none (fleetmine scenario add)'}"
            )
        found = [r for r in rows if str(r["version"]) == version] if version else rows[-1:]
        if not found:
            raise ConfigError(
                f"scenario {name} has versions {[r['version'] for r in rows]}, not {version[:16]!r}"
            )
        out.append(found[0])
    return out
