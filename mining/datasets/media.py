"""What an export needs of a clip's mp4 beyond its bytes: each frame's time, read from the
packets (no decode), and many clips joined into one video by remux (no re-encode).

PyAV is imported inside the functions: importing ``mining`` loads no decoder.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

__all__ = [
    "X264_OPTIONS",
    "Cut",
    "Joined",
    "VideoInfo",
    "cut_video",
    "frame_times",
    "join_videos",
    "video_info",
]

X264_OPTIONS = {"crf": "18", "preset": "veryfast", "bf": "0", "threads": "1"}
"""How exports re-encode. ``threads`` is fixed: libx264's output depends on its thread
count, which it otherwise takes from the CPUs the process may use, so the same window
re-exported on a machine (or a Ray worker) of another size was other bytes. One thread:
a shard stage asks the runner for one CPU."""


@dataclass(frozen=True)
class VideoInfo:
    """A clip's video stream as the packets tell it."""

    codec: str
    width: int
    height: int
    pix_fmt: str | None
    extradata: bytes | None
    frame_times_s: np.ndarray  # presentation order, seconds from the first shown frame
    preroll: int  # packets before the first shown frame (decoded, never shown)


def video_info(mp4: bytes) -> VideoInfo:
    import av

    with av.open(io.BytesIO(mp4), mode="r") as c:
        s = c.streams.video[0]
        tb = float(s.time_base or 0)
        pts = [p.pts for p in c.demux(s) if p.size and p.pts is not None]
        cc = s.codec_context
        info = (cc.name, int(cc.width), int(cc.height), cc.pix_fmt, bytes(cc.extradata or b"") or None)
    t = np.sort(np.asarray(pts, dtype=np.float64) * tb)
    shown = t[t >= -1e-6]
    rel = shown - (shown[0] if len(shown) else 0.0)
    return VideoInfo(*info, frame_times_s=rel, preroll=len(t) - len(shown))


def frame_times(mp4: bytes) -> list[float]:
    """Every shown frame's time in seconds from the clip's first frame, in presentation order."""
    return [round(float(x), 6) for x in video_info(mp4).frame_times_s]


@dataclass(frozen=True)
class Joined:
    """Videos joined into one: how (``remux`` or ``reencode``), and where each part starts."""

    data: bytes
    mode: str
    starts_s: list[float]  # each input's first frame, on the joined video's clock
    ends_s: list[float]  # where each input ends: its last frame plus one frame
    frames: list[int]  # shown frames of each input


def join_videos(parts: Iterable[bytes], fps: float) -> Joined:
    """The parts one after another in one mp4: by remux (packets copied, timestamps
    shifted) when every part has the same codec, size and codec parameters and no preroll
    (it starts at a keyframe), else re-encoded to H.264 at ``fps`` (each part's frames kept,
    none dropped or duplicated)."""
    blobs = list(parts)
    infos = [video_info(b) for b in blobs]
    first = infos[0]
    same = all(
        (i.codec, i.width, i.height, i.pix_fmt, i.extradata)
        == (first.codec, first.width, first.height, first.pix_fmt, first.extradata)
        and i.preroll == 0
        for i in infos
    )
    if same:
        return _remux(blobs, infos, fps)
    return _reencode(blobs, infos, fps)


def _remux(blobs: list[bytes], infos: list[VideoInfo], fps: float) -> Joined:
    import av

    out_buf = io.BytesIO()
    starts: list[float] = []
    offset = Fraction(0)
    with av.open(out_buf, mode="w", format="mp4") as out:
        o: Any = None
        otb: Fraction | None = None
        for blob, info in zip(blobs, infos, strict=True):
            with av.open(io.BytesIO(blob), mode="r") as c:
                s = c.streams.video[0]
                if o is None:
                    o = out.add_stream_from_template(s)
                    otb = Fraction(s.time_base) if s.time_base else Fraction(1, 90000)
                    o.time_base = otb
                assert otb is not None
                tb = Fraction(s.time_base) if s.time_base else otb
                shift = round(offset / otb)
                starts.append(float(shift * otb))
                for pkt in c.demux(s):
                    if pkt.size == 0 or pkt.pts is None:
                        continue
                    pts = round(pkt.pts * tb / otb) + shift
                    dts = round(pkt.dts * tb / otb) + shift if pkt.dts is not None else pts
                    pkt.pts, pkt.dts, pkt.time_base = pts, dts, otb
                    pkt.stream = o
                    out.mux(pkt)
            offset += Fraction(_span(info, fps)).limit_denominator(1_000_000)
    return _joined(out_buf.getvalue(), "remux", starts, infos, fps)


