"""Test videos made with PyAV/x264/x265 at test time, each frame carrying its own index.

Every frame shows its index as a 4x4 grid of black/white blocks (16 bits) that
survive scaling and JPEG, so a test can tell which frame an image holds.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

GRID = 4


def frame_image(index: int, width: int, height: int) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    bh, bw = height // GRID, width // GRID
    for bit in range(GRID * GRID):
        if index >> bit & 1:
            r, c = divmod(bit, GRID)
            img[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = 255
    return img


def read_index(img: np.ndarray | Image.Image) -> int:
    """The index a frame (or a scaled JPEG of it) shows. An RGB array's blocks are averaged
    over their channels too (the mean of the channels' mean, without making a grey frame)."""
    a = np.asarray(img.convert("L") if isinstance(img, Image.Image) else img)
    h, w = a.shape[:2]
    bh, bw = h / GRID, w / GRID
    index = 0
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        block = a[
            int(r * bh + bh / 4) : int((r + 1) * bh - bh / 4),
            int(c * bw + bw / 4) : int((c + 1) * bw - bw / 4),
        ]
        if block.mean() > 127:
            index |= 1 << bit
    return index


@dataclass
class Spec:
    seconds: float = 12.0
    fps: int = 25
    gop: int = 25
    codec: str = "libx264"
    container: str = "mp4"
    width: int = 320
    height: int = 240
    bframes: int = 3
    first_index: int = 0
    vfr: bool = False  # every 7th frame held twice as long
    audio: bool = False
    rotation: int = 0
    streams: int = 1
    metadata: dict[str, str] = field(default_factory=dict)
    timing_info: bool = True  # x265: the frame rate in the bitstream (VUI); a raw stream has no other


def encode(spec: Spec) -> bytes:
    buf = io.BytesIO()
    out = av.open(buf, "w", format=spec.container)
    for k, v in spec.metadata.items():
        out.metadata[k] = v
    tb = Fraction(1, spec.fps * 2)
    vs = []
    for _ in range(spec.streams):
        s = out.add_stream(spec.codec, rate=spec.fps)
        s.width, s.height, s.pix_fmt = spec.width, spec.height, "yuv420p"
        s.time_base = tb
        s.codec_context.time_base = tb
        s.codec_context.gop_size = spec.gop
        s.codec_context.max_b_frames = spec.bframes
        if spec.codec == "libx264":
            s.codec_context.options = {
                "preset": "veryfast",
                "x264-params": f"scenecut=0:bframes={spec.bframes}",
            }
        elif spec.codec == "libx265":
            s.codec_context.options = {
                "preset": "ultrafast",
                "x265-params": f"scenecut=0:bframes={spec.bframes}:keyint={spec.gop}:min-keyint={spec.gop}"
                ":log-level=error" + ("" if spec.timing_info else ":vui-timing-info=0:vui-hrd-info=0"),
            }
        if spec.rotation:
            s.set_display_rotation(spec.rotation)
        vs.append(s)
    audio = None
    if spec.audio:
        audio = out.add_stream("aac", rate=48000)
    n = int(spec.seconds * spec.fps)
    pts = 0
    for i in range(n):
        for j, s in enumerate(vs):
            f = av.VideoFrame.from_ndarray(
                frame_image(spec.first_index + i + 1000 * j, spec.width, spec.height), format="rgb24"
            )
            f.pts = pts
            f.time_base = tb
            for p in s.encode(f):
                out.mux(p)
        pts += 4 if spec.vfr and i % 7 == 6 else 2
    for s in vs:
        for p in s.encode():
            out.mux(p)
    if audio is not None:
        samples = int(48000 * spec.seconds)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 48000
        frame.pts = 0
        for p in audio.encode(frame):
            out.mux(p)
        for p in audio.encode():
            out.mux(p)
    out.close()
    return buf.getvalue()


def decoded_frames(data: bytes, stream: int = 0) -> dict[float, int]:
    """Every frame decoded in full: its pts (seconds from the stream's first frame) -> index shown."""
    with av.open(io.BytesIO(data)) as c:
        s = c.streams.video[stream]
        got = {float(f.pts * f.time_base): read_index(f.to_ndarray(format="rgb24")) for f in c.decode(s)}
    t0 = min(got)
    return {round(t - t0, 6): i for t, i in got.items()}


def write(path: Path, spec: Spec) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(spec))
    return path
