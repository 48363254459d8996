"""Answers kept for the next time the same thing is asked, within a bound.

A filtered search asks the same things of every request under one filter until a table or
an index moves: the rows a predicate allows (:mod:`storage.resident`), their positions in
an index and their vectors (:class:`mining.search.index.ClipIndex`). Each keeps its
answers here, keyed by what identifies the question, the least recently asked dropped
first, within a count or a byte budget; an answer bigger than ``largest`` is handed back
without being kept (a filter that allows most clips would push every other out).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Kept"]

V = TypeVar("V")


class Kept(Generic[V]):
    """At most ``items`` answers, and at most ``max_bytes`` of them by ``size``."""

    def __init__(
        self,
        size: Callable[[V], int],
        *,
        max_bytes: int | None = None,
        items: int | None = None,
        largest: int | None = None,
    ):
        self._size = size
        self.max_bytes = max_bytes
        self.items = items
        self.largest = largest
        self._kept: OrderedDict[Hashable, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the API's threads share what a process keeps

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            got = self._kept.get(key)
            if got is not None:
                self._kept.move_to_end(key)
            return got

    def keep(self, key: Hashable, value: V) -> V:
        """Keep ``value`` as the answer to ``key`` (unless too big); the answer to use: the
        one another thread kept meanwhile, so both go on with one copy."""
        size = self._size(value)
        if self.largest is not None and size > self.largest:
            return value
        with self._lock:
            if key in self._kept:
                return self._kept[key]
            self._kept[key] = value
            self._bytes += size
            while (self.items is not None and len(self._kept) > self.items) or (
                self.max_bytes is not None and self._bytes > self.max_bytes
            ):
                _, dropped = self._kept.popitem(last=False)
                self._bytes -= self._size(dropped)
            return value

    def answer(self, key: Hashable, make: Callable[[], V]) -> V:
        """The answer kept for ``key``, else ``make()``'s, kept (two threads asking at once
        may both make it; they go on with the one kept first)."""
        got = self.get(key)
        return got if got is not None else self.keep(key, make())

    def __len__(self) -> int:
        return len(self._kept)
