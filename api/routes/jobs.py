"""Jobs: operators submit ingest/embed/index/mine/export; progress is in ``runs`` and here."""

from __future__ import annotations

import threading
import uuid
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import LakeDep, Operator, Reader

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


def _run(kind: str, params: dict[str, Any], settings: Any, lake: Any) -> dict[str, Any]:
    match kind:
        case "ingest":
            from jobs.ingest_job import run_ingest

            r = run_ingest(str(params["raw"]), settings, force=bool(params.get("force", False)))
            return {"run_id": r.run_id, "ok": len(r.ok), "failed": len(r.failed)}
        case "embed":
            from mining.embed import run_embed

            return run_embed(settings, params.get("model")).__dict__
        case "index":
            from mining.queries import build_index

            return build_index(settings, params.get("model"))
        case "mine":
            from mining.novelty import run_mine

            return run_mine(settings, params.get("model")).__dict__
        case "export":
            from mining.curation import export_version

            doc = export_version(
                lake, str(params["name"]), int(params["version"]), runner="ray", address=settings.ray_address
            )
            return {"num_samples": doc["num_samples"], "shards": len(doc["shardlist"])}
    raise ValueError(kind)


@router.post("/jobs", response_model=JobPublic, status_code=202)
def submit(body: JobCreate, request: Request, lake: LakeDep, _: Operator) -> JobPublic:
    jobs: dict[str, dict[str, Any]] = request.app.state.jobs
    job_id = uuid.uuid4().hex[:12]
    jobs[job_id] = {"id": job_id, "kind": body.kind, "params": body.params, "status": "running"}

    def work() -> None:
        try:
            jobs[job_id]["result"] = _run(body.kind, body.params, request.app.state.settings, lake)
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
