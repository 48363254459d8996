"""Drives and clips: lists with filters pushed down to Delta, one clip, its media and signals."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel

from api.deps import LakeDep, Reader
from api.ranges import file_response
from mining.scenarios import resolve_filter
from mining.tags import tagged_clips
from storage.bounds import MAX_CURSOR, MAX_ID, MAX_NAME, MAX_NAMES, MAX_SPEED, Name
from storage.errors import ConfigError
from storage.filters import ClipFilter, among, within_days
from storage.pages import Position, cursor_key, keyset_page
from storage.reads import read_clip_signals
from storage.sql import literal
from storage.tables.signals import SIGNAL_COLUMNS

router = APIRouter(prefix="/v1", tags=["clips"])
_MAX_LIMIT = 500

# Every parameter bounded where FastAPI declares it, so the bound is in /openapi.json and
# a value past it answers 422 before a query is built.
ClipIdPath = Annotated[str, Path(max_length=MAX_ID)]
DriveIdPath = Annotated[str, Path(max_length=MAX_ID)]
CursorQuery = Annotated[str | None, Query(max_length=MAX_CURSOR, description="next_cursor of the last page")]
NameQuery = Annotated[str | None, Query(max_length=MAX_NAME)]


class ClipPublic(BaseModel):
    clip_id: str
    drive_id: str | None = None
    vehicle_id: str | None = None
    camera: str | None = None
    group_id: str | None = None
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None
    duration_s: float | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    codec: str | None = None
    speed_mean: float | None = None
    speed_max: float | None = None
    max_decel_mps2: float | None = None
    max_lat_accel_mps2: float | None = None
    max_steering_rate_dps: float | None = None
    events: list[str] = []


class ClipsPublic(BaseModel):
    data: list[ClipPublic]
    count: int
    next_cursor: str | None = None


class DrivePublic(BaseModel):
    drive_id: str
    vehicle_id: str | None = None
    platform: str | None = None
    start_time: dt.datetime | None = None
    duration_s: float | None = None
    time_source: str | None = None
    status: str | None = None
    error: str | None = None
    warnings: list[str] | None = None
    n_clips: int | None = None


class DrivesPublic(BaseModel):
    data: list[DrivePublic]
    count: int
    next_cursor: str | None = None


class SignalsPublic(BaseModel):
    clip_id: str
    columns: list[str]
    rows: list[list[float | None]]


def _cursor(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return cursor_key(value)
    except ConfigError:
        raise HTTPException(400, "invalid cursor") from None


def _position(value: str | None) -> Position | None:
    if value is None:
        return None
    try:
        return Position.decode(value)
    except ConfigError:
        raise HTTPException(400, "invalid cursor") from None


@router.get("/drives", response_model=DrivesPublic)
def list_drives(
    lake: LakeDep, _: Reader, limit: int = Query(100, ge=1, le=_MAX_LIMIT), cursor: CursorQuery = None
) -> DrivesPublic:
    after = _cursor(cursor)
    rows = lake.query(
        "drives",
        columns=[*DrivePublic.model_fields],
        where=f"drive_id > {literal(after)}" if after else None,
        order_by=["drive_id"],
        limit=limit + 1,
    ).to_pylist()
    page = rows[:limit]
    nxt = base64.urlsafe_b64encode(page[-1]["drive_id"].encode()).decode() if len(rows) > limit else None
    return DrivesPublic(data=[DrivePublic(**r) for r in page], count=len(page), next_cursor=nxt)


@router.get("/drives/{drive_id}", response_model=DrivePublic)
def get_drive(drive_id: DriveIdPath, lake: LakeDep, _: Reader) -> DrivePublic:
    rows = lake.query("drives", where=f"drive_id = {literal(drive_id)}", limit=1).to_pylist()
    if not rows:
        raise HTTPException(404, f"no drive {drive_id}")
    return DrivePublic(**rows[0])


@router.get("/clips", response_model=ClipsPublic)
def list_clips(
    request: Request,
    lake: LakeDep,
    _: Reader,
    vehicle_id: NameQuery = None,
    event: NameQuery = None,
    min_speed: float | None = Query(None, ge=-MAX_SPEED, le=MAX_SPEED, allow_inf_nan=False),
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    group_id: str | None = Query(
        None, max_length=MAX_ID, description="every camera's clip of one time window"
    ),
    camera: NameQuery = None,
    scenario: list[Name] = Query(
        [],
        max_length=MAX_NAMES,
        description="clips a span of any of these scenarios overlaps (`NAME` or `NAME@V`; repeat it)",
    ),
    text_tag: list[Name] = Query(
        [],
        max_length=MAX_NAMES,
        description="clips passing any of these zero-shot tags (`NAME`: its latest version, or `NAME@V`; "
        "repeat it); one that is unknown or never run (`fleetmine tags run`) is a 400 naming the scored ones",
    ),
    limit: int = Query(100, ge=1, le=_MAX_LIMIT),
    cursor: CursorQuery = None,
) -> ClipsPublic:
    """Clips in id order, a keyset page at a time (:mod:`storage.pages`): each page reads a
    bounded number of rows, so a page holds fewer than ``limit`` clips (even none) when
    a rare filter ran out of its scan budget; follow ``next_cursor`` until it is null."""
    selection = ClipFilter(
        vehicles=[vehicle_id] if vehicle_id else [],
        events=[event] if event else [],
        min_speed=min_speed,
        since=since,
        until=until,
        group_id=group_id,
        camera=camera,
        scenarios=scenario,
    )
    selection = resolve_filter(lake, selection)
    start, where, days = _position(cursor), selection.predicate(), selection.days()
    if text_tag:  # the grid's tag filter (mining.tags.tagged_clips): the clips passing any of them
        tagged = tagged_clips(lake, list(text_tag))[1]
        if not tagged:
            return ClipsPublic(data=[], count=0)
        where = " AND ".join(p for p in (where, among(tagged)) if p)
        days = within_days(days, tagged)
    page = keyset_page(
        lake,
        "clips",
        key="clip_id",
        columns=list(ClipPublic.model_fields),
        where=where,
        limit=limit,
        start=start,
        days=days,
        budget_rows=request.app.state.settings.scan_budget_rows,
    )
    rows = page.rows.to_pylist()
    return ClipsPublic(
        data=[ClipPublic(**r) for r in rows],
        count=len(rows),
        next_cursor=page.next.encode() if page.next else None,
    )


def clip_row(lake: Any, clip_id: str) -> dict[str, Any]:
    """The clip's ``clips`` row, or 404."""
    where = f"clip_id = {literal(clip_id)}"
    day = clip_id[:8]
    days = None
    if len(day) == 8 and day.isdigit():  # the id's day names its partition: open its files alone
        try:
            days = [dt.datetime.strptime(day, "%Y%m%d").date()]
        except ValueError:  # no calendar date: no such partition, no such clip
            raise HTTPException(404, f"no clip {clip_id}") from None
        where += f" AND date = {literal(days[0])}"
    rows = lake.query("clips", where=where, limit=1, partitions=days).to_pylist()
    if not rows:
        raise HTTPException(404, f"no clip {clip_id}")
    return dict(rows[0])


