"""``fleetmine shadow``: a policy version run beside the driver over every clip, in one commit.

Items are drives (a step's state history and horizon reach across its clip's edges into
the drive); a version visits only the clips it has no ``policy_errors`` row for, so a
re-run adds nothing and new clips are all it reads. The runner sends each batch of drives
to a :class:`ShadowStage` (sequential locally, Ray tasks on a cluster, one ONNX session per
worker), which writes its rows as data files and returns the add-actions; one commit
tagged ``Txn("shadow:<policy>@<v>", n)`` publishes them, checked for having landed before a
retry. A run killed before the commit left only unreferenced files (vacuumed later); one
killed after it finds those clips done.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from jobs.params import JobParams
from jobs.runner import Runner, StageSpec, default_runner
from jobs.runs import one_at_a_time, record_run
from mining.policies.contract import input_dtype, open_session
from mining.policies.registry import PolicySpec, load_model, resolve_policy
from mining.policies.shadow import PolicyError, drive_signals, keyframe_tensor, score_clip
from storage.bounds import Name
from storage.config import Settings
from storage.delta import Txn
from storage.errors import TableNotFoundError
from storage.faults import fault_point
from storage.lake import Lake
from storage.schema import us_since_epoch
from storage.sql import in_list, literal
from storage.tables import policy_errors

__all__ = ["ShadowJob", "ShadowReport", "ShadowStage", "run_shadow"]

log = logging.getLogger(__name__)


class ShadowJob(JobParams):
    kind: Literal["shadow"] = "shadow"
    policy: Name = Field(description="NAME@VERSION, or NAME for its latest version")


@dataclass
class ShadowReport:
    policy: str
    run_id: str
    scored: int = 0
    already: int = 0
    nothing_to_compare: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (drive_id, reason)


@dataclass
class ShadowBatch:
    actions: list[Any]
    scored: int
    empty: int
    error: str | None = None  # why the drive has no rows (the policy broke its contract)


class ShadowStage:
    """Scores the listed clips of a batch of drives; returns written ``policy_errors`` files."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake, spec: PolicySpec, run_id: str, rate_hz: float):
        self.lake, self.spec, self.run_id, self.rate = lake, spec, run_id, rate_hz

    def setup(self) -> None:
        self.session = open_session(load_model(self.lake, self.spec))
        st = self.spec.params.inputs.state
        self.dtype = input_dtype(self.session, st.name) if st is not None else np.float32
        self.output = self.spec.params.output

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run([self.output], feeds)[0])

    def process_batch(self, items: list[dict[str, Any]]) -> list[ShadowBatch]:
        out = []
        for d in items:  # one drive's failure is that drive's, not its batch's
            try:
                out.append(self._one(d))
            except PolicyError as exc:  # its message names shapes and counts only
                out.append(ShadowBatch([], 0, 0, str(exc)))
            except Exception as exc:  # an input nobody foresaw: the type only (a message may quote data)
                trace = "".join(traceback.format_exception(exc))
                log.warning("shadow of drive %s failed: %s", d["drive_id"], trace)
                out.append(ShadowBatch([], 0, 0, f"{type(exc).__name__} (traceback in the worker log)"))
        return out

    def _one(self, drive: dict[str, Any]) -> ShadowBatch:
        fault_point("shadow.drive")
        where = f"drive_id = {literal(drive['drive_id'])} AND date = {literal(drive['date'])}"
        signals = drive_signals(self.lake, drive["drive_id"], drive["date"], self.rate)
        wanted = set(drive["clip_ids"])
        clips = [
            c
            for c in self.lake.read(
                "clips", columns=["clip_id", "start_time", "end_time"], where=where
            ).to_pylist()
            if c["clip_id"] in wanted
        ]
        frames = self._frames(where, wanted) if self.spec.params.inputs.frames is not None else {}
        now = dt.datetime.now(dt.UTC)
        rows = []
        p = self.spec.params
        for c in sorted(clips, key=lambda c: c["clip_id"]):
            start, end = us_since_epoch(c["start_time"]), us_since_epoch(c["end_time"])
            own = frames.get(c["clip_id"], [])
            see = functools.partial(keyframe_tensor, own, p=p) if p.inputs.frames is not None else None
            first = own[0][0] if own else None
            row = score_clip(signals, start, end, p, self.predict, self.dtype, see, first)
            if p.inputs.frames is not None and not own and row["steps"]:
                row = {"steps": 0, "note": "no keyframes for a policy that reads frames"}
            row.update(
                policy=self.spec.name,
                policy_version=self.spec.version,
                clip_id=c["clip_id"],
                drive_id=drive["drive_id"],
                date=drive["date"],
                run_id=self.run_id,
                computed_at=now,
            )
            rows.append(row)
        if not rows:
            return ShadowBatch([], 0, 0)
        table = pa.Table.from_pylist(rows, schema=policy_errors.SPEC.schema)
        prefix = f"{self.run_id}-{drive['drive_id']}"
        actions = self.lake.writer("policy_errors").write(table, prefix=prefix)
        return ShadowBatch(actions, len(rows), sum(1 for r in rows if not r["steps"]))

    def _frames(self, where: str, wanted: set[str]) -> dict[str, list[tuple[int, bytes]]]:
        t = self.lake.read("clip_frames", columns=["clip_id", "t", "jpeg", "dense"], where=where)
        out: dict[str, list[tuple[int, bytes]]] = {}
        for r in t.to_pylist():
            if r["clip_id"] in wanted and not r["dense"] and r["jpeg"]:
                out.setdefault(r["clip_id"], []).append((us_since_epoch(r["t"]), r["jpeg"]))
        return {k: sorted(v, key=lambda x: x[0]) for k, v in out.items()}


