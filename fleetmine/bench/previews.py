"""Browser previews: the H.264 preview of an HEVC clip vs the remux that cuts the clip.

Input: a raw HEVC stream as a comma device records its road camera (1164x874, 20 fps,
1 s GOP, no B-frames), made from the recorded dashcam video scaled to that size. Ours:
``ingest.preview.preview_mp4`` on each 10 s clip (every shown frame decoded, scaled to
480p, x264-encoded). Baseline: ``ingest.video.clip_media`` cutting the same clip (packet
copy and its keyframes decoded), what ingest pays per clip without a preview. The ratio is
what a preview adds per clip, in the same run on the same clips.
"""

from __future__ import annotations

import time

import av

from fleetmine.bench import BenchContext, BenchResult, benchmark
from fleetmine.bench.video_ingest import SOURCE
from ingest.preview import preview_mp4
from ingest.video import ClipCut, clip_media, from_bytes, probe

W, H, FPS = 1164, 874, 20


def _hevc(seconds: int) -> bytes:
    import io

    with av.open(str(SOURCE)) as src:
        frames = [f.reformat(W, H, "yuv420p") for f in src.decode(video=0)]
    buf = io.BytesIO()
    with av.open(buf, "w", format="hevc") as dst:
        s = dst.add_stream(
            "libx265",
            rate=FPS,
            options={
                "preset": "ultrafast",
                "x265-params": f"keyint={FPS}:min-keyint={FPS}:bframes=0:log-level=error",
            },
        )
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(seconds * FPS):
            f = frames[i % len(frames)]
            f.pts = i
            for pkt in s.encode(f):
                dst.mux(pkt)
        for pkt in s.encode():
            dst.mux(pkt)
    return buf.getvalue()


@benchmark("previews")
def previews(ctx: BenchContext) -> list[BenchResult]:
    clips = 1 if ctx.quick else 3
    data = _hevc(10 * clips)
    src = from_bytes(data)
    p = probe(src, ".hevc", FPS)
    cuts = [ClipCut(i, 10.0 * i, 10.0 * (i + 1)) for i in range(clips)]
    t0 = time.perf_counter()
    mp4s = [clip_media(src, ".hevc", p, c).mp4 for c in cuts]
    remux = (time.perf_counter() - t0) / clips
    t0 = time.perf_counter()
    sizes = [len(preview_mp4(m)) for m in mp4s]
    ours = (time.perf_counter() - t0) / clips
    kbit_s = sum(sizes) * 8 / 1000 / (10.0 * clips)
    return [
        BenchResult(
            name=f"H.264 480p preview of a 10 s {W}x{H}@{FPS} HEVC clip ({kbit_s:.0f} kbit/s)",
            measured=ours,
            baseline=remux,
            unit="s per clip",
            baseline_name="cutting the clip (remux + keyframes)",
            goal="",
            higher_is_better=False,
        )
    ]
