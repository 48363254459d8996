"""Verdicts on clips: curators mark them, everyone reads them (``reviews``, latest wins)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from api.deps import Curator, LakeDep, Reader
from api.routes.clips import ClipIdPath, clip_row
from mining.scores.reviews import clip_reviews, record_review
from storage.bounds import Text, utf8_text

Tag = Annotated[str, Field(max_length=64), AfterValidator(utf8_text)]

router = APIRouter(prefix="/v1", tags=["reviews"])


class ReviewCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Literal["confirmed", "not_interesting", "mislabelled"]
    tags: list[Tag] = Field(default_factory=list, max_length=32)
    note: Text | None = None


class ReviewPublic(BaseModel):
    clip_id: str
    reviewer: str
    at: dt.datetime
    verdict: str
    tags: list[str] = []
    note: str | None = None


class ReviewsPublic(BaseModel):
    data: list[ReviewPublic]
    count: int
    latest: ReviewPublic | None = None


@router.post("/clips/{clip_id}/reviews", response_model=ReviewPublic, status_code=201)
def add_review(clip_id: ClipIdPath, body: ReviewCreate, lake: LakeDep, caller: Curator) -> ReviewPublic:
    clip_row(lake, clip_id)  # 404 for a clip that does not exist
    row = record_review(lake, clip_id, caller.name, body.verdict, body.tags, body.note)
    return ReviewPublic(**{**row, "tags": row["tags"] or []})


@router.get("/clips/{clip_id}/reviews", response_model=ReviewsPublic)
def list_reviews(clip_id: ClipIdPath, lake: LakeDep, _: Reader) -> ReviewsPublic:
    rows = [ReviewPublic(**{**r, "tags": r["tags"] or []}) for r in clip_reviews(lake, clip_id)]
    return ReviewsPublic(data=rows, count=len(rows), latest=rows[0] if rows else None)
