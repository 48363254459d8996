"""Video with PyAV: probe by demuxing, keyframe-aligned clips, remux, sampled keyframes.

Nothing here decodes every frame. The probe reads packets only (codec, size, fps,
duration, keyframe index); a clip is a packet copy from its first keyframe into a
new mp4 (no re-encode); thumbnails and ``clip_frames`` decode keyframes only
(``skip_frame = "NONKEY"``) with ``err_detect=explode`` so bit errors surface as
errors instead of FFmpeg log lines. Raw elementary streams (.h264/.h265/.hevc)
carry no timestamps: packets are timed from the fps. Every container is closed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO

import av
import numpy as np

__all__ = [
    "ClipPlan",
    "KeyframeImage",
    "Source",
    "VideoError",
    "VideoProbe",
    "from_bytes",
    "keyframe_images",
    "plan_clips",
    "probe",
    "remux",
]

RAW_FORMATS = {".h264": "h264", ".264": "h264", ".h265": "hevc", ".hevc": "hevc", ".265": "hevc"}


class VideoError(Exception):
    """This file cannot give clips; the message says why (recorded, not raised further)."""


@dataclass
class VideoProbe:
    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    packets: int
    raw_stream: bool
    key_times: np.ndarray  # seconds from the stream start, of each keyframe packet
    times: np.ndarray = field(repr=False)  # seconds of every packet, in decode order
    keys: np.ndarray = field(repr=False)  # bool per packet
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClipPlan:
    index: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class KeyframeImage:
    t_s: float
    width: int
    height: int
    jpeg: bytes


Source = Callable[[], BinaryIO]
"""Opens the video afresh (a local file, an fsspec file on S3, or bytes in memory)."""


def from_bytes(data: bytes) -> Source:
    return lambda: io.BytesIO(data)


@contextmanager
def _open(src: Source, suffix: str) -> Iterator[Any]:
    fmt = RAW_FORMATS.get(suffix.lower())
    f = src()
    try:
        container = av.open(f, mode="r", format=fmt)
    except (av.FFmpegError, ValueError, OSError) as exc:
        f.close()
        raise VideoError(f"cannot open video: {exc}") from exc
    try:
        yield container
    finally:
        container.close()
        f.close()


def probe(src: Source, suffix: str, fps_hint: float | None = None) -> VideoProbe:
    """Packets only: size, codec, fps, duration, keyframes. Raises VideoError if unusable.

    A file that demuxes fewer packets than its header declares (an mp4 cut short)
    still gives its clips; ``warnings`` says it was truncated.
    """
    raw = suffix.lower() in RAW_FORMATS
    warnings: list[str] = []
    with _open(src, suffix) as c:
        if not c.streams.video:
            raise VideoError("no video stream")
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate or (Fraction(fps_hint) if fps_hint else None)
        if raw and fps_hint:
            rate = Fraction(fps_hint).limit_denominator(1001)
        if not rate:
            raise VideoError("unknown frame rate (raw stream without fps in drive.json)")
        fps = float(rate)
        tb = s.time_base
        times: list[float] = []
        keys: list[bool] = []
        try:
            for pkt in c.demux(s):
                if pkt.size == 0:
                    continue
                if raw or pkt.pts is None or tb is None:
                    times.append(len(times) / fps)
                else:
                    times.append(float(pkt.pts * tb))
                keys.append(bool(pkt.is_keyframe))
        except av.FFmpegError as exc:
            if not times:
                raise VideoError(f"unreadable packets: {exc}") from exc
        width, height = s.codec_context.width, s.codec_context.height
        codec = s.codec_context.name
        declared = int(s.frames or 0)
        if declared and len(times) < declared:
            warnings.append(f"truncated video: {len(times)} of {declared} frames present")
    if not times:
        raise VideoError("no video packets (empty or truncated file)")
    t = np.asarray(times)
    k = np.asarray(keys)
    t0 = float(t.min())
    t = t - t0
    if not k.any():
        raise VideoError("no keyframe in the stream")
    if not width or not height:
        raise VideoError("frame size unknown (corrupt stream header)")
    duration = float(t.max()) + 1.0 / fps
    return VideoProbe(codec, int(width), int(height), fps, duration, len(t), raw, t[k], t, k, warnings)


def plan_clips(p: VideoProbe, clip_seconds: float, min_last_s: float = 1.0) -> list[ClipPlan]:
    """Clips of ``clip_seconds`` starting on keyframes; a last partial clip >= ``min_last_s``."""
    plans: list[ClipPlan] = []
    keys = p.key_times
    start = float(keys[0])
    while True:
        nxt = keys[keys >= start + clip_seconds - 1e-6]
        end = float(nxt[0]) if len(nxt) else p.duration_s
        if end - start >= min_last_s:
            plans.append(ClipPlan(len(plans), start, end))
        if not len(nxt):
            break
        start = end
    return plans


def remux(src: Source, suffix: str, p: VideoProbe, plan: ClipPlan) -> bytes:
    """The clip's packets copied into a new mp4, timestamps starting at zero."""
    out_buf = io.BytesIO()
    with _open(src, suffix) as c:
        s = c.streams.video[0]
        out = av.open(out_buf, mode="w", format="mp4")
        try:
            o = out.add_stream_from_template(s)
            tb = Fraction(1, 90000) if p.raw_stream else s.time_base
            o.time_base = tb
            n = 0
            idx = 0
            origin: int | None = None
            for pkt in c.demux(s):
                if pkt.size == 0:
                    continue
                t = p.times[idx] if idx < len(p.times) else float("inf")
                idx += 1
                if t < plan.start_s - 1e-9:
                    continue
                if t >= plan.end_s - 1e-9:
                    break
                if p.raw_stream:
                    ticks = round(t * 90000)
                    pkt.pts = pkt.dts = ticks
                    pkt.time_base = tb
                if origin is None:
                    origin = pkt.dts if pkt.dts is not None else pkt.pts
                if pkt.pts is not None:
                    pkt.pts -= origin
                if pkt.dts is not None:
                    pkt.dts -= origin
                pkt.stream = o
                out.mux(pkt)
                n += 1
            if n == 0:
                raise VideoError(
                    f"clip {plan.index}: no packets between {plan.start_s:.2f}s and {plan.end_s:.2f}s"
                )
        finally:
            out.close()
    return out_buf.getvalue()


