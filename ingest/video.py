"""Video with PyAV: probe by demuxing, clips cut on a time grid, remux, sampled keyframes.

Nothing here decodes every frame. The probe reads packets only (codec, size, fps,
duration, presentation time and keyframe flag of every packet), one pass for every
video stream of the file. A clip is a packet copy into a new mp4 (no re-encode):
from the keyframe at or before the clip's first frame, with timestamps shifted so
that first frame is at zero; the frames before it get negative times and the mp4
muxer writes an edit list, so players start exactly on the grid while every frame
they need to decode is there.

Keyframe images are decoded one keyframe at a time: the packet is sent, the decoder
is drained (a decoder with reordering, B-frames or frame threads returns the image
only at flush) and reset. Each image carries the pts of the frame the decoder
returned, never the time of the packet we asked for. ``err_detect=explode`` makes
bit errors surface as errors instead of FFmpeg log lines. Images are scaled in
the decoder's colour conversion (swscale), never through a full-size RGB image.

Raw elementary streams (.h264/.h265/.hevc) carry no timestamps: packets are timed
from the fps in decode order: drive.json's, else the rate the bitstream's timing info
(VUI) declares; a stream with neither fails with a reason naming the key to set (FFmpeg's
raw demuxer would guess 25 fps). Each packet lasts one frame, so a clip is exactly its
window. Their keyframe times are exact (a closed GOP starts
with its keyframe); a raw stream with B-frames gets frames in decode order within
each GOP in its remuxed clips (it has no presentation times to restore).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from typing import Any, BinaryIO

import av
import numpy as np
from PIL import Image

from ingest._reasons import reason
from storage.errors import InputError

__all__ = [
    "RAW_FORMATS",
    "ClipCut",
    "ClipMedia",
    "KeyframeImage",
    "Source",
    "VideoError",
    "VideoProbe",
    "clip_media",
    "from_bytes",
    "keyframe_images",
    "probe",
    "probe_all",
    "remux",
]

RAW_FORMATS = {".h264": "h264", ".264": "h264", ".h265": "hevc", ".hevc": "hevc", ".265": "hevc"}
_EPS = 1e-6


class VideoError(InputError):
    """This file (or clip) cannot give clips; the message says why (recorded, not raised further)."""


@dataclass
class VideoProbe:
    """One video stream of a file, from its packets alone."""

    codec: str
    width: int
    height: int
    fps: float
    duration_s: float
    packets: int
    raw_stream: bool
    times: np.ndarray = field(repr=False)  # presentation seconds of every packet (decode order), from 0
    keys: np.ndarray = field(repr=False)  # bool per packet
    stream: int = 0  # index among the file's video streams
    start_s: float = 0.0  # the first frame's time on the container's clock (streams of one file align)
    creation_time: dt.datetime | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def key_times(self) -> np.ndarray:
        return np.sort(self.times[self.keys])

    def first_frame_at_or_after(self, t: float) -> float | None:
        shown = self._shown
        i = int(np.searchsorted(shown, t - _EPS))
        return float(shown[i]) if i < len(shown) else None

    @cached_property
    def _shown(self) -> np.ndarray:
        """Every frame's time in presentation order (once per probe, not once per clip)."""
        return np.sort(self.times)

    @cached_property
    def decode_index(self) -> dict[float, int]:
        """Packet pts (rounded to the microsecond) -> its decode index, built once per probe:
        after a seek each clip finds its packets by pts, and a long drive has many clips."""
        return {round(float(t), 6): i for i, t in enumerate(self.times)}


@dataclass(frozen=True)
class ClipCut:
    """A clip of one camera: presentation times ``[start_s, end_s)`` on the camera's clock."""

    index: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class KeyframeImage:
    t_s: float  # the decoded frame's own pts, seconds on the camera's clock
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
        raise VideoError(f"cannot open video: {reason(exc)}") from exc
    try:
        yield container
    finally:
        container.close()
        f.close()


def _video_streams(c: Any) -> list[Any]:
    """Real video streams (cover art and thumbnails attached as pictures are not)."""
    return [s for s in c.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]


