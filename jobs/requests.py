"""Job kinds: one registration each, from which everything that names a kind is derived.

A kind is a request model (what to do: a :class:`~jobs.params.JobParams` with its ``kind``
literal) and the function that runs it, both in ``jobs/<kind>_job.py``. :data:`KINDS` holds
one line per kind; :data:`JOB_KINDS`, the request union that the CLI, ``POST /v1/jobs``
(and its OpenAPI schema) and the scheduler share, :func:`parse_job` and :func:`execute`'s
dispatch all come from it.

Adding a job kind: ``jobs/<kind>_job.py`` (its request model and ``run_job``; stages and
heavy libraries imported where they run, so the API's import of this registry stays light)
and its line in :data:`KINDS`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from pydantic import Field, TypeAdapter, ValidationError

from jobs import dataset_job, embed_job, export_job, index_job, ingest_job, mine_job, shadow_job, tags_job
from jobs.params import JobParams
from jobs.runner import Runner
from storage.config import Settings
from storage.errors import ConfigError

__all__ = [
    "JOB_KINDS",
    "KINDS",
    "JobKind",
    "JobRequest",
    "KindName",
    "execute",
    "job_kind",
    "parse_job",
    "summary",
]


@dataclass(frozen=True)
class JobKind:
    """A job kind: its request model and the function that runs one request of it,
    ``run(req, settings, runner=None, **hooks) -> report``."""

    request: type[JobParams]
    run: Callable[..., Any]

    @property
    def name(self) -> str:
        return str(self.request.model_fields["kind"].default)


def _by_name(*kinds: JobKind) -> dict[str, JobKind]:
    return {k.name: k for k in kinds}


KINDS: dict[str, JobKind] = _by_name(
    JobKind(ingest_job.IngestJob, ingest_job.run_job),
    JobKind(embed_job.EmbedJob, embed_job.run_job),
    JobKind(index_job.IndexJob, index_job.run_job),
    JobKind(mine_job.MineJob, mine_job.run_job),
    JobKind(export_job.ExportJob, export_job.run_job),
    JobKind(dataset_job.DatasetJob, dataset_job.run_job),
    JobKind(shadow_job.ShadowJob, shadow_job.run_job),
    JobKind(tags_job.TagsJob, tags_job.run_job),
)
JOB_KINDS: tuple[str, ...] = tuple(KINDS)

if TYPE_CHECKING:
    KindName: TypeAlias = str
    JobRequest: TypeAlias = JobParams
else:
    KindName = Literal[JOB_KINDS]
    """The kinds as a ``Literal``: an enum of them in a schema."""
    JobRequest = Annotated[
        functools.reduce(operator.or_, (k.request for k in KINDS.values())), Field(discriminator="kind")
    ]
    """Any kind's request, told apart by ``kind`` (a discriminated union: one schema per kind)."""

_ADAPTER: TypeAdapter[JobParams] = TypeAdapter(JobRequest)


def job_kind(name: str) -> JobKind:
    """The registered kind ``name``; a ConfigError lists the valid ones."""
    kind = KINDS.get(name)
    if kind is None:
        raise ConfigError(f"unknown job kind {name!r}; valid kinds: {list(JOB_KINDS)}")
    return kind


def parse_job(kind: str, params: dict[str, Any]) -> JobParams:
    """The request for ``kind`` with ``params``; a ConfigError says what is wrong."""
    job_kind(kind)
    try:
        return _ADAPTER.validate_python({**params, "kind": kind})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or kind}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"bad {kind} job parameters: {problems}") from None


def execute(req: JobParams, settings: Settings, runner: Runner | None = None, **hooks: Any) -> Any:
    """Run one request to its end with its kind's function; returns the job's report."""
    kind = job_kind(req.kind) if isinstance(req, JobParams) else None
    if kind is None or not isinstance(req, kind.request):
        raise ConfigError(f"not a job request: {type(req).__name__}")
    return kind.run(req, settings, runner, **hooks)


def summary(report: Any) -> dict[str, Any]:
    """A report as JSON-able counters (what ``GET /v1/jobs/{id}`` shows)."""
    if isinstance(report, ingest_job.IngestReport):
        return {"run_id": report.run_id, "ok": len(report.ok), "failed": len(report.failed), **report.counts}
    if is_dataclass(report) and not isinstance(report, type):
        return asdict(report)
    if isinstance(report, dict) and "shardlist" in report:
        return {"num_samples": report["num_samples"], "shards": len(report["shardlist"])}
    return dict(report)