def _reencode(blobs: list[bytes], infos: list[VideoInfo], fps: float) -> Joined:
    """Decoded and encoded again (H.264), every shown frame kept at its own time."""
    import av

    width, height = infos[0].width, infos[0].height
    tb = Fraction(1, 90000)
    out_buf = io.BytesIO()
    starts: list[float] = []
    offset = 0.0
    with av.open(out_buf, mode="w", format="mp4") as out:
        o = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        o.width, o.height, o.pix_fmt = width, height, "yuv420p"
        o.codec_context.time_base = tb
        o.options = dict(X264_OPTIONS)
        last = -1
        for info, blob in zip(infos, blobs, strict=True):
            starts.append(offset)
            with av.open(io.BytesIO(blob), mode="r") as c:
                shown = [
                    f
                    for f in c.decode(video=0)
                    if f.pts is None or f.time_base is None or f.pts * f.time_base >= -1e-6
                ]  # a preroll frame is decoded only to build the ones after it
            shown.sort(key=lambda f: f.pts if f.pts is not None else 0)
            for f, t in zip(shown, info.frame_times_s, strict=False):
                g = f.reformat(width=width, height=height, format="yuv420p")
                g.pts = max(last + 1, round((offset + float(t)) / tb))
                g.time_base = tb
                last = g.pts
                for pkt in o.encode(g):
                    out.mux(pkt)
            offset += _span(info, fps)
        for pkt in o.encode():
            out.mux(pkt)
    return _joined(out_buf.getvalue(), "reencode", starts, infos, fps)


def _joined(data: bytes, mode: str, starts: list[float], infos: list[VideoInfo], fps: float) -> Joined:
    ends = [s + _span(i, fps) for s, i in zip(starts, infos, strict=True)]
    return Joined(data, mode, starts, ends, [len(i.frame_times_s) for i in infos])


def _span(info: VideoInfo, fps: float) -> float:
    """A part's length on the joined clock: its last frame's time plus one frame."""
    t = info.frame_times_s
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / fps
    return float(t[-1]) + step if len(t) else 0.0


@dataclass(frozen=True)
class Cut:
    """A window cut from one camera's clips: the video and each frame's time in it."""

    data: bytes
    frame_times_s: list[float]  # seconds from the window's start, presentation order


_EPS = 1e-6


def cut_video(parts: Iterable[tuple[bytes, float]], length_s: float, fps: float) -> Cut | None:
    """The frames of ``parts`` (each a clip's mp4 and where its first shown frame falls on
    the window's clock, in seconds) whose time is in ``[0, length_s)``, one after another
    in one H.264 mp4, each at its own time; None when no frame falls in the window.

    Re-encoded, not remuxed: a window starts wherever a span does, rarely on a keyframe,
    and a remux would hand a trainer frames from before the window (or none until the
    next keyframe). Parts are taken (an iterator: read) and decoded one at a time, each
    only up to the window's end, and frames stream to the encoder; the same parts give
    the same bytes on any machine (:data:`X264_OPTIONS`)."""
    import av

    tb = Fraction(1, 90000)
    times: list[float] = []
    out_buf = io.BytesIO()
    last = -1
    with contextlib.ExitStack() as stack:
        out: Any = None
        o: Any = None
        for blob, offset in parts:
            with av.open(io.BytesIO(blob), mode="r") as c:
                first: float | None = None
                for f in c.decode(video=0):
                    t = f.time
                    if t is None or t < -_EPS:
                        continue  # a preroll frame: decoded only to build the ones after it
                    first = t if first is None else first
                    at = offset + (t - first)
                    if at >= length_s - _EPS:
                        break  # frames leave the decoder in presentation order: the rest are later
                    if at < -_EPS:
                        continue
                    if o is None:
                        out = stack.enter_context(av.open(out_buf, mode="w", format="mp4"))
                        o = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                        o.width, o.height, o.pix_fmt = f.width // 2 * 2, f.height // 2 * 2, "yuv420p"
                        o.codec_context.time_base = tb
                        o.options = dict(X264_OPTIONS)
                    g = f.reformat(width=o.width, height=o.height, format="yuv420p")
                    g.pts = max(last + 1, round(Fraction(max(at, 0.0)) / tb))
                    g.time_base = tb
                    last = g.pts
                    times.append(round(float(g.pts * tb), 6))
                    for pkt in o.encode(g):
                        out.mux(pkt)
        if o is None:
            return None
        for pkt in o.encode():
            out.mux(pkt)
    return Cut(out_buf.getvalue(), times)
