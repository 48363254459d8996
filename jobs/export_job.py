"""``fleetmine dataset export``: a version's shards written by shard stages, then its manifest.

The plan is deterministic (:func:`~mining.curation.plan_export`), so writing the
shards in parallel Ray tasks gives the same bytes as writing them here.
"""

from __future__ import annotations

from typing import Any

from jobs.runner import Runner, SequentialRunner, StageSpec
from mining.curation import ShardStage, finish_export, plan_export
from storage.errors import JobError
from storage.lake import Lake

__all__ = ["export_version"]


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
