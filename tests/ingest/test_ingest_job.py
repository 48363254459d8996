"""``fleetmine ingest`` end to end on the recorded data, with a real local Ray."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from ingest.drive import DATA_TABLES
from jobs.ingest_job import run_ingest
from jobs.runner import Runner
from storage import Lake, Settings, Txn
from tests.conftest import LOCAL
from tests.ingest.conftest import DASHCAM, RAV4, assert_matches_rav4_truth, make_drive

FLEETMINE = str(Path(sys.executable).parent / "fleetmine")
TABLES = ("drives", *DATA_TABLES)


def counts(lake: Lake) -> dict[str, int]:
    return {t.name: t.rows for t in lake.info() if t.name in TABLES}


def drive_row(lake: Lake, vehicle: str) -> dict[str, object]:
    (row,) = lake.read("drives", where=f"vehicle_id = '{vehicle}'").to_pylist()
    return row


def test_recorded_drives_ingest_exactly(
    real_raw: Path, tmp_path: Path, shared_data: Path, runner: Runner
) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    report = run_ingest(str(real_raw), settings, runner=runner)
    assert report.exit_code == 0 and sorted(report.ok) == ["/".join(DASHCAM), "/".join(RAV4)]
    lake = Lake.from_settings(settings)

    rav4 = drive_row(lake, "rav4")
    assert rav4["status"] == "ok" and rav4["platform"] == "toyota_rav4_2017"
    assert str(rav4["drive_id"]).startswith("20180802-") and "." not in str(rav4["drive_id"])
    # Every frame of the log, unknown ids included.
    frames = lake.read(
        "can_frames", columns=["t", "arbitration_id"], where=f"drive_id = '{rav4['drive_id']}'"
    )
    assert frames.num_rows == 67_741
    # Signals match comma.ai's processed log, interpolated at our grid times.
    sig = lake.read("signals", where=f"drive_id = '{rav4['drive_id']}'").sort_by("t")
    t = sig.column("t").cast(pa.int64()).to_numpy() / 1e6
    assert np.allclose(np.diff(t), 0.05)
    assert_matches_rav4_truth(sig, shared_data)
    assert set(sig.column("gear").drop_null().to_pylist()) == {"D"}

    dash = drive_row(lake, "dashcam")
    (clip,) = lake.read("clips", where=f"drive_id = '{dash['drive_id']}'").to_pylist()
    assert (clip["width"], clip["height"], clip["fps"], clip["codec"]) == (960, 540, 25.0, "h264")
    assert abs(clip["duration_s"] - 8.84) < 1e-6 and "." not in clip["clip_id"]
    fs = lake.root.fs
    with fs.open(clip["video_uri"], "rb") as f, av.open(f) as c:
        assert sum(1 for _ in c.decode(video=0)) == 221  # remuxed, every frame, no re-encode
    thumb = Image.open(io.BytesIO(fs.cat_file(clip["thumbnail_uri"])))
    assert thumb.format == "JPEG" and min(thumb.size) == 224
    kf = lake.read("clip_frames", where=f"clip_id = '{clip['clip_id']}'").sort_by("frame_index")
    assert kf.num_rows == 4
    assert all(Image.open(io.BytesIO(j)).size == (398, 224) for j in kf.column("jpeg").to_pylist())


def test_rerun_is_a_no_op_and_a_new_drive_adds_only_its_rows(
    real_raw: Path, tmp_path: Path, shared_data: Path
) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    run_ingest(str(real_raw), settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    before = counts(lake)
    again = run_ingest(str(real_raw), settings, runner=LOCAL)
    assert again.ok == [] and again.unchanged == 2
    assert counts(lake) == before
    make_drive(
        real_raw,
        "dashcam2",
        "d2",
        {"cameras/front.mp4": shared_data / "video" / "solidWhiteRight.mp4"},
        {"start_time": "2016-08-29T10:00:00Z"},
    )
    third = run_ingest(str(real_raw), settings, runner=LOCAL)
    assert third.ok == ["dashcam2/d2"]
    after = counts(lake)
    assert after["drives"] == before["drives"] + 1
    assert after["clips"] == before["clips"] + 1 and after["clip_frames"] == before["clip_frames"] + 4
    assert after["can_frames"] == before["can_frames"] and after["signals"] == before["signals"]
    # --force re-ingests without duplicating.
    run_ingest(str(real_raw), settings, runner=LOCAL, force=True)
    assert counts(lake) == after


def test_interrupted_run_resumes_without_duplicates(real_raw: Path, tmp_path: Path) -> None:
    clean = Settings(lake=str(tmp_path / "clean"))
    run_ingest(str(real_raw), clean, runner=LOCAL)
    expected = counts(Lake.from_settings(clean))

    # A run that died after committing only can_frames: its row says running.
    settings = Settings(lake=str(tmp_path / "lake"))
    import jobs.ingest_job as job

    lake = Lake.from_settings(settings)
    lake.create_tables()
    commits: list[str] = []
    original = Lake.commit

    def dying_commit(
        self: Lake, table: str, actions: list[object], txn: Txn | None = None, **kw: object
    ) -> object:
        if commits:
            raise SystemExit("killed")
        commits.append(table)
        return original(self, table, actions, txn, **kw)  # type: ignore[arg-type]

    Lake.commit = dying_commit  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(SystemExit):
            job.run_ingest(str(real_raw), settings, runner=LOCAL)
    finally:
        Lake.commit = original  # type: ignore[method-assign]
    assert commits == ["can_frames"]
    (run,) = lake.read("runs").to_pylist()
    assert run["status"] == "running"

    report = run_ingest(str(real_raw), settings, runner=LOCAL)
    assert report.resumed and report.run_number == 1
    assert counts(lake) == expected
    assert lake.read("runs").column("status").to_pylist() == ["succeeded"]


def test_unusable_inputs_fail_partial_ones_land_with_warnings(
    real_raw: Path, tmp_path: Path, shared_data: Path
) -> None:
    video = (shared_data / "video" / "solidWhiteRight.mp4").read_bytes()
    log = (shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes().splitlines(keepends=True)
    garbled = b"".join([*log[:1000], b"not a frame at all\n", b"(1533226488.0) can0 ZZZ#00\n", *log[1000:]])
    start = {"start_time": "2020-01-01T00:00:00Z"}
    make_drive(real_raw, "bad", "empty", {"cameras/front.mp4": b""}, start)
    make_drive(
        real_raw,
        "bad",
        "random",
        {"cameras/front.mp4": bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8))},
        start,
    )
    make_drive(real_raw, "bad", "half", {"cameras/front.mp4": video[: len(video) // 2]}, start)
    make_drive(real_raw, "bad", "garbled", {"can/pt.log": garbled}, {"platform": "toyota_rav4_2017"})
    lake_dir = tmp_path / "lake"
    out = subprocess.run(
        [FLEETMINE, "ingest", str(real_raw), "--lake", str(lake_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert "4 ok, 2 failed" in out.stdout
    lake = Lake(str(lake_dir))
    rows = {r["drive"]: r for r in lake.read("drives").to_pylist()}
    # Nothing usable: failed, with the reason.
    assert rows["empty"]["status"] == "failed" and rows["empty"]["error"] == "front: empty file"
    assert rows["random"]["status"] == "failed" and "cannot open video" in rows["random"]["error"]
    assert not rows["empty"]["retryable"] and not rows["random"]["retryable"]
    # Partial input: ok, the good part landed, the warnings say what was dropped.
    assert rows["half"]["status"] == "ok" and rows["half"]["error"] is None
    assert any("truncated video" in w for w in rows["half"]["warnings"])
    assert rows["garbled"]["status"] == "ok" and rows["garbled"]["error"] is None
    (warning,) = rows["garbled"]["warnings"]
    assert (
        f"2 unreadable lines skipped, {len(log)} frames kept" in warning
        and "frame 1001" in warning
        and "not a frame at all" not in warning
    )
    assert rows["garbled"]["skipped_lines"] == 2
    # What could be salvaged landed: the half video's first clip, every good CAN frame.
    half_clips = lake.read("clips", where=f"drive_id = '{rows['half']['drive_id']}'")
    assert half_clips.num_rows == 1
    garbled_frames = lake.read(
        "can_frames", columns=["t"], where=f"drive_id = '{rows['garbled']['drive_id']}'"
    )
    assert garbled_frames.num_rows == len(log)
    # The good drives are complete.
    assert (
        rows["2016-08-28--21-16-08"]["status"] == "ok" and rows["2018-08-02--08-34-47--40"]["status"] == "ok"
    )
    (run,) = lake.read("runs").to_pylist()
    assert run["status"] == "partial" and len(json.loads(run["errors"])) == 2


def test_a_drive_that_crashes_its_worker_fails_after_bounded_retries(
    real_raw: Path, tmp_path: Path, ray_local: object
) -> None:
    from jobs.runner import RayRunner
    from tests.ingest.stages import CrashingDriveIngest

    # The drive is decoded in the worker's budgeted child process (ingest.budget), which is
    # started again ingest_max_retries times; the worker itself survives.
    settings = Settings(lake=str(tmp_path / "lake"), ingest_max_retries=1)
    report = run_ingest(str(real_raw), settings, runner=RayRunner(max_retries=1), stage=CrashingDriveIngest)
    assert report.exit_code == 3
    lake = Lake(str(tmp_path / "lake"))
    rav4 = drive_row(lake, "rav4")
    assert rav4["status"] == "failed" and "crashed its worker 2 times" in str(rav4["error"])
    assert drive_row(lake, "dashcam")["status"] == "ok"
    assert lake.read("can_frames", columns=["t"]).num_rows == 0


@pytest.mark.s3
def test_ingest_from_s3_raw_into_s3_lake(
    real_raw: Path, s3_options: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.objectstore import Location

    raw = Location(f"s3://{s3_bucket}/raw", s3_options)
    raw.fs.put(str(real_raw) + "/", raw.path, recursive=True)
    for k, v in s3_options.items():
        monkeypatch.setenv(k, v)
    settings = Settings(lake=f"s3://{s3_bucket}/lake")
    assert settings.storage_options["AWS_ENDPOINT_URL"] == s3_options["AWS_ENDPOINT_URL"]
    report = run_ingest(raw.uri, settings, runner=LOCAL)
    assert report.exit_code == 0 and len(report.ok) == 2
    lake = Lake.from_settings(settings)
    assert counts(lake)["can_frames"] == 67_741 and counts(lake)["clips"] == 1
    (clip,) = lake.read("clips").to_pylist()
    assert clip["video_uri"].startswith(f"s3://{s3_bucket}/lake/media/clips/")
    with lake.root.fs.open(clip["video_uri"], "rb") as f, av.open(f) as c:
        assert sum(1 for _ in c.decode(video=0)) == 221
    again = run_ingest(raw.uri, settings, runner=LOCAL)
    assert again.ok == [] and again.unchanged == 2


def test_files_no_reader_takes_are_named_in_warnings_never_dropped_unsaid(
    tmp_path: Path, shared_data: Path
) -> None:
    """An openpilot rlog under can/ in a compression no reader takes, a video format
    fleetmine does not read, a stray note: each is named in its drive's warnings with why;
    the DBC drive.json names is read, not listed; a drive holding only such files fails
    naming them (it once said only "no camera video and no CAN log"). Past 20 files the
    rest are counted, not listed."""
    raw = tmp_path / "raw"
    log = (shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes()[:20_000]
    dbc = (shared_data / "dbc" / "toyota_rav4_2017_pt.dbc").read_bytes()
    wheels = [f"WHEEL_SPEEDS.WHEEL_SPEED_{w}" for w in ("FL", "FR", "RL", "RR")]
    signals = {"speed_mps": {"op": "mean", "sources": wheels, "divide": 3.6}}
    odd = {"can/rlog.gz": b"\x1f\x8b", "cameras/front.avi": b"RIFF", "notes.txt": b"x"}
    make_drive(
        raw, "mixed", "d1", {"can/pt.log": log, "car.dbc": dbc, **odd}, {"dbc": "car.dbc", "signals": signals}
    )
    make_drive(
        raw, "comma", "2023-07-27--13-01-19--0", {"can/qlog.lz4": b"\x04\x22", "fcamera.hevc": b"\0\0\0\1"}
    )
    make_drive(raw, "many", "d1", {"can/pt.log": log, **{f"extra/{i:02d}.bin": b"x" for i in range(25)}})
    settings = Settings(lake=str(tmp_path / "lake"))
    report = run_ingest(str(raw), settings, runner=LOCAL)
    rows = {r["vehicle_id"]: r for r in Lake.from_settings(settings).read("drives").to_pylist()}

    mixed = rows["mixed"]
    assert mixed["status"] == "ok", mixed["error"]
    unread = sorted(w for w in mixed["warnings"] if w.endswith("; not read"))
    assert [w.split(":")[0] for w in unread] == ["cameras/front.avi", "can/rlog.gz", "notes.txt"], unread
    assert "openpilot log" in unread[1] and ".log" in unread[1] and ".mp4" in unread[0]
    assert not any("car.dbc" in w for w in mixed["warnings"])  # read: it decodes the CAN

    comma = rows["comma"]  # an openpilot segment: its fcamera.hevc is read (and is garbage)
    assert comma["status"] == "failed" and report.exit_code == 3
    assert "can/qlog.lz4" in comma["error"] and "fcamera.hevc" in comma["error"], comma["error"]
    assert any(
        w.startswith("2023-07-27--13-01-19--0/can/qlog.lz4: not a file of an openpilot segment")
        for w in comma["warnings"]
    )

    many = rows["many"]
    assert many["status"] == "ok"
    listed = [w for w in many["warnings"] if w.endswith("; not read")]
    assert len(listed) == 20 and "5 more files not read (not camera video or CAN logs)" in many["warnings"]
