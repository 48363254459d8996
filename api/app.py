"""The catalog API: ``create_app(settings)``; every error is ``{"error": {code, message}}``
(the web pages under ``/ui`` answer the same status with an HTML error page)."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import docs
from api.auth import AuthFailures, TokenCache
from api.docs import DOCS_CSP
from api.manifests import RenderedManifests
from api.proxies import ForwardedHeaders, TrustedProxies
from mining.search import decode_slots
from storage.config import Settings
from storage.errors import (
    ConfigError,
    ConflictError,
    FleetError,
    IndexUnavailableError,
    NotFoundError,
    StorageUnavailableError,
)
from storage.lake import Lake
from storage.views import read_view

__all__ = [
    "ERROR_RESPONSES",
    "ErrorPublic",
    "create_app",
    "lake_label",
    "lean_server_process",
    "security_headers",
]

log = logging.getLogger(__name__)
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
          413: "payload_too_large", 415: "unsupported_media_type", 416: "range_not_satisfiable",
          422: "invalid_request", 429: "too_many_requests", 500: "internal_error",
          503: "unavailable"}  # fmt: skip
_ERRORS = {
    400: "the request names what the lake cannot give (a cursor it did not mint, a bad filter)",
    401: "no bearer token, or not a live one",
    403: "the token's role cannot do this (or a shard grant does not cover it)",
    404: "no such resource",
    409: "it conflicts with the lake's state (a name taken, a lease held)",
    413: "the request body is too large",
    415: "an uploaded image that is not a JPEG or PNG",
    422: "the request does not parse (bad JSON, a parameter of the wrong type or range)",
    429: "too many wrong tokens from this client (or, for a job, too many jobs running): retry after "
    "Retry-After seconds",
    503: "the object store is unreachable: retry after Retry-After seconds",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorPublic(BaseModel):
    """Every error of the API: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorPublic, "description": text} for status, text in _ERRORS.items()
}
"""The error answers of the ``/v1`` routes, in their OpenAPI documents (in place of
FastAPI's own 422 body, which this API never answers)."""
_UNPARSABLE = "There was an error parsing the body"  # FastAPI's 400 for a body it cannot decode
# The status of each branch of the exception tree (storage.errors), most specific first.
_STATUS: tuple[tuple[type[FleetError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    (StorageUnavailableError, 503),
    (ConfigError, 400),
)


def _status(exc: FleetError) -> int:
    """The HTTP status of a fleetmine error: its branch of the tree, else 500."""
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def _error(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse | HTMLResponse:
    if request.url.path.startswith("/ui/"):
        from api.routes.ui import error_page

        asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return error_page(status, message, headers, asked)
    body = {"error": {"code": _CODES.get(status, "error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


class _IndexMetrics:
    """``fleetmine_index_*``: the FAISS indexes this process serves, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from mining.search.serving import served_indexes

        # lake: a digest of its URI, never the URI (a bucket name is not the scrape's business)
        labels = ["lake", "model", "kind", "part"]  # part: clip, or a sub-space (appearance)
        size = GaugeMetricFamily(
            "fleetmine_index_bytes", "Memory of a served index and its ids", labels=labels
        )
        vectors = GaugeMetricFamily("fleetmine_index_vectors", "Vectors in a served index", labels=labels)
        fresh = GaugeMetricFamily(
            "fleetmine_index_fresh_vectors",
            "Vectors embedded since the saved build, held exactly",
            labels=labels,
        )
        holders = GaugeMetricFamily(
            "fleetmine_index_holders",
            "Ray actors holding a sharded index's shards for this server (0: held here)",
            labels=labels,
        )
        for s in served_indexes():
            values = [lake_label(s["lake"]), s["model"], s["kind"], s["part"]]
            size.add_metric(values, s["bytes"])
            vectors.add_metric(values, s["vectors"])
            fresh.add_metric(values, s["fresh_vectors"])
            holders.add_metric(values, len(s.get("holders", ())))
        yield from (size, vectors, fresh, holders)


def lake_label(uri: str) -> str:
    """The ``lake`` label of a lake's metrics: 12 hex digits of its URI's SHA-256, so
    series of two lakes stay apart without the scrape naming either."""
    return hashlib.sha256(uri.encode()).hexdigest()[:12]


_METRICS_LOCK = threading.Lock()
_metrics_registered = False


def _register_metrics() -> None:
    global _metrics_registered
    with _METRICS_LOCK:
        if not _metrics_registered:
            REGISTRY.register(_IndexMetrics())
            _metrics_registered = True


def lean_server_process() -> None:
    """Keep pandas out of a process that only serves the API (call before any request).

    Nothing the API does needs pandas, but pyarrow imports it, when it is installed (Ray
    Data brings it), for any array built from Python objects: 50 MB in every replica,
    a quarter of a small index's budget. With the module marked absent pyarrow takes
    its no-pandas path. A process that already imported pandas is left as it is.
    """
    import importlib.abc
    import sys

    class _NoPandas(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name == "pandas" or name.startswith("pandas."):
                raise ModuleNotFoundError(f"No module named {name!r} (kept out of the API server)", name=name)
            return None

    if "pandas" not in sys.modules and not any(isinstance(f, _NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoPandas())


def create_app(settings: Settings, *, auth: bool = True, hold_shards: bool = False) -> FastAPI:
    """The catalog app over ``settings.lake``. ``hold_shards`` (``fleetmine serve --address
    HOST:PORT``): join the Ray cluster at ``settings.ray_address`` and serve sharded indexes
    from actors there (:func:`mining.search.serving.hold_shards`), not from this process."""
    from api.routes import clips, datasets, health, jobs, mining, reviews, ui

    lake = Lake.from_settings(settings)
    lake.create_tables()
    # No trailing-slash redirects: Starlette builds them from the request's Host header,
    # so ``GET /v1/shards/.../x.tar/?grant=`` with a made-up Host sent the grant there.
    # A path with an extra slash is a 404; ``/ui`` redirects itself (api.routes.ui).
    app = FastAPI(
        title="fleetmine",
        version="0.1.0",
        description="Fleet data catalog: clips, mining, datasets, shards.",
        redirect_slashes=False,
        docs_url=None,  # api.docs serves /docs from packaged assets (offline, strict CSP)
        redoc_url=None,  # ReDoc loads from a CDN: not served
    )
    app.state.lake = lake
    app.state.settings = settings
    if hold_shards:  # asked for on the command line, never taken from RAY_ADDRESS alone
        address = settings.ray_address or ""
        if not address or address.startswith(("http://", "https://")):
            raise ConfigError(
                "holding shards on a cluster needs its GCS address (HOST:PORT), not a dashboard URL"
            )
        from jobs.runtime import init_ray
        from mining.search import serving

        init_ray(address)
        serving.hold_shards()
    app.state.auth = auth
    app.state.tokens = TokenCache(lake)
    app.state.grants = None  # api.deps.grants: the lake's key, read on first use
    app.state.sessions = None  # api.deps.sessions: the same, for web sign-in sessions
    app.state.auth_failures = AuthFailures(settings.auth_max_failures, settings.auth_failure_window_s)
    app.state.manifests = RenderedManifests()  # stored (versions never change) and rendered (per grant)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(ui.router)
    for module in (clips, mining, datasets, jobs, reviews):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    _register_metrics()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse | HTMLResponse:
        if exc.status_code == 400 and exc.detail == _UNPARSABLE:  # bytes that are not JSON text at all
            return _error(request, 422, "body: not valid JSON (UTF-8)")
        return _error(request, exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse | HTMLResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(request, 422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(FleetError)
    async def fleet_error(request: Request, exc: FleetError) -> JSONResponse | HTMLResponse:
        status = _status(exc)
        message = str(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
            # Engine and store errors carry SQL, table paths and URIs: the log keeps them.
            message = (
                "a holder of the index's shards is restarting; retry later"
                if isinstance(exc, IndexUnavailableError)
                else "the lake's store is unavailable; retry later"
                if status == 503
                else f"{type(exc).__name__}: internal error (see the server log)"
            )
        headers = {"Retry-After": "5"} if status == 503 else None
        return _error(request, status, message, headers)

    app.add_middleware(_Unexpected)
    uploads = {"/v1/search/similar": settings.max_body_bytes + settings.max_image_bytes}
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes, uploads=uploads)
    if settings.cors_allow_origins:  # closed unless origins are listed: no CORS layer at all
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["Authorization", "Content-Type", "Range"],
            expose_headers=["Content-Range", "Accept-Ranges", "ETag", "X-Fleetmine-Lake-Version"],
            max_age=600,
        )
    app.add_middleware(_Headers, audit=settings.scan_audit)
    # Outermost: every layer inside sees the client and scheme a trusted proxy reported.
    app.add_middleware(ForwardedHeaders, proxies=TrustedProxies(settings.trusted_proxies))
    decode_slots.configure(settings.image_decode_concurrency)
    return app


# /ui pages load their one script and style sheet from here (api/ui/static): nothing inline,
# nothing from elsewhere, and no page may frame them.
_UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_API_CSP = "default-src 'none'; frame-ancestors 'none'"  # JSON and media: never a document that runs code
_DOCS_CSP = DOCS_CSP  # /docs: Swagger UI from the app's own packaged assets, nothing inline
_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # shard URLs carry grants: never in a Referer
    (b"x-frame-options", b"DENY"),
)


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The security headers of a response to ``path``."""
    if path == "/ui" or path.startswith("/ui/"):
        csp = _UI_CSP
    elif path.startswith("/docs"):
        csp = _DOCS_CSP
    else:
        csp = _API_CSP
    return [*_ALWAYS, (b"content-security-policy", csp.encode())]


class _Headers:
    """Headers on every response, whoever answered it (a route, an error handler, the body
    limit, CORS): the security headers; ``X-Fleetmine-Lake-Version``, the version of each
    table the answer was read from (``clips=41,embeddings=12``: the request reads in one
    :func:`storage.views.read_view`, so each table at one version); and with ``audit`` the
    rows the engine scanned for the request, ``X-Fleetmine-Rows-Scanned`` /
    ``X-Fleetmine-Queries`` (see :func:`storage.query.audit`)."""

    def __init__(self, app: ASGIApp, audit: bool = False) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from storage.query import audit

        extra = security_headers(scope["path"])
        with read_view() as view, audit() if self.audit else nullcontext() as tally:

            async def headed(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    have = {k.lower() for k, _ in headers}
                    headers += [(k, v) for k, v in extra if k not in have]
                    if versions := view.header():
                        headers.append((b"x-fleetmine-lake-version", versions.encode()))
                    if tally is not None:
                        headers.append((b"x-fleetmine-rows-scanned", str(tally.rows).encode()))
                        headers.append((b"x-fleetmine-queries", str(len(tally.queries)).encode()))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, headed)


class _BodyLimit:
    """Answers 413 to a request body over ``limit`` bytes, declared or streamed, before any
    route sees it (bodies here are small JSON documents, so the rest is buffered).
    ``uploads``: paths that take a multipart upload, with their own, larger limit."""

    def __init__(self, app: ASGIApp, limit: int, uploads: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/form-data"):
            limit = self.uploads.get(scope["path"], limit)
        too_large = _error(Request(scope), 413, f"request body over {limit} bytes")
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _Unexpected:
    """Answers an unexpected exception with the JSON (or page) 500 and keeps the
    connection: an exception handler for ``Exception`` re-raises into uvicorn,
    which then closes the keep-alive connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error")
            if started:  # too late for an error response
                raise
            await _error(Request(scope), 500, "internal error (see the server log)")(scope, receive, send)
