"""Read views: one version of each table for everything one request reads.

Inside ``with read_view() as view:`` the first read of a table at its latest version
pins that version; every later read of the table in the view (:meth:`Lake.read`,
``scan``, ``query``, ``snapshot``, ``version``, ``partition_rows``) sees the same one,
whatever commits land meanwhile. An answer built from several queries (a keyset page
walks one query per span of days; a clip page reads clips, scores and reviews) is
then the rows of one version per table, and ``view.versions`` says which: the API
answers them in ``X-Fleetmine-Lake-Version``. A write through the lake unpins its
table, so a request that writes reads back what it wrote.

The view lives in a context variable: the threads a request's sync handlers run in
get a copy of the request's context, so they share its view.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from deltalake import DeltaTable

__all__ = ["ReadView", "current_view", "read_view"]


class ReadView:
    """The table versions one unit of work reads, pinned at their first read."""

    def __init__(self) -> None:
        self._pinned: dict[tuple[str, str], DeltaTable] = {}
        self._lock = threading.Lock()

    def get(self, lake: str, table: str) -> DeltaTable | None:
        with self._lock:
            return self._pinned.get((lake, table))

    def pin(self, lake: str, table: str, delta: DeltaTable) -> DeltaTable:
        """``delta``, unless another thread of the view pinned the table first (then that)."""
        with self._lock:
            return self._pinned.setdefault((lake, table), delta)

    def unpin(self, lake: str, table: str) -> None:
        with self._lock:
            self._pinned.pop((lake, table), None)

    @property
    def versions(self) -> dict[str, int]:
        """``{table: version}`` of what the view read (tables of every lake it read)."""
        with self._lock:
            return {table: d.version() for (_, table), d in sorted(self._pinned.items())}

    def header(self) -> str:
        """``clips=41,embeddings=12``: :attr:`versions` as one header value."""
        return ",".join(f"{t}={v}" for t, v in self.versions.items())


_VIEW: contextvars.ContextVar[ReadView | None] = contextvars.ContextVar("fleetmine_read_view", default=None)


def current_view() -> ReadView | None:
    return _VIEW.get()


@contextmanager
def read_view() -> Iterator[ReadView]:
    """A fresh view for the reads in this context (a view already open is set aside)."""
    view = ReadView()
    token = _VIEW.set(view)
    try:
        yield view
    finally:
        _VIEW.reset(token)
