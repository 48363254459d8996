"""Jobs: operators submit ingest/embed/index/mine/export; state lives in ``runs``.

A submitted job runs outside the API process (a Ray job on a cluster, else a
detached process: ``jobs.submit``), so it survives an API restart, and every API
replica answers ``GET /v1/jobs/{id}`` from the same table.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import LakeDep, Operator, Reader
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


def _public(row: dict[str, Any]) -> JobPublic:
    errors = json.loads(row.get("errors") or "[]")
    job_error = next((e["job"] for e in errors if isinstance(e, dict) and "job" in e), None)
    return JobPublic(
        id=row["run_id"],
        kind=row.get("kind"),
        params=json.loads(row.get("params") or "{}"),
        status=row.get("status"),
        started_at=row["started_at"].isoformat() if row.get("started_at") else None,
        finished_at=row["finished_at"].isoformat() if row.get("finished_at") else None,
        result=json.loads(row.get("counts") or "null"),
        errors=[e for e in errors if isinstance(e, dict)][:100],
        error=job_error,
    )


@router.post("/jobs", response_model=JobPublic, status_code=202)
def submit(body: JobCreate, request: Request, lake: LakeDep, _: Operator) -> JobPublic:
    from jobs.requests import parse_job
    from jobs.submit import get_run
    from jobs.submit import submit as submit_job

    try:
        req = parse_job(body.kind, body.params)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    run_id = submit_job(req, request.app.state.settings)
    return _public(get_run(lake, run_id, request.app.state.settings.ray_address))


@router.get("/jobs", response_model=JobsPublic)
def list_jobs(lake: LakeDep, _: Reader, limit: int = Query(100, ge=1, le=1000)) -> JobsPublic:
    from jobs.submit import list_runs

    data = [_public(r) for r in list_runs(lake, limit)]
    return JobsPublic(data=data, count=len(data))


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: str, request: Request, lake: LakeDep, _: Reader) -> JobPublic:
    from jobs.submit import get_run

    return _public(get_run(lake, job_id, request.app.state.settings.ray_address))
