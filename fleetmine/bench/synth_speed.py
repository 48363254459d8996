"""Synth speed: one 1-minute drive rendered and encoded on one core, as x realtime.

Baseline: libx264 with the same settings encoding the same number of frames of
a still image (the encoder's share of the work, no rendering, no CAN).
"""

from __future__ import annotations

import time

import av
import numpy as np

from fleetmine.bench import BenchContext, BenchResult, benchmark
from ingest.synth.fleet import SynthConfig, plan_drives, render_drive


@benchmark("synth_speed")
def synth_speed(ctx: BenchContext) -> list[BenchResult]:
    minutes = 0.5 if ctx.quick else 1.0
    cfg = SynthConfig(vehicles=1, drives=1, minutes=minutes, seed=0, rare_rate=0.1, duplicates=0, workers=1)
    (job,) = plan_drives(cfg)
    t0 = time.perf_counter()
    info = render_drive(str(ctx.workdir / "synth"), job, cfg)
    ours = time.perf_counter() - t0
    frames = int(info["frames"])  # type: ignore[call-overload]
    still = np.full((cfg.height, cfg.width, 3), 90, np.uint8)
    t0 = time.perf_counter()
    with av.open(str(ctx.workdir / "still.mp4"), "w") as c:
        s = c.add_stream(
            "libx264", rate=cfg.fps, options={"preset": "ultrafast", "crf": "23", "threads": "1"}
        )
        s.width, s.height, s.pix_fmt = cfg.width, cfg.height, "yuv420p"
        for k in range(frames):
            f = av.VideoFrame.from_ndarray(still, format="rgb24").reformat(format="yuv420p")
            f.pts = k
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    base = time.perf_counter() - t0
    seconds = minutes * 60
    return [
        BenchResult(
            name=f"synth {cfg.width}x{cfg.height}@{cfg.fps} video + CAN, 1 core",
            measured=seconds / ours,
            baseline=seconds / base,
            unit="x realtime",
            baseline_name="x264 encode of a still image",
            goal=">= 6.5",
            goal_on_measured=True,
        )
    ]