def keyframe_images(
    src: Source, suffix: str, p: VideoProbe, plan: ClipPlan, max_frames: int = 4, short_side: int = 224
) -> list[KeyframeImage]:
    """Up to ``max_frames`` keyframes of the clip, evenly picked, decoded alone and downscaled."""
    in_clip = p.key_times[(p.key_times >= plan.start_s - 1e-9) & (p.key_times < plan.end_s - 1e-9)]
    if len(in_clip) == 0:
        return []
    pick = set(np.unique(np.linspace(0, len(in_clip) - 1, min(max_frames, len(in_clip))).round().astype(int)))
    wanted = {round(float(in_clip[i]), 6) for i in pick}
    scale = short_side / min(p.width, p.height)
    w = max(2, round(p.width * scale / 2) * 2)
    h = max(2, round(p.height * scale / 2) * 2)
    images: list[KeyframeImage] = []
    with _open(src, suffix) as c:
        s = c.streams.video[0]
        s.codec_context.skip_frame = "NONKEY"
        s.codec_context.options = {"err_detect": "explode"}
        key_iter = iter(p.key_times)
        try:
            for pkt in c.demux(s):
                if pkt.size == 0 or not pkt.is_keyframe:
                    continue
                t = float(next(key_iter, float("nan")))
                if t >= plan.end_s - 1e-9:
                    break
                if round(t, 6) not in wanted:
                    continue
                for frame in s.codec_context.decode(pkt):
                    img = frame.to_image().resize((w, h))
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=85)
                    images.append(KeyframeImage(t, w, h, buf.getvalue()))
        except av.FFmpegError as exc:
            raise VideoError(f"keyframe decode failed at {len(images)} frames: {exc}") from exc
    if not images:
        raise VideoError("no keyframe decodes (truncated or corrupt stream)")
    return images


def thumbnail(images: list[KeyframeImage]) -> bytes:
    return images[0].jpeg
