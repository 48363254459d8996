"""Encoders: clips/s on one core, each next to decoding the same JPEG keyframes alone.

The clips are synthetic road scenes (the synth renderer at the keyframe size ingest
stores, 398 x 224), 4 keyframes each, with signal features. Every encoder embeds the
same clips under the resources it asks Ray for (one CPU: onnxruntime on one thread),
so a figure is what one worker slot delivers. The learned encoder is
EfficientNet-Lite0 as ``fleetmine model import`` converts it, in a scratch lake.
"""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from fleetmine.bench import BenchContext, BenchResult, benchmark
from mining.encoders import make_encoder
from mining.interfaces import ClipInput, Encoder, ModelSpec

KEYFRAMES = 4


def _clips(n: int) -> list[ClipInput]:
    from ingest.synth.render import Look, Renderer
    from ingest.synth.scenario import simulate

    st = simulate(np.random.default_rng(0), 60, {2: "cut_in"})
    renderer = Renderer(398, 224, Look("day"), 0)
    clips = []
    for c in range(n):
        jpegs = []
        for k in range(KEYFRAMES):
            buf = io.BytesIO()
            Image.fromarray(renderer.frame(st, (c * 40 + k * 300) % 6000)).save(
                buf, format="JPEG", quality=85
            )
            jpegs.append(buf.getvalue())
        features = {
            "speed_mean": 12.0,
            "max_decel_mps2": float(c % 5),
            "events": ["hard_brake"] if c % 7 else [],
        }
        clips.append(ClipInput(f"c{c}", jpegs, features))
    return clips


def _clips_per_s(enc: Encoder, clips: list[ClipInput], batch: int = 64) -> float:
    enc.process_batch(clips[:1])  # warm-up: first-run allocations are not throughput
    t0 = time.perf_counter()
    for i in range(0, len(clips), batch):
        enc.process_batch(clips[i : i + batch])
    return len(clips) / (time.perf_counter() - t0)


def _jpeg_decode_per_s(clips: list[ClipInput]) -> float:
    t0 = time.perf_counter()
    for clip in clips:
        for j in clip.jpegs:
            Image.open(io.BytesIO(j)).convert("RGB").load()
    return len(clips) / (time.perf_counter() - t0)


def _learned(ctx: BenchContext) -> tuple[str, ModelSpec]:
    from mining.encoders.pretrained import import_pretrained
    from storage.lake import Lake

    lake = Lake(str(ctx.workdir / "encoders-lake"))
    spec, _ = import_pretrained(lake, "efficientnet-lite0")
    return f"{spec.name} encoder ({spec.dim}-d clip vectors)", spec


@benchmark("encoders")
def encoders(ctx: BenchContext) -> list[BenchResult]:
    from mining.encoders.builtin import DIM as BUILTIN_DIM

    builtin_clips = _clips(40 if ctx.quick else 200)
    builtin = make_encoder(ModelSpec("builtin-motion", 1, "builtin", None, BUILTIN_DIM))
    builtin.setup()
    ours = _clips_per_s(builtin, builtin_clips)
    base = _jpeg_decode_per_s(builtin_clips)  # the same keyframes both encoders decode
    label, spec = _learned(ctx)
    learned_clips = builtin_clips[: 12 if ctx.quick else 64]
    learned = make_encoder(spec)
    learned.setup()
    lrn = _clips_per_s(learned, learned_clips)
    per_frame = f"{1000 / (lrn * KEYFRAMES):.1f} ms/keyframe"
    return [
        BenchResult(
            f"builtin encoder, {KEYFRAMES} keyframes per clip, 1 core",
            ours,
            base,
            "clips/s",
            "JPEG decode alone",
            ">= 0.2",
        ),
        BenchResult(  # context for sizing (fleetmine/bench/sizing.py reads it); no goal: a CNN is no decode
            f"{label}, {KEYFRAMES} keyframes per clip, 1 core ({per_frame})",
            lrn,
            base,
            "clips/s",
            "JPEG decode alone",
            "",
        ),
    ]
