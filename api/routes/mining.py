"""Similar clips and corner cases: the same functions the CLI calls."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from api.deps import LakeDep, Reader
from mining.curation import DatasetQuery, clip_predicate
from mining.queries import corner_cases, similar

router = APIRouter(prefix="/v1", tags=["mining"])


class SimilarRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # exactly one of the two, as the schema says it (clients and fuzzers read it)
            "oneOf": [
                {"required": ["clip_id"], "properties": {"clip_id": {"type": "string"}}},
                {"required": ["vector"], "properties": {"vector": {"type": "array"}}},
            ]
        },
    )
    clip_id: str | None = None
    vector: list[float] | None = Field(default=None, max_length=8192)
    k: int = Field(default=10, ge=1, le=1000)
    filters: DatasetQuery | None = None
    model: str | None = None


class NeighbourPublic(BaseModel):
    clip_id: str
    distance: float


class NeighboursPublic(BaseModel):
    data: list[NeighbourPublic]
    count: int


class CornerCasePublic(BaseModel):
    clip_id: str
    novelty: float
    rarity: float | None = None
    signal_rarity: float | None = None
    cluster_id: int | None = None
    knn_distances: list[float] = []


class CornerCasesPublic(BaseModel):
    data: list[CornerCasePublic]
    count: int


@router.post("/search/similar", response_model=NeighboursPublic)
def search_similar(body: SimilarRequest, lake: LakeDep, _: Reader) -> NeighboursPublic:
    if (body.clip_id is None) == (body.vector is None):
        raise HTTPException(422, "give exactly one of clip_id or vector")
    where = clip_predicate(body.filters) if body.filters else None
    hits = similar(lake, clip_id=body.clip_id, vector=body.vector, k=body.k, where=where, model=body.model)
    return NeighboursPublic(
        data=[NeighbourPublic(clip_id=h.clip_id, distance=h.distance) for h in hits], count=len(hits)
    )


@router.get("/mining/corner-cases", response_model=CornerCasesPublic)
def mining_corner_cases(
    lake: LakeDep,
    _: Reader,
    model: str | None = None,
    k: int = Query(50, ge=1, le=10_000),
    event: str | None = None,
) -> CornerCasesPublic:
    rows: list[dict[str, Any]] = corner_cases(lake, k=k, event=event, model=model)
    return CornerCasesPublic(data=[CornerCasePublic(**r) for r in rows], count=len(rows))