@dataclass
class _Plan:
    items: list[dict[str, Any]]  # per drive: drive_id, date, clip_ids (those not scored yet)
    already: int
    ingested: dict[str, str | None]  # drive_id -> the ingest run whose rows were planned on


def _pending(lake: Lake, spec: PolicySpec) -> _Plan:
    """The clips of ingested drives that ``spec`` has not scored, by drive (columnar until
    the pending ones: a re-run over a large lake turns no row into Python)."""
    drives = lake.read("drives", columns=["drive_id", "status"])
    ok = drives.filter(pc.not_equal(drives.column("status"), "failed")).column("drive_id")
    clips = lake.read("clips", columns=["clip_id", "drive_id", "date"])
    clips = clips.filter(pc.is_in(clips.column("drive_id"), value_set=ok))
    try:
        done = lake.read(
            "policy_errors",
            columns=["clip_id"],
            where=spec.rows(),
        ).column("clip_id")
    except TableNotFoundError:
        done = pa.chunked_array([], pa.string())
    todo = clips.filter(pc.invert(pc.is_in(clips.column("clip_id"), value_set=done)))
    by_drive: dict[str, dict[str, Any]] = {}
    for r in todo.sort_by([("drive_id", "ascending"), ("clip_id", "ascending")]).to_pylist():
        d = by_drive.setdefault(r["drive_id"], {"drive_id": r["drive_id"], "date": r["date"], "clip_ids": []})
        d["clip_ids"].append(r["clip_id"])
    return _Plan(list(by_drive.values()), clips.num_rows - todo.num_rows, _ingested(lake, list(by_drive)))


def _ingested(lake: Lake, drive_ids: list[str]) -> dict[str, str | None]:
    """The ingest run that wrote each drive's current rows."""
    out: dict[str, str | None] = {}
    for at in range(0, len(drive_ids), 1000):
        rows = lake.read(
            "drives",
            columns=["drive_id", "ingest_run_id"],
            where=f"drive_id IN ({in_list(drive_ids[at : at + 1000])})",
        ).to_pylist()
        out.update({r["drive_id"]: r["ingest_run_id"] for r in rows})
    return out


