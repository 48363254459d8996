"""Rendered manifests, built once for every reader that asks for the same bytes.

A training job's ranks start together: a thousand ``GET .../manifest`` with one token in
the same second. Their bodies are identical (the stored manifest, the public base URL,
and a grant whose expiry is rounded to a step, :func:`api.grants.expiry`), so the first
request renders the body and every other waits for it and answers from it (one lock per
body); ``If-None-Match`` with the body's ETag answers 304 without rendering. Bodies are
kept least recently used first out within ``max_bytes``; one larger than that is served
but not kept. ``fleetmine_manifest_builds_total`` counts renders.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from prometheus_client import Counter

__all__ = ["BUILDS", "RenderedManifests"]

BUILDS = Counter("fleetmine_manifest_builds", "Manifest bodies rendered (each answers all that ask for it)")


class RenderedManifests:
    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._bodies: OrderedDict[Hashable, tuple[bytes, str]] = OrderedDict()
        self._held = 0
        self._building: dict[Hashable, threading.Lock] = {}

    def etag(self, key: Hashable) -> str | None:
        """The ETag of a kept body, without rendering anything."""
        with self._lock:
            got = self._bodies.get(key)
            return None if got is None else got[1]

    def get(self, key: Hashable, build: Callable[[], bytes]) -> tuple[bytes, str]:
        """The body for ``key`` and its ETag; ``build`` runs once however many ask at once."""
        with self._lock:
            got = self._hit(key)
            if got is not None:
                return got
            one = self._building.setdefault(key, threading.Lock())
        with one:  # the first caller renders; the rest wait here, then find it kept
            with self._lock:
                got = self._hit(key)
            if got is not None:
                return got
            body = build()
            BUILDS.inc()
            out = (body, '"' + hashlib.sha256(body).hexdigest() + '"')
            with self._lock:
                self._building.pop(key, None)
                if len(body) <= self.max_bytes:
                    self._bodies[key] = out
                    self._held += len(body)
                    while self._held > self.max_bytes:
                        _, (old, _) = self._bodies.popitem(last=False)
                        self._held -= len(old)
            return out

    def _hit(self, key: Hashable) -> tuple[bytes, str] | None:
        got = self._bodies.get(key)
        if got is not None:
            self._bodies.move_to_end(key)
        return got
