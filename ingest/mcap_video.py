"""Camera MCAP (``foxglove.CompressedVideo``) to an MP4 the rest of ingest reads with PyAV.

A camera recorded as MCAP holds one message per frame: H.264 or H.265 Annex-B
bytes and the frame's timestamp. :func:`to_container` copies those frames,
without re-encoding, into an MP4 whose packet times are the message timestamps,
so variable frame rate and gaps stay exact:

- messages are taken in file order, which is decode order (log-time order is
  not, once a stream has B-frames);
- a frame's time is its ``timestamp`` field when set, else the record's
  ``log_time``, in integer microseconds (nanoseconds truncated); pts is that
  time minus the first frame's (in presentation order), in a 1/1,000,000 time
  base, and :attr:`McapVideo.start_us` is the first frame's UTC time;
- FFmpeg's parser frames each message and says which are keyframes; the
  stream's parameters (size, SPS/PPS) come from demuxing the first keyframe;
  decode times are the sorted presentation times delayed by the stream's
  reordering depth, so each dts <= its pts;
- frames before the first keyframe cannot decode and are dropped.

Encodings: protobuf (mcap-protobuf-support, from the schema in the file), JSON
with base64 ``data``, and ROS 2 ``foxglove_msgs/msg/CompressedVideo`` over CDR
(mcap-ros2-support). A message that does not decode is skipped and counted in
the warnings; a file with no usable frame raises :class:`~ingest.video.VideoError`.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from mcap.reader import NonSeekingReader
from mcap.records import Channel, Message, Schema
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoderFactory
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

from ingest._reasons import reason
from ingest.video import VideoError
from storage.errors import InputError

__all__ = ["VIDEO_SCHEMAS", "McapVideo", "to_container", "video_topics"]

VIDEO_SCHEMAS = frozenset(
    {"foxglove.CompressedVideo", "foxglove_msgs/msg/CompressedVideo", "foxglove_msgs/CompressedVideo"}
)
_CODECS = {"h264": "h264", "h265": "hevc", "hevc": "hevc"}  # CompressedVideo.format -> FFmpeg codec
_TIME_BASE = Fraction(1, 1_000_000)
_START_CODES = (b"\x00\x00\x01", b"\x00\x00\x00\x01")
_MAX_REORDER = 16  # frames: the largest H.264/H.265 decoded picture buffer


@dataclass(frozen=True)
class McapVideo:
    data: bytes
    """An MP4: the topic's frames, copied, pts in microseconds from the first frame."""
    topic: str
    codec: str  # FFmpeg's name: "h264" or "hevc"
    start_us: int
    """UTC time of the first frame (presentation order), microseconds since the epoch."""
    frames: int
    keyframes: int
    warnings: list[str] = field(default_factory=list)
    suffix: str = ".mp4"

    @property
    def start_time(self) -> dt.datetime:
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=self.start_us)


@dataclass
class _Frame:
    t_us: int
    data: bytes
    key: bool


class _BadMessage(InputError):
    """A message that decodes but is not a CompressedVideo."""


def _read_video_channels(data: bytes) -> tuple[dict[str, list[tuple[Schema | None, Channel, Message]]], str]:
    """The messages of every video topic, in file order, and why the read stopped early ('' if not)."""
    by_topic: dict[str, list[tuple[Schema | None, Channel, Message]]] = {}
    it = iter(NonSeekingReader(io.BytesIO(data), validate_crcs=True).iter_messages(log_time_order=False))
    n = 0
    while True:
        try:
            schema, channel, message = next(it)
        except StopIteration:
            return by_topic, ""
        except Exception as exc:  # mcap, zstd and lz4 raise many types on a cut or corrupt file
            why = reason(exc)
            if n == 0:
                return by_topic, f"not a readable MCAP file ({why})"
            return by_topic, f"unreadable after {n} messages, truncated or corrupt ({why})"
        n += 1
        if schema is not None and schema.name in VIDEO_SCHEMAS:
            by_topic.setdefault(channel.topic, []).append((schema, channel, message))


def _json_object(data: bytes) -> dict[str, Any]:
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise _BadMessage("not a JSON object")
    return obj


def _field(msg: Any, *names: str) -> Any:
    for n in names:
        v = msg.get(n) if isinstance(msg, dict) else getattr(msg, n, None)
        if v is not None:
            return v
    return None


