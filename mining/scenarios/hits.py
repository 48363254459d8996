"""Reading ``scenario_hits`` back: the clips a set of scenarios overlaps (the ``scenarios``
filter of the clip list, search, the grid and dataset queries) and the spans that fall in
one clip's window (shaded on its page).

A filter names scenarios (``NAME``: its latest version, ``NAME@V``); which clips that means
is a question for the lake, so :func:`resolve_filter` reads it once and lends the set to
the pure :class:`~storage.filters.ClipFilter`, which turns it into a semi-join.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pyarrow.compute as pc

from mining.scenarios.registry import resolve_scenarios
from storage.errors import ConfigError
from storage.filters import ClipFilter
from storage.lake import Lake
from storage.sql import literal

__all__ = ["clip_spans", "hit_clip_ids", "resolve_filter", "resolve_refs", "versions_predicate"]


_REF = re.compile(r"^[a-z][a-z0-9_]{0,63}(@[1-9][0-9]{0,8})?$")


def versions_predicate(versions: set[tuple[str, int]]) -> str:
    """The rows of these ``(name, version)`` pairs, for ``scenario_hits`` / ``scenario_scans``."""
    return " OR ".join(f"(name = {literal(n)} AND version = {int(v)})" for n, v in sorted(versions))


def _check_refs(refs: list[str]) -> None:
    for ref in refs:
        if not _REF.match(ref):
            raise ConfigError(f"scenario {ref[:64]!r}: NAME or NAME@VERSION (lowercase letters, digits, _)")


def hit_clip_ids(lake: Lake, refs: list[str], version: int | None = None) -> frozenset[str]:
    """Every clip a span of one of ``refs`` overlaps (``scenario_hits`` at ``version``).
    An unknown name or version is a ConfigError naming the valid ones; a known scenario
    that was never run matches no clip."""
    _check_refs(refs)
    rows = resolve_scenarios(lake, refs)
    if not lake.exists("scenario_hits"):
        return frozenset()
    where = versions_predicate({(r["name"], int(r["version"])) for r in rows})
    hits = lake.read("scenario_hits", columns=["clip_ids"], where=where, version=version)
    ids = pc.list_flatten(hits.column("clip_ids"))
    return frozenset(pc.unique(ids).to_pylist()) - {None}


def resolve_filter(lake: Lake, f: ClipFilter, version: int | None = None) -> ClipFilter:
    """``f`` with its ``scenarios`` resolved (unchanged when it names none)."""
    if not f.scenarios:
        return f
    return f.with_scenario_clips(hit_clip_ids(lake, list(f.scenarios), version))


def clip_spans(lake: Lake, clip: dict[str, Any], latest_only: bool = True) -> list[dict[str, Any]]:
    """The spans (``name``, ``version``, ``start``, ``end``) of the clip's drive that overlap
    its window, in time order; by default, of each name only its latest version that was
    run over the drive (``scenario_scans``): where that version found nothing here, an
    older version's span is not shown as if it were the current definition's."""
    if not lake.exists("scenario_hits"):
        return []
    start: dt.datetime = clip["start_time"]
    end: dt.datetime = clip["end_time"]
    drive = literal(clip["drive_id"])
    where = f'drive_id = {drive} AND start < {literal(end)} AND "end" > {literal(start)}'
    rows = lake.read("scenario_hits", columns=["name", "version", "start", "end"], where=where).to_pylist()
    if latest_only and rows:
        newest: dict[str, int] = {}
        ran = (
            lake.read("scenario_scans", columns=["name", "version"], where=f"drive_id = {drive}").to_pylist()
            if lake.exists("scenario_scans")
            else []
        )
        for r in [*rows, *ran]:
            newest[r["name"]] = max(newest.get(r["name"], 0), int(r["version"]))
        rows = [r for r in rows if r["version"] == newest[r["name"]]]
    return sorted(rows, key=lambda r: (r["start"], r["name"]))


def resolve_refs(lake: Lake, refs: list[str]) -> list[str]:
    """``refs`` as ``NAME@V`` (``NAME``: its latest version now), each once, in order; a
    ref that is no ``NAME``/``NAME@V`` or names no scenario is a ConfigError, and so is a
    version never run over the lake (``scenario_scans`` has no drive of it): what it
    selects is nothing, which a dataset of it would keep as if the fleet had no such
    moment."""
    _check_refs(refs)
    rows = resolve_scenarios(lake, refs)
    out = list(dict.fromkeys(f"{r['name']}@{int(r['version'])}" for r in rows))
    ran = set()
    if lake.exists("scenario_scans"):
        scans = lake.read(
            "scenario_scans",
            columns=["name", "version"],
            where=versions_predicate({(r["name"], int(r["version"])) for r in rows}),
        )
        ran = {
            f"{n}@{v}"
            for n, v in zip(
                scans.column("name").to_pylist(), scans.column("version").to_pylist(), strict=True
            )
        }
    unrun = [r for r in out if r not in ran]
    if unrun:
        raise ConfigError(
            f"scenario {unrun[0]} has not been run over the lake: `fleetmine scenario run {unrun[0]}` first"
            + (f" ({len(unrun)} of the scenarios: {', '.join(unrun[:8])})" if len(unrun) > 1 else "")
        )
    return out
