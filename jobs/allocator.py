"""The memory allocator setting of a process that serves the API.

deltalake's engine (DataFusion, in Rust) allocates through its own jemalloc, built
in with the ``_rjem_`` prefix, which keeps the pages a query freed for ten seconds
per arena (eight arenas on two cores) before handing them back. A server that
answers a filtered search every few seconds so holds 20-30 MB of freed pages for
good: an eighth of a 2x10^5-clip index's budget. With ``dirty_decay_ms:0`` the
pages go back as they are freed; a query costs a few more ``madvise`` calls.

jemalloc reads ``_RJEM_MALLOC_CONF`` once, when deltalake's library loads, so it
has to be in the environment before anything imports deltalake: ``fleetmine
serve`` sets it first thing (see ``fleetmine/__init__.py``), and so does a process
that starts a server itself (:func:`server_environ`). A value already set wins.
Batch jobs keep jemalloc's defaults: they free and reallocate in bulk, where
holding pages is the faster trade.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["ENGINE_ALLOCATOR", "configure_for_serving", "server_environ"]

ENGINE_ALLOCATOR = {"_RJEM_MALLOC_CONF": "dirty_decay_ms:0,muzzy_decay_ms:0"}


def server_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the serving allocator
    setting added where it is not set, for a child process that will serve the API."""
    env = dict(os.environ if base is None else base)
    for key, value in ENGINE_ALLOCATOR.items():
        env.setdefault(key, value)
    return env


def configure_for_serving() -> bool:
    """Set the serving allocator in this process's environment, if deltalake has not
    loaded yet (after that jemalloc no longer reads it). Returns whether it applies."""
    import sys

    if "deltalake" in sys.modules:
        return all(os.environ.get(k) == v for k, v in ENGINE_ALLOCATOR.items())
    for key, value in ENGINE_ALLOCATOR.items():
        os.environ.setdefault(key, value)
    return True