def run_job(req: ShadowJob, settings: Settings, runner: Runner | None = None, **hooks: Any) -> ShadowReport:
    """The ``shadow`` kind: ``hooks`` are :func:`run_shadow`'s (``on_plan``, ``on_batch``)."""
    return run_shadow(settings, req.policy, runner=runner, **hooks)


def run_shadow(
    settings: Settings,
    policy: str,
    runner: Runner | None = None,
    drives_per_task: int = 4,
    on_plan: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> ShadowReport:
    """Score every clip ``policy`` (``NAME`` or ``NAME@V``) has not scored yet."""
    lake = Lake.from_settings(settings)
    lake.create_tables(["policies", "policy_errors"])
    spec = resolve_policy(lake, policy)
    app_id = f"shadow:{spec.ref}"
    with one_at_a_time(lake, app_id):  # from the plan to the commit: see jobs.runs.one_at_a_time
        number = lake.last_run_number(app_id, ["policy_errors"]) + 1
        report = ShadowReport(spec.ref, f"shadow-{spec.name}-{spec.version}-{number:06d}")
        todo = _pending(lake, spec)
        report.already = todo.already
        items = todo.items
        if on_plan is not None:
            on_plan(len(items))
        if not items:
            return report
        runner = runner or default_runner(settings.ray_address)
        with record_run(lake, report.run_id, "shadow", {"policy": spec.ref}) as run:
            stage = StageSpec(ShadowStage, (lake, spec, report.run_id, settings.signal_rate_hz))
            tick = (lambda o: on_batch(1)) if on_batch is not None else None
            scored: dict[str, ShadowBatch] = {}
            for o in runner.map(stage, items, batch_size=drives_per_task, on_outcome=tick):
                if isinstance(o.result, ShadowBatch) and o.result.error is not None:
                    report.failed.append((o.item["drive_id"], o.result.error))
                elif isinstance(o.result, ShadowBatch):
                    scored[o.item["drive_id"]] = o.result
                else:
                    report.failed.append((o.item["drive_id"], str(o.error)))
            _commit(lake, settings, report, scored, todo.ingested, Txn(app_id, number))
            run.counts.update(
                scored=report.scored,
                already=report.already,
                nothing_to_compare=report.nothing_to_compare,
                failed=len(report.failed),
            )
            run.errors += [{"drive_id": d, "reason": r} for d, r in report.failed]
    return report


def _commit(
    lake: Lake,
    settings: Settings,
    report: ShadowReport,
    scored: dict[str, ShadowBatch],
    planned: dict[str, str | None],
    txn: Txn,
) -> None:
    """One commit of every drive's rows, under ingest's commit lease: an ingest that replaced
    a drive while it was scored either committed before (the drive's ``ingest_run_id``
    changed: its rows, computed from the replaced signals, are dropped and the drive is
    scored next run) or commits after (and deletes the rows, :func:`delete_for_drives`)."""
    from jobs.ingest_job import COMMIT_LEASE  # here: ingest_job imports this module

    ttl = settings.lease_ttl_s
    with lake.lease(COMMIT_LEASE, report.run_id, ttl_s=ttl, wait_s=ttl):
        now = _ingested(lake, sorted(scored))
        actions = []
        for drive, batch in sorted(scored.items()):
            if now.get(drive) != planned.get(drive):
                report.failed.append((drive, "re-ingested while it was scored: scored anew next run"))
                continue
            actions += batch.actions
            report.scored += batch.scored
            report.nothing_to_compare += batch.empty
        if actions and not lake.committed("policy_errors", txn):
            lake.commit("policy_errors", actions, txn)


def delete_for_drives(lake: Lake, drive_ids: list[str]) -> None:
    """Forget the scores of re-ingested drives: their signals changed, so the next shadow
    run scores their clips anew."""
    if not drive_ids or not lake.exists("policy_errors"):
        return
    for at in range(0, len(drive_ids), 1000):
        lake.delete("policy_errors", f"drive_id IN ({in_list(drive_ids[at : at + 1000])})")
