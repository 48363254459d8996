"""``scenarios`` rows: add (a new text is a new version; the same text is the same
version), list, resolve ``NAME`` (its latest) or ``NAME@V``."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pyarrow as pa

from fleetmine_scenarios import ScenarioError, parse
from storage.config import Triggers
from storage.errors import ConfigError
from storage.lake import Lake
from storage.sql import literal
from storage.tables import scenarios

__all__ = ["add_scenario", "list_scenarios", "resolve_scenario", "resolve_scenarios", "shipped"]

NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _shipped(t: Triggers) -> dict[str, str]:
    """The signal triggers ingest names (:func:`ingest.features.trigger_spans`), at the
    thresholds ``t``, as scenarios: what they find is in the lake as spans, and the clips
    those overlap are the clips the triggers name."""
    stop, settle = _n(t.stop_speed_mps), f"{_n(t.stop_min_s)}s"
    return {
        "hard_brake": f"accel_mps2 <= -{_n(t.hard_brake_mps2)}",
        "sudden_stop": (
            f"brake_pressed and speed_mps >= {stop} for < {_n(t.sudden_stop_notice_s)}s"
            f" then speed_mps < {stop} for >= {settle}"
        ),
        # steady per sample (|accel| under the limit at every sample of the creep): without it,
        # every ordinary pull-away from a stop was a creep (17 clips of the demo lake, the trigger's 0)
        "creep": (
            f"speed_mps < {stop} for >= {settle}"
            f" then {stop} <= speed_mps < {_n(t.creep_max_speed_mps)}"
            f" and abs(accel_mps2) < {_n(t.creep_max_accel_mps2)} for >= {_n(t.creep_min_s)}s"
            f" within {_n(t.creep_within_s)}s"
        ),
    }


SHIPPED = _shipped(Triggers())
"""Definitions shipped with fleetmine (``fleetmine scenario add --shipped``): the
triggers at their default thresholds (:class:`storage.config.Triggers`)."""


def shipped(triggers: Triggers | None = None) -> dict[str, str]:
    """The shipped definitions; at ``triggers``' thresholds (a lake's ``Settings.triggers``)
    they find what ingest's triggers at those thresholds name."""
    return dict(SHIPPED) if triggers is None else _shipped(triggers)


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
