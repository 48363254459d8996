"""Jobs: operators submit ingest/embed/index/mine/export; progress is in ``runs`` and here."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import LakeDep, Operator, Reader
from storage.errors import ConfigError

router = APIRouter(prefix="/v1", tags=["jobs"])


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["ingest", "embed", "index", "mine", "export"]
    params: dict[str, Any] = Field(default_factory=dict)


class JobPublic(BaseModel):
    id: str
    kind: str
    params: dict[str, Any]
    status: str
    result: dict[str, Any] | None = None
    error: str | None = None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


@router.post("/jobs", response_model=JobPublic, status_code=202)
def submit(body: JobCreate, request: Request, lake: LakeDep, _: Operator) -> JobPublic:
    from jobs.requests import execute, parse_job, summary

    try:
        req = parse_job(body.kind, body.params)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    jobs: dict[str, dict[str, Any]] = request.app.state.jobs
    job_id = uuid.uuid4().hex[:12]
    jobs[job_id] = {"id": job_id, "kind": body.kind, "params": body.params, "status": "running"}

    def work() -> None:
        try:
            jobs[job_id]["result"] = summary(execute(req, request.app.state.settings))
            jobs[job_id]["status"] = "succeeded"
        except Exception as exc:  # the job's failure is its status, not the server's
            jobs[job_id].update(status="failed", error=f"{type(exc).__name__}: {exc}")

    threading.Thread(target=work, daemon=True, name=f"job-{job_id}").start()
    return JobPublic(**jobs[job_id])


@router.get("/jobs", response_model=JobsPublic)
def list_jobs(request: Request, _: Reader) -> JobsPublic:
    data = [JobPublic(**j) for j in request.app.state.jobs.values()]
    return JobsPublic(data=data, count=len(data))


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(job_id: str, request: Request, _: Reader) -> JobPublic:
    job = request.app.state.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return JobPublic(**job)
