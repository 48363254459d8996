"""Literals for the SQL predicates handed to Delta scans (DataFusion dialect).

Every value that reaches a ``where`` string goes through :func:`literal`, so an id,
a name or an event from an API caller can never change the predicate's meaning.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

__all__ = ["in_list", "literal"]


def literal(value: str | int | float | dt.date | dt.datetime) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        t = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        value = t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif isinstance(value, dt.date):
        value = value.isoformat()
    return "'" + str(value).replace("'", "''") + "'"


def in_list(values: Iterable[str]) -> str:
    """``'a', 'b'`` for ``col IN (...)``; callers handle the empty case."""
    return ", ".join(literal(v) for v in values)
