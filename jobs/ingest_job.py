"""``fleetmine ingest``: new drives under RAW into the lake, one Ray task per drive.

A run has a number, claimed with a txn on ``runs`` (``Txn("ingest-run", n)``), and
its run id (``ingest-<n>``) is the app id of its txn on the tables (``Txn(run_id, 1)``):
one txn stream per run, since concurrent runs may commit out of number order. Its
drive list is recorded in ``runs`` before any work, every table gets one commit
tagged with the run's txn, and the
``drives`` rows are committed last. A run that dies part-way is resumed by the
next ``fleetmine ingest``: same number, same drives, tables already committed
are skipped, so nothing is duplicated or dropped. Ingests may run at once: each
claims its number with a txn on ``runs``, and their commit phases take turns under
the ``ingest-commit`` lease, so a drive two of them saw lands once.

Once its drives have landed, a run runs the latest version of every scenario in the
lake's ``scenarios`` table over them (:func:`jobs.scenario_job.run_scenarios`,
incremental: only the new drives are read), under the same runner; the run's
``counts`` say ``scenario_hits``. A failure there is a warning, not the ingest's: the
drives are in, and the next ``fleetmine scenario run`` (or ingest) finds the drives no
version has seen.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pydantic import Field

from jobs.params import JobParams, LocationStr
from jobs.runner import Outcome, Runner, StageSpec, default_runner
from jobs.shadow_job import delete_for_drives
from storage.config import Settings, aws_storage_options, normalize_uri
from storage.delta import Txn
from storage.faults import fault_point
from storage.lake import Lake
from storage.objectstore import Location
from storage.sql import in_list, literal
from storage.tables import runs

if TYPE_CHECKING:  # the drive stage and its decoders load when a run starts, not with the registry
    from ingest.discover import DriveSource
    from ingest.drive import DriveIngest, DriveResult

__all__ = ["IngestJob", "IngestReport", "run_ingest", "run_job"]

log = logging.getLogger(__name__)
APP_ID = "ingest"
CLAIM_APP_ID = "ingest-run"  # the txn app id on `runs` that claims a run number
COMMIT_LEASE = "ingest-commit"


def _commit_lease(lake: Lake, settings: Settings, run_id: str) -> AbstractContextManager[str]:
    """The commits of one run at a time: a drive in two runs (an upload seen by two
    overlapping ingests) has its old rows deleted and its new ones added by one run,
    never interleaved with the other's. Held by the run id, so a resumed attempt takes
    over the grant its dead predecessor left (see :func:`storage.lease.acquire`)."""
    ttl = settings.lease_ttl_s
    return lake.lease(COMMIT_LEASE, run_id, ttl_s=ttl, wait_s=ttl, reclaim=True)


class IngestJob(JobParams):
    kind: Literal["ingest"] = "ingest"
    raw: LocationStr = Field(description="raw fleet upload tree: <vehicle>/<drive>/{cameras,can}/")
    force: bool = False


@dataclass
class IngestReport:
    run_id: str
    run_number: int
    resumed: bool
    discovered: int
    unchanged: int
    ok: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    warned: list[tuple[str, list[str]]] = field(default_factory=list)
    still_failing: list[tuple[str, str]] = field(default_factory=list)
    """Drives of earlier runs that failed for their content and are unchanged: not retried."""
    counts: dict[str, int] = field(default_factory=dict)
    attempt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    """This attempt at the run: names its data files, tells its claim of the number from another's."""
    scenarios_run_id: str | None = None
    """The scenario run over this run's drives (``counts["scenario_hits"]``: the spans it found)."""
    scenario_warning: str | None = None
    """Why the scenario pass over this run's drives did not (wholly) run; left for ``scenario run``."""

    @property
    def exit_code(self) -> int:
        return 3 if self.failed else 0


def _raw_location(raw: str, settings: Settings) -> Location:
    uri = normalize_uri(raw)
    opts = settings.storage_options if uri.startswith("s3://") else {}
    if uri.startswith("s3://") and not opts:
        opts = aws_storage_options()
    return Location(uri, opts)


def _open_run(
    lake: Lake, raw: Location, sources: list[DriveSource], todo: list[DriveSource]
) -> tuple[int, list[DriveSource], bool]:
    """Resume the last unfinished run on this RAW, or start the next number."""
    from ingest.drive import DATA_TABLES

    prior = lake.read("runs", where=f"app_id = {literal(APP_ID)}").to_pylist()
    for r in sorted(prior, key=lambda r: r["run_number"] or 0, reverse=True):
        params = json.loads(r["params"] or "{}")
        if r["status"] == "running" and params.get("raw") == raw.uri:
            keys = set(params.get("drives", []))
            by_key = {s.key: s for s in sources}
            return int(r["run_number"]), [by_key[k] for k in sorted(keys) if k in by_key], True
        break
    last = max([int(r["run_number"] or 0) for r in prior], default=0)
    return max(last, lake.last_run_number(APP_ID, [*DATA_TABLES, "drives"])) + 1, todo, False


