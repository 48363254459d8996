"""MCAP input: CAN frames (ROS 2 can_msgs/msg/Frame, JSON) and foxglove.CompressedVideo cameras.

Every MCAP here is written at test time with the mcap writers; the video is
encoded at test time with x264/x265 (B-frames, variable frame rate, a gap) or
demuxed from the recorded dashcam video into Annex-B.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pytest
from foxglove_schemas_protobuf.CompressedVideo_pb2 import CompressedVideo
from google.protobuf.timestamp_pb2 import Timestamp
from mcap.reader import make_reader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter
from mcap_protobuf.schema import register_schema
from mcap_ros2.writer import Writer as Ros2Writer

from ingest.can import read_can_log, reader_for
from ingest.can.mcap_can import McapCanReader, bus_from_topic, is_can_type
from ingest.interfaces import FRAME_SCHEMA
from ingest.mcap_video import McapVideo, to_container, video_topics
from ingest.video import ClipCut, VideoError, from_bytes, keyframe_images, probe
from tests.conftest import LOCAL

FRAME_MSGDEF = """std_msgs/Header header
uint32 id
bool is_rtr
bool is_extended
bool is_error
uint8 dlc
uint8[8] data
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""

T0_US = 1_533_226_487_123_457  # odd microseconds: any float on the way would show


