"""How many uploaded images one process decodes at once (``Settings.image_decode_concurrency``).

A decode holds the image's full bitmap for a moment (a PNG cannot be decoded at a
smaller scale), so concurrent uploads multiply that peak. A request waits for a slot
holding only its compressed bytes; the API sets the count when it starts
(:func:`configure`), and the limit is per process. Importing this loads nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["configure", "decode_slot"]

_DEFAULT = 2  # Settings.image_decode_concurrency's default
_lock = threading.Lock()
_slots = threading.BoundedSemaphore(_DEFAULT)


def configure(concurrency: int) -> None:
    """Decode at most ``concurrency`` images at once in this process from now on."""
    global _slots
    if concurrency < 1:
        raise ValueError(f"image decode concurrency {concurrency}: at least 1")
    with _lock:
        _slots = threading.BoundedSemaphore(concurrency)


@contextmanager
def decode_slot() -> Iterator[None]:
    """Held while one image is decoded; waits while every slot is taken."""
    with _lock:
        slots = _slots
    with slots:
        yield