def _run_row(
    report: IngestReport, raw: Location, status: str, started: dt.datetime, drives: list[str]
) -> pa.Table:
    return runs.SPEC.conform(
        pa.Table.from_pylist(
            [
                {
                    "run_id": report.run_id,
                    "kind": APP_ID,
                    "app_id": APP_ID,
                    "run_number": report.run_number,
                    "params": json.dumps({"raw": raw.uri, "drives": drives, "attempt": report.attempt}),
                    "status": status,
                    "started_at": started,
                    "finished_at": None if status == "running" else dt.datetime.now(dt.UTC),
                    "counts": json.dumps(report.counts),
                    "errors": json.dumps(
                        [{"drive": k, "reason": r} for k, r in report.failed]
                        + ([{"scenarios": report.scenario_warning}] if report.scenario_warning else [])
                    ),
                }
            ],
            schema=runs.SPEC.schema,
        )
    )


def _run_scenarios(lake: Lake, settings: Settings, runner: Runner | None, report: IngestReport) -> None:
    """The latest version of every scenario over the drives this run landed (none
    defined: nothing). Never raises: a failure is ``report.scenario_warning``."""
    from jobs.scenario_job import run_scenarios
    from mining.scenarios import list_scenarios

    try:
        if not list_scenarios(lake):
            return
        landed = lake.read("drives", columns=["drive_id"], where=f"ingest_run_id = {literal(report.run_id)}")
        ids = sorted(set(landed.column("drive_id").to_pylist()))
        if not ids:
            return
        got = run_scenarios(settings, runner=runner, drive_ids=ids)
    except Exception as exc:  # the drives are in; their scenarios can wait for the next run
        log.warning("ingest %s: scenarios not run over its drives: %s", report.run_id, exc, exc_info=True)
        report.scenario_warning = (
            f"scenarios not run: {type(exc).__name__}: {exc}; the next `fleetmine scenario run` runs them"
        )
        return
    report.scenarios_run_id = got.run_id
    report.counts["scenario_hits"] = got.hits
    if got.failed:
        report.scenario_warning = (
            f"scenarios failed on {len(got.failed)} drives ({got.failed[0][0]}: {got.failed[0][1]}); "
            "the next `fleetmine scenario run` tries them again"
        )


def _settle_from_lake(lake: Lake, report: IngestReport) -> None:
    """The report of a run whose commits all landed, read back from what it committed."""
    rows = lake.read(
        "drives",
        columns=["vehicle_id", "source_uri", "status", "error", "warnings"],
        where=f"ingest_run_id = {literal(report.run_id)}",
    ).to_pylist()
    for r in rows:
        key = "/".join(str(r["source_uri"]).rstrip("/").split("/")[-2:])
        if r["status"] == "ok":
            report.ok.append(key)
            if r["warnings"]:
                report.warned.append((key, list(r["warnings"])))
        else:
            report.failed.append((key, str(r["error"])))
    clips = lake.read("clips", columns=["clip_id"], where=f"ingest_run_id = {literal(report.run_id)}")
    report.counts = {"ok": len(report.ok), "failed": len(report.failed), "clips": clips.num_rows}


ProgressFn = Callable[[str, "DriveResult | None", dict[str, int]], None]


def run_job(req: IngestJob, settings: Settings, runner: Runner | None = None, **hooks: Any) -> IngestReport:
    """The ``ingest`` kind: ``hooks`` are :func:`run_ingest`'s (``on_progress``)."""
    return run_ingest(req.raw, settings, force=req.force, runner=runner, **hooks)


