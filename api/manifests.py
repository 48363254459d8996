"""Manifests built once for every reader that asks for the same one.

A training job's ranks start together: a thousand ``GET .../manifest`` with one token in
the same second. The stored manifest of a version is read once per process, and its
body with the caller's grant is rendered once: the bodies are identical (the stored
manifest, the public base URL, and a grant whose expiry is rounded to a step,
:func:`api.grants.expiry`), so the first request builds and every other that arrives
meanwhile waits for that build and answers from it, its result or its error, whatever
its size (:class:`OnceCache`). ``If-None-Match`` with a kept body's ETag answers 304
without rendering. ``fleetmine_manifest_builds_total`` counts renders.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

from prometheus_client import Counter

__all__ = ["BUILDS", "OnceCache", "RenderedManifests"]

BUILDS = Counter("fleetmine_manifest_builds", "Manifest bodies rendered (each answers all that ask for it)")
T = TypeVar("T")
_WAIT_S = 300.0  # a waiter gives up on a build after this (a 10^6-shard render takes seconds)


class OnceCache(Generic[T]):
    """Values by key, each built once however many ask for it at once, kept least
    recently used first out within ``max_weight`` (a value heavier than that is handed
    to everyone who waited for it, and not kept). Thread-safe: FastAPI runs sync routes
    in a thread pool."""

    def __init__(self, max_weight: int, weigh: Callable[[T], int]):
        self.max_weight, self.weigh = max_weight, weigh
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self._held = 0
        self._building: dict[Hashable, Future[T]] = {}

    def peek(self, key: Hashable) -> T | None:
        with self._lock:
            got = self._values.get(key)
            return None if got is None else got[0]

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        with self._lock:
            got = self._values.get(key)
            if got is not None:
                self._values.move_to_end(key)
                return got[0]
            pending = self._building.get(key)
            if pending is None:
                mine: Future[T] = Future()
                self._building[key] = mine
        if pending is not None:
            return pending.result(timeout=_WAIT_S)  # the builder's value, or its exception
        try:
            value = build()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        finally:
            with self._lock:
                self._building.pop(key, None)
        with self._lock:
            self._keep(key, value)
        mine.set_result(value)
        return value

    def _keep(self, key: Hashable, value: T) -> None:
        weight = self.weigh(value)
        if weight > self.max_weight:
            return
        old = self._values.pop(key, None)
        if old is not None:
            self._held -= old[1]
        self._values[key] = (value, weight)
        self._held += weight
        while self._held > self.max_weight and self._values:
            _, (_, w) = self._values.popitem(last=False)
            self._held -= w


def _rendered(body: bytes) -> tuple[bytes, str]:
    BUILDS.inc()
    return body, '"' + hashlib.sha256(body).hexdigest() + '"'


class RenderedManifests:
    """Stored manifests by ``(name, version)`` (within 10^6 shard entries) and rendered
    bodies with their ETags by ``(name, version, base URL, grant)`` (within 256 MB)."""

    def __init__(self, max_entries: int = 1_000_000, max_bytes: int = 256 << 20):
        self.stored: OnceCache[dict[str, Any]] = OnceCache(max_entries, lambda d: len(d["shardlist"]))
        self.bodies: OnceCache[tuple[bytes, str]] = OnceCache(max_bytes, lambda b: len(b[0]))

    def etag(self, key: Hashable) -> str | None:
        """The ETag of a kept body, without rendering anything."""
        got = self.bodies.peek(key)
        return None if got is None else got[1]

    def body(self, key: Hashable, render: Callable[[], bytes]) -> tuple[bytes, str]:
        return self.bodies.get(key, lambda: _rendered(render()))
