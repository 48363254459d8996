"""Submitted jobs: run outside the caller, state in the lake's ``runs`` table.

``submit`` writes the run's ``runs`` row (``submitted``) and starts the job
elsewhere, then returns its id at once:

- with an ``http://host:8265`` address, through Ray's Job Submission API (the
  project's packages shipped as ``py_modules``, the lake settings and AWS variables
  passed as the job's environment, ``RAY_AUTH_TOKEN`` honoured);
- otherwise as a detached local process (``python -m fleetmine run-job``), so the job
  outlives the API server or shell that asked for it.

The request never becomes part of a command line: Ray runs an entrypoint through a
shell, so the entrypoint is a constant and the request travels in the job's
environment (``FLEETMINE_JOB_REQUEST``, zlib + base64 of its JSON), the same way for a
Ray job and a local process. A request that arrives over the API is first confined to
the configured raw and export roots (:func:`jobs.roots.confine`).

Detached local jobs are capped per host and lake: at most ``FLEETMINE_MAX_LOCAL_JOBS``
(default 4) whose process is alive; one more is refused (:class:`TooManyJobs`, 429 at the
API) before anything is written or started. A Ray cluster queues its own jobs: no cap.

Either way the job updates its own row (``running``, then ``succeeded``/``partial``/
``failed`` with counters and per-item errors), so any API replica, and an API
restarted meanwhile, answer ``GET /v1/jobs/{id}`` the same.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobs.requests import execute, summary
from jobs.roots import confine
from jobs.runs import RunRecord, run_row
from storage.config import Settings
from storage.errors import ConfigError, ConflictError, NotFoundError
from storage.lake import Lake
from storage.sql import literal
from storage.views import current_view

__all__ = [
    "LIVE",
    "TooManyJobs",
    "cancel",
    "get_run",
    "list_runs",
    "live_local_jobs",
    "max_local_jobs",
    "run_submitted",
    "submit",
    "wait_run",
]

LIVE = ("submitted", "running")
"""A run's statuses until it ends (then ``succeeded``, ``partial``, ``failed`` or ``cancelled``)."""

_PASS_ENV = ("AWS_", "FLEETMINE_", "RAY_AUTH")
REQUEST_ENV = "FLEETMINE_JOB_REQUEST"
# Ray runs an entrypoint with `sh -c`: it must hold nothing from the request.
ENTRYPOINT = "python -m fleetmine run-job"
_RUN_ID = re.compile(r"^[a-z]{1,20}-[0-9]{14}-[0-9a-f]{6}$")
_MAX_PACKED = 96 * 1024  # one environment string may hold 128 KiB (Linux MAX_ARG_STRLEN)
# Where this caller reaches the cluster; inside the job Ray sets RAY_ADDRESS to the cluster's own GCS.
_LOCAL_ONLY = ("RAY_ADDRESS", "FLEETMINE_RAY_ADDRESS")
_PLACE_ENV = "FLEETMINE_JOB_PLACE"
"""Where :func:`submit` started the job (``ray``: a Ray job named by its run id; ``local``: a
process on this host), for a job that records itself before its submitter has."""
MAX_LOCAL_JOBS_ENV = "FLEETMINE_MAX_LOCAL_JOBS"
DEFAULT_MAX_LOCAL_JOBS = 4
"""Detached local jobs alive at once per host and lake: each is a process of 170-250 MB (an
ingest, more), so a burst of submissions must not start one per request."""
MAX_ERROR_CHARS = 2000
"""Of a job's own error in its ``runs`` row: a message that quotes its input stays short."""


class TooManyJobs(ConflictError):
    """As many detached local jobs as allowed are running; retry once one has ended."""

    retry_after_s = 30


def max_local_jobs() -> int:
    """``FLEETMINE_MAX_LOCAL_JOBS`` (read at each submission), else 4; at least 1."""
    value = os.environ.get(MAX_LOCAL_JOBS_ENV, "").strip()
    try:
        return max(1, int(value)) if value else DEFAULT_MAX_LOCAL_JOBS
    except ValueError:
        raise ConfigError(f"{MAX_LOCAL_JOBS_ENV}: not a whole number") from None


def _env(settings: Settings, run_id: str, packed: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(_PASS_ENV)}
    env.update(settings.storage_options)
    env.update({"FLEETMINE_LAKE": settings.lake, "FLEETMINE_RUN_ID": run_id, REQUEST_ENV: packed})
    return env


