from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter()


@router.get("/v1/health", tags=["health"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", tags=["health"], response_class=Response)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
