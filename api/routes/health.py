from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Reader

router = APIRouter()


@router.get("/v1/health", tags=["health"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/metrics", tags=["health"], response_class=Response)
def metrics(_: Reader) -> Response:
    """Prometheus metrics, for a reader token (``authorization`` with ``type: Bearer`` in
    the scrape config): they show what the lake holds (index sizes, request counts), which
    is a reader's to see; the least role keeps the token a scraper holds the weakest."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
