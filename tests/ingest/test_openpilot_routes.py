"""openpilot routes as comma devices record them, built at test time: two segments of a
route (raw HEVC road and wide cameras written with PyAV/x265, an rlog with CAN events
through opendbc's rlog.capnp and the encode-index events with real jitter), and a
qlog-only route in the ``<dongle_id>|<route>--<n>`` layout."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from tests.conftest import LOCAL
from tests.ingest.openpilot_logs import can_events, candump_frames, event, log_file
from tests.ingest.videos import Spec, encode, read_index

DONGLE = "a2a0ccea32023010"
ROUTE = "2023-07-27--13-01-19"  # local time on the device: never read as the drive's time
FPS, SEG_S = 20, 12  # segments of 12 s here (60 s on a device): the times come from the logs
BOOT = 5_000_000_000_000  # ns on the device's boot clock when the route began
WALL = int(dt.datetime(2023, 7, 27, 20, 41, 19, 250_000, tzinfo=dt.UTC).timestamp() * 1e9)
CAMS = {"road": ("fcamera.hevc", "roadEncodeIdx", 0), "wide": ("ecamera.hevc", "wideRoadEncodeIdx", 1000)}
DAY = 86_400 * 10**9  # the qlog-only route is a day later


def _sof(cam: str, k: int) -> int:
    """Start of frame k of a camera, boot clock (ns): 50 ms apart with -1.2..+0.8 ms of jitter."""
    jitter = np.random.default_rng([k, len(cam)]).uniform(-1.2e6, 0.8e6)
    return BOOT + k * 50_000_000 + int(jitter) + (3_000_000 if cam == "wide" else 0)


def _wall_s(cam: str, k: int) -> float:
    return (_sof(cam, k) - BOOT + WALL) / 1e9


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Lake, int, Path]:
    raw = tmp_path_factory.mktemp("op") / "raw"
    log = (shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes()
    frames, _ = candump_frames(log, BOOT)
    written = 0
    for seg in (0, 1):
        folder = raw / DONGLE / f"{ROUTE}--{seg}"
        folder.mkdir(parents=True)
        per = SEG_S * FPS
        evs = [event(BOOT + seg * SEG_S * 10**9, clocks={"wallTimeNanos": WALL + seg * SEG_S * 10**9})]
        evs.append(event(BOOT, carParams={"brand": "toyota", "carFingerprint": "TOYOTA_RAV4"}))
        for cam, (name, member, base) in CAMS.items():
            spec = Spec(codec="libx265", container="hevc", fps=FPS, gop=FPS, bframes=0, seconds=SEG_S)
            spec = Spec(**{**spec.__dict__, "width": 160, "height": 96, "first_index": base + seg * per})
            (folder / name).write_bytes(encode(spec))
            for i in range(per):
                idx = {
                    "frameId": seg * per + i,
                    "segmentNum": seg,
                    "segmentId": i,
                    "timestampSof": _sof(cam, seg * per + i),
                }
                evs.append(event(_sof(cam, seg * per + i) + 20_000_000, **{member: idx}))
        mine = [f for f in frames if seg * SEG_S * 10**9 <= f[0] - BOOT < (seg + 1) * SEG_S * 10**9]
        written += len(mine)
        evs += can_events(mine)
        # qcamera.ts: the road camera again, H.264 in MPEG-TS (here its frames show index + 2000)
        q_spec = Spec(container="mpegts", fps=FPS, gop=FPS, bframes=0, seconds=SEG_S, width=160, height=96)
        (folder / "qcamera.ts").write_bytes(
            encode(Spec(**{**q_spec.__dict__, "first_index": 2000 + seg * per}))
        )
        for i in range(per):
            idx = {
                "frameId": seg * per + i,
                "segmentNum": seg,
                "segmentId": i,
                "timestampSof": _sof("road", seg * per + i),
            }
            evs.append(event(_sof("road", seg * per + i) + 20_000_000, qRoadEncodeIdx=idx))
        (folder / "rlog.zst").write_bytes(log_file(evs, "zst"))
    # What devices upload by default: qlogs and qcamera.ts (H.264 in MPEG-TS), in the | layout.
    q_frames = frames[:5000]
    for seg in (0, 1):
        q = raw / f"{DONGLE}|2023-07-28--09-00-00--{seg}"
        q.mkdir(parents=True)
        per = SEG_S * FPS
        spec = Spec(container="mpegts", fps=FPS, gop=FPS, bframes=0, seconds=SEG_S, width=160, height=96)
        (q / "qcamera.ts").write_bytes(encode(Spec(**{**spec.__dict__, "first_index": seg * per})))
        evs = [event(BOOT + seg * SEG_S * 10**9, clocks={"wallTimeNanos": WALL + DAY + seg * SEG_S * 10**9})]
        for i in range(per):
            k = seg * per + i
            idx = {"frameId": k, "segmentNum": seg, "segmentId": i, "timestampSof": _sof("qcamera", k)}
            evs.append(event(_sof("qcamera", k) + 20_000_000, qRoadEncodeIdx=idx))
        (q / "qlog.zst").write_bytes(log_file([*evs, *can_events(q_frames if seg == 0 else [])], "zst"))
    settings = Settings(lake=str(raw.parent / "lake"), clip_seconds=10.0, keyframes_per_clip=64)
    assert run_ingest(str(raw), settings, runner=LOCAL).exit_code == 0
    return Lake.from_settings(settings), written, raw


def test_the_segments_of_a_route_are_one_drive_with_every_can_frame(routes: tuple[Lake, int, Path]) -> None:
    lake, written, _ = routes
    drives = {r["drive"]: r for r in lake.read("drives").to_pylist()}
    assert set(drives) == {ROUTE, "2023-07-28--09-00-00"}
    d = drives[ROUTE]
    assert d["status"] == "ok" and d["vehicle_id"] == DONGLE, d
    assert d["time_source"] == "can"  # from the log's clocks, not the folder name's local time
    assert abs(d["start_time"].timestamp() - WALL / 1e9) < 0.05
    frames = lake.read("can_frames", where=f"drive_id = '{d['drive_id']}'")
    assert frames.num_rows == written > 1000
    assert d["platform"] == "toyota_rav4_2017"  # the car the logs' carParams name
    sig = lake.read("signals", where=f"drive_id = '{d['drive_id']}'")
    assert sig.num_rows > 300 and sig.column("speed_mps").drop_null().to_pylist()
    q = drives["2023-07-28--09-00-00"]
    assert q["status"] == "ok" and q["vehicle_id"] == DONGLE
    assert lake.read("can_frames", where=f"drive_id = '{q['drive_id']}'").num_rows == 5000


def test_a_qlog_only_route_gives_its_qcamera_at_the_encode_index_times(
    routes: tuple[Lake, int, Path],
) -> None:
    """qlog + qcamera.ts, what comma devices upload by default: the road camera at low
    resolution (MPEG-TS, each segment's file on its own clock) stitched and timed from
    the qRoadEncodeIdx events, a clip across the segment boundary whole."""
    lake, _, _ = routes
    (q,) = lake.read("drives", where="drive = '2023-07-28--09-00-00'").to_pylist()
    clips = lake.read("clips", where=f"drive_id = '{q['drive_id']}'").sort_by("start_time").to_pylist()
    assert [c["camera"] for c in clips] == ["qcamera"] * 3 and {c["codec"] for c in clips} == {"h264"}
    assert all(c["preview_uri"] is None for c in clips)  # H.264 plays as it is
    across = clips[1]
    with av.open(io.BytesIO(lake.root.fs.cat_file(across["video_uri"]))) as c:
        decoded = sorted(c.decode(video=0), key=lambda f: f.pts)
        shown = [read_index(f.to_ndarray(format="rgb24")) for f in decoded]
        at = [float(f.pts * f.time_base) for f in decoded]
    assert shown == list(range(shown[0], shown[0] + len(shown))) and shown[0] < SEG_S * FPS <= shown[-1]
    t0 = across["start_time"].timestamp()
    assert max(abs(t0 + a - _wall_s("qcamera", k) - DAY / 1e9) for a, k in zip(at, shown, strict=True)) < 1e-3


def test_every_frame_is_at_its_encode_index_time(routes: tuple[Lake, int, Path]) -> None:
    lake, _, _ = routes
    (d,) = lake.read("drives", where=f"drive = '{ROUTE}'").to_pylist()
    clips = {c["clip_id"]: c for c in lake.read("clips", where=f"drive_id = '{d['drive_id']}'").to_pylist()}
    rows = lake.read("clip_frames", where=f"dense = false AND drive_id = '{d['drive_id']}'").to_pylist()
    assert len(rows) > 40
    for f in rows:
        cam = clips[f["clip_id"]]["camera"]
        k = read_index(Image.open(io.BytesIO(f["jpeg"]))) - CAMS[cam][2]
        assert abs(f["t"].timestamp() - _wall_s(cam, k)) < 2e-5, (cam, k)  # the index's time, not 50 ms steps


def test_clips_span_the_segment_boundary_whole_and_cameras_share_their_windows(
    routes: tuple[Lake, int, Path],
) -> None:
    lake, _, _ = routes
    (d,) = lake.read("drives", where=f"drive = '{ROUTE}'").to_pylist()
    clips = lake.read("clips", where=f"drive_id = '{d['drive_id']}'").sort_by("start_time").to_pylist()
    road = [c for c in clips if c["camera"] == "road"]
    wide = [c for c in clips if c["camera"] == "wide"]
    assert len(road) == len(wide) >= 2
    assert [c["group_id"] for c in road] == [c["group_id"] for c in wide]
    across = road[1]  # 10..20 s: the boundary at 12 s inside
    with av.open(io.BytesIO(lake.root.fs.cat_file(across["video_uri"]))) as c:
        decoded = sorted(c.decode(video=0), key=lambda f: f.pts)
        shown = [read_index(f.to_ndarray(format="rgb24")) for f in decoded]
        at = [float(f.pts * f.time_base) for f in decoded]
    # every frame of the clip plays at its own encode-index time (to the mp4's 1/90000 s)
    t0 = across["start_time"].timestamp()
    assert max(abs(t0 + a - _wall_s("road", k)) for a, k in zip(at, shown, strict=True)) < 1e-3
    per = SEG_S * FPS
    assert shown == list(range(shown[0], shown[0] + len(shown))) and 199 <= len(shown) <= 201
    assert shown[0] < per <= shown[-1]  # frames of both segments' files, in order, none lost
    assert abs(across["start_time"].timestamp() - _wall_s("road", shown[0])) < 0.05


def test_the_same_routes_from_s3_give_the_same_drives(
    routes: tuple[Lake, int, Path],
    s3_bucket: str,
    s3_options: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from storage.objectstore import Location

    local, _, raw = routes
    remote = Location(f"s3://{s3_bucket}/op-raw", s3_options)
    remote.fs.put(str(raw) + "/", remote.path, recursive=True)
    for k, v in s3_options.items():
        monkeypatch.setenv(k, v)
    settings = Settings(lake=str(tmp_path / "lake"), clip_seconds=10.0, keyframes_per_clip=64)
    assert run_ingest(remote.uri, settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    cols = ["drive_id", "vehicle_id", "drive", "start_time", "status", "duration_s"]
    assert (
        lake.read("drives", columns=cols)
        .sort_by("drive_id")
        .equals(local.read("drives", columns=cols).sort_by("drive_id"))
    )
    frames = ["clip_id", "frame_index", "t"]
    assert (
        lake.read("clip_frames", columns=frames)
        .sort_by([("clip_id", "ascending"), ("frame_index", "ascending")])
        .equals(
            local.read("clip_frames", columns=frames).sort_by(
                [("clip_id", "ascending"), ("frame_index", "ascending")]
            )
        )
    )


def test_comma2k19_segments_ingest_with_the_frame_times_they_ship(tmp_path: Path, shared_data: Path) -> None:
    """comma2k19's layout (``Chunk_k/<dongle_id>|<route>/<n>/``: video.hevc, raw_log.bz2,
    global_pose/frame_times, processed_log/...): one drive per route; the road camera's
    frames at the frame_times it ships (boot seconds) on the log's wall clock, the 2018
    encode index (no start-of-frame times) not taken for them; the platform from its
    carParams' 2018 fingerprint; processed_log/ named once as not read."""
    dongle, route = "b0c9d2329ad1606b", "2018-08-02--08-34-47"
    log = (shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes()
    frames, _ = candump_frames(log, BOOT)
    per, seg_s = 6 * FPS, 6
    rng = np.random.default_rng(7)
    expected: dict[int, float] = {}
    written = 0
    for j, seg in enumerate((40, 41)):
        folder = tmp_path / "raw" / "Chunk_1" / f"{dongle}|{route}" / str(seg)
        (folder / "global_pose").mkdir(parents=True)
        (folder / "processed_log" / "CAN" / "speed").mkdir(parents=True)
        spec = Spec(codec="libx265", container="hevc", fps=FPS, gop=FPS, bframes=0, seconds=seg_s)
        (folder / "video.hevc").write_bytes(
            encode(Spec(**{**spec.__dict__, "width": 160, "height": 96, "first_index": j * per}))
        )
        boot_s = (BOOT / 1e9) + (j * per + np.arange(per)) / FPS + rng.uniform(-0.0012, 0.0008, per)
        buf = io.BytesIO()
        np.save(buf, boot_s)
        (folder / "global_pose" / "frame_times").write_bytes(buf.getvalue())
        expected.update({j * per + i: t - BOOT / 1e9 + WALL / 1e9 for i, t in enumerate(boot_s)})
        for name in ("t", "value"):
            (folder / "processed_log" / "CAN" / "speed" / name).write_bytes(b"\x93NUMPY")
        (folder / "preview.png").write_bytes(b"\x89PNG")
        evs = [
            event(BOOT, initData={"wallTimeNanos": WALL}),
            event(BOOT, carParams={"carFingerprint": "TOYOTA RAV4 2017"}),
            *(event(BOOT + i, roadEncodeIdx={"segmentNum": seg, "segmentId": i}) for i in range(per)),
        ]
        mine = [f for f in frames if j * seg_s * 10**9 <= f[0] - BOOT < (j + 1) * seg_s * 10**9]
        written += len(mine)
        (folder / "raw_log.bz2").write_bytes(log_file([*evs, *can_events(mine)], "bz2"))
    settings = Settings(lake=str(tmp_path / "lake"), clip_seconds=5.0, keyframes_per_clip=64)
    assert run_ingest(str(tmp_path / "raw"), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    (d,) = lake.read("drives").to_pylist()
    assert (d["vehicle_id"], d["drive"], d["status"], d["platform"]) == (
        dongle,
        route,
        "ok",
        "toyota_rav4_2017",
    )
    assert lake.read("can_frames").num_rows == written
    assert len([w for w in d["warnings"] if w.startswith("processed_log/ (4 files")]) == 1, d["warnings"]
    rows = lake.read("clip_frames", where="dense = false").to_pylist()
    assert len(rows) >= 12
    for f in rows:
        k = read_index(Image.open(io.BytesIO(f["jpeg"])))
        assert abs(f["t"].timestamp() - expected[k]) < 2e-5, k
    # Hostile shipped times: a NaN in segment 41's frame_times is refused with a warning and
    # that segment is timed at the rate; nothing is lost.
    bad = np.load(
        io.BytesIO(
            (
                tmp_path / "raw" / "Chunk_1" / f"{dongle}|{route}" / "41" / "global_pose" / "frame_times"
            ).read_bytes()
        )
    )
    bad[3] = np.nan
    buf = io.BytesIO()
    np.save(buf, bad)
    (tmp_path / "raw" / "Chunk_1" / f"{dongle}|{route}" / "41" / "global_pose" / "frame_times").write_bytes(
        buf.getvalue()
    )
    assert run_ingest(str(tmp_path / "raw"), settings, runner=LOCAL).exit_code == 0
    (nan,) = lake.read("drives").to_pylist()
    assert nan["status"] == "ok" and any("times are not finite" in w for w in nan["warnings"]), nan[
        "warnings"
    ]
    played = []  # every frame still in exactly one clip (segment 41 now at its minute: a gap)
    for c in lake.read("clips").to_pylist():
        with av.open(io.BytesIO(lake.root.fs.cat_file(c["video_uri"]))) as mp4:
            played += [read_index(f.to_ndarray(format="rgb24")) for f in mp4.decode(video=0)]
    lost = sorted(set(range(2 * per)) - set(played))
    # none inside the route (the window after the gap is kept however short); only a last
    # window under min_clip_s (1 s) at the camera's very end may go, as for any camera
    assert sorted(played) == sorted(set(played)) and lost == list(range(2 * per - len(lost), 2 * per))
    assert len(lost) < FPS, lost
    # ... and never silently: the drive's warnings say how much of its edge is in no clip
    edges = [w for w in nan["warnings"] if "in no clip (an edge of the drive shorter than 1 s)" in w]
    assert len(edges) == (1 if lost else 0), nan["warnings"]
    # A drive.json in one of the route's segment folders is the route's: its platform wins.
    seg41 = tmp_path / "raw" / "Chunk_1" / f"{dongle}|{route}" / "41"
    (seg41 / "drive.json").write_text('{"platform": "fleetmine_synth"}')
    assert run_ingest(str(tmp_path / "raw"), settings, runner=LOCAL).exit_code == 0
    (again,) = lake.read("drives").to_pylist()
    assert again["platform"] == "fleetmine_synth" and again["drive_id"] == d["drive_id"]


def test_the_road_cameras_preview_is_its_qcamera_cut_on_the_same_window(
    routes: tuple[Lake, int, Path],
) -> None:
    """A route with qcamera.ts: the HEVC road camera's browser preview is the qcamera's
    H.264 cut on the same window (a packet copy), not a transcode; qcamera gives no clips
    of its own. The wide camera, with no such copy, gets a transcoded preview."""
    lake, _, _ = routes
    (d,) = lake.read("drives", where=f"drive = '{ROUTE}'").to_pylist()
    clips = lake.read("clips", where=f"drive_id = '{d['drive_id']}'").sort_by("start_time").to_pylist()
    assert {c["camera"] for c in clips} == {"road", "wide"}
    fs = lake.root.fs
    for c in clips:
        assert c["preview_uri"], c
        with av.open(io.BytesIO(fs.cat_file(c["preview_uri"]))) as mp4:
            s = mp4.streams.video[0]
            shown = [
                read_index(f.to_ndarray(format="rgb24")) for f in sorted(mp4.decode(s), key=lambda f: f.pts)
            ]
            assert s.codec_context.name == "h264"
        with av.open(io.BytesIO(fs.cat_file(c["video_uri"]))) as mp4:
            original = [
                read_index(f.to_ndarray(format="rgb24"))
                for f in sorted(mp4.decode(video=0), key=lambda f: f.pts)
            ]
        if c["camera"] == "road":  # the qcamera's frames of the window: the road's indices + 2000
            assert shown == [k + 2000 for k in original], (shown[:3], original[:3])
        else:
            assert shown == original


def test_a_missing_segment_is_a_gap_with_a_warning(tmp_path: Path) -> None:
    """Segments 0 and 2 of a route, 1 never uploaded: one drive, a warning naming segment
    1, and the frames of segment 2 at their own times (12 s after segment 0 ended), so no
    clip holds frames from both sides of the gap."""
    per = SEG_S * FPS
    for seg in (0, 2):
        folder = tmp_path / "raw" / DONGLE / f"{ROUTE}--{seg}"
        folder.mkdir(parents=True)
        spec = Spec(codec="libx265", container="hevc", fps=FPS, gop=FPS, bframes=0, seconds=SEG_S)
        (folder / "fcamera.hevc").write_bytes(
            encode(Spec(**{**spec.__dict__, "width": 160, "height": 96, "first_index": seg * per}))
        )
        evs = [event(BOOT + seg * SEG_S * 10**9, clocks={"wallTimeNanos": WALL + seg * SEG_S * 10**9})]
        for i in range(per):
            k = seg * per + i
            idx = {"segmentNum": seg, "segmentId": i, "timestampSof": _sof("road", k)}
            evs.append(event(_sof("road", k), roadEncodeIdx=idx))
        (folder / "rlog.zst").write_bytes(log_file(evs, "zst"))
    settings = Settings(lake=str(tmp_path / "lake"), clip_seconds=10.0, previews=False)
    assert run_ingest(str(tmp_path / "raw"), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    (d,) = lake.read("drives").to_pylist()
    assert d["status"] == "ok" and any("segments 1 missing" in w for w in d["warnings"]), d["warnings"]
    for c in lake.read("clips").to_pylist():
        with av.open(io.BytesIO(lake.root.fs.cat_file(c["video_uri"]))) as mp4:
            shown = [read_index(f.to_ndarray(format="rgb24")) for f in mp4.decode(video=0)]
        assert all(k < per for k in shown) or all(k >= 2 * per for k in shown), shown  # never across the gap
    assert d["duration_s"] == pytest.approx(3 * SEG_S, abs=0.1)  # the gap is in the drive's time
