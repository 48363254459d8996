"""Video ingest of a 62 s 720p H.264 drive vs one full single-threaded decode of it.

The input is made from the recorded dashcam video (looped to 62 s, scaled to
1280x720, GOP 1 s) and cached. Ours: the real ingest stage on a drive with that
camera (probe, keyframe-aligned clips remuxed, thumbnails, keyframes decoded),
in one process on one core. Baseline: ``ffmpeg -threads 1 -i F -f null -`` when
ffmpeg is installed, else the same full decode through PyAV with one thread.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import av

from ingest.discover import discover
from ingest.drive import DriveIngest
from jobs.bench import BenchContext, BenchResult, benchmark
from storage.config import Settings
from storage.lake import Lake
from storage.objectstore import Location

SOURCE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "video" / "solidWhiteRight.mp4"
SECONDS = 62


def make_720p(dest: Path) -> Path:
    """The recorded video looped to 62 s at 1280x720, H.264, GOP 25 frames (cached)."""
    key = hashlib.sha1(SOURCE.read_bytes()[:65536]).hexdigest()[:10]
    out = dest / f"dashcam-720p-{SECONDS}s-{key}.mp4"
    if out.exists():
        return out
    dest.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.mp4")
    with av.open(str(SOURCE)) as src:
        frames = [f.reformat(1280, 720, "yuv420p") for f in src.decode(video=0)]
    with av.open(str(tmp), "w") as dst:
        s = dst.add_stream("libx264", rate=25, options={"preset": "veryfast", "g": "25", "crf": "23"})
        s.width, s.height, s.pix_fmt = 1280, 720, "yuv420p"
        for i in range(SECONDS * 25):
            f = frames[i % len(frames)]
            f.pts = i
            for pkt in s.encode(f):
                dst.mux(pkt)
        for pkt in s.encode():
            dst.mux(pkt)
    tmp.rename(out)
    return out


def full_decode_baseline(path: Path) -> tuple[float, str]:
    ffmpeg = shutil.which("ffmpeg")
    t0 = time.perf_counter()
    if ffmpeg:
        subprocess.run(
            [ffmpeg, "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"], check=True
        )
        return time.perf_counter() - t0, "ffmpeg -threads 1 -f null"
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type, s.codec_context.thread_count = "NONE", 1
        for _ in c.decode(s):
            pass
    return time.perf_counter() - t0, "PyAV full decode, 1 thread (no ffmpeg CLI)"


@benchmark("video_ingest")
def video_ingest(ctx: BenchContext) -> list[BenchResult]:
    if not SOURCE.exists():
        return []
    video = make_720p(Path.home() / ".cache" / "fleetmine" / "bench")
    raw = ctx.workdir / "video_raw"
    drive = raw / "bench" / "d720"
    (drive / "cameras").mkdir(parents=True, exist_ok=True)
    shutil.copy(video, drive / "cameras" / "front.mp4")
    (drive / "drive.json").write_text(json.dumps({"start_time": "2020-01-01T00:00:00Z"}))
    (src,) = discover(Location(str(raw)))
    repeats = 1 if ctx.quick else 3
    ours, base, label = float("inf"), float("inf"), ""
    for i in range(repeats):
        lake = Lake(str(ctx.workdir / f"video_lake{i}"))
        lake.create_tables(["clips", "clip_frames", "can_frames", "signals"])
        stage = DriveIngest(lake, Settings(lake=lake.uri), f"bench-{i}")
        stage.setup()
        t0 = time.perf_counter()
        result = stage.process(src)
        ours = min(ours, time.perf_counter() - t0)
        assert result.ok and result.counts["clips"] >= 6, result.row
        b, label = full_decode_baseline(video)
        base = min(base, b)
    return [
        BenchResult(
            name=f"video ingest 720p H.264 {SECONDS}s (wall, 1 core)",
            measured=ours,
            baseline=base,
            unit="s",
            baseline_name=label,
            goal="<= 0.25",
            higher_is_better=False,
        ),
        BenchResult(
            name="video ingest realtime factor per core",
            measured=SECONDS / ours,
            baseline=SECONDS / base,
            unit="x realtime",
            baseline_name="full decode " + label,
            goal=">= 4",
        ),
    ]
