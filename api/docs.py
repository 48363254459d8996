"""``/docs``: the API's Swagger UI with every asset served by the app, so it works offline.

FastAPI's default ``/docs`` loads Swagger UI from a CDN: a blank page on a machine without
internet, and a page whose scripts come from a third party. Here the page, its script and
its stylesheet come from the server: Swagger UI 5's files from ``fastapi-offline`` (Swagger
UI packaged for FastAPI apps; version 4 cannot read the OpenAPI 3.1 FastAPI writes) and a
small start-up script of ours, nothing inline, so ``/docs`` runs under a CSP of ``'self'``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

__all__ = ["DOCS_CSP", "router"]

router = APIRouter(include_in_schema=False)

_SWAGGER = Path(str(files("fastapi_offline") / "static"))
_ASSETS = {  # what the page loads: a fixed list, never a path from the request
    "swagger-ui.css": (_SWAGGER / "swagger-ui.css", "text/css"),
    "swagger-ui-bundle.js": (_SWAGGER / "swagger-ui-bundle.js", "text/javascript"),
    "favicon.png": (_SWAGGER / "favicon.png", "image/png"),
    "swagger-init.js": (Path(__file__).parent / "ui" / "static" / "swagger-init.js", "text/javascript"),
}
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fleetmine API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/assets/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-init.js"></script>
</body>
</html>
"""


@router.get("/docs", response_class=HTMLResponse)
def docs_page() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-cache"})


@router.get("/docs/assets/{name}")
def docs_asset(name: str) -> FileResponse:
    found = _ASSETS.get(name)
    if found is None:
        raise HTTPException(404, f"no asset {name}")
    path, media_type = found
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})
