"""The latest version of each table, shared by the threads of a process.

Opening a table replays its log (tens of ms after many commits); a request only checks
for new commits (``update_incremental`` on a probe copy: one listing) and opens the table
again only when there are some. The object handed out is never updated in place, so
queries running on it in other threads are undisturbed. Kept apart from
:class:`storage.lake.Lake` because it is the one place where the lake's threads meet:
its locks and what they promise live here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deltalake import DeltaTable

from storage.objectstore import reachable

if TYPE_CHECKING:
    from storage.lake import Lake

__all__ = ["Snapshots"]


@dataclass(frozen=True)
class _Snapshot:
    """A table's cached latest version: ``probe`` follows the log, ``served`` is handed
    out (never updated in place); ``checked``: when the listing that found it began."""

    probe: DeltaTable
    served: DeltaTable
    checked: float


class Snapshots:
    """A lake's cache of its tables' latest versions; a pickled copy starts empty (Ray
    ships lakes to workers: not the cache)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the dict of per-table locks
        self._table_locks: dict[str, threading.Lock] = {}
        self._cached: dict[str, _Snapshot] = {}

    def __reduce__(self) -> tuple[type[Snapshots], tuple[()]]:
        return Snapshots, ()

    def latest(self, lake: Lake, table: str) -> DeltaTable:
        """The table as of a log listing begun after this call was: every commit that
        landed before the call is in it.

        Concurrent callers share listings: one table's callers queue on its own lock, and
        a caller that finds a listing begun after it arrived takes that one's answer. So
        under load a table's log is listed about once per listing time, not once per
        request, and one table's callers never wait on another's listing.
        """
        asked = time.monotonic()
        with self._lock:
            lock = self._table_locks.setdefault(table, threading.Lock())
        with lock:
            cached = self._cached.get(table)
            if cached is not None and cached.checked >= asked:
                return cached.served
            checked = time.monotonic()
            if cached is None:
                probe = lake.delta(table)
                served = lake.delta(table, probe.version())
            else:
                probe, served = cached.probe, cached.served
                with reachable(lake.location(table).uri):
                    probe.update_incremental()
                if probe.version() != served.version():
                    served = lake.delta(table, probe.version())
            self._cached[table] = _Snapshot(probe, served, checked)
            return served
