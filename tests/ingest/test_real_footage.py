"""Real encoder settings and recorder quirks, built with PyAV/x264/x265 at test time.

Every frame shows its own index (tests/ingest/videos.py), so each check asks which
frame an image or a clip really holds, not only how many there are.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from ingest.start_time import TimeSource, folder_time, resolve_start
from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from tests.conftest import LOCAL
from tests.ingest.conftest import make_drive
from tests.ingest.videos import Spec, decoded_frames, encode, read_index

START = "2024-06-14T17:00:00Z"
T0 = dt.datetime(2024, 6, 14, 17, tzinfo=dt.UTC)

FOOTAGE = {
    "h264-bframes-gop10s": (Spec(gop=250), "mp4"),
    "h264-bframes-gop1s": (Spec(gop=25), "mp4"),
    "h265": (Spec(codec="libx265"), "mp4"),
    "mkv": (Spec(container="matroska"), "mkv"),
    "mov-audio-rotated": (Spec(container="mov", audio=True, rotation=90), "mov"),
    "vfr": (Spec(vfr=True), "mp4"),
}


def ingest(raw: Path, tmp_path: Path, **overrides: object) -> Lake:
    settings = Settings(lake=str(tmp_path / "lake"), keyframes_per_clip=64, clip_seconds=5.0, **overrides)
    run_ingest(str(raw), settings, runner=LOCAL)
    return Lake.from_settings(settings)


def key_times(data: bytes, stream: int = 0) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[stream]
        pts = [(float(p.pts * s.time_base), p.is_keyframe) for p in c.demux(s) if p.size]
    t0 = min(t for t, _ in pts)
    return np.array(sorted(t - t0 for t, k in pts if k))


def shown(data: bytes) -> list[int]:
    """The frame indices a remuxed clip plays, in order."""
    with av.open(io.BytesIO(data)) as c:
        frames = sorted(c.decode(video=0), key=lambda f: f.pts)
        return [read_index(f.to_ndarray(format="rgb24")) for f in frames]


@pytest.mark.parametrize("name", list(FOOTAGE))
def test_every_keyframe_image_is_the_frame_at_its_pts(name: str, tmp_path: Path) -> None:
    spec, ext = FOOTAGE[name]
    data = encode(spec)
    raw = tmp_path / "raw"
    make_drive(raw, "car", "d1", {f"cameras/front.{ext}": data}, {"start_time": START})
    lake = ingest(raw, tmp_path)
    (drive,) = lake.read("drives").to_pylist()
    assert drive["status"] == "ok", drive
    assert drive["time_source"] == "drive_json" and drive["warnings"] == []
    truth = decoded_frames(data)  # pts -> index, every frame decoded
    times = np.array(sorted(truth))
    keys = key_times(data)
    clips = lake.read("clips").sort_by("start_time").to_pylist()
    frames = lake.read("clip_frames").to_pylist()
    assert len(clips) == 3  # 12 s in 5 s windows
    assert sum(c["duration_s"] for c in clips) == pytest.approx(times[-1] + (times[-1] - times[-2]), abs=1e-3)
    fs = lake.root.fs
    assert {c["rotation_deg"] for c in clips} == {spec.rotation}
    for clip in clips:
        lo = (clip["start_time"] - T0).total_seconds()
        hi = (clip["end_time"] - T0).total_seconds()
        mine = sorted((f for f in frames if f["clip_id"] == clip["clip_id"]), key=lambda f: f["frame_index"])
        inside = keys[(keys >= lo - 1e-6) & (keys < hi - 1e-6)]
        # Every keyframe of the clip gave its image (a clip without one: its first frame).
        assert len(mine) == max(1, len(inside)), (clip["start_time"], inside)
        for f in mine:
            t = (f["t"] - T0).total_seconds()
            nearest = times[np.argmin(np.abs(times - t))]
            assert abs(nearest - t) < 1e-5  # the row's time is a frame's pts...
            img = Image.open(io.BytesIO(f["jpeg"]))
            if spec.rotation:
                assert (img.width, img.height) == (f["width"], f["height"]) and img.height > img.width
                img = img.rotate(-spec.rotation, expand=True)
            assert read_index(img) == truth[round(float(nearest), 6)]  # ...and the image is that frame
        # The remuxed clip plays exactly the frames of its window, first one on the grid.
        played = shown(fs.cat_file(clip["video_uri"]))
        want = [truth[round(float(t), 6)] for t in times if lo - 1e-6 <= t < hi - 1e-6]
        assert played == want


def test_long_gop_without_creation_time_is_not_failed(tmp_path: Path) -> None:
    """An ordinary dashcam file: x264 defaults (B-frames, keyframe every 10 s), no
    creation_time, no drive.json: the start comes from the folder name, with a warning."""
    raw = tmp_path / "raw"
    make_drive(raw, "dashcam", "2024-06-14--17-00-00", {"cameras/front.mp4": encode(Spec(gop=250))})
    lake = ingest(raw, tmp_path)
    (drive,) = lake.read("drives").to_pylist()
    assert drive["status"] == "ok" and drive["start_time"] == T0
    assert drive["time_source"] == "folder_name"
    assert any("folder name" in w for w in drive["warnings"])
    assert lake.read("clips").num_rows == 3 and lake.read("clip_frames").num_rows == 3


def test_start_time_sources_in_order(tmp_path: Path) -> None:
    created = encode(Spec(seconds=2, metadata={"creation_time": "2023-01-02T03:04:05Z"}))
    raw = tmp_path / "raw"
    make_drive(raw, "v", "recording", {"cameras/front.mp4": created})
    make_drive(raw, "v", "plain", {"cameras/front.mp4": encode(Spec(seconds=2))})
    mtime = dt.datetime(2022, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    os.utime(raw / "v" / "plain" / "cameras" / "front.mp4", (mtime.timestamp(), mtime.timestamp()))
    lake = ingest(raw, tmp_path)
    rows = {r["drive"]: r for r in lake.read("drives").to_pylist()}
    assert rows["recording"]["time_source"] == "container"
    assert rows["recording"]["start_time"] == dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert rows["recording"]["warnings"] == []
    assert rows["plain"]["time_source"] == "mtime" and rows["plain"]["start_time"] == mtime
    assert rows["plain"]["status"] == "ok" and "modification time" in rows["plain"]["warnings"][0]
    assert all(r["clip_id"].startswith(("20230102-", "20220506-")) for r in lake.read("clips").to_pylist())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("2018-08-02--08-34-47", "2018-08-02T08:34:47+00:00"),
        ("2018-08-02--08-34-47--40", "2018-08-02T08:34:47+00:00"),
        ("20240614_170000", "2024-06-14T17:00:00+00:00"),
        ("trip_20240614T170000Z", "2024-06-14T17:00:00+00:00"),
        ("2024-06-14T17:00:00+02:00", "2024-06-14T15:00:00+00:00"),
        ("2024-06-14_17-00-00", "2024-06-14T17:00:00+00:00"),
        ("drive-7", None),
        ("20241399_250000", None),
    ],
)
def test_folder_name_times(name: str, expected: str | None) -> None:
    t = folder_time(name)
    assert (t.isoformat() if t else None) == expected


def test_start_time_order_prefers_what_the_drive_knows() -> None:
    can = int(T0.timestamp() * 1e6)
    later = T0 + dt.timedelta(days=1)
    common = {"folder": "2020-01-01--00-00-00", "mtimes": [later]}
    assert (
        resolve_start(drive_json=START, can_first_us=1, container_times=[later], **common).source
        == "drive_json"
    )
    got = resolve_start(drive_json=None, can_first_us=can, container_times=[later], **common)
    assert (got.source, got.time, got.warnings) == (TimeSource.CAN, T0, [])
    assert (
        resolve_start(drive_json=None, can_first_us=None, container_times=[later], **common).source
        == "container"
    )
    bad = resolve_start(
        drive_json="yesterday", can_first_us=None, container_times=[], has_drive_json=True, **common
    )
    assert bad.source == "folder_name" and len(bad.warnings) == 2
    # the guess says it read the name as UTC and names the sources really missing
    assert (
        "read as UTC" in bad.warnings[1] and "drive.json has no start_time, no CAN frame" in bad.warnings[1]
    )
    zoned = resolve_start(
        drive_json=None, can_first_us=None, container_times=[], folder="t_20240614T170000Z", mtimes=[]
    )
    assert "its zone as written" in zoned.warnings[0] and "no drive.json" in zoned.warnings[0]
    nothing = resolve_start(drive_json=None, can_first_us=None, container_times=[], folder="x", mtimes=[])
    assert nothing.source == "none" and nothing.warnings


def test_three_cameras_with_offsets_form_groups_in_sync(tmp_path: Path) -> None:
    fps = 25
    offsets = {"front": 0.0, "left": 0.4, "rear": 1.32}
    raw = tmp_path / "raw"
    files = {f"cameras/{cam}.mp4": encode(Spec(gop=25, seconds=11)) for cam in offsets}
    doc = {"start_time": START, "cameras": {cam: {"offset_s": off} for cam, off in offsets.items()}}
    make_drive(raw, "car", "multi", files, doc)
    lake = ingest(raw, tmp_path)
    (drive,) = lake.read("drives").to_pylist()
    assert drive["status"] == "ok", drive
    clips = lake.read("clips").to_pylist()
    groups: dict[str, list[dict[str, object]]] = {}
    for c in clips:
        groups.setdefault(str(c["group_id"]), []).append(c)
    full = [g for g in groups.values() if len(g) == 3]
    assert len(full) == 2  # windows from the moment all three record: [1.32, 6.32), [6.32, 11)
    for members in full:
        starts = [m["start_time"] for m in members]
        assert (max(starts) - min(starts)).total_seconds() <= 1 / fps + 1e-6  # type: ignore[operator]
        for m in members:
            # The clip plays, first, the frame its camera recorded at the group's start.
            first = shown(lake.root.fs.cat_file(str(m["video_uri"])))[0]
            own = (m["start_time"] - T0).total_seconds() - offsets[str(m["camera"])]  # type: ignore[operator]
            assert first == round(own * fps)
    # One sample per group, every camera's clip in it, read back by webdataset.
    from jobs.export_job import export_version
    from mining.datasets.curation import DatasetQuery, create_version

    create_version(lake, "multi", DatasetQuery(samples="group", val_fraction=0))
    doc = export_version(lake, "multi", 1)
    assert doc["num_samples"] == len(groups)
    root = lake.root.join("datasets", "multi", "1")
    urls = [root.join(s["path"]).path for s in doc["shardlist"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(groups)
    for s in samples:
        meta = json.loads(s["json"])
        cams = sorted(k[: -len(".mp4")] for k in s if k.endswith(".mp4"))
        assert (
            cams
            == sorted(c["camera"] for c in meta["cameras"])
            == sorted(str(c["camera"]) for c in groups[s["__key__"]])
        )
        assert "signals.npy" in s
    # The catalog answers whole groups.
    from api.auth import create_token
    from tests.api.conftest import serve

    token = {"Authorization": f"Bearer {create_token(lake, 'r', 'reader')}"}
    some = full[0][0]
    with serve(Settings(lake=str(tmp_path / "lake"))) as base:
        listed = httpx.get(f"{base}/v1/clips", params={"group_id": some["group_id"]}, headers=token).json()
        group = httpx.get(f"{base}/v1/clips/{some['clip_id']}/group", headers=token).json()
    assert sorted(c["camera"] for c in listed["data"]) == ["front", "left", "rear"]
    assert [c["camera"] for c in group["data"]] == ["front", "left", "rear"]
    assert {c["group_id"] for c in group["data"]} == {some["group_id"]}


def test_partial_camera_set_is_ok_with_a_warning(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    files = {"cameras/front.mp4": encode(Spec(seconds=3)), "cameras/rear.mp4": b"\x00garbage" * 999}
    make_drive(raw, "car", "d", files, {"start_time": START})
    lake = ingest(raw, tmp_path)
    (drive,) = lake.read("drives").to_pylist()
    assert drive["status"] == "ok" and drive["error"] is None
    assert len(drive["warnings"]) == 1 and drive["warnings"][0].startswith("rear: cannot open video")
    assert {c["camera"] for c in lake.read("clips").to_pylist()} == {"front"}


def test_several_video_streams_in_one_file_are_cameras(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_drive(
        raw,
        "car",
        "d",
        {"cameras/dual.mkv": encode(Spec(seconds=4, streams=2, container="matroska"))},
        {"start_time": START},
    )
    lake = ingest(raw, tmp_path)
    clips = lake.read("clips").to_pylist()
    assert sorted({c["camera"] for c in clips}) == ["dual", "dual_1"]
    by_cam = {c["camera"]: c for c in clips}
    assert by_cam["dual"]["group_id"] == by_cam["dual_1"]["group_id"]
    assert (
        shown(lake.root.fs.cat_file(by_cam["dual_1"]["video_uri"]))[0] == 1000
    )  # the second stream's frames


def test_unusable_video_without_can_fails_with_a_reason(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    noise = bytes(np.random.default_rng(1).integers(0, 256, 40_000, dtype=np.uint8))
    make_drive(raw, "car", "noise", {"cameras/front.mp4": noise}, {"start_time": START})
    make_drive(raw, "car", "empty", {"cameras/front.mp4": b""}, {"start_time": START})
    settings = Settings(lake=str(tmp_path / "lake"))
    report = run_ingest(str(raw), settings, runner=LOCAL)
    assert report.exit_code == 3 and len(report.failed) == 2
    rows = {r["drive"]: r for r in Lake.from_settings(settings).read("drives").to_pylist()}
    assert rows["noise"]["status"] == "failed" and "front: cannot open video" in rows["noise"]["error"]
    assert rows["empty"]["status"] == "failed" and rows["empty"]["error"] == "front: empty file"
    again = run_ingest(str(raw), settings, runner=LOCAL)  # content failures are not retried
    assert again.failed == [] and sorted(k for k, _ in again.still_failing) == ["car/empty", "car/noise"]
    assert again.exit_code == 0


@pytest.mark.parametrize("bframes", [0, 3])
def test_raw_h264_stream_timed_from_drive_json_fps(bframes: int, tmp_path: Path) -> None:
    fps = 25
    data = encode(Spec(container="h264", bframes=bframes, gop=fps))
    raw = tmp_path / "raw"
    make_drive(
        raw,
        "car",
        "d",
        {"cameras/front.h264": data},
        {"start_time": START, "cameras": {"front": {"fps": fps}}},
    )
    lake = ingest(raw, tmp_path)
    (drive,) = lake.read("drives").to_pylist()
    assert drive["status"] == "ok", drive
    clips = lake.read("clips").sort_by("start_time").to_pylist()
    assert [c["fps"] for c in clips] == [fps] * 3
    for f in lake.read("clip_frames").to_pylist():
        t = (f["t"] - T0).total_seconds()
        assert read_index(Image.open(io.BytesIO(f["jpeg"]))) == round(t * fps)
    if bframes == 0:  # a raw stream has no presentation times to restore B-frame order from
        for c in clips:
            lo = round((c["start_time"] - T0).total_seconds() * fps)
            hi = round((c["end_time"] - T0).total_seconds() * fps)
            assert shown(lake.root.fs.cat_file(c["video_uri"])) == list(range(lo, hi))


def test_transient_failures_are_retried_by_the_next_run(tmp_path: Path) -> None:
    """A camera file that cannot be read (here a dangling link to a staging folder inside
    the raw root, on S3 an upload still landing) fails its drive as retryable; the next run
    retries it, without --force. (A link out of the raw root is never followed.)"""
    raw = tmp_path / "raw"
    make_drive(raw, "car", "good", {"cameras/front.mp4": encode(Spec(seconds=2))}, {"start_time": START})
    drive = make_drive(raw, "car", "late", {}, {"start_time": START})
    (drive / "cameras").mkdir()
    target = raw / ".upload" / "front.mp4"  # hidden folders are not drives
    (drive / "cameras" / "front.mp4").symlink_to(target)
    settings = Settings(lake=str(tmp_path / "lake"))
    first = run_ingest(str(raw), settings, runner=LOCAL)
    assert first.exit_code == 3 and [k for k, _ in first.failed] == ["car/late"]
    lake = Lake.from_settings(settings)
    late = lake.read("drives", where="drive = 'late'").to_pylist()[0]
    assert late["status"] == "failed" and late["retryable"] and "unreadable" in late["error"]
    target.parent.mkdir()
    target.write_bytes(encode(Spec(seconds=2)))
    second = run_ingest(str(raw), settings, runner=LOCAL)
    assert second.ok == ["car/late"] and second.exit_code == 0 and second.unchanged == 1
    rows = {r["drive"]: r for r in lake.read("drives").to_pylist()}
    assert rows["late"]["status"] == "ok" and not rows["late"]["retryable"] and len(rows) == 2
    assert lake.read("clips").num_rows == 2


@pytest.mark.parametrize("container", ["mkv"])
def test_a_matroska_file_cut_short_lands_its_clips_and_says_it_was_cut(
    container: str, tmp_path: Path
) -> None:
    """Matroska keeps no frame count, only a duration: a file cut short is told
    by what its header declares against what demuxes (it was 'ok' with no word of it)."""
    codec = "libvpx-vp9" if container == "webm" else "libx264"
    fmt = {"mkv": "matroska"}.get(container, container)
    whole = encode(Spec(seconds=24.0, container=fmt, codec=codec, bframes=0 if container == "webm" else 3))
    raw = tmp_path / "raw"
    make_drive(
        raw, "dashcam", "2024-06-14--17-00-00", {f"cameras/front.{container}": whole[: len(whole) * 6 // 10]}
    )
    make_drive(raw, "dashcam", "2024-06-14--18-00-00", {f"cameras/front.{container}": whole})
    lake = ingest(raw, tmp_path)
    rows = sorted(lake.read("drives").to_pylist(), key=lambda d: d["start_time"])
    cut, full = rows
    assert cut["status"] == full["status"] == "ok"
    assert any("truncated video" in w and "of the 24.00 s its header declares" in w for w in cut["warnings"])
    assert not any("truncated" in w for w in full["warnings"])
    assert 10.0 < cut["duration_s"] < 20.0 and abs(full["duration_s"] - 24.0) < 0.1


def test_raw_hevc_is_timed_by_its_bitstream_or_fails_naming_the_key(tmp_path: Path) -> None:
    """comma's fcamera.hevc is a raw HEVC stream at 20 fps. Its rate comes from drive.json,
    else from the bitstream's timing info (never FFmpeg's 25 fps guess); a stream with
    neither fails that camera with the key to set. Clips are exactly their window: 200
    frames at 20 fps play 10.000 s (each packet lasts 1/20 s; the last one once lasted 2/3 s)."""
    fps = 20
    timed = encode(
        Spec(codec="libx265", container="hevc", fps=fps, gop=fps, bframes=0, seconds=21, width=160, height=96)
    )
    untimed = encode(
        Spec(
            codec="libx265",
            container="hevc",
            fps=fps,
            gop=fps,
            bframes=0,
            seconds=3,
            timing_info=False,
            width=160,
            height=96,
        )
    )
    raw = tmp_path / "raw"
    make_drive(raw, "car", "timed", {"cameras/road.hevc": timed}, {"start_time": START})
    make_drive(raw, "car", "untimed", {"cameras/road.hevc": untimed}, {"start_time": START})
    make_drive(
        raw,
        "car",
        "given",
        {"cameras/road.hevc": untimed},
        {"start_time": START, "cameras": {"road": {"fps": fps}}},
    )
    settings = Settings(lake=str(tmp_path / "lake"))
    run_ingest(str(raw), settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    rows = {r["drive"]: r for r in lake.read("drives").to_pylist()}
    assert rows["untimed"]["status"] == "failed"
    assert "no timing info" in rows["untimed"]["error"] and "cameras.road.fps" in rows["untimed"]["error"]
    assert rows["given"]["status"] == "ok", rows["given"]
    timed_id = rows["timed"]["drive_id"]
    clips = lake.read("clips", where=f"drive_id = '{timed_id}'").sort_by("start_time").to_pylist()
    assert [c["fps"] for c in clips] == [fps] * 3 and rows["timed"]["status"] == "ok"
    for c in clips[:2]:  # the third is the last second
        assert c["duration_s"] == pytest.approx(10.0, abs=1e-9)
        with av.open(io.BytesIO(lake.root.fs.cat_file(c["video_uri"]))) as mp4:
            s = mp4.streams.video[0]
            assert s.frames == 200 and float(s.duration * s.time_base) == pytest.approx(10.0, abs=1e-6)
            assert mp4.duration / 1e6 == pytest.approx(10.0, abs=1e-3)
        lo = round((c["start_time"] - T0).total_seconds() * fps)
        assert shown(lake.root.fs.cat_file(c["video_uri"])) == list(range(lo, lo + 200))
