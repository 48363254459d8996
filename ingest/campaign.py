"""A scenario as a collection campaign for the fleet: the definition, and for each
shipped platform where each column it reads comes from on the CAN bus.

``fleetmine scenario export NAME@V --campaign out.json`` writes it. A recorder decodes the
listed messages with the platform's DBC, turns them into the canonical columns the way
ingest does (the ``op``, ``scale``/``divide``/``offset`` and ``value_map`` given per
column), resamples to ``rate_hz`` and feeds :class:`fleetmine_scenarios.Stream` (NumPy
only), which gives the spans the lake's run gives on the same samples; it uploads the
minutes around them. A platform that lacks a column the scenario reads is listed under
``missing`` with the columns, not silently dropped.
"""

from __future__ import annotations

from typing import Any

from fleetmine_scenarios import parse
from ingest.platform import load_platform, shipped_platforms
from storage.errors import ConfigError

__all__ = ["FORMAT", "campaign"]

FORMAT = "fleetmine-scenario-campaign-v1"
RATE_HZ = 20.0


def campaign(row: dict[str, Any], platforms: list[str] | None = None) -> dict[str, Any]:
    """The campaign of a ``scenarios`` row over ``platforms`` (default: every shipped one)."""
    scenario = parse(row["text"])
    columns = sorted(scenario.columns())
    names = platforms or shipped_platforms()
    unknown = sorted(set(names) - set(shipped_platforms()))
    if unknown:
        raise ConfigError(f"unknown platforms {unknown}; shipped platforms: {shipped_platforms()}")
    out: dict[str, Any] = {
        "format": FORMAT,
        "scenario": {
            "name": row["name"],
            "version": int(row["version"]),
            "text": row["text"],
            **scenario.to_json(),
        },
        "rate_hz": RATE_HZ,
        "columns": columns,
        "platforms": {},
        "missing": {},
    }
    for name in names:
        p = load_platform(name)
        db = p.database
        mapped: dict[str, Any] = {}
        for col in columns:
            m = p.signals.get(col)
            if m is None:
                continue
            frames: dict[str, int | None] = {}
            for src in m.sources:
                message = src.split(".", 1)[0]
                try:
                    frames[message] = int(db.get_message_by_name(message).frame_id)
                except KeyError:
                    frames[message] = None  # the map names a message its DBC lacks: said, not hidden
            mapped[col] = {
                "sources": list(m.sources),
                "frame_ids": frames,
                "op": m.op,
                "kind": m.kind,
                "scale": m.scale,
                "divide": m.divide,
                "offset": m.offset,
                "value_map": {str(k): v for k, v in m.value_map},
            }
        lacking = [c for c in columns if c not in mapped]
        if lacking:
            out["missing"][name] = lacking
        out["platforms"][name] = {
            "dbc": p.dbc,
            "dbc_sha256": p.dbc_sha256,
            "buses": list(p.buses),
            "columns": mapped,
        }
    return out
