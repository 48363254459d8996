"""``ClipFilter``: one typed selection of ``clips`` rows, one Delta predicate for it.

The clip list of the API and the dataset queries of curation both narrow clips
by these fields; both build their ``where`` here, so a filter means the same rows
everywhere, and every value reaches the predicate through :mod:`storage.sql`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Collection

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from storage.bounds import MAX_BASKET, MAX_NAMES, ClipId, Name, Speed
from storage.errors import ConfigError
from storage.sql import in_list, in_set, literal

__all__ = ["ClipFilter", "among", "within_days"]


# What the engine's timestamps (nanoseconds since 1970, 64 bits) can hold, with a day to spare.
_EARLIEST = dt.datetime(1677, 9, 22, tzinfo=dt.UTC)
_LATEST = dt.datetime(2262, 4, 10, tzinfo=dt.UTC)


def _representable(t: dt.datetime | None) -> dt.datetime | None:
    """``t`` within the engine's range: a bound beyond it selects the same clips as the
    range's end (none start before 1677 or after 2262), and no query fails on it."""
    if t is None:
        return None
    aware = t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    return min(max(aware, _EARLIEST), _LATEST)


def _utc_day(t: dt.datetime) -> dt.date:
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date()


def _id_days(ids: list[str]) -> set[dt.date] | None:
    """The days the ids begin with (DESIGN.md), or None when one does not name a day."""
    days = set()
    for i in ids:
        try:
            days.add(dt.datetime.strptime(i[:8], "%Y%m%d").date())
        except ValueError:
            return None
    return days


_MAX_DAYS_LISTED = 64


def _any_event(events: list[str]) -> str:
    """One ``array_has_any`` call: an ``OR`` of ``array_has`` per event costs the engine
    time quadratic in the events (4,000 took 37 s of CPU)."""
    if len(events) == 1:
        return f"array_has(events, {literal(events[0])})"
    return f"array_has_any(events, make_array({in_list(sorted(set(events)))}))"


def _days_predicate(days: set[dt.date]) -> str:
    """The ``date`` partitions of a set of days: listed when few, else their range (a
    superset: the ids' own predicate picks the rows)."""
    if len(days) <= _MAX_DAYS_LISTED:
        return f"date IN ({', '.join(literal(d) for d in sorted(days))})"
    return f"date >= {literal(min(days))} AND date <= {literal(max(days))}"


def among(ids: Collection[str]) -> str:
    """The predicate "the clip is one of ``ids``" (:func:`storage.sql.in_set`: a semi-join
    once they are many), with the ``date`` partitions their days name, so a scan reads
    those days only; ``"false"`` for none."""
    parts = [in_set("clip_id", sorted(set(ids)))]
    if ids and (named := _id_days(list(ids))):
        parts.append(_days_predicate(named))
    return " AND ".join(parts)


def within_days(
    days: tuple[dt.date | None, dt.date | None], ids: Collection[str]
) -> tuple[dt.date | None, dt.date | None]:
    """``days`` (a :meth:`ClipFilter.days` span) narrowed to the days the clip ids name (the
    span unchanged when there are none, or one names no day)."""
    lo, hi = days
    if ids and (named := _id_days(list(ids))):
        lo, hi = max(lo or min(named), min(named)), min(hi or max(named), max(named))
    return lo, hi


class ClipFilter(BaseModel):
    """Clips matching every given field (an empty filter matches all clips)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[Name] = Field(
        default_factory=list, max_length=MAX_NAMES, description="clips with any of these trigger events"
    )
    vehicles: list[Name] = Field(
        default_factory=list, max_length=MAX_NAMES, description="clips of any of these vehicles"
    )
    since: dt.datetime | None = Field(default=None, description="clips starting at or after (UTC)")
    until: dt.datetime | None = Field(default=None, description="clips starting before (UTC)")
    min_speed: Speed | None = Field(default=None, description="clips whose top speed reaches this (m/s)")
    max_speed: Speed | None = Field(default=None, description="clips whose lowest speed is at most this")
    group_id: ClipId | None = Field(default=None, description="every camera's clip of one time window")
    camera: Name | None = None
    clip_ids: list[ClipId] = Field(
        default_factory=list, max_length=MAX_BASKET, description="only these clips (a reviewer's basket)"
    )
    scenarios: list[Name] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="clips a span of any of these scenarios overlaps (`NAME`: its latest, or `NAME@V`)",
    )
    # The clips ``scenarios`` stands for, read from ``scenario_hits``
    # (mining.scenarios.resolve_filter): a filter is pure, the lake lends it this set.
    _scenario_clips: frozenset[str] | None = PrivateAttr(default=None)

    def with_scenario_clips(self, clip_ids: frozenset[str]) -> ClipFilter:
        """This filter with its ``scenarios`` resolved to the clips their spans overlap."""
        out = self.model_copy()
        out._scenario_clips = frozenset(clip_ids)
        return out

    @field_validator("since", "until")
    @classmethod
    def _in_range(cls, t: dt.datetime | None) -> dt.datetime | None:
        return _representable(t)

    def days(self) -> tuple[dt.date | None, dt.date | None]:
        """The first and last ``date`` partition a matching clip can be in (None: open).

        A clip starting at ``since`` may come from a drive that started the day before.
        """
        lo = None if self.since is None else _utc_day(self.since) - dt.timedelta(days=1)
        hi = None if self.until is None else _utc_day(self.until)
        if self.group_id:
            with contextlib.suppress(ValueError):
                day = dt.datetime.strptime(self.group_id[:8], "%Y%m%d").date()
                lo, hi = max(lo or day, day), min(hi or day, day)
        return within_days(within_days((lo, hi), self.clip_ids), self._scenario_clips or ())

    def predicate(self) -> str | None:
        """The Delta predicate, or None for all clips.

        ``date`` (the day the clip's drive started) is added where it is implied, so
        scans read fewer partitions: a group id begins with its day, and a clip that
        starts before ``until`` comes from a drive that started on or before that day.
        ``since`` implies no day (a drive may start the day before its clip), so it
        prunes by the files' ``start_time`` statistics only. A basket of clip ids is a
        semi-join (:func:`storage.sql.in_set`), so this predicate is for scans and
        queries, never a ``DELETE``.
        """
        parts = []
        if self.events:
            parts.append(_any_event(self.events))
        if self.vehicles:
            parts.append(in_set("vehicle_id", self.vehicles))
        if self.group_id:
            parts.append(f"group_id = {literal(self.group_id)}")
            with contextlib.suppress(ValueError):
                parts.append(f"date = {literal(dt.datetime.strptime(self.group_id[:8], '%Y%m%d').date())}")
        if self.camera:
            parts.append(f"camera = {literal(self.camera)}")
        if self.clip_ids:
            parts.append(among(self.clip_ids))
        if self.scenarios:
            if self._scenario_clips is None:
                raise ConfigError("a scenarios filter is resolved against the lake first (resolve_filter)")
            parts.append(among(self._scenario_clips))
        if self.since is not None:
            parts.append(f"start_time >= {literal(self.since)}")
        if self.until is not None:
            parts.append(f"start_time < {literal(self.until)}")
            parts.append(f"date <= {literal(_utc_day(self.until))}")
        if self.min_speed is not None:
            parts.append(f"speed_max >= {literal(float(self.min_speed))}")
        if self.max_speed is not None:
            parts.append(f"speed_min <= {literal(float(self.max_speed))}")
        return " AND ".join(parts) or None