def _creation_time(c: Any) -> dt.datetime | None:
    value = c.metadata.get("creation_time")
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    t = t if t.tzinfo else t.replace(tzinfo=dt.UTC)
    return None if t.year < 1971 else t  # 1904/1970 are muxers' "unset"


def probe(src: Source, suffix: str, fps_hint: float | None = None) -> VideoProbe:
    """The first video stream; see :func:`probe_all`."""
    return probe_all(src, suffix, fps_hint)[0]


def probe_all(
    src: Source, suffix: str, fps_hint: float | None = None, camera: str = "<camera>"
) -> list[VideoProbe]:
    """Packets only, every video stream in one pass. Raises VideoError if none is usable.

    A file that demuxes fewer packets than its header declares (an mp4 cut short)
    still gives its clips; ``warnings`` says it was truncated. Timestamps are the
    packets' pts, so variable frame rate is exact; ``fps`` is the average.
    """
    raw = suffix.lower() in RAW_FORMATS
    with _open(src, suffix) as c:
        streams = _video_streams(c)
        if not streams:
            raise VideoError("no video stream")
        created = _creation_time(c)
        slot = {s.index: i for i, s in enumerate(streams)}
        times: list[list[float]] = [[] for _ in streams]
        keys: list[list[bool]] = [[] for _ in streams]
        rates: list[float] = []
        for s in streams:
            if raw:
                # drive.json's fps, else the bitstream's own timing info (H.264/HEVC VUI),
                # never the raw demuxer's made-up 25 fps (its `average_rate`)
                rate = Fraction(fps_hint).limit_denominator(1001) if fps_hint else s.codec_context.framerate
                if not rate:
                    raise VideoError(
                        f"raw {s.codec_context.name} stream with no frame rate: its bitstream carries no "
                        f"timing info; set cameras.{camera}.fps in drive.json"
                    )
            else:
                rate = s.average_rate or s.guessed_rate or (Fraction(fps_hint) if fps_hint else None)
                if not rate:
                    raise VideoError("unknown frame rate (no timestamps and no fps in drive.json)")
            rates.append(float(rate))
        failure: str | None = None
        try:
            for pkt in c.demux(streams):
                i = slot.get(pkt.stream.index)
                if i is None or pkt.size == 0:
                    continue
                tb = pkt.stream.time_base
                if raw or pkt.pts is None or tb is None:
                    times[i].append(len(times[i]) / rates[i])
                else:
                    times[i].append(float(pkt.pts * tb))
                keys[i].append(bool(pkt.is_keyframe))
        except av.FFmpegError as exc:
            failure = f"unreadable packets after {sum(map(len, times))}: {reason(exc)}"
        out: list[VideoProbe] = []
        problems: list[str] = []
        for i, s in enumerate(streams):
            try:
                declared_s = None if raw else _declared_seconds(c, s)
                out.append(
                    _stream_probe(s, i, times[i], keys[i], rates[i], raw, created, failure, declared_s)
                )
            except VideoError as exc:
                problems.append(f"stream {i}: {exc}" if len(streams) > 1 else str(exc))
    if not out:
        raise VideoError("; ".join(problems))
    if problems:
        out[0].warnings.extend(problems)
    return out


def _declared_seconds(c: Any, s: Any) -> float | None:
    """How long the header says the stream is: its own duration, else (a container that
    keeps none per stream, as Matroska) the file's, when every stream in it is video.

    A frame count is the mp4 way to tell a file cut short; a Matroska or WebM file has
    none, only a duration, and without this its lost tail went unreported.
    """
    if s.duration and s.time_base:
        return float(s.duration * s.time_base)
    if c.duration and all(x.type == "video" for x in c.streams):
        return float(c.duration) / 1_000_000  # AV_TIME_BASE
    return None


