"""The ``dataset`` kind: a new dataset version from a query, then its export."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from jobs.export_job import export_version
from jobs.params import DatasetName, JobParams, Query, ShardMb
from jobs.runner import Runner
from mining.datasets.curation import DatasetQuery, create_version, get_version
from storage.config import Settings
from storage.lake import Lake

__all__ = ["DatasetJob", "run_job"]


class DatasetJob(JobParams):
    """A new dataset version from a query (and its export): what ``POST /v1/datasets``
    submits when the query may read more rows than a request should."""

    kind: Literal["dataset"] = "dataset"
    name: DatasetName
    query: Query = Field(default_factory=DatasetQuery)
    export: bool = True
    shard_mb: ShardMb = 512


def run_job(req: DatasetJob, settings: Settings, runner: Runner | None = None) -> dict[str, Any]:
    lake = Lake.from_settings(settings)
    row = create_version(lake, req.name, req.query)
    if req.export:
        export_version(lake, req.name, row["version"], int(req.shard_mb * 1024 * 1024), runner=runner)
        row = get_version(lake, req.name, row["version"])
    return {k: row[k] for k in ("name", "version", "clip_count", "state")}
