"""Jobs: operators submit ingest/embed/index/mine/export; state lives in ``runs``.

A submitted job runs outside the API process (a Ray job on a cluster, else a
detached process: ``jobs.submit``), so it survives an API restart, and every API
replica answers ``GET /v1/jobs/{id}`` from the same table.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import LakeDep, Operator, Reader
from storage.bounds import MAX_ID
from storage.errors import ConfigError

router = APIRouter(prefix="/v1", tags=["jobs"])


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["ingest", "embed", "index", "mine", "export", "dataset"]
    params: dict[str, Any] = Field(default_factory=dict)


class JobPublic(BaseModel):
    id: str
    kind: str | None
    params: dict[str, Any]
    status: str | None
    started_at: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = []
    error: str | None = None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


def _text(value: Any) -> Any:
    """``value`` with every string made encodable as UTF-8 (a lone surrogate becomes ``?``)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def _public(row: dict[str, Any]) -> JobPublic:
    """The run as answered. Read defensively: a row written before requests were checked
    (bad JSON, text that is not UTF-8) must not fail the answer, least of all the list."""
    try:
        errors = json.loads(row.get("errors") or "[]")
        params = json.loads(row.get("params") or "{}")
        result = json.loads(row.get("counts") or "null")
    except (ValueError, TypeError):
        errors, params, result = [{"job": "this run's stored record is unreadable"}], {}, None
    errors = [e for e in (errors if isinstance(errors, list) else []) if isinstance(e, dict)]
    job_error = next((e["job"] for e in errors if "job" in e), None)
    return JobPublic(
        id=_text(str(row["run_id"])),
        kind=_text(row.get("kind")),
        params=_text(params) if isinstance(params, dict) else {},
        status=_text(row.get("status")),
        started_at=row["started_at"].isoformat() if row.get("started_at") else None,
        finished_at=row["finished_at"].isoformat() if row.get("finished_at") else None,
        result=_text(result) if isinstance(result, dict) else None,
        errors=_text(errors[:100]),
        error=_text(str(job_error)) if job_error is not None else None,
    )


@router.post("/jobs", response_model=JobPublic, status_code=202)
def submit(body: JobCreate, request: Request, lake: LakeDep, _: Operator) -> JobPublic:
    """422 for parameters that are malformed or name a location outside the configured roots,
    before anything is written."""
    from jobs.requests import parse_job
    from jobs.roots import confine
    from jobs.submit import get_run
    from jobs.submit import submit as submit_job

    settings = request.app.state.settings
    try:
        req = parse_job(body.kind, body.params)
        confine(req, settings)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    run_id = submit_job(req, settings)
    return _public(get_run(lake, run_id, settings.ray_address))


@router.get("/jobs", response_model=JobsPublic)
def list_jobs(lake: LakeDep, _: Reader, limit: int = Query(100, ge=1, le=1000)) -> JobsPublic:
    from jobs.submit import list_runs

    data = [_public(r) for r in list_runs(lake, limit)]
    return JobsPublic(data=data, count=len(data))


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(
    job_id: Annotated[str, Path(max_length=MAX_ID)], request: Request, lake: LakeDep, _: Reader
) -> JobPublic:
    from jobs.submit import get_run

    return _public(get_run(lake, job_id, request.app.state.settings.ray_address))
