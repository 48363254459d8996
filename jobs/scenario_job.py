"""``fleetmine scenario run``: scenario versions evaluated over every drive's signals.

Items are drives; a version visits only the drives it has no ``scenario_scans`` row for
(incremental: a re-run adds nothing, new drives are all it reads). The runner sends each
batch of drives to a :class:`ScenarioStage` (sequential locally, Ray tasks on a cluster:
spans may cross clip boundaries, so the unit is the drive), which reads the drive's
signals once, evaluates every version (:func:`fleetmine_scenarios.evaluate`) and returns
the spans with the clips each overlaps. One commit per table, tagged
``Txn("scenarios", n)``: a retry after a lost acknowledgement does not write twice, and
a drive that failed has no scan row, so the next run tries it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from fleetmine_scenarios import COLUMNS, evaluate, parse
from jobs.runner import Runner, StageSpec, default_runner
from jobs.runs import one_at_a_time, record_run
from mining.scenarios import list_scenarios, resolve_scenarios
from storage.config import Settings
from storage.delta import Txn
from storage.lake import Lake
from storage.sql import in_list, literal
from storage.tables import scenario_hits, scenario_scans

__all__ = ["ScenarioReport", "ScenarioStage", "run_scenarios"]

APP_ID = "scenarios"
RATE_HZ = 20.0  # the signals grid's default (Settings.signal_rate_hz says the lake's)


@dataclass
class ScenarioReport:
    run_id: str
    drives: int = 0
    hits: int = 0
    already: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


class ScenarioStage:
    """Evaluates ``versions`` (``(name, version, text)``) over a batch of drives; per
    drive ``(drive_id, samples, [(name, version, start, end, clip_ids), ...])``."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake, versions: list[tuple[str, int, str]], rate_hz: float = RATE_HZ):
        self.lake, self.versions, self.rate = lake, versions, rate_hz

    def setup(self) -> None:
        self.parsed = [(n, v, parse(t)) for n, v, t in self.versions]

    def process_batch(self, items: list[dict[str, Any]]) -> list[tuple[str, int, list[tuple[Any, ...]]]]:
        return [self._one(d) for d in items]

    def _one(self, drive: dict[str, Any]) -> tuple[str, int, list[tuple[Any, ...]]]:
        # the drive's day is its partition in signals and clips: one partition read, not every
        # day's file statistics per drive
        where = f"drive_id = {literal(drive['drive_id'])}"
        if drive.get("date") is not None:
            where += f" AND date = {literal(drive['date'])}"
        sig = self.lake.read("signals", columns=["t", *COLUMNS], where=where).sort_by("t")
        t = sig.column("t").cast(pa.int64()).to_numpy()  # us since the epoch
        cols = {c: _floats(sig.column(c)) for c in COLUMNS}
        clips = self.lake.read(
            "clips", columns=["clip_id", "start_time", "end_time"], where=where
        ).to_pylist()
        out: list[tuple[Any, ...]] = []
        step = round(1e6 / self.rate)
        for name, version, scenario in self.parsed:
            for a, b in evaluate(scenario, cols, self.rate):
                start = dt.datetime.fromtimestamp(t[a] / 1e6, dt.UTC)
                end = dt.datetime.fromtimestamp((t[b - 1] + step) / 1e6, dt.UTC)
                over = sorted(c["clip_id"] for c in clips if c["start_time"] < end and c["end_time"] > start)
                out.append((name, version, start, end, over))
        return drive["drive_id"], len(t), out


def _drop_unscanned(lake: Lake, scans: list[dict[str, Any]]) -> None:
    """Delete the spans of each (version, drive) about to be scanned: with no scan row they
    are left from signals a re-ingest replaced (it deletes the scans) or from a run that
    died between its two commits, and spans are keyed by their start, so new spans would
    not replace them. Before the new spans: a run that dies here has written no scan, so
    the next run evaluates those drives again."""
    drives: dict[tuple[str, int], list[str]] = {}
    for r in scans:
        drives.setdefault((r["name"], r["version"]), []).append(r["drive_id"])
    for (name, version), ids in sorted(drives.items()):
        for at in range(0, len(ids), 1000):
            chunk = in_list(sorted(ids)[at : at + 1000])
            lake.delete(
                "scenario_hits",
                f"name = {literal(name)} AND version = {int(version)} AND drive_id IN ({chunk})",
            )


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    """A signal column as float64, NaN where null (0/1 columns as 0.0/1.0)."""
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type):
        col = col.cast(pa.float64())
    return col.to_numpy(zero_copy_only=False).astype(np.float64)