def _time_us(msg: Any, log_time_ns: int) -> int:
    """``timestamp`` (protobuf seconds/nanos, ROS 2 sec/nanosec, JSON sec/nsec) in us; else log_time."""
    stamp = _field(msg, "timestamp")
    sec = _field(stamp, "seconds", "sec") or 0
    nsec = _field(stamp, "nanos", "nanosec", "nsec") or 0
    if not (isinstance(sec, int) and isinstance(nsec, int) and 0 <= nsec < 1_000_000_000):
        raise _BadMessage(f"timestamp is not seconds + nanoseconds (a {type(stamp).__name__})")
    return sec * 1_000_000 + nsec // 1000 if sec or nsec else log_time_ns // 1000


def video_topics(data: bytes) -> list[str]:
    """Topics of ``foxglove.CompressedVideo`` messages in the file, by name."""
    return sorted(_read_video_channels(data)[0])


def _decoder(schema: Schema, channel: Channel) -> Callable[[bytes], Any]:
    enc = channel.message_encoding
    if enc == MessageEncoding.JSON:
        return _json_object
    decode = None
    try:
        if enc == MessageEncoding.Protobuf and schema.encoding == SchemaEncoding.Protobuf:
            decode = ProtobufDecoderFactory().decoder_for(enc, schema)
        elif enc == MessageEncoding.CDR and schema.encoding == SchemaEncoding.ROS2:
            decode = Ros2DecoderFactory().decoder_for(enc, schema)
    except Exception as exc:  # a schema the decoder packages cannot parse
        raise VideoError(f"{channel.topic}: schema {schema.name} does not parse ({reason(exc)})") from exc
    if decode is None:
        raise VideoError(f"{channel.topic}: {schema.name} as {enc!r} messages is not supported")
    return decode


def _payload(msg: Any) -> tuple[str, bytes]:
    fmt, raw = _field(msg, "format"), _field(msg, "data")
    if isinstance(raw, str):
        try:
            raw = base64.b64decode(raw, validate=True)
        except ValueError as exc:
            raise _BadMessage("data is not base64") from exc
    if not isinstance(raw, bytes | bytearray):
        raise _BadMessage(f"data missing or of type {type(raw).__name__}")
    return str(fmt or "").lower(), bytes(raw)


def _frames(
    topic: str, msgs: list[tuple[Schema | None, Channel, Message]], warnings: list[str]
) -> tuple[str, list[_Frame]]:
    """Codec and frames (decode order) of one topic; bad messages skipped, counted in ``warnings``."""
    schema, channel, _ = msgs[0]
    assert schema is not None
    decode = _decoder(schema, channel)
    skipped: list[tuple[int, str]] = []  # message number, why
    decoded: list[tuple[int, str, bytes, int]] = []  # message number, format, payload, time
    for i, (_, _, message) in enumerate(msgs, 1):
        try:
            msg = decode(message.data)
            fmt, payload = _payload(msg)
            decoded.append((i, fmt, payload, _time_us(msg, message.log_time)))
        except Exception as exc:  # protobuf/CDR/JSON decoders raise many types on garbled bytes
            skipped.append((i, f"undecodable ({reason(exc)})"))
    fmts = [d[1] for d in decoded]
    codec = next((_CODECS[f] for f in fmts if f in _CODECS), "")
    if not codec:
        raise VideoError(f"{topic}: video format {sorted(set(fmts))} is not supported (h264, h265)")
    parser = av.CodecContext.create(codec, "r")
    frames: list[_Frame] = []
    seen: set[int] = set()
    for i, fmt, payload, t_us in decoded:
        if _CODECS.get(fmt) != codec:
            skipped.append((i, f"another format in a {codec} stream"))
            continue
        if not payload.startswith(_START_CODES):
            skipped.append((i, "not Annex-B (no start code)"))
            continue
        if t_us in seen:
            skipped.append((i, f"same timestamp as an earlier frame ({t_us} us)"))
            continue
        try:
            packets = parser.parse(payload) + parser.parse(None)
        except av.FFmpegError as exc:
            skipped.append((i, f"unparsable ({reason(exc)})"))
            continue
        if len(packets) != 1:
            skipped.append((i, f"{len(packets)} frames, a message must hold one"))
            continue
        seen.add(t_us)
        frames.append(_Frame(t_us, payload, bool(packets[0].is_keyframe)))
    if skipped:
        first = "; ".join(f"message {i}: {why}" for i, why in sorted(skipped)[:5])
        warnings.append(f"{topic}: {len(skipped)} of {len(msgs)} messages skipped ({first})")
    return codec, frames