def pack_request(req: Any) -> str:
    """The request as one shell-inert environment value (base64 alphabet only)."""
    packed = base64.b64encode(zlib.compress(json.dumps(req.model_dump()).encode())).decode()
    if len(packed) > _MAX_PACKED:
        raise ConfigError(f"{req.kind} job request too large to submit ({len(packed)} bytes packed)")
    return packed


def unpack_request(packed: str) -> str:
    """The request's JSON from :func:`pack_request`'s value."""
    return zlib.decompress(base64.b64decode(packed.encode(), validate=True)).decode()


def _log_dir() -> Path:
    """This user's own log folder (0700): job logs hold what a job printed, lake paths and
    errors included, so no other user of a shared ``/tmp`` may read them or plant the folder."""
    uid = os.getuid()
    d = Path(tempfile.gettempdir()) / f"fleetmine-jobs-{uid}"
    with contextlib.suppress(FileExistsError):
        d.mkdir(mode=0o700)
    st = d.lstat()
    if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:  # a symlink or someone else's is not ours
        if stat.S_IMODE(st.st_mode) != 0o700:
            d.chmod(0o700)
        return d
    return Path(tempfile.mkdtemp(prefix=f"fleetmine-jobs-{uid}-"))  # 0700, ours, new


def _open_log(run_id: str) -> tuple[Path, int]:
    """A new log file (0600) for the run, never one that was there (or a link planted there)."""
    path = _log_dir() / f"{run_id}.log"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW
    return path, os.open(path, flags, 0o600)


def submit(req: Any, settings: Settings, *, confined: bool = True) -> str:
    """Start ``req`` outside this process; returns its run id (a ``runs`` row already says ``submitted``).

    ``confined`` (the default, for whatever arrives over the API) refuses a ``raw`` or ``out``
    outside the configured roots before anything is written; a person's own CLI run passes False.
    """
    if confined:
        confine(req, settings)
    packed = pack_request(req)
    lake = Lake.from_settings(settings)
    lake.create_tables(["runs"])
    run_id = f"{req.kind}-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError("not a job kind that can be submitted")
    rec = RunRecord(run_id, req.kind, req.model_dump(), app_id=f"submit:{req.kind}")
    address = settings.ray_address or ""
    cluster = address.startswith(("http://", "https://"))
    env = {**_env(settings, run_id, packed), _PLACE_ENV: "ray" if cluster else "local"}
    if cluster:
        from ray.job_submission import JobSubmissionClient

        from jobs.runtime import SHIPPED_EXCLUDES, project_modules

        client = JobSubmissionClient(address)  # RAY_AUTH_TOKEN / ~/.ray/auth_token when RAY_AUTH_MODE=token
        client.submit_job(
            entrypoint=ENTRYPOINT,
            submission_id=run_id,
            runtime_env={
                "env_vars": {k: v for k, v in env.items() if k not in _LOCAL_ONLY},
                "py_modules": project_modules(),  # uploaded to the cluster's GCS by the client
                "excludes": SHIPPED_EXCLUDES,
            },
        )
        row = run_row(rec, "submitted").to_pylist()[0]
        lake.upsert("runs", _with(row, cluster_job_id=run_id, log_uri=None), only_if=_STILL_SUBMITTED)
        return run_id
    with _local_slot(lake):  # counted, started and recorded under one lock: a burst cannot overrun it
        log, fd = _open_log(run_id)
        with os.fdopen(fd, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fleetmine", "run-job"],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # not this process's child for signals: it outlives us
            )
        row = run_row(rec, "submitted").to_pylist()[0]
        lake.upsert(
            "runs", _with(row, cluster_job_id=_pid_id(proc.pid), log_uri=str(log)), only_if=_STILL_SUBMITTED
        )
    return run_id


_STILL_SUBMITTED = "t.status = 'submitted'"
"""The submitter records ``submitted`` after it has started the job, which may by then have
recorded ``running`` or even its end (a job that fails at once): that row is not undone."""


def _pid_id(pid: int) -> str:
    """A local job's ``cluster_job_id``: its process, on this host."""
    return f"pid:{pid}@{socket.gethostname()}"


