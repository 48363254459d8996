"""``fleetmine mine``: novelty, rarity and duplicates of the embedded clips, one commit.

The corpus of one model version is one item for :class:`~mining.scores.mine.MineStage`
(it works through the corpus in batches against the index; by default only the
clips added since the last run); the stage writes ``mining_scores`` and
``corner_cases`` files and this job commits them under ``Txn("mine:<model>", n)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from jobs.params import JobParams, ModelRef
from jobs.runner import RayRunner, Runner, SequentialRunner, StageSpec, single_item_runner
from jobs.runs import one_at_a_time, record_run
from mining.encoders.registry import resolve
from mining.interfaces import ModelSpec
from storage.config import Settings
from storage.delta import Txn
from storage.errors import JobError
from storage.lake import Lake

if TYPE_CHECKING:  # FAISS loads when a run starts, not with the registry
    import numpy as np

    from mining.encoders.vectors import VectorSource
    from mining.scores.clusters import SubFitWork
    from mining.scores.mine import MineConfig, MineReport

__all__ = ["MineJob", "run_job", "run_mine"]


class MineJob(JobParams):
    kind: Literal["mine"] = "mine"
    model: ModelRef | None = None
    full: bool = Field(
        default=False,
        description="re-score and re-rank every clip (default: new clips only) against the cluster "
        "model, which is fitted again only with refit or once the corpus outgrows it",
    )
    refit: bool = Field(default=False, description="fit the cluster model again (a full run)")


def run_job(req: MineJob, settings: Settings, runner: Runner | None = None) -> MineReport:
    from mining.scores.mine import MineConfig

    return run_mine(settings, req.model, MineConfig(full=req.full, refit=req.refit), runner=runner)


def run_mine(
    settings: Settings, model: str | None = None, cfg: MineConfig | None = None, runner: Runner | None = None
) -> MineReport:
    lake = Lake.from_settings(settings)
    lake.create_tables(["mining_scores", "corner_cases"])
    spec = resolve(lake, model)
    app_id = f"mine:{spec.ref}"
    with one_at_a_time(lake, app_id):  # from the plan to the commit: see jobs.runs.one_at_a_time
        return _mine(lake, settings, spec, app_id, cfg, runner)


def _mine(
    lake: Lake,
    settings: Settings,
    spec: ModelSpec,
    app_id: str,
    cfg: MineConfig | None,
    runner: Runner | None,
) -> MineReport:
    from mining.scores.mine import MineConfig, MineReport, MineResult, MineStage, MineWork

    number = lake.last_run_number(app_id, ["mining_scores"]) + 1
    run_id = f"mine-{spec.name}-{spec.version}-{number:06d}"
    # On a cluster the fine level of the cluster model is fitted as tasks over its nodes.
    fan_out = SubFitTasks(settings.ray_address) if settings.ray_address else None
    stage = StageSpec(MineStage, (lake, False, fan_out))
    if runner is None and settings.ray_address and _held_on_cluster(settings, lake, spec):
        # The run is driven from here; its k-NN fans out over the actors holding the shards.
        from jobs.runtime import init_ray

        init_ray(settings.ray_address)
        # The holders ask a CPU each, as many as the cluster has: the fine level's fits ask
        # none (the holders sit idle while they run, the k-NN pass done), or they would
        # wait for a CPU forever.
        fan_out = SubFitTasks(settings.ray_address, cpus=0.0)
        runner, stage = SequentialRunner(), StageSpec(MineStage, (lake, True, fan_out))
    runner = runner or single_item_runner(settings.ray_address)
    with record_run(lake, run_id, "mine", {"model": spec.ref}) as run:
        (outcome,) = runner.map(stage, [MineWork(spec, run_id, cfg or MineConfig())])
        if not isinstance(outcome.result, MineResult):
            raise JobError(f"mining {spec.ref} failed: {outcome.error}")
        r = outcome.result
        txn = Txn(app_id, number)
        if r.actions and not lake.committed("mining_scores", txn):
            lake.commit("mining_scores", r.actions, txn)
        # The ready lists land after the scores they rank: a reader never sees lists
        # of a run whose scores are not there (a retried job completes the pair).
        if r.ready_actions and not lake.committed("corner_cases", txn):
            lake.commit("corner_cases", r.ready_actions, txn)
        run.counts.update(scored=r.scored, duplicates=r.duplicates, rescored=r.rescored)
        if r.holders:
            run.counts["holders"] = r.holders
        if r.spilled:
            run.counts["spill_bytes"] = r.spilled
    return MineReport(spec.ref, run_id, r.scored, r.duplicates, r.reference, r.mode, r.base_run, r.rescored)


@dataclass(frozen=True)
class SubFitTasks:
    """The fine level's fits (:class:`~mining.scores.clusters.SubFitStage`) as Ray tasks on
    the cluster at ``address`` (none: a local Ray), each reading its members' vectors itself; a task that
    fails fails the run (a cluster model with a top cluster left unsplit would rank that
    cluster's clips on a coarser scale than the rest)."""

    address: str | None
    cpus: float = 1.0  # per task

    def __call__(self, source: VectorSource, work: list[SubFitWork]) -> list[list[np.ndarray]]:
        from mining.scores.clusters import SubFitStage

        out = []
        spec = StageSpec(SubFitStage, (source,), needs={"num_cpus": self.cpus})
        for o in RayRunner(self.address).map(spec, work):
            if o.error is not None or o.result is None:
                tops = list(o.item.tops)
                raise JobError(f"fitting the sub-clusters of top clusters {tops} failed: {o.error}")
            out.append(o.result)
        return out


def _held_on_cluster(settings: Settings, lake: Lake, spec: ModelSpec) -> bool:
    """Whether the version's saved index is a set of shards (``fleetmine index --shard-size``),
    which a cluster's actors hold for the run; topped up first, so it covers every embedded
    clip (the new days grow the newest shard)."""
    from jobs.index_job import run_index
    from mining.search.holders import sharded_meta
    from mining.search.index import IndexConfig

    meta = sharded_meta(lake, spec)
    if meta is None:
        return False
    if int(meta["embeddings_version"]) < lake.version("embeddings"):
        run_index(settings, spec.ref, IndexConfig.from_dict(meta.get("config", {})))
    return True
