"""Where and how many uploaded images one process decodes at once
(``Settings.image_decode_concurrency``).

A decode holds the image's full bitmap for a moment (a PNG cannot be decoded at a
smaller scale), so concurrent uploads multiply that peak: decodes run on a fixed pool
of that many threads of their own (:func:`run`), and a request waits for one holding
only its compressed bytes. The pool, not the server's request threads, is also what
keeps the memory given back: glibc gives each thread that allocates its own malloc
arena, and an arena keeps freed blocks of image-sized buffers for reuse, so decodes
spread over the forty threads of a request pool left up to forty arenas holding
them; on a pool of two, two. The API sets the count when it starts
(:func:`configure`); the limit is per process. Importing this loads nothing else.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["configure", "run"]

_DEFAULT = 2  # Settings.image_decode_concurrency's default
_P = ParamSpec("_P")
_T = TypeVar("_T")
_lock = threading.Lock()
_size = _DEFAULT
_pool: ThreadPoolExecutor | None = None


def configure(concurrency: int) -> None:
    """Decode at most ``concurrency`` images at once in this process from now on (decodes
    already running finish on the old threads, which then end)."""
    global _size, _pool
    if concurrency < 1:
        raise ValueError(f"image decode concurrency {concurrency}: at least 1")
    with _lock:
        if concurrency != _size:
            old, _pool, _size = _pool, None, concurrency
            if old is not None:
                old.shutdown(wait=False)


def run(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args, **kwargs)`` on a decode thread, once one is free; its result or its
    exception, here."""
    global _pool
    with _lock:  # submitted under the lock: configure() cannot shut this pool down first
        if _pool is None:
            _pool = ThreadPoolExecutor(_size, thread_name_prefix="image-decode")
        future = _pool.submit(fn, *args, **kwargs)
    return future.result()