def _stream_probe(
    s: Any,
    i: int,
    times: list[float],
    keys: list[bool],
    fps: float,
    raw: bool,
    created: dt.datetime | None,
    failure: str | None,
    declared_s: float | None = None,
) -> VideoProbe:
    if not times:
        raise VideoError(failure or "no video packets (empty or truncated file)")
    warnings: list[str] = []
    if failure:
        warnings.append(f"truncated video: {failure}")
    declared = int(s.frames or 0)
    if declared and len(times) < declared:
        warnings.append(f"truncated video: {len(times)} of {declared} frames present")
    t = np.asarray(times)
    k = np.asarray(keys)
    t0 = float(t.min())
    if not k.any():
        raise VideoError("no keyframe in the stream")
    width, height = s.codec_context.width, s.codec_context.height
    if not width or not height:
        raise VideoError("frame size unknown (corrupt stream header)")
    t = t - t0
    frame = float(np.median(np.diff(np.sort(t)))) if len(t) > 1 else 1.0 / fps
    duration = float(t.max()) + (frame if frame > 0 else 1.0 / fps)
    if (
        not failure
        and not (declared and len(times) < declared)
        and declared_s
        and duration < declared_s - 1.0
    ):
        warnings.append(
            f"truncated video: {duration:.2f} s of the {declared_s:.2f} s its header declares present"
        )
    return VideoProbe(
        codec=s.codec_context.name,
        width=int(width),
        height=int(height),
        fps=fps,
        duration_s=duration,
        packets=len(t),
        raw_stream=raw,
        times=t,
        keys=k,
        stream=i,
        start_s=t0,
        creation_time=created,
        warnings=warnings,
    )


def _preroll(p: VideoProbe, cut: ClipCut) -> tuple[int, int]:
    """Decode-order packet range [first, last] that plays ``cut``: from the keyframe at or
    before its first frame to the last packet shown inside it (references it needs included)."""
    key_idx = np.flatnonzero(p.keys & (p.times <= cut.start_s + _EPS))
    if len(key_idx) == 0:
        key_idx = np.flatnonzero(p.keys)[:1]
    first = int(key_idx[-1])
    shown = np.flatnonzero((p.times >= cut.start_s - _EPS) & (p.times < cut.end_s - _EPS))
    shown = shown[shown >= first]
    if len(shown) == 0:
        raise VideoError(f"clip {cut.index}: no frames between {cut.start_s:.3f}s and {cut.end_s:.3f}s")
    return first, int(shown.max())


@dataclass
class ClipMedia:
    mp4: bytes
    images: list[KeyframeImage]
    rotation_deg: int = 0  # the display matrix's rotation (counter-clockwise), kept in the mp4


def _packets(c: Any, s: Any, p: VideoProbe, first: int) -> Iterator[tuple[int, Any]]:
    """(decode index, packet) from packet ``first`` on. Seeks near it first (a container
    with an index), so clip k does not re-read the k clips before it; raw streams, whose
    packets have no timestamps to seek by, are read from the start."""
    tb = s.time_base
    want = p.times[first]
    if not p.raw_stream and tb is not None and first > 0:
        try:
            c.seek(round((want + p.start_s) / tb), stream=s, backward=True, any_frame=False)
        except av.FFmpegError:
            pass  # not seekable: read from wherever we are (the start)
        else:
            seen = False
            # After a seek, decode indices are found again by pts (unique within a stream).
            order = p.decode_index
            for pkt in c.demux(s):
                if pkt.size == 0 or pkt.pts is None:
                    continue
                i = order.get(round(float(pkt.pts * tb) - p.start_s, 6))
                if i is None:
                    continue
                if not seen and i > first:
                    break  # the seek landed past the keyframe: fall back to a full read
                seen = seen or i == first
                if seen:
                    yield i, pkt
            if seen:
                return
            c.seek(0, stream=s, backward=True, any_frame=False)
    idx = -1
    for pkt in c.demux(s):
        if pkt.size == 0:
            continue
        idx += 1
        if idx >= first:
            yield idx, pkt


