"""Recurring jobs: schedules in the lake, run by ``fleetmine scheduler``.

A schedule is a chain of job requests (``jobs.requests``: "ingest then embed then
mine") with an interval (``every``) or a cron expression. One scheduler is active
per lake: it holds the lake's ``scheduler`` lease (renewed while it runs); a second
one stays passive, retrying the lease, until the first stops. The active one runs
a due schedule's chain in order and records the tick it ran for, so

- a schedule never overlaps its previous run (its chain runs to its end first);
- ticks missed while no scheduler ran are run once on start, not once per tick;
- every job of a run is a ``runs`` row, as when run by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from jobs.requests import JobRequest, execute, summary
from jobs.runner import Runner
from storage.config import Settings
from storage.errors import ConfigError, LeaseHeldError, NotFoundError
from storage.lake import Lake
from storage.lease import acquire, release, renew, this_process
from storage.sql import literal
from storage.tables import schedules

__all__ = [
    "Schedule",
    "add_schedule",
    "due",
    "list_schedules",
    "parse_every",
    "remove_schedule",
    "run_scheduler",
    "set_paused",
]

log = logging.getLogger(__name__)
LEASE = "scheduler"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m:
        raise ConfigError(f"interval {text!r}: a number and a unit (s, m, h, d), e.g. 15m")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class Schedule:
    name: str
    jobs: tuple[Any, ...]  # job requests
    every_s: float | None
    cron: str | None
    paused: bool
    last_tick: dt.datetime | None

    def next_tick(self, after: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``after``."""
        if self.cron:
            from croniter import croniter

            nxt: dt.datetime = croniter(self.cron, after).get_next(dt.datetime)
            return nxt if nxt.tzinfo else nxt.replace(tzinfo=dt.UTC)
        assert self.every_s
        return after + dt.timedelta(seconds=self.every_s)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Schedule:
        from pydantic import TypeAdapter

        adapter: TypeAdapter[Any] = TypeAdapter(JobRequest)
        jobs = tuple(adapter.validate_python(j) for j in json.loads(row["jobs"]))
        return cls(row["name"], jobs, row["every_s"], row["cron"], bool(row["paused"]), row["last_tick"])


def due(s: Schedule, now: dt.datetime) -> dt.datetime | None:
    """The tick a run of ``s`` is due for at ``now`` (the latest one passed), or None."""
    if s.paused:
        return None
    if s.last_tick is None:
        return now  # never ran: run now, then keep the rhythm from here
    tick = s.next_tick(s.last_tick)
    if tick > now:
        return None
    while (nxt := s.next_tick(tick)) <= now:  # missed ticks while down: one run, for the latest
        tick = nxt
    return tick


def _row(s: Schedule, **extra: Any) -> pa.Table:
    row = {
        "name": s.name,
        "jobs": json.dumps([j.model_dump() for j in s.jobs]),
        "every_s": s.every_s,
        "cron": s.cron,
        "paused": s.paused,
        "last_tick": s.last_tick,
        **extra,
    }
    return schedules.SPEC.conform(pa.Table.from_pylist([row], schema=schedules.SPEC.schema))


def add_schedule(
    lake: Lake, name: str, jobs: list[Any], every: str | None = None, cron: str | None = None
) -> Schedule:
    if (every is None) == (cron is None):
        raise ConfigError("a schedule needs exactly one of --every or --cron")
    if cron is not None:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ConfigError(f"cron expression {cron!r} is not valid (five fields: m h dom mon dow)")
    if not jobs:
        raise ConfigError("a schedule needs at least one job")
    lake.create_tables(["schedules"])
    s = Schedule(name, tuple(jobs), parse_every(every) if every else None, cron, False, None)
    lake.upsert("schedules", _row(s, created_at=dt.datetime.now(dt.UTC)))
    return s


def list_schedules(lake: Lake) -> list[dict[str, Any]]:
    lake.create_tables(["schedules"])
    return sorted(lake.read("schedules").to_pylist(), key=lambda r: r["name"])


def _get(lake: Lake, name: str) -> dict[str, Any]:
    rows = [r for r in list_schedules(lake) if r["name"] == name]
    if not rows:
        raise NotFoundError(f"no schedule {name!r}")
    return rows[0]


def set_paused(lake: Lake, name: str, paused: bool) -> None:
    lake.upsert(
        "schedules", schedules.SPEC.conform(pa.Table.from_pylist([{**_get(lake, name), "paused": paused}]))
    )


def remove_schedule(lake: Lake, name: str) -> None:
    _get(lake, name)
    lake.delete("schedules", f"name = {literal(name)}")


def _run_due(
    lake: Lake,
    settings: Settings,
    now: dt.datetime,
    on_run: Callable[[str, Any], None] | None,
    runner: Runner | None,
) -> int:
    ran = 0
    for row in list_schedules(lake):
        s = Schedule.from_row(row)
        tick = due(s, now)
        if tick is None:
            continue
        run_ids: list[str] = []
        status = "succeeded"
        for req in s.jobs:  # in order; the next job sees what the previous one committed
            try:
                report = execute(req, settings, runner)
                info = summary(report)
                run_ids.append(str(info.get("run_id", req.kind)))
                if on_run:
                    on_run(s.name, report)
            except Exception as exc:  # one schedule's failure is its status, not the scheduler's
                log.exception("schedule %s: %s failed", s.name, req.kind)
                status = f"failed at {req.kind}: {type(exc).__name__}: {exc}"
                break
        fresh = Schedule.from_row(_get(lake, s.name))  # paused or edited meanwhile: keep that
        lake.upsert(
            "schedules",
            _row(
                Schedule(fresh.name, fresh.jobs, fresh.every_s, fresh.cron, fresh.paused, tick),
                created_at=row["created_at"],
                last_run_at=dt.datetime.now(dt.UTC),
                last_status=status,
                last_run_ids=run_ids,
            ),
        )
        ran += 1
    return ran


def run_scheduler(
    settings: Settings,
    *,
    poll_s: float = 10.0,
    lease_ttl_s: float = 120.0,
    stop: threading.Event | None = None,
    on_state: Callable[[str], None] | None = None,
    on_run: Callable[[str, Any], None] | None = None,
    runner: Runner | None = None,
) -> None:
    """Run due schedules until ``stop`` is set; passive while another scheduler holds the lease."""
    lake = Lake.from_settings(settings)
    lake.create_tables(["schedules", "runs"])
    stop = stop or threading.Event()
    holder = this_process()
    token: str | None = None
    try:
        while not stop.is_set():
            if token is None:
                try:
                    token = acquire(lake, LEASE, holder, lease_ttl_s)
                    if on_state:
                        on_state("active")
                except LeaseHeldError as exc:
                    if on_state:
                        on_state(f"passive: {exc}")
                    stop.wait(poll_s)
                    continue
            renew(lake, LEASE, token, holder, lease_ttl_s)
            _run_due(lake, settings, dt.datetime.now(dt.UTC), on_run, runner)
            stop.wait(poll_s)
    finally:
        if token is not None:
            release(lake, LEASE, token, holder)
