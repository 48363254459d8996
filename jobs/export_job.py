"""``fleetmine dataset export``: a version's shards written by shard stages, then its manifest
(or, ``--format lerobot``, a LeRobotDataset v3.0 tree).

The plan is deterministic (:func:`~mining.datasets.shards.plan_export`), so writing the
shards in parallel Ray tasks gives the same bytes as writing them here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from jobs.params import DatasetName, JobParams, LocationStr, ShardMb
from jobs.runner import Runner, SequentialRunner, StageSpec
from mining.datasets.shards import ShardStage, finish_export, plan_export
from storage.bounds import MAX_VERSION
from storage.config import Settings
from storage.errors import ConfigError, JobError
from storage.lake import Lake

__all__ = ["ExportJob", "export_version", "run_job"]


class ExportJob(JobParams):
    kind: Literal["export"] = "export"
    name: DatasetName
    version: int = Field(ge=1, le=MAX_VERSION)
    shard_mb: ShardMb = 512
    format: Literal["webdataset", "lerobot"] = Field(
        default="webdataset", description="webdataset: shards + manifest; lerobot: a LeRobotDataset v3.0 tree"
    )
    out: LocationStr | None = Field(
        default=None, description="lerobot: where to write the tree (default: <lake>/datasets/NAME/V/lerobot)"
    )

    @model_validator(mode="after")
    def _out_is_lerobot(self) -> ExportJob:
        """Shards live in the lake: an ``out`` for them is refused here, not by the job later."""
        if self.out is not None and self.format != "lerobot":
            raise ValueError("out: only --format lerobot writes elsewhere; shards live in the lake")
        return self


def run_job(req: ExportJob, settings: Settings, runner: Runner | None = None) -> dict[str, Any]:
    lake = Lake.from_settings(settings)
    if req.format == "lerobot":
        from mining.datasets.lerobot import export_lerobot

        return export_lerobot(lake, req.name, req.version, req.out)
    if req.out is not None:
        raise ConfigError("out: only --format lerobot writes elsewhere; shards live in the lake")
    return export_version(lake, req.name, req.version, int(req.shard_mb * 1024 * 1024), runner=runner)


def export_version(
    lake: Lake,
    name: str,
    version: int,
    shard_bytes: int = 512 * 1024 * 1024,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Write the version's shards and manifest; returns the manifest (shard paths relative)."""
    plan = plan_export(lake, name, version, shard_bytes)
    runner = SequentialRunner() if runner is None or len(plan.shards) < 2 else runner
    outcomes = runner.map(StageSpec(ShardStage, (lake, plan)), plan.shards)
    failed = [o for o in outcomes if not o.ok]
    if failed:  # a version's manifest lists every shard or none
        raise JobError(f"export {name}@{version}: {len(failed)} shards failed: {failed[0].error}")
    return finish_export(lake, plan, [dict(o.result or {}) for o in outcomes])
