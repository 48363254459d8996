"""``fleetmine synth``: layout, determinism, CAN/video consistency, planted events."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import av
import can
import numpy as np
import pytest
from PIL import Image

from ingest.platform import load_platform
from ingest.synth.fleet import SynthConfig, drive_state, plan_drives
from ingest.synth.render import LIGHTS, Look, Renderer
from ingest.synth.scenario import EVENT_TYPES, HZ, simulate
from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from storage.errors import ConfigError
from tests.conftest import LOCAL

FLEETMINE = str(Path(sys.executable).parent / "fleetmine")


def synth(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLEETMINE, "synth", str(out), *args], capture_output=True, text=True, timeout=600)


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "f"
    done = synth(
        out, "--vehicles", "2", "--drives", "2", "--minutes", "1", "--seed", "3", "--rare-rate", "0.2"
    )
    assert done.returncode == 0, done.stderr
    return out


def test_layout_and_labels(fleet: Path) -> None:
    labels = json.loads((fleet / "labels.json").read_text())
    assert labels["seed"] == 3 and set(labels) == {"seed", "events", "duplicates"}
    assert labels["events"] and labels["duplicates"]
    for e in labels["events"]:
        assert set(e) == {"vehicle_id", "drive", "camera", "type", "start_time", "end_time"}
        assert e["type"] in EVENT_TYPES and (fleet / e["vehicle_id"] / e["drive"]).is_dir()
    for d in labels["duplicates"]:
        assert set(d) == {"a", "b"} and set(d["a"]) == {"vehicle_id", "drive", "start_time", "end_time"}
    drives = [p for p in fleet.glob("*/*") if p.is_dir()]
    assert len(drives) == 5  # 2 x 2 + one re-recorded stretch
    for d in drives:
        doc = json.loads((d / "drive.json").read_text())
        assert doc["platform"] == "fleetmine_synth"
        assert (d / "cameras" / "front.mp4").exists() and len(list((d / "can").iterdir())) == 1
    suffixes = {p.suffix for p in fleet.glob("*/*/can/*")}
    assert suffixes == {".log", ".asc"}  # vehicle 0 candump, vehicle 1 ASC (2 vehicles)


def test_videos_decode_at_declared_size_fps_duration(fleet: Path) -> None:
    for video in fleet.glob("*/*/cameras/front.mp4"):
        doc = json.loads((video.parent.parent / "drive.json").read_text())
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            frames = sum(1 for _ in c.decode(s))
            assert (s.width, s.height) == (640, 360) and float(s.average_rate) == 20
        seconds = 30 if video.parent.parent.name.endswith("-dup") else 60
        assert frames == seconds * 20
        assert doc["cameras"]["front"]["fps"] == 20


def test_can_logs_read_decode_and_match_the_rendered_speed(fleet: Path) -> None:
    db = load_platform("fleetmine_synth").database
    cfg = SynthConfig(vehicles=2, drives=2, minutes=1, seed=3, rare_rate=0.2)
    for job in plan_drives(cfg):
        folder = fleet / job.vehicle_id / job.drive
        (log,) = (folder / "can").iterdir()
        msgs = list(
            can.LogReader(str(log), **({"relative_timestamp": False} if log.suffix == ".asc" else {}))
        )
        assert len(msgs) > 10_000
        state = drive_state(job)
        errs = []
        for m in msgs:
            decoded = db.decode_message(m.arbitration_id, bytes(m.data))
            if m.arbitration_id == db.get_message_by_name("WHEEL_SPEEDS").frame_id:
                speed = np.mean([decoded[f"WHEEL_SPEED_{w}"] for w in ("FL", "FR", "RL", "RR")]) / 3.6
                i = int((m.timestamp - job.start.timestamp()) * HZ)
                near = state.speed[max(i - 1, 0) : i + 2]  # the 10 ms sample, give or take float rounding
                errs.append(float(np.min(np.abs(speed - near))))
        assert max(errs) < 0.05 and float(np.mean(errs)) < 0.01


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    # small frames: what is compared is the bytes, at any size (the fixture's fleet is full size)
    args = ["--vehicles", "1", "--drives", "2", "--minutes", "0.5", "--resolution", "320x180", "--fps", "10"]
    assert synth(tmp_path / "a", *args, "--seed", "5").returncode == 0
    assert synth(tmp_path / "b", *args, "--seed", "5").returncode == 0
    assert synth(tmp_path / "c", *args, "--seed", "6").returncode == 0
    a, b, c = (tree_hashes(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 7  # 2 drives x (video, CAN log, drive.json) + labels.json
    assert set(a.values()).isdisjoint(c.values())


def test_ingest_finds_the_planted_signatures(fleet: Path, tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    report = run_ingest(str(fleet), settings, runner=LOCAL)
    assert report.exit_code == 0, report.failed
    lake = Lake.from_settings(settings)
    drives = {r["drive_id"]: (r["vehicle_id"], r["drive"]) for r in lake.read("drives").to_pylist()}
    clips = lake.read("clips", columns=["drive_id", "start_time", "end_time", "events"]).to_pylist()
    expected = {
        "pedestrian_crossing": "hard_brake",
        "cut_in": "hard_brake",
        "evasive_swerve": "evasive_steer",
        "driver_takeover": "driver_override",
        "red_light_creep": "creep",
    }
    checked = 0
    for e in json.loads((fleet / "labels.json").read_text())["events"]:
        start = dt.datetime.fromisoformat(e["start_time"])
        (clip,) = [
            c
            for c in clips
            if drives[c["drive_id"]] == (e["vehicle_id"], e["drive"])
            and c["start_time"] <= start < c["end_time"]
        ]
        if e["type"] in expected:
            assert expected[e["type"]] in clip["events"], (e, clip)
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("event", EVENT_TYPES)
def test_scenario_frames_render(event: str, tmp_path: Path) -> None:
    """One frame per scenario, saved as PNG (look at them: tests/ingest/ writes them under tmp)."""
    st = simulate(np.random.default_rng(3), 40, {2: event})
    (ev,) = st.events
    scene = [
        i
        for i in range(int(ev.start_s * HZ), int(ev.end_s * HZ))
        if np.isfinite(st.ped_z[i])
        or np.isfinite(st.obstacle_z[i])
        or np.isfinite(st.lead_z[i])
        or np.isfinite(st.light_z[i])
    ]
    assert scene, f"{event}: nothing in the scene"
    img = Renderer(640, 360, Look(LIGHTS[0]), 1).frame(st, scene[len(scene) // 4])
    assert img.shape == (360, 640, 3) and img.std() > 20
    Image.fromarray(img).save(tmp_path / f"{event}.png")
    # the road is there: grey asphalt in the lower middle, sky above
    assert abs(int(img[340, 320, 0]) - int(img[340, 320, 2])) < 10 and img[20, 320, 2] > img[20, 320, 0]


def test_can_formats_choose_each_vehicles_log_and_nothing_else() -> None:
    """Vehicle v writes ``can_formats[v % len]`` (its duplicates too); an unknown or empty
    choice is an error naming the known formats, not a fleet without CAN."""
    every = plan_drives(SynthConfig(vehicles=3, drives=1, minutes=1, seed=4))
    assert [j.can_suffix for j in every if j.source is None] == [".log", ".asc", ".blf"]
    only = plan_drives(SynthConfig(vehicles=3, drives=2, minutes=1, seed=4, can_formats=(".log",)))
    assert {j.can_suffix for j in only} == {".log"} and any(j.source for j in only)
    # the same drives either way: only the log format changes
    assert [
        (j.vehicle_id, j.drive, j.seed)
        for j in plan_drives(SynthConfig(vehicles=3, drives=1, minutes=1, seed=4, can_formats=(".blf",)))
    ] == [(j.vehicle_id, j.drive, j.seed) for j in every]
    for bad in ((), (".mf4",), (".log", "../x")):
        with pytest.raises(ConfigError, match=r"\.log.*\.asc.*\.blf"):
            SynthConfig(can_formats=bad)