def _jump_back(t_us: np.ndarray) -> int | None:
    """Index of the first frame earlier than one decoded more than the reorder depth before it.

    H.264/H.265 reorder at most 16 frames, so such a frame is a clock stepped
    back, not a B-frame; the frames from there on cannot be put in order.
    """
    if len(t_us) <= _MAX_REORDER + 1:
        return None
    before = np.maximum.accumulate(t_us)[: -_MAX_REORDER - 1]
    bad = np.flatnonzero(t_us[_MAX_REORDER + 1 :] <= before)
    return int(bad[0]) + _MAX_REORDER + 1 if len(bad) else None


def _decode_times(pts: np.ndarray, step: int) -> np.ndarray:
    """Strictly increasing dts with dts <= pts: sorted pts, delayed by the reordering depth."""
    s = np.sort(pts)
    delay = 0
    while (s[: len(s) - delay] > pts[delay:]).any():  # ends by _MAX_REORDER (see _jump_back)
        delay += 1
    lead = s[0] - step * np.arange(delay, 0, -1)
    return np.concatenate([lead, s[: len(s) - delay]])


def _mux(codec: str, frames: list[_Frame], start_us: int) -> bytes:
    pts = np.array([f.t_us for f in frames], np.int64) - start_us
    step = max(1, int(np.median(np.diff(np.sort(pts))))) if len(pts) > 1 else 1
    dts = _decode_times(pts, step)
    first_key = next(f for f in frames if f.key)
    buf = io.BytesIO()
    try:
        with av.open(io.BytesIO(first_key.data), format=codec) as probe:
            if not probe.streams.video or not probe.streams.video[0].codec_context.width:
                raise VideoError(f"first keyframe carries no usable {codec} parameter sets")
            out = av.open(buf, mode="w", format="mp4")
            try:
                out.metadata["creation_time"] = dt.datetime.fromtimestamp(start_us / 1e6, dt.UTC).isoformat()
                stream = out.add_stream_from_template(probe.streams.video[0])
                stream.time_base = _TIME_BASE
                for f, p, d in zip(frames, pts, dts, strict=True):
                    pkt = av.Packet(f.data)
                    pkt.pts, pkt.dts, pkt.duration = int(p), int(d), step
                    pkt.time_base = _TIME_BASE
                    pkt.is_keyframe = f.key
                    pkt.stream = stream
                    out.mux(pkt)
            finally:
                out.close()
    except av.FFmpegError as exc:
        raise VideoError(f"cannot write {codec} frames into MP4: {reason(exc)}") from exc
    return buf.getvalue()


def to_container(data: bytes, topic: str | None = None) -> McapVideo:
    """The frames of ``topic`` (default: the first video topic by name) as an MP4; VideoError if none."""
    by_topic, stopped = _read_video_channels(data)
    warnings = [f"MCAP {stopped}"] if stopped else []
    if not by_topic:
        raise VideoError("no foxglove.CompressedVideo messages" + (f"; {stopped}" if stopped else ""))
    topics = sorted(by_topic)
    if topic is None:
        topic = topics[0]
        if len(topics) > 1:
            warnings.append(f"{len(topics)} video topics {topics}: read {topic} only")
    elif topic not in by_topic:
        raise VideoError(f"no video topic {topic!r}; video topics: {topics}")
    codec, frames = _frames(topic, by_topic[topic], warnings)
    lead = next((i for i, f in enumerate(frames) if f.key), None)
    if lead is None:
        raise VideoError(
            f"{topic}: no keyframe among {len(frames)} frames" + "".join(f"; {w}" for w in warnings)
        )
    if lead:
        warnings.append(f"{topic}: {lead} frames before the first keyframe dropped (they cannot decode)")
        frames = frames[lead:]
    cut = _jump_back(np.array([f.t_us for f in frames], np.int64))
    if cut is not None:
        warnings.append(
            f"{topic}: time goes back from {frames[cut - 1].t_us} to {frames[cut].t_us} us "
            f"(a clock step?): the last {len(frames) - cut} frames dropped"
        )
        frames = frames[:cut]
    start_us = min(f.t_us for f in frames)
    return McapVideo(
        _mux(codec, frames, start_us),
        topic,
        codec,
        start_us,
        len(frames),
        sum(f.key for f in frames),
        warnings,
    )
