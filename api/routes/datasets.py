"""Datasets: create versions, read them, their manifest (immutable) and shards (Range).

No handler here reads an unbounded number of rows. ``POST /v1/datasets`` bounds the rows
its query can read from the Delta log alone (:func:`mining.datasets.members.scan_estimate`):
within ``Settings.dataset_inline_rows`` it creates the version in the request and answers
201; above it submits a ``dataset`` job (``POST /v1/jobs``'s kind, a Ray job on a cluster)
and answers 202 with the run id to follow at ``/v1/jobs/{id}``. An export is always a job,
submitted like every other (:func:`jobs.submit.submit`: a run id, the local job limit, a
log): for a version created in the request the handler waits for it (``INLINE_WAIT_S``)
and answers 201 with the exported version, or 202 with the job if it is still running.
``GET /v1/datasets`` is a keyset page. A manifest is the file export wrote once (its
size grows with the shards, not the clips), kept per version in a cache bounded by
shard entries; its body with the caller's grant is rendered once for all the ranks of a
job that ask at once (:mod:`api.manifests`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Curator, LakeDep, Reader, ShardReader, grants
from api.grants import expiry
from api.manifests import RenderedManifests
from api.proxies import public_base
from api.ranges import file_response
from mining.datasets.curation import DatasetQuery, create_version, get_version
from mining.datasets.members import scan_estimate
from mining.datasets.shards import render_manifest, shard_location, stored_manifest
from storage.bounds import DATASET_NAME, MAX_CURSOR, MAX_VERSION
from storage.errors import ConfigError, JobError
from storage.pages import cursor_json
from storage.sql import literal
from storage.views import current_view

router = APIRouter(prefix="/v1", tags=["datasets"])
_NAME = re.compile(DATASET_NAME)
_SHARD = re.compile(r"^\d{6}\.tar$")
# Path parameters, bounded (storage.bounds): a name as _NAME allows, a version Delta can hold.
DatasetName = Annotated[str, Path(max_length=100)]
Version = Annotated[int, Path(ge=1, le=MAX_VERSION)]
ShardName = Annotated[str, Path(max_length=64)]  # a name is 000000.tar (_SHARD); more: 404
INLINE_WAIT_S = 100.0
"""How long ``POST /v1/datasets`` waits for the export of a version it created before it
answers 202 with the export job instead of 201 with the exported version."""


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=_NAME.pattern, max_length=100)
    query: DatasetQuery = Field(default_factory=DatasetQuery)
    export: bool = True
    shard_mb: float = Field(default=512, gt=0, le=65536)


class DatasetVersionPublic(BaseModel):
    name: str
    version: int
    query: dict[str, Any]
    created_at: dt.datetime
    clip_count: int
    state: str
    lake_version: dict[str, int]
    model: str | None = None
    manifest_url: str | None = None


class DatasetsPublic(BaseModel):
    data: list[DatasetVersionPublic]
    count: int
    next_cursor: str | None = None


class DatasetJobPublic(BaseModel):
    """A create too large for a request, running as a job."""

    name: str
    job_id: str
    status: str | None
    job_url: str
    estimated_rows: int


def _public(row: dict[str, Any], request: Request) -> DatasetVersionPublic:
    url = None
    if row["state"] == "exported":
        url = public_base(request) + f"/v1/datasets/{row['name']}/versions/{row['version']}/manifest"
    return DatasetVersionPublic(
        name=row["name"],
        version=row["version"],
        query=json.loads(row["query"]),
        created_at=row["created_at"],
        clip_count=row["clip_count"],
        state=row["state"],
        lake_version=json.loads(row["lake_version"]),
        model=row["model"],
        manifest_url=url,
    )


@router.post(
    "/datasets",
    response_model=DatasetVersionPublic,
    status_code=201,
    responses={
        202: {
            "model": DatasetJobPublic,
            "description": f"a large query, or an export still running after {INLINE_WAIT_S:g} s: the job",
        },
        429: {"description": "as many local jobs as allowed are running (FLEETMINE_MAX_LOCAL_JOBS)"},
    },
)
def create_dataset(
    body: DatasetCreate, request: Request, lake: LakeDep, _: Curator
) -> DatasetVersionPublic | JSONResponse:
    from jobs.submit import LIVE, get_run, wait_run

    settings = request.app.state.settings
    estimate = scan_estimate(lake, body.query)
    if estimate > settings.dataset_inline_rows:
        params = {
            "name": body.name,
            "query": body.query.model_dump(mode="json", exclude_defaults=True),
            "export": body.export,
            "shard_mb": body.shard_mb,
        }
        run = get_run(lake, _submit(request, "dataset", params), settings.ray_address)
        return _job_answer(request, body.name, run, estimate)
    row = create_version(lake, body.name, body.query)
    if not body.export:
        return _public(row, request)
    version = row["version"]
    params = {"name": body.name, "version": version, "shard_mb": body.shard_mb}
    note = f"; {body.name} version {version} was created, not exported"
    run = wait_run(lake, _submit(request, "export", params, note), settings.ray_address, INLINE_WAIT_S)
    if run["status"] in LIVE:
        return _job_answer(request, body.name, run, estimate)
    if run["status"] != "succeeded":
        errors = [e for e in json.loads(run.get("errors") or "[]") if isinstance(e, dict)]
        why = next((str(e["job"]) for e in errors if "job" in e), str(run["status"]))
        raise JobError(f"export of {body.name} version {version} ({run['run_id']}): {why}")
    if (view := current_view()) is not None:  # the job marked it exported after this request read it
        view.unpin(lake.uri, "datasets")
    return _public(get_version(lake, body.name, version), request)


def _submit(request: Request, kind: str, params: dict[str, Any], note: str = "") -> str:
    """Submit a ``kind`` job the way ``POST /v1/jobs`` does; its run id."""
    from jobs.requests import parse_job
    from jobs.submit import TooManyJobs, submit

    try:  # checked (strings that are not text included) before a runs row is written
        req = parse_job(kind, params)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        return submit(req, request.app.state.settings)
    except TooManyJobs as exc:
        headers = {"Retry-After": str(exc.retry_after_s)}
        raise HTTPException(429, f"{exc}{note}", headers=headers) from None


def _job_answer(request: Request, name: str, run: dict[str, Any], estimate: int) -> JSONResponse:
    """202: the job that is making (or exporting) the version, to follow at its URL."""
    run_id = str(run["run_id"])
    job = DatasetJobPublic(
        name=name,
        job_id=run_id,
        status=run.get("status"),
        job_url=public_base(request) + f"/v1/jobs/{run_id}",
        estimated_rows=estimate,
    )
    return JSONResponse(job.model_dump(), status_code=202, headers={"Location": job.job_url})


def _cursor(name: str, version: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([name, version]).encode()).decode()


def _after(cursor: str) -> str:
    try:  # strict: a string and a 64-bit int, no Infinity / 1e400 / wrong types (storage.pages)
        name, version = cursor_json(cursor, str, int)
    except ConfigError:
        raise HTTPException(400, "invalid cursor") from None
    return f"(name > {literal(name)} OR (name = {literal(name)} AND version > {int(version)}))"


@router.get("/datasets", response_model=DatasetsPublic)
def list_datasets(
    request: Request,
    lake: LakeDep,
    _: Reader,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=MAX_CURSOR),
) -> DatasetsPublic:
    """Versions by (name, version), a keyset page at a time (``next_cursor``)."""
    if not lake.exists("datasets"):
        return DatasetsPublic(data=[], count=0)
    rows = lake.query(
        "datasets",
        where=_after(cursor) if cursor else None,
        order_by=["name", "version"],
        limit=limit + 1,
    ).to_pylist()
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = _cursor(rows[-1]["name"], rows[-1]["version"]) if more else None
    return DatasetsPublic(data=[_public(r, request) for r in rows], count=len(rows), next_cursor=nxt)


def _version(lake: Any, name: str, version: int) -> dict[str, Any]:
    if not _NAME.match(name):
        raise HTTPException(404, f"no dataset {name}")
    return get_version(lake, name, version)


@router.get("/datasets/{name}/versions/{version}", response_model=DatasetVersionPublic)
def dataset_version(
    name: DatasetName, version: Version, request: Request, lake: LakeDep, _: Reader
) -> DatasetVersionPublic:
    return _public(_version(lake, name, version), request)


def _stored(request: Request, lake: Any, name: str, version: int) -> dict[str, Any]:
    """The version's stored manifest, read once per process for all who ask at once and
    kept (:mod:`api.manifests`)."""

    def read() -> dict[str, Any]:
        row = _version(lake, name, version)
        if row["state"] != "exported":
            raise HTTPException(409, f"dataset {name} version {version} is not exported yet")
        return stored_manifest(lake, name, version)

    manifests: RenderedManifests = request.app.state.manifests
    return manifests.stored.get((name, version), read)


@router.get("/datasets/{name}/versions/{version}/manifest", response_class=Response)
def dataset_manifest(
    name: DatasetName, version: Version, request: Request, lake: LakeDep, caller: Reader
) -> Response:
    """The manifest; its shard URLs carry a grant minted for the caller's token, so the
    shards need no header (the manifest itself does)."""
    doc = _stored(request, lake, name, version)
    grant, headers = None, {"Cache-Control": "public, max-age=31536000, immutable"}
    if caller.token_id is not None:
        now = time.time()
        expires = expiry(now, request.app.state.settings.shard_grant_ttl_s)
        grant = grants(request).mint(name, version, caller.token_id, expires)
        # A credential: no shared cache keeps it, and no client past the grant's life.
        headers["Cache-Control"] = f"private, max-age={max(0, int(expires - now) - 60)}"
    base = public_base(request)
    manifests: RenderedManifests = request.app.state.manifests
    key = (name, version, base, grant)
    asked = request.headers.get("if-none-match")
    if asked is not None and asked == manifests.etag(key):  # the client has it: nothing to render
        return Response(status_code=304, headers={**headers, "ETag": asked})
    body, headers["ETag"] = manifests.body(key, lambda: render_manifest(doc, base, grant))
    if asked == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get(
    "/shards/{name}/{version}/{shard}",
    response_class=Response,
    responses={
        200: {"description": "the shard (a tar; Range supported)"},
        307: {"description": "lakes on S3: a presigned URL of the shard in the store"},
    },
)
def get_shard(
    name: DatasetName, version: Version, shard: ShardName, request: Request, lake: LakeDep, _: ShardReader
) -> Response:
    """A shard, for a reader's bearer token or a grant for this version (``?grant=``)."""
    if not _SHARD.match(shard):
        raise HTTPException(404, f"no shard {shard}")
    row = _version(lake, name, version)
    loc = shard_location(lake, name, version, shard)
    if row["state"] != "exported" or not lake.confined(loc) or not loc.fs.exists(loc.path):
        raise HTTPException(404, f"no shard {shard} in {name} version {version}")
    ttl = request.app.state.settings.shard_url_ttl_s
    url = loc.presigned_url(ttl) if ttl > 0 else None
    if url is not None:  # the bytes come from the store itself; our token is checked here, once
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, no-store"})
    resp = file_response(
        request, loc.fs, loc.path, "application/x-tar", f"{name}-{version}-{shard}", immutable=True
    )
    if "grant" in request.query_params:  # a shared cache would outlive a revoked grant
        resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp
