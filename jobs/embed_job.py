"""``fleetmine embed``: every clip lacking a vector for the model gets one, in one commit.

The pending clips are planned into :class:`~mining.encoders.embed.InputWork` items (a date,
a few whole drives); the runner sends each to an :class:`~mining.encoders.embed.EmbedStage`
(set up once per worker, with the resources the encoder declares), which writes
the vectors as data files; one commit tagged ``Txn("embed:<model>", n)`` publishes
them. Clips the encoder could not embed are reported (and recorded in ``runs``)
and stay pending, so the next run tries them again.
"""

from __future__ import annotations

from typing import Literal

from jobs.params import JobParams, ModelRef
from jobs.runner import Runner, StageSpec, default_runner
from jobs.runs import one_at_a_time, record_run
from mining.encoders import encoder_resources
from mining.encoders.embed import EmbedBatch, EmbedReport, EmbedStage, pending, plan_inputs
from mining.encoders.registry import resolve
from mining.interfaces import ModelSpec
from storage.config import Settings
from storage.delta import Txn
from storage.lake import Lake

__all__ = ["EmbedJob", "run_embed", "run_job"]


class EmbedJob(JobParams):
    kind: Literal["embed"] = "embed"
    model: ModelRef | None = None


def run_job(req: EmbedJob, settings: Settings, runner: Runner | None = None) -> EmbedReport:
    return run_embed(settings, req.model, runner=runner)


def run_embed(
    settings: Settings, model: str | None = None, runner: Runner | None = None, batch_size: int = 64
) -> EmbedReport:
    lake = Lake.from_settings(settings)
    spec = resolve(lake, model)
    app_id = f"embed:{spec.ref}"
    with one_at_a_time(lake, app_id):  # from the plan to the commit: see jobs.runs.one_at_a_time
        return _embed(lake, settings, spec, app_id, runner, batch_size)


def _embed(
    lake: Lake, settings: Settings, spec: ModelSpec, app_id: str, runner: Runner | None, batch_size: int
) -> EmbedReport:
    todo_rows, already = pending(lake, spec)
    number = lake.last_run_number(app_id, ["embeddings"]) + 1
    run_id = f"embed-{spec.name}-{spec.version}-{number:06d}"
    report = EmbedReport(spec.ref, 0, already, run_id)
    if not todo_rows.num_rows:
        return report
    runner = runner or default_runner(settings.ray_address)
    with record_run(lake, run_id, "embed", {"model": spec.ref}) as run:
        work = plan_inputs(todo_rows, clips_per_task=max(batch_size, 256))
        stage = StageSpec(EmbedStage, (lake, spec, run_id, batch_size), needs=encoder_resources(spec))
        outcomes = runner.map(stage, work)
        actions = []
        for o in outcomes:
            if isinstance(o.result, EmbedBatch):
                actions += o.result.actions
                report.embedded += o.result.embedded
                report.failed += o.result.errors
            else:
                report.failed += [(cid, str(o.error)) for cid in o.item.clip_ids]
        txn = Txn(app_id, number)
        if actions and not lake.committed("embeddings", txn):
            lake.commit("embeddings", actions, txn)
        run.counts.update(embedded=report.embedded, already=already, failed=len(report.failed))
        run.errors += [{"clip_id": c, "reason": r} for c, r in report.failed]
    return report