@contextlib.contextmanager
def _local_slot(lake: Lake) -> Iterator[None]:
    """Hold this host's submission lock while a place is free for one more local job, else
    raise :class:`TooManyJobs`. The lock (``flock`` on a file in this user's log folder) is
    taken by every thread and process that submits here, so counting, starting and recording
    a job is one step for all of them."""
    limit = max_local_jobs()
    lock = os.open(_log_dir() / "submit.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running = live_local_jobs(lake)
        if running >= limit:
            raise TooManyJobs(
                f"{running} local jobs are running, the most allowed ({MAX_LOCAL_JOBS_ENV}={limit}); "
                f"retry once one has ended"
            )
        yield
    finally:
        os.close(lock)  # releases the flock


def live_local_jobs(lake: Lake) -> int:
    """Runs of this lake still ``submitted``/``running`` whose process on this host is alive."""
    rows = lake.read(
        "runs",
        columns=["cluster_job_id"],
        where="status IN ('submitted', 'running') AND cluster_job_id LIKE 'pid:%'",
    ).column("cluster_job_id")
    here = socket.gethostname()
    return sum(
        1
        for cid in rows.to_pylist()
        if str(cid)[4:].partition("@")[2] == here and _job_gone(str(cid), None) is None
    )


def _with(row: dict[str, Any], **extra: Any) -> Any:
    import pyarrow as pa

    from storage.tables import runs

    return runs.SPEC.conform(pa.Table.from_pylist([{**row, **extra}], schema=runs.SPEC.schema))


def run_submitted(request_json: str | None, settings: Settings) -> int:
    """Inside the submitted process: run the request, keeping its ``runs`` row current.

    ``request_json`` None: the request :func:`submit` put in ``FLEETMINE_JOB_REQUEST``.
    """
    from jobs.requests import parse_job

    if request_json is None:
        packed = os.environ.get(REQUEST_ENV)
        if not packed:
            raise ConfigError(f"run-job: no request given and {REQUEST_ENV} is not set")
        request_json = unpack_request(packed)
    try:
        doc = json.loads(request_json)
    except ValueError:
        raise ConfigError("run-job: the request is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        raise ConfigError("run-job: the request is not an object with a kind")
    req = parse_job(doc.pop("kind"), doc)  # bounded as at the API: a ConfigError, not a traceback
    run_id = os.environ.get("FLEETMINE_RUN_ID") or f"{req.kind}-{uuid.uuid4().hex[:12]}"
    if not _RUN_ID.fullmatch(run_id) and not re.fullmatch(r"[a-z]{1,20}-[0-9a-f]{12}", run_id):
        raise ConfigError("FLEETMINE_RUN_ID is not a run id fleetmine made")
    lake = Lake.from_settings(settings)
    lake.create_tables(["runs"])
    prior = get_run(lake, run_id) if _exists(lake, run_id) else {}
    rec = RunRecord(run_id, req.kind, req.model_dump(), app_id=f"submit:{req.kind}")
    keep = {k: prior.get(k) for k in ("cluster_job_id", "log_uri")}
    place = os.environ.get(_PLACE_ENV)
    if not keep["cluster_job_id"] and place in ("ray", "local"):
        # Running before its submitter recorded it (_STILL_SUBMITTED): on Ray the job is named
        # by its run id; here this process is the job, its log the one submit opened for it.
        log = _log_dir() / f"{run_id}.log" if place == "local" else None
        keep = {
            "cluster_job_id": run_id if place == "ray" else _pid_id(os.getpid()),
            "log_uri": str(log) if log is not None and log.exists() else None,
        }
    lake.upsert("runs", _with(run_row(rec, "running").to_pylist()[0], **keep))
    try:
        report = execute(req, settings)
    except Exception as exc:
        rec.errors.append({"job": _cut(f"{type(exc).__name__}: {exc}")})
        lake.upsert("runs", _with(run_row(rec, "failed").to_pylist()[0], **keep))
        raise
    info = summary(report)
    rec.counts.update({k: v for k, v in info.items() if isinstance(v, int | float | str)})
    failed = info.get("failed")
    if isinstance(failed, list) and failed:
        rec.errors += [
            {"item": str(f[0]), "reason": str(f[1])} for f in failed if isinstance(f, list | tuple)
        ]
    status = "partial" if rec.errors or (isinstance(failed, int) and failed) else "succeeded"
    lake.upsert("runs", _with(run_row(rec, status).to_pylist()[0], **keep))
    return 3 if status == "partial" else 0


def _cut(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit} more characters)"


def _exists(lake: Lake, run_id: str) -> bool:
    return lake.read("runs", columns=["run_id"], where=f"run_id = {literal(run_id)}").num_rows > 0


def _read_run(lake: Lake, run_id: str) -> dict[str, Any] | None:
    """The run's row as it is now: in a request's read view too (which would otherwise
    answer the version it first read, and a run followed there would never end)."""
    if (view := current_view()) is not None:
        view.unpin(lake.uri, "runs")
    rows = lake.read("runs", where=f"run_id = {literal(run_id)}").to_pylist()
    return dict(rows[0]) if rows else None


def get_run(lake: Lake, run_id: str, address: str | None = None) -> dict[str, Any]:
    """The run's row; a live-looking row whose job is gone is settled as ``failed`` first.

    A job that dies before it records its result (it could not start, the node died,
    ``SIGKILL``) would otherwise say ``submitted``/``running`` forever and ``--wait``
    would never return: so an unfinished row is checked against where the job runs
    (its process on this host, or its Ray job at ``address``).
    """
    lake.create_tables(["runs"])
    row = _read_run(lake, run_id)
    if row is None:
        raise NotFoundError(f"no job run {run_id!r}")
    if row["status"] not in LIVE:
        return row
    gone = _job_gone(str(row.get("cluster_job_id") or ""), address)
    if gone is None:
        return row
    row = _read_run(lake, run_id) or row  # it may have recorded its end just before exiting
    if row["status"] in LIVE:
        errors = [*json.loads(row.get("errors") or "[]"), {"job": f"ended before recording a result: {gone}"}]
        now = dt.datetime.now(dt.UTC)
        row = {**row, "status": "failed", "errors": json.dumps(errors), "finished_at": now}
        lake.upsert("runs", _with(row))
    return row


def wait_run(lake: Lake, run_id: str, address: str | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """The run's row once it has ended, or as it stands after ``timeout_s`` (still ``LIVE``)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.2
    while (row := get_run(lake, run_id, address))["status"] in LIVE:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, 2.0)
    return row


def _job_gone(cluster_job_id: str, address: str | None) -> str | None:
    """Why the job behind a run has ended, or None while it may still run (or cannot be asked)."""
    if cluster_job_id.startswith("pid:"):
        pid, _, host = cluster_job_id[4:].partition("@")
        if host != socket.gethostname():
            return None
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return f"its process {pid} is gone"
        if state == "Z":  # exited, not yet reaped by the process that started it
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(pid), os.WNOHANG)
            return f"its process {pid} exited"
        return None
    if cluster_job_id and address and address.startswith(("http://", "https://")):
        from ray.job_submission import JobStatus, JobSubmissionClient

        info = JobSubmissionClient(address).get_job_info(cluster_job_id)
        if info.status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.SUCCEEDED):
            return f"Ray job {info.status.value}: {(info.message or '')[-1500:]}"
    return None


def list_runs(lake: Lake, limit: int = 100) -> list[dict[str, Any]]:
    lake.create_tables(["runs"])
    rows = lake.read("runs").to_pylist()
    rows.sort(key=lambda r: r["started_at"] or dt.datetime.min.replace(tzinfo=dt.UTC), reverse=True)
    return rows[:limit]


def cancel(lake: Lake, run_id: str, address: str | None = None) -> str:
    """Stop a submitted run (Ray job or local process); its row says ``cancelled``."""
    row = get_run(lake, run_id, address)
    if row["status"] not in LIVE:
        raise ConfigError(f"run {run_id} is {row['status']}, nothing to cancel")
    cid = str(row.get("cluster_job_id") or "")
    if cid.startswith("pid:"):
        pid, _, host = cid[4:].partition("@")
        if host != socket.gethostname():
            raise ConfigError(f"run {run_id} runs on {host}; cancel it there")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGTERM)
    elif cid and address and address.startswith(("http://", "https://")):
        from ray.job_submission import JobSubmissionClient

        JobSubmissionClient(address).stop_job(cid)
    else:
        raise ConfigError(f"run {run_id} was not submitted (it ran in its caller's process)")
    lake.upsert("runs", _with({**row, "status": "cancelled", "finished_at": dt.datetime.now(dt.UTC)}))
    return "cancelled"


def logs(lake: Lake, run_id: str, address: str | None = None) -> str:
    row = get_run(lake, run_id, address)
    if row.get("log_uri") and Path(str(row["log_uri"])).exists():
        return Path(str(row["log_uri"])).read_text(errors="replace")
    if row.get("cluster_job_id") and address and address.startswith(("http://", "https://")):
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(address).get_job_logs(str(row["cluster_job_id"])))
    return json.dumps(
        {"counts": json.loads(row["counts"] or "{}"), "errors": json.loads(row["errors"] or "[]")}
    )
