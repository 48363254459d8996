"""Jobs: operators submit ingest/embed/index/mine/export; state lives in ``runs``.

A submitted job runs outside the API process (a Ray job on a cluster, else a
detached process: ``jobs.submit``), so it survives an API restart, and every API
replica answers ``GET /v1/jobs/{id}`` from the same table.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import LakeDep, Operator, Reader
from jobs.requests import JobRequest, KindName
from storage.bounds import MAX_ID
from storage.errors import ConfigError

router = APIRouter(prefix="/v1", tags=["jobs"])


class JobCreate(BaseModel):
    """A job: its ``kind`` and that kind's ``params`` (one schema per kind, every field bounded;
    an unknown key, a value past its bound or a query that is no DatasetQuery answers 422
    before a ``runs`` row is written)."""

    model_config = ConfigDict(extra="forbid")
    kind: KindName  # the registered kinds (jobs.requests.KINDS): an enum in the schema
    params: JobRequest = Field(description="the parameters of this kind of job (`kind` inside is optional)")

    @model_validator(mode="before")
    @classmethod
    def _kind_into_params(cls, body: Any) -> Any:
        """The params are validated as the request of the outer ``kind`` (the union's tag)."""
        if not isinstance(body, dict):
            return body
        kind, params = body.get("kind"), body.get("params", {})
        if not isinstance(params, dict) or not isinstance(kind, str):
            return body
        if params.get("kind", kind) != kind:
            raise ValueError("params.kind: must be the job's kind (or left out)")
        return {**body, "params": {**params, "kind": kind}}


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


_MAX_CHARS = 1000  # of one string in a run's params, result or errors as answered
_MAX_ITEMS = 20  # of one list or object there (a 10,000-clip basket is not listed whole)
_MAX_DEPTH = 6
_MAX_FIELD = 16 * 1024  # bytes of one field's JSON: a row weighs a few dozen KB, whatever was stored


def _clip(value: Any, depth: int = 0) -> Any:
    """``value`` as answered: strings made encodable as UTF-8 (a lone surrogate becomes ``?``)
    and cut, lists and objects cut to their first items. The row in the lake keeps it all
    (``fleetmine jobs status``); a listing of a hundred runs must stay small whatever they hold."""
    if isinstance(value, str):
        text = value.encode("utf-8", "replace").decode("utf-8")
        return text if len(text) <= _MAX_CHARS else f"{text[:_MAX_CHARS]}… ({len(text) - _MAX_CHARS} more)"
    if depth >= _MAX_DEPTH and isinstance(value, dict | list):
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {_clip(str(k), depth + 1): _clip(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["…"] = f"{len(items) - _MAX_ITEMS} more"
        return out
    if isinstance(value, list):
        head = [_clip(v, depth + 1) for v in value[:_MAX_ITEMS]]
        return head + ([f"… {len(value) - _MAX_ITEMS} more"] if len(value) > _MAX_ITEMS else [])
    return value


def _bounded(value: Any, empty: Any) -> Any:
    """:func:`_clip`'s ``value``, or ``empty`` with a note when even that is too large."""
    out = _clip(value)
    size = len(json.dumps(out))
    if size <= _MAX_FIELD:
        return out
    note = f"{size} bytes: too large to list (fleetmine jobs status shows it)"
    return [{"truncated": note}] if isinstance(empty, list) else {"truncated": note}


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
    if len(errors) > _MAX_ITEMS:  # the list stays a list of objects
        errors = [*errors[:_MAX_ITEMS], {"more": f"{len(errors) - _MAX_ITEMS} more errors"}]
    return JobPublic(
        id=_clip(str(row["run_id"])),
        kind=_clip(row.get("kind")),
        params=_bounded(params, {}) if isinstance(params, dict) else {},
        status=_clip(row.get("status")),
        started_at=row["started_at"].isoformat() if row.get("started_at") else None,
        finished_at=row["finished_at"].isoformat() if row.get("finished_at") else None,
        result=_bounded(result, {}) if isinstance(result, dict) else None,
        errors=_bounded(errors, []),
        error=_clip(str(job_error)) if job_error is not None else None,
    )


@router.post(
    "/jobs",
    response_model=JobPublic,
    status_code=202,
    responses={
        429: {
            "description": "as many local jobs as allowed (FLEETMINE_MAX_LOCAL_JOBS) are "
            "running: retry after Retry-After seconds"
        }
    },
)
def submit(body: JobCreate, request: Request, lake: LakeDep, _: Operator) -> JobPublic:
    """422 for parameters that are malformed or name a location outside the configured roots,
    before anything is written."""
    from jobs.roots import confine
    from jobs.submit import TooManyJobs, get_run
    from jobs.submit import submit as submit_job

    settings = request.app.state.settings
    try:
        confine(body.params, settings)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    try:
        run_id = submit_job(body.params, settings)
    except TooManyJobs as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
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