def run_scenarios(
    settings: Settings,
    refs: list[str] | None = None,
    runner: Runner | None = None,
    batch_size: int = 4,
    on_plan: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    drive_ids: list[str] | None = None,
) -> ScenarioReport:
    """Run ``refs`` (``NAME`` or ``NAME@V``; default: every name's latest version) over
    the drives each has not seen; with ``drive_ids``, only over those of them (what an
    ingest just landed: :func:`jobs.ingest_job.run_ingest` runs the current definitions so)."""
    lake = Lake.from_settings(settings)
    lake.create_tables(["scenarios", "scenario_hits", "scenario_scans"])
    with one_at_a_time(lake, APP_ID):
        # both tables: a run that died between its two commits must not lend its number
        number = lake.last_run_number(APP_ID, ["scenario_hits", "scenario_scans"]) + 1
        report = ScenarioReport(f"scenarios-{number:06d}")
        if refs:
            rows = resolve_scenarios(lake, refs)
        else:
            latest: dict[str, dict[str, Any]] = {}
            for r in list_scenarios(lake):
                latest[r["name"]] = r
            rows = list(latest.values())
        versions = sorted({(r["name"], int(r["version"]), r["text"]) for r in rows})  # "x" and "x@1": once
        drives = lake.read("drives", columns=["drive_id", "date", "status"]).to_pylist()
        day = {d["drive_id"]: d["date"] for d in drives}
        ok = sorted(d["drive_id"] for d in drives if d["status"] != "failed")
        if drive_ids is not None:
            wanted = set(drive_ids)
            ok = [d for d in ok if d in wanted]
        seen = {
            (r["name"], r["version"], r["drive_id"])
            for r in lake.read("scenario_scans", columns=["name", "version", "drive_id"]).to_pylist()
        }
        todo = [
            {"drive_id": d, "date": day[d]} for d in ok if any((n, v, d) not in seen for n, v, _ in versions)
        ]
        report.already = len(ok) - len(todo)
        if on_plan is not None:
            on_plan(len(todo))
        if not todo or not versions:
            return report
        runner = runner or default_runner(settings.ray_address)
        params = {"scenarios": [f"{n}@{v}" for n, v, _ in versions]}
        with record_run(lake, report.run_id, "scenarios", params) as run:
            stage = StageSpec(ScenarioStage, (lake, versions, settings.signal_rate_hz))
            hits: list[dict[str, Any]] = []
            scans: list[dict[str, Any]] = []
            now = dt.datetime.now(dt.UTC)
            done = (lambda o: on_batch(1)) if on_batch is not None else None
            for o in runner.map(stage, todo, batch_size=batch_size, on_outcome=done):
                if o.result is None:
                    report.failed.append((o.item["drive_id"], str(o.error)))
                    continue
                drive_id, samples, spans = o.result
                for n, v, _ in versions:
                    if (n, v, drive_id) in seen:
                        continue  # this version saw it in an earlier run
                    mine = [s for s in spans if (s[0], s[1]) == (n, v)]
                    scans.append(
                        {
                            "name": n,
                            "version": v,
                            "drive_id": drive_id,
                            "hits": len(mine),
                            "samples": samples,
                            "run_id": report.run_id,
                            "scanned_at": now,
                        }
                    )
                    hits += [
                        {
                            "name": n,
                            "version": v,
                            "drive_id": drive_id,
                            "start": s[2],
                            "end": s[3],
                            "clip_ids": s[4],
                            "run_id": report.run_id,
                        }
                        for s in mine
                    ]
                report.drives += 1
            txn = Txn(APP_ID, number)
            _drop_unscanned(lake, scans)
            if hits:  # the spans first: a scan row says its drive's spans are in
                lake.upsert(
                    "scenario_hits", pa.Table.from_pylist(hits, schema=scenario_hits.SPEC.schema), txn
                )
            if scans:
                lake.upsert(
                    "scenario_scans", pa.Table.from_pylist(scans, schema=scenario_scans.SPEC.schema), txn
                )
            report.hits = len(hits)
            run.counts.update(
                drives=report.drives, hits=report.hits, already=report.already, failed=len(report.failed)
            )
            run.errors += [{"drive_id": d, "reason": r} for d, r in report.failed]
    return report
