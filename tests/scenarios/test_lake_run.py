"""Scenarios in the lake: versioned definitions, a run over every drive's signals whose
spans equal the evaluators' on the same samples, incremental re-runs, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fleetmine_scenarios import COLUMNS, Stream, evaluate, parse
from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.scenario_job import run_scenarios
from mining.scenarios import add_scenario, list_scenarios, resolve_scenario, shipped
from storage import Lake, Settings
from storage.errors import ConfigError
from storage.sql import literal
from tests.conftest import LOCAL, synthesized
from tests.jobs.test_cli import run as cli


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The API tests' fleet (built once per run: rare events at 0.2), ingested into a lake of its own."""
    root = tmp_path_factory.mktemp("scenarios")
    cfg = SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2)
    synthesized(root / "raw", cfg)
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    return settings


def _signals(lake: Lake, drive_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    sig = lake.read("signals", where=f"drive_id = {literal(drive_id)}").sort_by("t").to_pylist()
    t = np.array([int(r["t"].timestamp() * 1e6 + 0.5) for r in sig])
    cols = {c: np.array([math.nan if r[c] is None else float(r[c]) for r in sig]) for c in COLUMNS}
    return t, cols


def test_versions_never_change_and_bad_text_is_refused(ingested: Settings) -> None:
    lake = Lake.from_settings(ingested)
    a = add_scenario(lake, "slow", "speed_mps < 5 for >= 1s")
    assert (
        add_scenario(lake, "slow", "speed_mps<5 for >= 1 s".replace("1 s", "1s"))["version"] == a["version"]
    )
    b = add_scenario(lake, "slow", "speed_mps < 4 for >= 1s")
    assert b["version"] == a["version"] + 1 and resolve_scenario(lake, "slow")["version"] == b["version"]
    assert resolve_scenario(lake, f"slow@{a['version']}")["text"] == a["text"]
    with pytest.raises(ConfigError, match="unknown column 'speed'; columns: speed_mps"):
        add_scenario(lake, "bad", "speed < 5")
    with pytest.raises(ConfigError, match="lowercase"):
        add_scenario(lake, "Bad Name", "speed_mps < 5")
    with pytest.raises(ConfigError, match="versions"):
        resolve_scenario(lake, "slow@99")
    assert [r["name"] for r in list_scenarios(lake)].count("slow") == 2


def test_a_run_finds_the_spans_the_evaluators_find_and_a_rerun_adds_nothing(ingested: Settings) -> None:
    lake = Lake.from_settings(ingested)
    for name, text in shipped().items():
        add_scenario(lake, name, text)
    first = run_scenarios(ingested, list(shipped()), runner=LOCAL)
    drives = lake.read("drives", columns=["drive_id"]).num_rows  # two drives and a copy of one
    assert first.drives == drives == 3 and not first.failed and first.hits > 0
    hits = lake.read("scenario_hits").to_pylist()
    assert len(hits) == first.hits
    clips = lake.read("clips", columns=["clip_id", "drive_id", "start_time", "end_time"]).to_pylist()
    for drive_id in {c["drive_id"] for c in clips}:
        t, cols = _signals(lake, drive_id)
        for name in shipped():
            s = parse(resolve_scenario(lake, name)["text"])
            want = evaluate(s, cols, 20.0)
            live = Stream(s, 20.0)  # what a car would upload: the same spans
            streamed = [x for i in range(len(t)) for x in live.push({c: cols[c][i] for c in COLUMNS})]
            assert streamed + live.close() == want
            got = sorted(
                (h["start"], h["end"], h["clip_ids"])
                for h in hits
                if (h["drive_id"], h["name"]) == (drive_id, name)
            )
            assert [(int(a.timestamp() * 1e6 + 0.5), int(b.timestamp() * 1e6 + 0.5)) for a, b, _ in got] == [
                (t[a], t[b - 1] + 50_000) for a, b in want
            ]
            for a, b, ids in got:  # the clips of the drive the span overlaps, and only those
                over = sorted(
                    c["clip_id"]
                    for c in clips
                    if c["drive_id"] == drive_id and c["start_time"] < b and c["end_time"] > a
                )
                assert ids == over and ids
    again = run_scenarios(ingested, list(shipped()), runner=LOCAL)
    assert again.drives == 0 and again.hits == 0 and again.already == drives
    assert lake.read("scenario_hits").num_rows == len(hits)


def test_the_shipped_definitions_find_the_clips_the_triggers_named(ingested: Settings) -> None:
    """Every clip ingest's trigger named is in a span of the shipped definition. A span
    may also cross a clip boundary where no one clip saw the whole pattern (here: a stop
    at the end of one clip, the creep in the next), which the per-clip trigger misses."""
    lake = Lake.from_settings(ingested)
    for name, text in shipped().items():
        add_scenario(lake, name, text)
    run_scenarios(ingested, list(shipped()), runner=LOCAL)
    rows = lake.read("clips", columns=["clip_id", "events"]).to_pylist()
    checked = 0
    for name in shipped():
        named = {c["clip_id"] for c in rows if name in (c["events"] or [])}
        spans = lake.read("scenario_hits", where=f"name = {literal(name)}").to_pylist()
        found = {c for h in spans for c in h["clip_ids"]}
        assert named <= found, name
        checked += len(named)
    assert checked >= 2  # this fleet names a sudden_stop and a creep


def test_the_cli_adds_lists_shows_and_runs(ingested: Settings, tmp_path: Path) -> None:
    env = {"FLEETMINE_LAKE": ingested.lake}
    out = cli(
        "scenario",
        "add",
        "creep_slow",
        "--expr",
        "speed_mps < 0.3 for >= 0.5s then speed_mps >= 0.3",
        env=env,
    )
    assert (
        out.returncode == 0
        and "creep_slow@1: speed_mps < 0.3 for >= 0.5s then speed_mps >= 0.3" in out.stdout
    )
    bad = cli("scenario", "add", "x", "--expr", "speed_mps > 3 deg", env=env)
    assert bad.returncode == 2 and "its units: m/s, km/h, mph" in bad.stderr
    out = cli("scenario", "run", "creep_slow", env=env)
    assert out.returncode == 0 and "3 drives run" in out.stdout, out.stderr
    out = cli("scenario", "show", "creep_slow", env=env)
    assert out.returncode == 0 and "spans" in out.stdout
    out = cli("scenario", "list", env=env)
    assert out.returncode == 0 and "creep_slow@1" in out.stdout


def test_a_scenario_added_later_back_fills_the_same_spans_on_ray_as_locally(
    ingested: Settings, ray_local: object
) -> None:
    """The stage as Ray tasks (a local Ray; the loopback cluster is left to the cluster
    tests): the same spans as the sequential runner, and a re-run adds nothing."""
    from jobs.runner import RayRunner

    lake = Lake.from_settings(ingested)
    text = "speed_mps < 14 for >= 1s then speed_mps >= 14 within 2s"
    add_scenario(lake, "back_local", text)
    add_scenario(lake, "back_ray", text)
    assert run_scenarios(ingested, ["back_local"], runner=LOCAL).hits > 0
    on_ray = run_scenarios(ingested, ["back_ray"], runner=RayRunner())
    assert on_ray.drives == 3 and not on_ray.failed

    def spans(name: str) -> list[tuple[object, ...]]:
        rows = lake.read("scenario_hits", where=f"name = {literal(name)}").to_pylist()
        return sorted((r["drive_id"], r["start"], r["end"], tuple(r["clip_ids"])) for r in rows)

    assert spans("back_ray") == spans("back_local") and spans("back_ray")
    assert run_scenarios(ingested, ["back_ray"], runner=RayRunner()).drives == 0


def test_a_campaign_names_each_columns_can_sources_and_streams_the_lakes_spans(
    ingested: Settings, tmp_path: Path
) -> None:
    from fleetmine_scenarios import parse_json
    from ingest.campaign import campaign

    lake = Lake.from_settings(ingested)
    for name, text in shipped().items():
        add_scenario(lake, name, text)
    run_scenarios(ingested, list(shipped()), runner=LOCAL)
    doc = campaign(resolve_scenario(lake, "creep"))
    rav4 = doc["platforms"]["toyota_rav4_2017"]["columns"]["speed_mps"]
    assert rav4["op"] == "mean" and rav4["divide"] == 3.6 and rav4["frame_ids"] == {"WHEEL_SPEEDS": 0xAA}
    assert doc["columns"] == ["accel_mps2", "speed_mps"]  # the steady creep reads acceleration too
    assert doc["missing"] == {"toyota_rav4_2017": ["accel_mps2"]}  # which the RAV4 map lacks
    assert campaign(resolve_scenario(lake, "hard_brake"))["missing"] == {"toyota_rav4_2017": ["accel_mps2"]}
    # What a recorder runs: the campaign's definition, sample by sample, gives the lake's spans.
    s = parse_json(json.loads(json.dumps(doc["scenario"])))
    assert s == parse(resolve_scenario(lake, "creep")["text"])
    hits = lake.read("scenario_hits", where="name = 'creep'").to_pylist()
    for drive_id in {h["drive_id"] for h in hits}:
        t, cols = _signals(lake, drive_id)
        live = Stream(s, doc["rate_hz"])
        spans = [x for i in range(len(t)) for x in live.push({c: cols[c][i] for c in doc["columns"]})]
        spans += live.close()
        lake_spans = sorted(
            int(h["start"].timestamp() * 1e6 + 0.5) for h in hits if h["drive_id"] == drive_id
        )
        assert [t[a] for a, _ in spans] == lake_spans
    out = cli(
        "scenario",
        "export",
        "hard_brake",
        "--campaign",
        str(tmp_path / "c.json"),
        env={"FLEETMINE_LAKE": ingested.lake},
    )
    assert out.returncode == 0 and "toyota_rav4_2017 lacks accel_mps2" in out.stderr
    assert json.loads((tmp_path / "c.json").read_text())["format"] == "fleetmine-scenario-campaign-v1"
