"""One line per request for ``fleetmine serve``: who, what, the answer and how long.

uvicorn's own access log prints the request's query string, and a shard URL's query
holds its grant (a credential for a dataset version): so ``fleetmine serve`` turns that
log off and wraps the app in :class:`AccessLog`, which writes the path without the
query (``?…`` says there was one), never a header, a cookie or a body.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLog"]

log = logging.getLogger("fleetmine.access")


def _printable(text: str, limit: int = 300) -> str:
    """A path as one log line can hold it: control characters escaped (a ``%0A`` in a path
    must not start a forged line), cut at ``limit``."""
    out = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return out + ("…" if len(text) > limit else "")


class AccessLog:
    """``127.0.0.1 GET /v1/clips?… 200 12 ms`` for each HTTP request, at INFO."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = (scope.get("client") or ("-",))[0]
            path = _printable(str(scope.get("path", "")))
            query = "?…" if scope.get("query_string") else ""
            ms = (time.perf_counter() - started) * 1000
            log.info("%s %s %s%s %d %.0f ms", client, scope.get("method", "-"), path, query, status, ms)