def clip_media(
    src: Source, suffix: str, p: VideoProbe, cut: ClipCut, max_frames: int = 4, short_side: int = 224
) -> ClipMedia:
    """The clip's mp4 (its packets copied, its first frame playing at zero) and up to
    ``max_frames`` of its keyframes, evenly picked, each decoded alone, in one read.

    A clip with no keyframe of its own (a long GOP) gets its first frame, decoded
    from the keyframe before it: at most one GOP, never the whole file.
    """
    first, last = _preroll(p, cut)
    inside = np.flatnonzero(p.keys & (p.times >= cut.start_s - _EPS) & (p.times < cut.end_s - _EPS))
    inside = inside[np.argsort(p.times[inside], kind="stable")]
    wanted = {int(inside[i]) for i in _pick(len(inside), max_frames)} if len(inside) else set()
    images: list[KeyframeImage] = []
    rotation = 0
    out_buf = io.BytesIO()
    with _open(src, suffix) as c:
        s = _video_streams(c)[p.stream]
        cc = s.codec_context
        cc.options = {"err_detect": "explode"}
        if wanted:
            cc.skip_frame = "NONKEY"
        tb = s.time_base
        out = av.open(out_buf, mode="w", format="mp4")
        try:
            o = out.add_stream_from_template(s)
            otb = Fraction(1, 90000) if p.raw_stream else tb
            o.time_base = otb
            origin = round((cut.start_s + p.start_s) / otb)
            decoded = 0
            try:
                for idx, pkt in _packets(c, s, p, first):
                    if idx > last:
                        break
                    if not wanted and not images:  # no keyframe inside: decode up to the first frame
                        got = [*cc.decode(pkt), *(cc.decode(None) if idx == last else [])]
                        for frame in got:
                            t = _frame_time(frame, tb, p)
                            if t is None:  # raw stream: frames leave the decoder in display order
                                t = float(p.times[first]) + decoded / p.fps
                            decoded += 1
                            if t >= cut.start_s - _EPS and not images:
                                rotation = _rotation(frame)
                                images.append(KeyframeImage(t, *_image(frame, short_side)))
                    elif idx in wanted:
                        frames = [*cc.decode(pkt), *cc.decode(None)]  # drain: reordering decoders hold it
                        cc.flush_buffers()
                        for frame in frames[:1]:
                            t = _frame_time(frame, tb, p)
                            t = float(p.times[idx]) if t is None else t
                            rotation = _rotation(frame)
                            images.append(KeyframeImage(t, *_image(frame, short_side)))
                    if p.raw_stream or pkt.pts is None:
                        pkt.pts = pkt.dts = round((p.times[idx] + p.start_s) / otb)
                        # the demuxer's duration is in its own units (and at its made-up
                        # 25 fps): a frame lasts 1/fps, so the clip is exactly its window
                        pkt.duration = round(1 / p.fps / otb)
                        pkt.time_base = otb
                    pkt.pts -= origin
                    if pkt.dts is not None:
                        pkt.dts -= origin
                    pkt.stream = o
                    out.mux(pkt)
            except av.FFmpegError as exc:
                raise VideoError(f"clip decode failed after {len(images)} keyframes: {reason(exc)}") from exc
        finally:
            out.close()
    if not images:
        raise VideoError("no keyframe decodes (truncated or corrupt stream)")
    return ClipMedia(out_buf.getvalue(), images, rotation)


def remux(src: Source, suffix: str, p: VideoProbe, cut: ClipCut) -> bytes:
    """The clip's packets copied into a new mp4; its first frame plays at zero."""
    return clip_media(src, suffix, p, cut, max_frames=1).mp4


def keyframe_images(
    src: Source, suffix: str, p: VideoProbe, cut: ClipCut, max_frames: int = 4, short_side: int = 224
) -> list[KeyframeImage]:
    """Up to ``max_frames`` of the clip's keyframes, evenly picked, each decoded alone."""
    return clip_media(src, suffix, p, cut, max_frames, short_side).images


def _pick(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))


def _image(frame: Any, short_side: int) -> tuple[int, int, bytes]:
    scale = short_side / min(frame.width, frame.height)
    w = max(2, round(frame.width * scale / 2) * 2)
    h = max(2, round(frame.height * scale / 2) * 2)
    img: Image.Image = frame.to_image(width=w, height=h, interpolation="AREA")
    rotation = _rotation(frame)
    if rotation:  # display matrix: counter-clockwise degrees to show the frame upright
        img = img.rotate(rotation, expand=True)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return img.width, img.height, buf.getvalue()


def _rotation(frame: Any) -> int:
    return round(float(getattr(frame, "rotation", 0) or 0)) % 360


def _frame_time(frame: Any, tb: Fraction | None, p: VideoProbe) -> float | None:
    if p.raw_stream or frame.pts is None or tb is None:
        return None
    return float(frame.pts * tb) - p.start_s
