"""Literals for the SQL predicates handed to Delta scans (DataFusion dialect).

Every value that reaches a ``where`` string goes through :func:`literal`, so an id,
a name or an event from an API caller can never change the predicate's meaning, and a
value SQL cannot spell (``nan``, ``inf``, text that is not UTF-8) is refused here, not
by the engine with the query in its message.

A set of values is :func:`in_set`: a short one an ``IN`` list, a long one a semi-join
on a ``VALUES`` table. The engine plans a long ``IN`` list recursively (as an ``OR``
chain): some 25,000 values overflow the native stack and kill the process.
:func:`in_list` (for ``IN`` lists written by hand, and predicates such as ``DELETE``
that take no subquery) refuses past :data:`MAX_IN_LIST`: callers chunk.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Iterable

from storage.errors import ConfigError

__all__ = ["IN_LIST_JOIN", "MAX_IN_LIST", "in_list", "in_set", "literal"]

MAX_IN_LIST = 10_000
"""Most values :func:`in_list` writes: planned in a fraction of a second, far from the overflow."""
IN_LIST_JOIN = 256
"""From this many values on, :func:`in_set` writes a semi-join instead of an ``IN`` list."""


def literal(value: str | int | float | dt.date | dt.datetime) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError("a number that is not finite (nan or infinity)")
        return repr(value)
    if isinstance(value, dt.datetime):
        t = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        value = t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif isinstance(value, dt.date):
        value = value.isoformat()
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError("text that is not valid UTF-8 (a lone surrogate)") from None
    return "'" + text.replace("'", "''") + "'"


def in_list(values: Iterable[str]) -> str:
    """``'a', 'b'`` for ``col IN (...)``; callers handle the empty case and keep it under
    :data:`MAX_IN_LIST` values (chunk, or use :func:`in_set`)."""
    out = [literal(v) for v in values]
    if len(out) > MAX_IN_LIST:
        raise ConfigError(f"an IN list of {len(out)} values (at most {MAX_IN_LIST}): chunk it")
    return ", ".join(out)


def in_set(column: str, values: Collection[str], *, negate: bool = False) -> str:
    """``column`` is (or, ``negate``, is not) one of ``values``, as a predicate the engine
    plans in time linear in the values and constant stack: an ``IN`` list when short,
    else ``IN (SELECT column1 FROM (VALUES ...))``, which DataFusion runs as a hash
    semi-join (anti-join). For scans and queries; a ``DELETE`` predicate takes no subquery."""
    if not values:
        return "true" if negate else "false"
    op = "NOT IN" if negate else "IN"
    if len(values) < IN_LIST_JOIN:
        return f"{column} {op} ({in_list(values)})"
    rows = ", ".join(f"({literal(v)})" for v in values)
    return f"{column} {op} (SELECT column1 FROM (VALUES {rows}))"