def run_ingest(
    raw: str,
    settings: Settings,
    *,
    force: bool = False,
    runner: Runner | None = None,
    stage: type[DriveIngest] | None = None,
    on_progress: ProgressFn | None = None,
) -> IngestReport:
    """Ingest the new (or changed, or transiently failed) drives under ``raw``.

    ``runner`` defaults to Ray (local, or ``settings.ray_address``); ``stage`` is
    the drive stage class (default :class:`~ingest.drive.DriveIngest`; tests pass one
    that crashes its worker).
    """
    from ingest.discover import discover
    from ingest.drive import DATA_TABLES, DriveIngest, drive_rows

    raw_loc = _raw_location(raw, settings)
    sources = discover(raw_loc)  # a missing or misplaced raw root is refused before the lake is touched
    lake = Lake.from_settings(settings)
    lake.create_tables()
    known = {
        r["source_uri"]: r
        for r in lake.read(
            "drives", columns=["drive_id", "source_uri", "fingerprint", "status", "error", "retryable"]
        ).to_pylist()
    }

    def due(s: DriveSource) -> bool:
        k = known.get(s.uri)
        return force or k is None or k["fingerprint"] != s.fingerprint or bool(k["retryable"])

    todo = [s for s in sources if due(s)]
    number, todo, resumed = _open_run(lake, raw_loc, sources, todo)
    report = IngestReport(
        run_id=f"{APP_ID}-{number:06d}",
        run_number=number,
        resumed=resumed,
        discovered=len(sources),
        unchanged=len(sources) - len(todo),
    )
    report.still_failing = [
        (s.key, str(known[s.uri]["error"]))
        for s in sources
        if not due(s) and known[s.uri]["status"] == "failed"
    ]
    started = dt.datetime.now(dt.UTC)
    keys = [s.key for s in todo]
    if not todo:
        return report
    fault_point("ingest.planned")
    if resumed:
        lake.upsert("runs", _run_row(report, raw_loc, "running", started, keys))
    else:
        # Two ingests started together both see the same last run: the number is claimed
        # with a txn on `runs` (see Lake.claim), so exactly one gets it and the other
        # takes the next.
        row = _run_row(report, raw_loc, "running", started, keys)
        while not lake.claim("runs", row, Txn(CLAIM_APP_ID, number), report.attempt):
            number += 1
            report.run_id, report.run_number = f"{APP_ID}-{number:06d}", number
            row = _run_row(report, raw_loc, "running", started, keys)
    txn = Txn(report.run_id, 1)
    if resumed and lake.committed("drives", txn):
        # The run committed everything and died before recording itself: nothing to redo.
        with _commit_lease(lake, settings, report.run_id):  # frees the grant it died holding
            _settle_from_lake(lake, report)
        _run_scenarios(lake, settings, runner, report)
        status = "partial" if report.failed else "succeeded"
        lake.upsert("runs", _run_row(report, raw_loc, status, started, keys))
        return report
    if on_progress:
        on_progress("start", None, {"drives": len(todo)})

    runner = runner or default_runner(settings.ray_address, settings.ingest_max_retries)

    def progressed(o: Outcome[DriveSource, DriveResult]) -> None:
        if on_progress and o.result is not None:
            on_progress("drive", o.result, o.result.counts)

    spec = StageSpec(stage or DriveIngest, (lake, settings, report.run_id, report.attempt))
    outcomes = runner.map(spec, todo, on_outcome=progressed)
    results = [o.result for o in outcomes if o.result is not None]
    replaced = [known[s.uri]["drive_id"] for s in todo if s.uri in known]
    replaced += [r.drive_id for r in results]
    with _commit_lease(lake, settings, report.run_id):
        if replaced:  # the zero-shot tag scores of their clips, read before the clips go
            from mining.tags.scores import forget_drives

            forget_drives(lake, sorted(set(replaced)))
        for table in DATA_TABLES:
            if lake.committed(table, txn):
                continue
            if replaced:  # drives re-ingested (--force, changed content, another upload) replace their rows
                lake.delete(table, f"drive_id IN ({in_list(sorted(set(replaced)))})")
            actions = [a for r in results for a in r.actions.get(table, [])]
            lake.commit(table, actions, txn)
        if replaced and lake.exists("scenario_scans"):
            # their spans describe the signals just replaced: unseen again, so the scenario
            # pass below (or the next `scenario run`) evaluates them anew and drops the old
            # spans (jobs.scenario_job); idempotent, so a resumed run does it again
            gone = sorted(set(replaced))
            for at in range(0, len(gone), 1000):
                lake.delete("scenario_scans", f"drive_id IN ({in_list(gone[at : at + 1000])})")
        if replaced:  # their policy errors too: the next shadow run scores their clips anew
            delete_for_drives(lake, sorted(set(replaced)))
        lake.upsert("drives", drive_rows(results), txn)
        fault_point("ingest.before_record")
    for r in results:
        if r.ok:
            report.ok.append(r.key)
            if r.row.get("warnings"):
                report.warned.append((r.key, list(r.row["warnings"])))
        else:
            report.failed.append((r.key, str(r.row.get("error"))))
        for k, v in r.counts.items():
            report.counts[k] = report.counts.get(k, 0) + v
    # A drive whose failure could not even be recorded (its stage's record raised): no row, so
    # the next ingest tries it again; the run says so rather than reading as a success.
    report.failed += [(o.item.key, str(o.error)) for o in outcomes if o.result is None]
    _run_scenarios(lake, settings, runner, report)
    status = "partial" if report.failed else "succeeded"
    lake.upsert("runs", _run_row(report, raw_loc, status, started, keys))
    return report