@router.get("/clips/{clip_id}", response_model=ClipPublic)
def get_clip(clip_id: ClipIdPath, lake: LakeDep, _: Reader) -> ClipPublic:
    return ClipPublic(**clip_row(lake, clip_id))


@router.get("/clips/{clip_id}/group", response_model=ClipsPublic)
def get_clip_group(clip_id: ClipIdPath, lake: LakeDep, _: Reader) -> ClipsPublic:
    """Every camera's clip of the same time window as this one (the clip alone if it has no group)."""
    clip = clip_row(lake, clip_id)
    if not clip.get("group_id"):
        return ClipsPublic(data=[ClipPublic(**clip)], count=1)
    where = f"group_id = {literal(clip['group_id'])} AND date = {literal(clip['date'])}"
    cols = list(ClipPublic.model_fields)
    rows = lake.query(
        "clips", columns=cols, where=where, order_by=["camera"], limit=_MAX_LIMIT, partitions=[clip["date"]]
    ).to_pylist()
    return ClipsPublic(data=[ClipPublic(**r) for r in rows], count=len(rows))


def _media(lake: Any, uri: str | None) -> tuple[Any, str]:
    if not uri:
        raise HTTPException(404, "this clip has no such media")
    loc = lake.locate(uri)
    if loc is None:
        raise HTTPException(404, "media outside the lake")
    return loc.fs, loc.path


@router.get("/clips/{clip_id}/thumbnail.jpg", response_class=Response)
def thumbnail(clip_id: ClipIdPath, request: Request, lake: LakeDep, _: Reader) -> Response:
    fs, path = _media(lake, clip_row(lake, clip_id)["thumbnail_uri"])
    return file_response(request, fs, path, "image/jpeg", f"{clip_id}-thumb", immutable=True)


@router.get("/clips/{clip_id}/video.mp4", response_class=Response)
def video(clip_id: ClipIdPath, request: Request, lake: LakeDep, _: Reader) -> Response:
    fs, path = _media(lake, clip_row(lake, clip_id)["video_uri"])
    return file_response(request, fs, path, "video/mp4", f"{clip_id}-video", immutable=True)


@router.get(
    "/clips/{clip_id}/preview.mp4",
    response_class=Response,
    responses={404: {"description": "the clip has no preview: its codec plays in browsers (see video.mp4)"}},
)
def preview(clip_id: ClipIdPath, request: Request, lake: LakeDep, _: Reader) -> Response:
    """The clip's H.264 preview, for a clip whose codec browsers do not play (HEVC).
    ``video.mp4`` stays the original, which exports and shards serve."""
    fs, path = _media(lake, clip_row(lake, clip_id).get("preview_uri"))
    return file_response(request, fs, path, "video/mp4", f"{clip_id}-preview", immutable=True)


@router.get("/clips/{clip_id}/signals", response_model=SignalsPublic)
def signals(clip_id: ClipIdPath, lake: LakeDep, _: Reader) -> SignalsPublic:
    sig = read_clip_signals(lake, clip_row(lake, clip_id))
    rows = [[None if v != v else float(v) for v in row] for row in sig.tolist()]
    return SignalsPublic(clip_id=clip_id, columns=list(SIGNAL_COLUMNS), rows=rows)
