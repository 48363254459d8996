"""Keyset pages of a date-partitioned table, each read bounded whatever the table's size.

A page is the next ``limit`` rows in ``(date, key)`` order after a :class:`Position`
(ids begin with their day, DESIGN.md, so that order is the key's own order), or, given
a timestamp column ``time``, in ``(date, time, key)`` order: real time order, the key
breaking ties and rows without a time last in their day. The
walk reads partitions (days) in order, from the position's day on, one engine query
per span of days (:meth:`Lake.query`: predicate, ORDER BY and LIMIT in DataFusion,
files pruned by their statistics). The first span is the rows the page needs; each
next one is sized by the selectivity seen so far, so a filter matching 1 % of rows
reads about 100 x the page, not the table.

A page never reads more than ``budget_rows`` rows (plus the one partition it starts
in): a filter so rare that the budget runs out first answers a shorter page (even an
empty one) whose cursor resumes where the walk stopped, the way a DynamoDB scan
answers ``LastEvaluatedKey``. The client's loop is the same (``while next_cursor``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from storage.bounds import MAX_CURSOR, MAX_ID
from storage.errors import ConfigError
from storage.faults import fault_point
from storage.lake import Lake
from storage.sql import literal
from storage.tables import get_spec

__all__ = ["Page", "Position", "cursor_json", "cursor_key", "cursor_text", "keyset_page"]

_INVALID = "invalid cursor"  # all a tampered cursor learns: no value, no SQL


def cursor_text(cursor: str) -> str:
    """The text a cursor encodes: strict URL-safe base64 of UTF-8 (padding optional), at
    most :data:`~storage.bounds.MAX_CURSOR` characters, no control characters;
    ConfigError (400) otherwise."""
    if len(cursor) > MAX_CURSOR:
        raise ConfigError(_INVALID)
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        text = raw.decode("utf-8")
    except (ValueError, binascii.Error):
        raise ConfigError(_INVALID) from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError(_INVALID)
    return text


def cursor_key(cursor: str) -> str:
    """A cursor that is one key (an id of at most :data:`~storage.bounds.MAX_ID` characters)."""
    key = cursor_text(cursor)
    if not key or len(key) > MAX_ID:
        raise ConfigError(_INVALID)
    return key


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity, -Infinity: JSON extensions no cursor holds


def cursor_json(cursor: str, *types: type) -> tuple[Any, ...]:
    """A cursor that is a JSON array of exactly ``types`` (``str``, ``int``, ``float``):
    strings of at most :data:`~storage.bounds.MAX_ID` characters, 64-bit ints, finite
    floats; ConfigError (400) for anything else (``Infinity``, ``1e400``, a wrong type)."""
    try:
        values = json.loads(cursor_text(cursor), parse_constant=_no_constant)
    except ValueError:
        raise ConfigError(_INVALID) from None
    if not isinstance(values, list) or len(values) != len(types):
        raise ConfigError(_INVALID)
    for v, t in zip(values, types, strict=True):
        ok = (
            (t is str and isinstance(v, str) and len(v) <= MAX_ID)
            or (t is int and type(v) is int and -(2**63) <= v < 2**63)
            or (t is float and type(v) in (int, float) and abs(v) < 1e308 and math.isfinite(v))
        )
        if not ok:
            raise ConfigError(_INVALID)
    return tuple(values)


@dataclass(frozen=True)
class Position:
    """Where a page starts: rows of ``date`` whose key is above ``after`` ("" = all of that day).

    In time order (``timed``), rows of ``date`` after ``(at, after)``: later in time, or
    as late with a higher key; ``at`` None means the walk is among the day's rows that
    have no time (they sort last), so only those with a higher key remain.
    """

    date: dt.date
    after: str = ""
    at: dt.datetime | None = None
    timed: bool = False

    def encode(self) -> str:
        """The opaque cursor clients hand back: ``day|key``, or ``day@micros|key`` (``day@|key``
        among rows without a time) in time order."""
        day = self.date.isoformat()
        if self.timed:
            day += "@" + ("" if self.at is None else str(_micros(self.at)))
        return base64.urlsafe_b64encode(f"{day}|{self.after}".encode()).decode()

    @classmethod
    def decode(cls, cursor: str) -> Position:
        """A cursor of :meth:`encode`, or of older servers (the last key alone, whose day
        its first eight characters name); strictly (:func:`cursor_text`), with a key of
        at most :data:`~storage.bounds.MAX_ID` characters: ConfigError (400) otherwise."""
        text = cursor_text(cursor)
        head, sep, after = text.partition("|")
        key = after if sep else text
        if len(key) > MAX_ID:
            raise ConfigError(_INVALID)
        try:
            if not sep:
                return cls(dt.datetime.strptime(text[:8], "%Y%m%d").date(), text)
            day, timed, at = head.partition("@")
            if len(day) != 10:
                raise ValueError(day)
            return cls(dt.date.fromisoformat(day), after, _from_micros(at) if at else None, bool(timed))
        except (ValueError, OverflowError):
            raise ConfigError(_INVALID) from None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(t: dt.datetime) -> int:
    t = t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    return (t - _EPOCH) // dt.timedelta(microseconds=1)


def _from_micros(text: str) -> dt.datetime:
    if not text.lstrip("-").isdigit() or len(text) > 20:  # int() would take "+1", " 1", "1_0"
        raise ValueError(text)
    return _EPOCH + dt.timedelta(microseconds=int(text))


def _after(start: Position, key: str, time: str | None) -> str:
    """The predicate of rows after ``start`` within its own day."""
    k = f"{key} > {literal(start.after)}"
    if time is None or not start.timed:
        return k
    if start.at is None:  # among the rows without a time, which sort last
        return f"({time} IS NULL AND {k})"
    t = literal(start.at)
    return f"({time} > {t} OR ({time} = {t} AND {k}) OR {time} IS NULL)"


def _reach(
    parts: pa.Table, lo: dt.date | None, hi: dt.date | None, budget_rows: int
) -> tuple[list[tuple[dt.date, int]], dt.date | None]:
    """The days (with their rows) from ``lo`` to ``hi`` that a page can read: the first,
    then as many as the budget's rows take, and one more; and the day after them, if
    any (where a page that reached the end of these goes on). Only these become Python
    objects: a lake of 50,000 days costs a page the days it may read, not a list of all
    of them (5,000 days cost 7 ms a page)."""
    values = parts.column("value")
    dates = values.to_numpy()  # sorted (partition_rows), datetime64[D]
    first = 0 if lo is None else int(np.searchsorted(dates, np.datetime64(lo, "D"), "left"))
    last = len(dates) if hi is None else int(np.searchsorted(dates, np.datetime64(hi, "D"), "right"))
    rows = parts.column("rows").to_numpy()[first:last]
    within = int(np.searchsorted(np.cumsum(rows[1:]), budget_rows, "right")) + 2
    end = min(last, first + within)
    todo = list(zip(values.slice(first, end - first).to_pylist(), rows[: end - first].tolist(), strict=True))
    return todo, (values[end].as_py() if end < last else None)


@dataclass(frozen=True)
class Page:
    rows: pa.Table
    next: Position | None
    queries: int


def keyset_page(
    lake: Lake,
    table: str,
    *,
    key: str,
    columns: list[str],
    where: str | None,
    limit: int,
    start: Position | None = None,
    days: tuple[dt.date | None, dt.date | None] = (None, None),
    budget_rows: int = 100_000,
    version: int | None = None,
    time: str | None = None,
) -> Page:
    """The next ``limit`` rows matching ``where`` after ``start``, in ``(date, key)`` order,
    or ``(date, time, key)`` order given ``time`` (a cursor of the other order is refused).

    ``days`` bounds the partitions the filter can match (inclusive; None = open);
    partitions and their row counts come from the Delta log, so days outside the
    bounds, or before the cursor's, cost nothing.
    """
    parts = lake.partition_rows(table, "date", version)
    fault_point("page.planned")
    lo, hi = days
    if start is not None:
        lo = max(lo, start.date) if lo is not None else start.date
    todo, beyond = _reach(parts, lo, hi, budget_rows)
    if start is not None and start.timed != (time is not None):
        raise ConfigError(_INVALID)  # a cursor of another order would skip or repeat rows
    cols = list(dict.fromkeys([*columns, "date", *([time] if time else []), key]))
    order = ["date", *([f"{time} ASC NULLS LAST"] if time else []), key]
    need = limit + 1  # one more than the page: whether another page exists
    got: list[pa.Table] = []
    scanned = matched = queries = 0
    i = 0
    resume: Position | None = None
    while need > 0 and i < len(todo):
        if scanned and scanned >= budget_rows:
            resume = Position(todo[i][0], timed=time is not None)
            break
        bound = []
        if start is not None and start.after and todo[i][0] == start.date:
            span = 1  # the cursor's own day: only rows after it
            bound.append(_after(start, key, time))
        else:
            # Rows the page still needs at the selectivity seen so far (all of them match
            # until shown otherwise), with some slack, within what the budget has left; at
            # most four times what was read so far, since a few matches say little of the
            # rate (one match in the cursor's day, of which only the rows after the cursor
            # could match, asked for the whole budget: 100,000 rows where 10,000 did).
            # No match yet (a cursor at the end of its day, a rare filter): grow fourfold.
            grow = max(need * 1.25, 4.0 * scanned)
            want = min(need * scanned / matched * 1.25, grow) if matched else grow
            want = min(want, max(budget_rows - scanned, 1))
            span, rows = 0, 0
            while i + span < len(todo) and (span == 0 or rows < want):
                rows += todo[i + span][1]
                span += 1
        first, last = todo[i][0], todo[i + span - 1][0]
        bound.append(
            f"date = {literal(first)}"
            if first == last
            else f"date >= {literal(first)} AND date <= {literal(last)}"
        )
        pred = " AND ".join([*([f"({where})"] if where else []), *bound])
        named = [d for d, _ in todo[i : i + span]]  # the predicate bounds it to them: only their files open
        part = lake.query(
            table, columns=cols, where=pred, order_by=order, limit=need, version=version, partitions=named
        )
        queries += 1
        scanned += sum(n for _, n in todo[i : i + span])
        matched += part.num_rows
        need -= part.num_rows
        if part.num_rows:
            got.append(part)
        i += span
    if need > 0 and i >= len(todo) and beyond is not None:
        resume = Position(beyond, timed=time is not None)  # past the days in reach: go on there
    rows = pa.concat_tables(got) if got else get_spec(table).schema.empty_table().select(cols)
    if rows.num_rows > limit:
        rows = rows.slice(0, limit)
        lastrow = rows.slice(limit - 1, 1).to_pylist()[0]
        at = lastrow[time] if time else None
        return Page(rows, Position(lastrow["date"], str(lastrow[key]), at, time is not None), queries)
    return Page(rows, resume, queries)
