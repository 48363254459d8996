"""Text-image encoders a team supplies (``--text-image FOLDER``, repeatable): what one worker
slot embeds per second on one core, next to decoding the same JPEG keyframes alone (as the
``encoders`` benchmark measures the builtin and EfficientNet-Lite0), and what one text query
costs to embed. fleetmine ships no such weights and downloads nothing, so without a folder
the rows say "not measured".

Each folder is registered in a scratch lake exactly as ``fleetmine model register --kind
text-image`` does (its sides cut and checked), then run on the ``encoders`` benchmark's
synthetic keyframes (398 x 224, 4 per clip).
"""

from __future__ import annotations

import math
import time

from fleetmine.bench import BenchContext, BenchResult, benchmark
from fleetmine.bench.encoders import KEYFRAMES, _clips, _clips_per_s, _jpeg_decode_per_s

PROMPTS = [
    "a pedestrian waving at the car",
    "night, heavy rain",
    "a construction zone",
    "a red traffic light",
]


@benchmark("text-image")
def text_image(ctx: BenchContext) -> list[BenchResult]:
    if not ctx.text_image:
        return [
            BenchResult(
                "text-image encoder: not measured (no folder given: --text-image EXPORT_FOLDER)",
                math.nan,
                math.nan,
                "clips/s",
                "JPEG decode alone",
                "",
            )
        ]
    from mining.encoders import make_encoder
    from mining.encoders.registry import register
    from mining.encoders.text_image import TextImageEncoder
    from storage.lake import Lake

    clips = _clips(8 if ctx.quick else 32)
    base = _jpeg_decode_per_s(clips)
    lake = Lake(str(ctx.workdir / "text-image-lake"))
    out = []
    for i, folder in enumerate(ctx.text_image):
        spec = register(lake, f"bench-{i}", "text-image", folder)
        enc = make_encoder(spec)
        assert isinstance(enc, TextImageEncoder)
        enc.setup()
        per_s = _clips_per_s(enc, clips, batch=16)
        enc.embed_text(PROMPTS[:1])  # warm-up
        t0 = time.perf_counter()
        rounds = 3 if ctx.quick else 10
        for _ in range(rounds):
            for p in PROMPTS:
                enc.embed_text([p])
        text_ms = (time.perf_counter() - t0) * 1000 / (rounds * len(PROMPTS))
        h, w = spec.params["image"]["crop"] or spec.params["image"]["resize_to"] or [0, 0]
        label = f"{folder.rstrip('/').rsplit('/', 1)[-1]} ({spec.dim}-d, {h} x {w} px)"
        out.append(
            BenchResult(
                f"text-image {label}, {KEYFRAMES} keyframes per clip, 1 core "
                f"({1000 / (per_s * KEYFRAMES):.1f} ms/keyframe; a text query {text_ms:.1f} ms)",
                per_s,
                base,
                "clips/s",
                "JPEG decode alone",
                "",
            )
        )
    return out
