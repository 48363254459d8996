"""Schedules: their rhythm, missed ticks, one active scheduler per lake, runs that add only new drives."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pytest

from fleetmine.schedules import parse_chain
from jobs.embed_job import EmbedJob
from jobs.ingest_job import IngestJob
from jobs.mine_job import MineJob
from jobs.scheduler import Schedule, add_schedule, due, list_schedules, parse_every, run_scheduler, set_paused
from storage import Lake, Settings
from storage.errors import ConfigError
from tests.conftest import LOCAL
from tests.ingest.conftest import make_drive
from tests.ingest.videos import Spec, encode

T = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_due_keeps_the_rhythm_and_runs_missed_ticks_once() -> None:
    s = Schedule("x", (), 900.0, None, False, None)
    assert due(s, T) == T  # never ran
    ran = Schedule("x", (), 900.0, None, False, T)
    assert due(ran, T + dt.timedelta(minutes=14)) is None
    assert due(ran, T + dt.timedelta(minutes=15)) == T + dt.timedelta(minutes=15)
    # Down for 2 h: one run, for the latest tick passed, not eight.
    assert due(ran, T + dt.timedelta(hours=2, minutes=3)) == T + dt.timedelta(hours=2)
    assert due(Schedule("x", (), 900.0, None, True, T), T + dt.timedelta(hours=1)) is None
    cron = Schedule("c", (), None, "*/15 * * * *", False, T + dt.timedelta(minutes=1))
    assert due(cron, T + dt.timedelta(minutes=14)) is None
    assert due(cron, T + dt.timedelta(minutes=31)) == T + dt.timedelta(minutes=30)
    assert parse_every("15m") == 900 and parse_every("90s") == 90 and parse_every("1d") == 86400
    with pytest.raises(ConfigError, match="unit"):
        parse_every("15 minutes")


def test_job_chains_parse_to_typed_requests() -> None:
    chain = parse_chain(
        ["ingest", "s3://raw/fleet", "--force", "then", "embed", "--model", "m@2", "then", "mine"]
    )
    assert chain == [IngestJob(raw="s3://raw/fleet", force=True), EmbedJob(model="m@2"), MineJob()]
    with pytest.raises(ConfigError, match="unknown job"):
        parse_chain(["ingest", "r", "then", "dance"])
    with pytest.raises(ConfigError, match="one RAW"):
        parse_chain(["ingest"])


def _wait(cond: object, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_schedule_runs_again_and_ingests_only_new_drives(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    video = encode(Spec(seconds=3))
    make_drive(raw, "car", "d1", {"cameras/front.mp4": video}, {"start_time": "2024-06-14T17:00:00Z"})
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    add_schedule(lake, "often", [IngestJob(raw=str(raw))], every="2s")  # "every 1m", clock shortened
    stop = threading.Event()
    runs: list[str] = []
    t = threading.Thread(
        target=run_scheduler,
        args=(settings,),
        kwargs={
            "poll_s": 0.3,
            "stop": stop,
            "runner": LOCAL,
            "on_run": lambda name, r: runs.append(r.run_id),
        },
    )
    t.start()
    try:
        _wait(lambda: len(runs) >= 1)
        make_drive(raw, "car", "d2", {"cameras/front.mp4": video}, {"start_time": "2024-06-15T17:00:00Z"})
        _wait(lambda: len(runs) >= 2)
    finally:
        stop.set()
        t.join(60)
    rows = {r["run_id"]: r for r in lake.read("runs", where="kind = 'ingest'").to_pylist()}
    assert json.loads(rows["ingest-000001"]["params"])["drives"] == ["car/d1"]
    assert json.loads(rows["ingest-000002"]["params"])["drives"] == ["car/d2"]
    assert lake.read("drives").num_rows == 2 and lake.read("clips").num_rows == 2
    (sched,) = list_schedules(lake)
    assert sched["last_status"] == "succeeded" and sched["last_run_ids"][-1] in rows


def test_a_second_scheduler_stays_passive_until_the_first_stops(tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    add_schedule(lake, "idle", [MineJob()], every="1d")
    set_paused(lake, "idle", True)
    states: dict[str, list[str]] = {"a": [], "b": []}
    stops = {k: threading.Event() for k in states}
    threads = {
        k: threading.Thread(
            target=run_scheduler,
            args=(settings,),
            kwargs={"poll_s": 0.3, "stop": stops[k], "on_state": states[k].append, "runner": LOCAL},
        )
        for k in states
    }
    threads["a"].start()
    _wait(lambda: states["a"] == ["active"])
    threads["b"].start()
    _wait(lambda: len(states["b"]) >= 2)
    assert all(s.startswith("passive") for s in states["b"]) and states["a"] == ["active"]
    stops["a"].set()
    threads["a"].join(60)
    _wait(lambda: states["b"][-1] == "active")
    stops["b"].set()
    threads["b"].join(60)