def _ros2_msg(
    t_us: int, ident: int, data: bytes, *, ext: bool = False, err: bool = False, rtr: bool = False
) -> dict[str, Any]:
    return {
        "header": {"stamp": {"sec": t_us // 1_000_000, "nanosec": t_us % 1_000_000 * 1000}, "frame_id": ""},
        "id": ident,
        "is_rtr": rtr,
        "is_extended": ext,
        "is_error": err,
        "dlc": len(data),
        "data": list(data.ljust(8, b"\xaa")),  # padding after dlc: the reader must cut it
    }


def _ros2_mcap(
    messages: list[tuple[str, dict[str, Any], int]],
    chunk_size: int = 1 << 20,
    compression: CompressionType = CompressionType.ZSTD,
) -> bytes:
    """(topic, can_msgs/msg/Frame dict, log_time ns) in order, through mcap-ros2's writer."""
    buf = io.BytesIO()
    w = Ros2Writer(buf, chunk_size=chunk_size, compression=compression)
    schema = w.register_msgdef("can_msgs/msg/Frame", FRAME_MSGDEF)
    for topic, msg, log_ns in messages:
        w.write_message(topic, schema, msg, log_time=log_ns)
    w.finish()
    return buf.getvalue()


def _raw_messages(data: bytes) -> list[tuple[str, bytes, int]]:
    return [(c.topic, m.data, m.log_time) for _, c, m in make_reader(io.BytesIO(data)).iter_messages()]


@dataclass
class Expected:
    rows: list[dict[str, Any]]

    def table(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows, schema=FRAME_SCHEMA)


def _row(
    t_us: int, bus: str, ident: int, data: bytes, ext: bool = False, err: bool = False
) -> dict[str, Any]:
    return {
        "t_us": t_us,
        "bus": bus,
        "arbitration_id": ident,
        "is_extended": ext,
        "is_fd": False,
        "is_error": err,
        "dlc": len(data),
        "data": data,
    }


def _random_frames(n: int, seed: int) -> tuple[list[tuple[str, dict[str, Any], int]], Expected]:
    rng = np.random.default_rng(seed)
    t = T0_US
    msgs: list[tuple[str, dict[str, Any], int]] = []
    rows: list[dict[str, Any]] = []
    for i in range(n):
        t += int(rng.integers(1, 3000))
        topic, bus = (("/can0/rx", "can0"), ("/vehicle/can1/frames", "can1"))[i % 2]
        ext = bool(rng.integers(0, 4) == 0)
        ident = int(rng.integers(0, 0x1FFFFFFF if ext else 0x7FF, endpoint=True))
        data = rng.integers(0, 256, int(rng.integers(0, 9)), dtype=np.uint8).tobytes()
        msg = _ros2_msg(t, ident, data, ext=ext)
        log_ns = t * 1000 + 777  # later than the stamp: the stamp must win
        if i % 7 == 3:  # no header stamp: log_time is the frame's time (ns truncated to us)
            msg["header"]["stamp"] = {"sec": 0, "nanosec": 0}
            log_ns = t * 1000 + 999
        msgs.append((topic, msg, log_ns))
        rows.append(_row(t, bus, ident, data, ext))
    t += 10
    msgs.append(("/can0/rx", _ros2_msg(t, 0x123, b"\x01\x02", err=True), t * 1000))
    rows.append(_row(t, "can0", 0x123, b"\x01\x02", err=True))
    t += 10
    msgs.append(("/can0/rx", _ros2_msg(t, 0x7DF, b"\x00" * 8, rtr=True), t * 1000))
    rows.append(_row(t, "can0", 0x7DF, b""))  # a remote frame carries no data
    return msgs, Expected(rows)


# -- CAN ---------------------------------------------------------------------------


def test_mcap_is_a_registered_can_format() -> None:
    assert isinstance(reader_for("drive/can/pt.MCAP"), McapCanReader)


def test_bus_and_type_rules() -> None:
    assert bus_from_topic("/can0/rx") == "can0"
    assert bus_from_topic("/vehicle/vcan1/frames") == "vcan1"
    assert bus_from_topic("/from_can_bus") == "from_can_bus"
    assert bus_from_topic("/") == "0"
    assert is_can_type("can_msgs/msg/Frame") and is_can_type("can_msgs/Frame")
    assert is_can_type("foxglove.CanFrame")
    assert not is_can_type("sensor_msgs/msg/Imu") and not is_can_type("tf2_msgs/msg/TFMessage")


def test_ros2_frames_read_back_bit_exact_and_garbled_messages_are_skipped() -> None:
    msgs, expected = _random_frames(600, seed=1)
    good = _raw_messages(_ros2_mcap(msgs))
    bad_dlc = _ros2_msg(T0_US, 0x100, b"\x00" * 8)
    bad_dlc["dlc"] = 9
    bad_id = _ros2_msg(T0_US, 0x800, b"\x00")  # a standard frame cannot have an 11-bit-plus id
    valid_but_wrong = _raw_messages(_ros2_mcap([("/can0/rx", bad_dlc, 1), ("/can0/rx", bad_id, 1)]))
    garbage = [b"", b"\x00\x01\x00\x00\x07", b"no cdr here at all!", good[5][1][:-3]]
    # Rebuilt with the plain mcap writer so garbled bytes sit on the same CAN channel.
    buf = io.BytesIO()
    w = McapWriter(buf)
    w.start(profile="ros2")
    sid = w.register_schema("can_msgs/msg/Frame", "ros2msg", FRAME_MSGDEF.encode())
    chan = {t: w.register_channel(t, "cdr", sid) for t in ("/can0/rx", "/vehicle/can1/frames")}
    other = w.register_channel("/imu", "json", w.register_schema("sensor_msgs/Imu", "jsonschema", b"{}"))
    inserted = {100: garbage[0], 200: garbage[1], 300: garbage[2], 301: garbage[3]}
    for i, (topic, payload, log_ns) in enumerate(good):
        if i in inserted:
            w.add_message(chan["/can0/rx"], log_time=log_ns, data=inserted[i], publish_time=log_ns)
        if i == 400:
            for _, p, _ in valid_but_wrong:
                w.add_message(chan["/can0/rx"], log_time=log_ns, data=p, publish_time=log_ns)
            w.add_message(other, log_time=log_ns, data=b'{"not": "can"}', publish_time=log_ns)
        w.add_message(chan[topic], log_time=log_ns, data=payload, publish_time=log_ns)
    w.finish()

    result = read_can_log(buf.getvalue(), "garbled.mcap")
    assert result.frames.schema == FRAME_SCHEMA
    assert result.frames.equals(expected.table())  # ids, data, dlc, flags, times to the microsecond
    assert result.skipped == 6, result.problems
    text = "\n".join(result.problems)
    assert "dlc 9 out of range" in text and "id 0x800 out of range" in text
    assert text.count("undecodable") == 3 and "/imu" not in text
    assert "5 data bytes where the schema has 8 (truncated message?)" in text
    assert all(p.startswith("garbled.mcap: /can0/rx message ") for p in result.problems)


def test_real_candump_log_round_trips_through_mcap(shared_data: Path) -> None:
    log = shared_data / "can" / "rav4_drive_seg40_part1.log"
    frames = read_can_log(log.read_bytes(), log.name).frames
    assert frames.num_rows > 60_000 and max(frames.column("dlc").to_pylist()) <= 8
    msgs = [
        (f"/{f['bus']}/rx", _ros2_msg(f["t_us"], f["arbitration_id"], f["data"], ext=f["is_extended"]), 0)
        for f in frames.to_pylist()
    ]
    result = read_can_log(_ros2_mcap(msgs), "rav4.mcap")
    assert result.skipped == 0, result.problems
    assert result.frames.equals(frames)


def test_json_can_frames_with_bus_fields_base64_and_lists() -> None:
    buf = io.BytesIO()
    w = McapWriter(buf)
    w.start()
    sid = w.register_schema("can_msgs/Frame", "jsonschema", b'{"type": "object"}')
    can = w.register_channel("/pt/frames", "json", sid)
    imu = w.register_channel("/imu", "json", w.register_schema("foxglove.Imu", "jsonschema", b"{}"))
    t = T0_US

    def add(chan: int, doc: Any, log_us: int) -> None:
        raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        w.add_message(chan, log_time=log_us * 1000 + 5, data=raw, publish_time=0)

    stamp = {"sec": t // 1_000_000, "nsec": t % 1_000_000 * 1000}
    add(
        can,
        {"timestamp": stamp, "id": 0x2C1, "dlc": 3, "data": base64.b64encode(b"\x01\x02\x03\x04").decode()},
        0,
    )
    add(can, {"id": 0x18DAF110, "is_extended": True, "data": [1, 2, 3], "bus": "can2"}, t + 1)
    add(can, {"id": 0x10, "dlc": 2, "data": [255, 0], "channel": 1}, t + 2)
    add(imu, {"x": 1}, t + 2)
    add(can, b"{not json", t + 3)
    add(can, {"id": 0x11, "data": "!!!not base64"}, t + 3)
    add(can, {"data": [1, 2]}, t + 3)
    add(can, {"id": 0x12, "data": [1, 300]}, t + 3)
    add(can, [1, 2, 3], t + 3)
    add(can, {"id": 0x13, "dlc": 4, "data": [1]}, t + 3)
    ros1 = w.register_channel(
        "/old/can", "ros1", w.register_schema("can_msgs/Frame", "ros1msg", b"uint32 id")
    )
    for _ in range(3):
        add(ros1, b"\x01\x00\x00\x00", t + 4)
    w.finish()

    result = read_can_log(buf.getvalue(), "j.mcap")
    assert result.frames.equals(
        Expected(
            [
                _row(t, "pt/frames", 0x2C1, b"\x01\x02\x03"),
                _row(t + 1, "can2", 0x18DAF110, b"\x01\x02\x03", ext=True),
                _row(t + 2, "1", 0x10, b"\xff\x00"),
            ]
        ).table()
    )
    assert result.skipped == 6 + 3, result.problems
    text = "\n".join(result.problems)
    assert "j.mcap: /old/can: can_msgs/Frame as 'ros1' messages is not supported (ROS 2 CDR or JSON)" in text
    assert len(result.problems) == 7  # the unsupported channel said once, its messages counted
    for needle in (
        "undecodable (JSONDecodeError",
        "not base64",
        "id is not an integer",
        "not a list of bytes",
    ):
        assert needle in text
    assert "not a JSON object" in text and "dlc 4 but only 1 data bytes" in text


def test_truncated_mcap_keeps_the_frames_before_the_cut_and_noise_is_noted() -> None:
    msgs, expected = _random_frames(3000, seed=2)
    data = _ros2_mcap(msgs, chunk_size=4096)
    result = read_can_log(data[: len(data) * 6 // 10], "cut.mcap")
    n = result.frames.num_rows
    assert 0 < n < len(expected.rows)
    assert result.frames.equals(expected.table().slice(0, n))
    assert result.skipped == 1 and "truncated or corrupt" in result.problems[0]
    # A flipped bit inside an uncompressed chunk: its CRC stops the read there, nothing wrong lands.
    plain = bytearray(_ros2_mcap(msgs, chunk_size=4096, compression=CompressionType.NONE))
    plain[len(plain) // 2] ^= 0x10
    flipped = read_can_log(bytes(plain), "flip.mcap")
    n = flipped.frames.num_rows
    assert 0 < n < len(expected.rows) and flipped.frames.equals(expected.table().slice(0, n))
    assert flipped.skipped == 1 and "CRCValidationError" in flipped.problems[0]
    noise = read_can_log(np.random.default_rng(0).bytes(5000), "noise.mcap")
    assert noise.frames.num_rows == 0 and noise.skipped == 1
    assert "not a readable MCAP file" in noise.problems[0]


def test_mcap_without_can_channels_says_so() -> None:
    result = read_can_log(_video_mcap(_encode(8, gop=4)[:4]), "cam.mcap")
    assert result.frames.num_rows == 0
    assert result.problems == [
        "cam.mcap: no CAN channels (can_msgs/msg/Frame or a JSON CAN frame); topics ['/cam/front']"
    ]


# -- video -------------------------------------------------------------------------


@dataclass
class Encoded:
    data: bytes  # Annex-B, one frame
    pts_us: int  # relative to the first frame
    key: bool
    codec: str


def _encode(n: int, gop: int = 30, codec: str = "libx264", seed: int = 3) -> list[Encoded]:
    """A few seconds of moving frames, B-frames on, VFR with a 0.5 s gap, in decode order."""
    rng = np.random.default_rng(seed)
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = 160, 96, "yuv420p"
    enc.time_base = Fraction(1, 1_000_000)
    enc.gop_size, enc.max_b_frames = gop, 2
    if codec == "libx264":
        enc.options = {
            "preset": "ultrafast",
            "bf": "2",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
        }
    else:
        enc.options = {
            "preset": "ultrafast",
            "x265-params": f"bframes=2:keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error",
        }
    t = 0
    packets: list[av.Packet] = []
    for i in range(n):
        img = np.zeros((96, 160, 3), np.uint8)
        img[:, :, 0] = (np.arange(160) * 3 + i * 7) % 256
        img[(i * 3) % 80 : (i * 3) % 80 + 16, (i * 5) % 140 : (i * 5) % 140 + 20] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = t
        packets += enc.encode(frame)
        t += int(rng.choice([33_333, 33_334, 40_000])) + (500_000 if i == n // 2 else 0)
    packets += enc.encode(None)
    name = "h264" if codec == "libx264" else "hevc"
    return [Encoded(bytes(p), int(p.pts), bool(p.is_keyframe), name) for p in packets]


def _video_msg(e: Encoded, t0_us: int = T0_US) -> CompressedVideo:
    t = t0_us + e.pts_us
    return CompressedVideo(
        timestamp=Timestamp(seconds=t // 1_000_000, nanos=t % 1_000_000 * 1000),
        frame_id="front",
        data=e.data,
        format="h264" if e.codec == "h264" else "h265",
    )


def _video_mcap(
    frames: list[Encoded], topic: str = "/cam/front", extra: dict[str, list[bytes]] | None = None
) -> bytes:
    """CompressedVideo messages in decode order; log_time is the frame's time plus 50 ms.

    So log-time order is presentation order (not decode order) and differs from the stamp.
    """
    buf = io.BytesIO()
    w = McapWriter(buf)
    w.start()
    sid = register_schema(w, CompressedVideo)
    chan = w.register_channel(topic, "protobuf", sid)
    for i, e in enumerate(frames):
        log_ns = (T0_US + e.pts_us + 50_000) * 1000
        for raw in (extra or {}).get(str(i), []):
            w.add_message(chan, log_time=log_ns, data=raw, publish_time=log_ns)
        w.add_message(chan, log_time=log_ns, data=_video_msg(e).SerializeToString(), publish_time=log_ns)
    w.finish()
    return buf.getvalue()


def _decoded(packets: list[tuple[bytes, int]], codec: str) -> dict[int, np.ndarray]:
    """Every frame of the original stream by pts, decoded straight from its packets."""
    dec = av.CodecContext.create(codec, "r")
    out: dict[int, np.ndarray] = {}
    for data, pts in [*packets, (b"", 0)]:
        pkt = av.Packet(data) if data else None
        if pkt is not None:
            pkt.pts = pts
        for f in dec.decode(pkt):
            out[int(f.pts)] = f.to_ndarray()
    return out


def _container_frames(v: McapVideo, keys_only: bool = False) -> dict[int, np.ndarray]:
    with av.open(io.BytesIO(v.data)) as c:
        s = c.streams.video[0]
        assert s.time_base == Fraction(1, 1_000_000)
        if keys_only:
            s.codec_context.skip_frame = "NONKEY"
        return {int(f.pts): f.to_ndarray() for f in c.decode(s)}


def _check_exact(v: McapVideo, frames: list[Encoded]) -> None:
    rel = np.array([e.pts_us for e in frames]) - min(e.pts_us for e in frames)
    p = probe(from_bytes(v.data), v.suffix)
    assert p.packets == v.frames == len(frames)
    assert p.codec == frames[0].codec == v.codec
    np.testing.assert_array_equal(np.round(p.times * 1e6).astype(np.int64), rel)  # decode order, exact
    np.testing.assert_array_equal(p.keys, [e.key for e in frames])
    assert v.keyframes == sum(e.key for e in frames)
    original = _decoded([(e.data, e.pts_us) for e in frames], frames[0].codec)
    got = _container_frames(v)
    assert sorted(got) == sorted(int(r) for r in rel)
    for e in frames:  # every frame, in presentation order, the same pixels
        np.testing.assert_array_equal(got[e.pts_us - min(f.pts_us for f in frames)], original[e.pts_us])
    for t, img in _container_frames(v, keys_only=True).items():  # a keyframe decoded alone
        np.testing.assert_array_equal(img, original[t + min(f.pts_us for f in frames)])


@pytest.fixture(scope="module")
def h264_frames() -> list[Encoded]:
    frames = _encode(90)
    assert any(b.pts_us < a.pts_us for a, b in itertools.pairwise(frames))  # B-frames reorder
    return frames


def test_compressed_video_h264_with_b_frames_vfr_and_a_gap_is_exact(h264_frames: list[Encoded]) -> None:
    v = to_container(_video_mcap(h264_frames))
    assert v.topic == "/cam/front" and v.warnings == []
    assert v.start_us == T0_US + min(e.pts_us for e in h264_frames)  # the stamp, not log_time
    assert v.start_time.isoformat() == "2018-08-02T16:14:47.123457+00:00"
    assert v.keyframes == 3
    _check_exact(v, h264_frames)


def test_compressed_video_h265() -> None:
    frames = _encode(30, gop=10, codec="libx265")
    v = to_container(_video_mcap(frames))
    assert v.codec == "hevc"
    _check_exact(v, frames)


def test_json_encoded_video_gives_the_same_container(h264_frames: list[Encoded]) -> None:
    buf = io.BytesIO()
    w = McapWriter(buf)
    w.start()
    chan = w.register_channel(
        "/cam/front", "json", w.register_schema("foxglove.CompressedVideo", "jsonschema", b"{}")
    )
    for e in h264_frames:
        t = T0_US + e.pts_us
        doc = {
            "timestamp": {"sec": t // 1_000_000, "nsec": t % 1_000_000 * 1000},
            "frame_id": "front",
            "data": base64.b64encode(e.data).decode(),
            "format": "h264",
        }
        w.add_message(chan, log_time=0, data=json.dumps(doc).encode(), publish_time=0)
    w.finish()
    assert to_container(buf.getvalue()).data == to_container(_video_mcap(h264_frames)).data


def test_ros2_cdr_compressed_video(h264_frames: list[Encoded]) -> None:
    msgdef = (
        "builtin_interfaces/Time timestamp\nstring frame_id\nuint8[] data\nstring format\n"
        "================================================================================\n"
        "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"
    )
    buf = io.BytesIO()
    w = Ros2Writer(buf)
    schema = w.register_msgdef("foxglove_msgs/msg/CompressedVideo", msgdef)
    for e in h264_frames[:40]:
        t = T0_US + e.pts_us
        stamp = {"sec": t // 1_000_000, "nanosec": t % 1_000_000 * 1000}
        msg = {"timestamp": stamp, "frame_id": "front", "data": e.data, "format": "h264"}
        w.write_message("/cam/front/video", schema, msg, log_time=0)
    w.finish()
    v = to_container(buf.getvalue())
    assert v.topic == "/cam/front/video" and v.warnings == []
    _check_exact(v, h264_frames[:40])


def test_garbled_messages_other_topics_and_a_mid_gop_start_are_warned(h264_frames: list[Encoded]) -> None:
    first_key = next(i for i, e in enumerate(h264_frames) if e.key and i > 0)
    tail = h264_frames[first_key - 4 :]  # starts mid-GOP: 4 frames that cannot decode
    dup = _video_msg(tail[10]).SerializeToString()
    not_annexb = CompressedVideo(data=b"\x12\x34\x56", format="h264").SerializeToString()
    no_format = CompressedVideo(data=tail[0].data).SerializeToString()
    extra = {"0": [no_format], "8": [b"\xff\xff\xff garbage"], "9": [not_annexb], "12": [dup]}
    data = _video_mcap(tail, extra=extra)
    other = _video_mcap(h264_frames[:20], topic="/cam/rear")
    both = _merge(data, other)
    assert video_topics(both) == ["/cam/front", "/cam/rear"]
    v = to_container(both)
    assert v.topic == "/cam/front"
    kept = tail[4:]
    assert v.start_us == T0_US + min(e.pts_us for e in kept)
    _check_exact(v, kept)
    text = "\n".join(v.warnings)
    assert "2 video topics ['/cam/front', '/cam/rear']: read /cam/front only" in text
    assert "4 of " in text and "another format in a h264 stream" in text
    assert "undecodable" in text and "not Annex-B" in text
    assert "same timestamp" in text and len(v.warnings) == 3
    assert "4 frames before the first keyframe dropped" in text
    assert to_container(both, topic="/cam/rear").frames == 20


def test_a_clock_stepped_back_keeps_the_frames_before_it(h264_frames: list[Encoded]) -> None:
    stepped = [
        Encoded(e.data, e.pts_us - (10_000_000 if i >= 45 else 0), e.key, e.codec)
        for i, e in enumerate(h264_frames)
    ]
    v = to_container(_video_mcap(stepped))
    _check_exact(v, h264_frames[:45])
    assert v.warnings == [
        f"/cam/front: time goes back from {T0_US + stepped[44].pts_us} to {T0_US + stepped[45].pts_us} us "
        "(a clock step?): the last 45 frames dropped"
    ]


def _merge(a: bytes, b: bytes) -> bytes:
    """Both files' messages in one MCAP (b's channels renumbered)."""
    buf = io.BytesIO()
    w = McapWriter(buf)
    w.start()
    ids: dict[tuple[int, int], int] = {}
    for k, src in enumerate((a, b)):
        for schema, channel, message in make_reader(io.BytesIO(src)).iter_messages(log_time_order=False):
            key = (k, channel.id)
            if key not in ids:
                assert schema is not None
                sid = w.register_schema(schema.name, schema.encoding, schema.data)
                ids[key] = w.register_channel(channel.topic, channel.message_encoding, sid)
            w.add_message(ids[key], log_time=message.log_time, data=message.data, publish_time=0)
    w.finish()
    return buf.getvalue()


def test_recorded_dashcam_through_mcap_is_exact(shared_data: Path) -> None:
    path = shared_data / "video" / "solidWhiteRight.mp4"
    frames: list[Encoded] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        bsf = av.BitStreamFilterContext("h264_mp4toannexb", s)
        for pkt in [*c.demux(s), None]:
            if pkt is not None and pkt.size == 0:
                continue
            for out in bsf.filter(pkt):
                assert out.pts is not None and s.time_base is not None
                frames.append(
                    Encoded(bytes(out), int(out.pts * s.time_base * 1_000_000), out.is_keyframe, "h264")
                )
    assert len(frames) == 221 and all(
        f.data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")) for f in frames
    )
    v = to_container(_video_mcap(frames))
    p = probe(from_bytes(v.data), v.suffix)
    orig = probe(from_bytes(path.read_bytes()), ".mp4")
    assert (p.width, p.height, p.packets) == (orig.width, orig.height, orig.packets) == (960, 540, 221)
    np.testing.assert_array_equal(p.key_times, orig.key_times)
    np.testing.assert_array_equal(np.round(p.times * 1e6), [f.pts_us for f in frames])
    with av.open(str(path)) as c:
        c.streams.video[0].codec_context.skip_frame = "NONKEY"
        want = {round(float(f.time) * 1e6): f.to_ndarray() for f in c.decode(video=0)}
    got = _container_frames(v, keys_only=True)
    assert sorted(got) == sorted(want) and len(got) >= 1
    for t, img in got.items():  # the keyframe decoded from MCAP is the recorded file's, pixel for pixel
        np.testing.assert_array_equal(img, want[t])
    assert keyframe_images(
        from_bytes(v.data), v.suffix, p, ClipCut(0, 0.0, 4.0)
    )  # the rest of ingest reads it


def test_nothing_usable_raises_video_error(h264_frames: list[Encoded]) -> None:
    with pytest.raises(VideoError, match="not a readable MCAP"):
        to_container(b"\x00" * 100)
    with pytest.raises(VideoError, match=r"no foxglove\.CompressedVideo messages"):
        to_container(_ros2_mcap(_random_frames(5, seed=4)[0]))
    with pytest.raises(VideoError, match="no keyframe"):
        to_container(_video_mcap([e for e in h264_frames if not e.key][:10]))
    with pytest.raises(VideoError, match="no video topic '/cam/side'"):
        to_container(_video_mcap(h264_frames[:5]), topic="/cam/side")
    vp9 = Encoded(b"\x00\x00\x01\x09", 0, True, "vp9")
    buf = io.BytesIO()
    w = McapWriter(buf)
    w.start()
    chan = w.register_channel("/cam", "protobuf", register_schema(w, CompressedVideo))
    msg = _video_msg(vp9)
    msg.format = "vp9"
    w.add_message(chan, log_time=0, data=msg.SerializeToString(), publish_time=0)
    w.finish()
    with pytest.raises(VideoError, match=r"format \['vp9'\] is not supported"):
        to_container(buf.getvalue())


def test_a_drive_recorded_as_mcap_ingests_like_any_other(
    h264_frames: list[Encoded], shared_data: Path, tmp_path: Path
) -> None:
    """cameras/front.mcap (CompressedVideo) + can/bus.mcap (can_msgs/Frame) in one drive."""
    from jobs.ingest_job import run_ingest
    from storage import Lake, Settings
    from tests.ingest.conftest import make_drive

    log = shared_data / "can" / "rav4_drive_seg40_part1.log"
    frames = read_can_log(log.read_bytes(), log.name).frames.slice(0, 20_000)
    can = _ros2_mcap(
        [
            (f"/{f['bus']}/rx", _ros2_msg(f["t_us"], f["arbitration_id"], f["data"], ext=f["is_extended"]), 0)
            for f in frames.to_pylist()
        ]
    )
    raw = tmp_path / "raw"
    make_drive(
        raw,
        "rav4",
        "mcap-drive",
        {"cameras/front.mcap": _video_mcap(h264_frames), "can/bus.mcap": can},
        {"platform": "toyota_rav4_2017"},
    )
    settings = Settings(lake=str(tmp_path / "lake"), clip_seconds=2.0)
    report = run_ingest(str(raw), settings, runner=LOCAL)
    assert report.exit_code == 0, report.failed
    lake = Lake.from_settings(settings)
    (drive,) = lake.read("drives").to_pylist()
    assert drive["status"] == "ok" and drive["time_source"] == "can"
    assert drive["n_can_frames"] == 20_000 and lake.read("signals").num_rows > 0
    clips = lake.read("clips").sort_by("start_time").to_pylist()
    assert clips and {c["camera"] for c in clips} == {"front"}
    # The camera's clock is its messages' stamps, exact to the microsecond.
    first = clips[0]["start_time"]
    assert round(first.timestamp() * 1e6) == T0_US + min(e.pts_us for e in h264_frames)
