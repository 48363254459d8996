"""After ingest, the lake's current scenario definitions run on the new drives: part of
the ingest job (so a CLI, scheduled or cluster-submitted ingest all do it), incremental,
and never failing the ingest. One small synthetic fleet (the API tests' build: three
drives), ingested a drive at a time into one lake."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.scenario_job import run_scenarios
from mining.scenarios import add_scenario, shipped
from storage import Lake, Settings
from storage.sql import literal
from tests.conftest import LOCAL, synthesized

MOVING = "speed_mps > 1 for >= 1s"  # every drive has it


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("after-ingest")
    cfg = SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2)
    return synthesized(root / "fleet", cfg)


def _upload(fleet: Path, raw: Path, drive: str) -> str:
    """The fleet's ``drive`` arrives in the raw tree ``raw``."""
    shutil.copytree(fleet / "veh-000" / drive, raw / "veh-000" / drive)
    return str(raw)


def _scanned(lake: Lake) -> set[tuple[str, int, str]]:
    rows = lake.read("scenario_scans", columns=["name", "version", "drive_id"]).to_pylist()
    return {(r["name"], r["version"], r["drive_id"]) for r in rows}


def _drive_of(lake: Lake, run_id: str) -> str:
    (drive_id,) = (
        lake.read("drives", columns=["drive_id"], where=f"ingest_run_id = {literal(run_id)}")
        .column(0)
        .to_pylist()
    )
    return str(drive_id)


def test_an_ingest_runs_the_latest_definitions_on_its_new_drives_only(fleet: Path, tmp_path: Path) -> None:
    drives = sorted(p.name for p in (fleet / "veh-000").iterdir())
    assert len(drives) == 3
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)

    raw = tmp_path / "raw"
    first = run_ingest(_upload(fleet, raw, drives[0]), settings, runner=LOCAL)
    assert first.exit_code == 0 and "scenario_hits" not in first.counts  # nothing defined yet
    old = _drive_of(lake, first.run_id)

    for name, text in shipped().items():
        add_scenario(lake, name, text)
    add_scenario(lake, "moving", "speed_mps > 30 for >= 1s")  # version 1: superseded below
    add_scenario(lake, "moving", MOVING)
    second = run_ingest(_upload(fleet, raw, drives[1]), settings, runner=LOCAL)
    assert second.exit_code == 0 and second.unchanged == 1 and len(second.ok) == 1
    new = _drive_of(lake, second.run_id)

    # The latest version of every name ran on the new drive, and on it alone.
    latest = {("creep", 1), ("hard_brake", 1), ("sudden_stop", 1), ("moving", 2)}
    assert _scanned(lake) == {(n, v, new) for n, v in latest}
    hits = lake.read("scenario_hits").to_pylist()
    assert {h["drive_id"] for h in hits} == {new}
    assert {h["name"] for h in hits} == {"moving", "sudden_stop", "creep"}  # this drive's planted events
    assert second.counts["scenario_hits"] == len(hits) and second.scenarios_run_id
    run = lake.read("runs", where=f"run_id = {literal(second.run_id)}").to_pylist()[0]
    assert run["status"] == "succeeded" and json.loads(run["counts"])["scenario_hits"] == len(hits)
    scen = lake.read("runs", where=f"run_id = {literal(second.scenarios_run_id)}").to_pylist()[0]
    assert scen["kind"] == "scenarios" and json.loads(scen["counts"])["drives"] == 1

    # A scenario run afterwards finds only the drive ingested before the definitions existed.
    later = run_scenarios(settings, runner=LOCAL)
    assert later.drives == 1 and later.already == 1
    assert _scanned(lake) == {(n, v, d) for n, v in latest for d in (old, new)}


def test_a_failed_scenario_pass_is_a_warning_and_the_next_scenario_run_does_it(
    fleet: Path, tmp_path: Path
) -> None:
    """Another scenario job holds the lake's ``scenarios`` lease: the ingest lands its
    drive, succeeds and says why its scenarios did not run; ``scenario run`` runs them."""
    drives = sorted(p.name for p in (fleet / "veh-000").iterdir())
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    add_scenario(lake, "moving", MOVING)
    with lake.lease("job:scenarios", "another scenario run", ttl_s=300):
        report = run_ingest(_upload(fleet, tmp_path / "raw", drives[1]), settings, runner=LOCAL)
    assert report.exit_code == 0 and len(report.ok) == 1 and "scenario_hits" not in report.counts
    assert report.scenario_warning and "another scenarios job is running" in report.scenario_warning
    run = lake.read("runs", where=f"run_id = {literal(report.run_id)}").to_pylist()[0]
    assert run["status"] == "succeeded"
    assert [e for e in json.loads(run["errors"]) if "scenarios" in e] == [
        {"scenarios": report.scenario_warning}
    ]
    assert not _scanned(lake)
    caught_up = run_scenarios(settings, runner=LOCAL)
    assert caught_up.drives == 1 and caught_up.hits > 0
    assert _scanned(lake) == {("moving", 1, _drive_of(lake, report.run_id))}


def test_a_reingested_drive_gets_its_spans_anew(fleet: Path, tmp_path: Path) -> None:
    """Re-ingest replaces a drive's clips (here cut to 7 s instead of 10 s: new clip ids);
    its spans are evaluated again and the old ones, which named clips that are gone, go."""
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    for name, text in {**shipped(), "moving": MOVING}.items():
        add_scenario(lake, name, text)
    raw = str(fleet)
    assert run_ingest(raw, settings, runner=LOCAL).exit_code == 0
    before = lake.read("scenario_hits").to_pylist()
    assert before and {c for h in before for c in h["clip_ids"]} <= _clip_ids(lake)

    shorter = settings.model_copy(update={"clip_seconds": 7.0})
    again = run_ingest(raw, shorter, force=True, runner=LOCAL)
    assert again.exit_code == 0 and len(again.ok) == 3
    after = lake.read("scenario_hits").to_pylist()
    key = lambda h: (h["name"], h["version"], h["drive_id"], h["start"], h["end"])  # noqa: E731
    assert sorted(map(key, after)) == sorted(map(key, before))  # the same signals: the same spans, once
    rows = lake.read("clips", columns=["clip_id", "drive_id", "start_time", "end_time"]).to_pylist()
    for h in after:  # each span names exactly the clips it overlaps now
        want = sorted(
            c["clip_id"]
            for c in rows
            if c["drive_id"] == h["drive_id"] and c["start_time"] < h["end"] and c["end_time"] > h["start"]
        )
        assert h["clip_ids"] == want, h
    assert run_scenarios(settings, runner=LOCAL).drives == 0  # and every drive is seen


def _clip_ids(lake: Lake) -> set[str]:
    return set(lake.read("clips", columns=["clip_id"]).column("clip_id").to_pylist())
