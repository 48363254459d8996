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

__all__ = ["clip_spans", "hit_clip_ids", "resolve_filter"]


_REF = re.compile(r"^[a-z][a-z0-9_]{0,63}(@[1-9][0-9]{0,8})?$")


def _versions_predicate(versions: set[tuple[str, int]]) -> str:
    return " OR ".join(f"(name = {literal(n)} AND version = {int(v)})" for n, v in sorted(versions))


def hit_clip_ids(lake: Lake, refs: list[str], version: int | None = None) -> frozenset[str]:
    """Every clip a span of one of ``refs`` overlaps (``scenario_hits`` at ``version``).
    An unknown name or version is a ConfigError naming the valid ones; a known scenario
    that was never run matches no clip."""
    for ref in refs:
        if not _REF.match(ref):
            raise ConfigError(f"scenario {ref[:64]!r}: NAME or NAME@VERSION (lowercase letters, digits, _)")
    rows = resolve_scenarios(lake, refs)
    if not lake.exists("scenario_hits"):
        return frozenset()
    where = _versions_predicate({(r["name"], int(r["version"])) for r in rows})
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
    its window, in time order; of each name its latest version that was run, by default."""
    if not lake.exists("scenario_hits"):
        return []
    start: dt.datetime = clip["start_time"]
    end: dt.datetime = clip["end_time"]
    where = f'drive_id = {literal(clip["drive_id"])} AND start < {literal(end)} AND "end" > {literal(start)}'
    rows = lake.read("scenario_hits", columns=["name", "version", "start", "end"], where=where).to_pylist()
    if latest_only:
        newest: dict[str, int] = {}
        for r in rows:
            newest[r["name"]] = max(newest.get(r["name"], 0), r["version"])
        rows = [r for r in rows if r["version"] == newest[r["name"]]]
    return sorted(rows, key=lambda r: (r["start"], r["name"]))
