"""The catalog API: ``create_app(settings)``; every error is ``{"error": {code, message}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import TokenCache
from storage.config import Settings
from storage.errors import (
    ConfigError,
    ConflictError,
    FleetError,
    NotFoundError,
    StorageUnavailableError,
)
from storage.lake import Lake

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
          416: "range_not_satisfiable", 422: "invalid_request", 500: "internal_error",
          503: "unavailable"}  # fmt: skip
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


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": _CODES.get(status, "error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(settings: Settings, *, auth: bool = True) -> FastAPI:
    from api.routes import clips, datasets, health, jobs, mining, ui

    lake = Lake.from_settings(settings)
    lake.create_tables()
    app = FastAPI(
        title="fleetmine", version="0.1.0", description="Fleet data catalog: clips, mining, datasets, shards."
    )
    app.state.lake = lake
    app.state.settings = settings
    app.state.auth = auth
    app.state.jobs = {}
    app.state.tokens = TokenCache(lake)
    app.state.manifests = {}  # (name, version, base url) -> bytes: versions never change
    for module in (health, clips, mining, datasets, jobs, ui):
        app.include_router(module.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(FleetError)
    async def fleet_error(_: Request, exc: FleetError) -> JSONResponse:
        status = _status(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc)
        headers = {"Retry-After": "5"} if status == 503 else None
        return _error(status, str(exc), headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return _error(500, "internal error (see the server log)")

    return app
