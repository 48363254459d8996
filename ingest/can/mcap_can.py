"""CAN frames from MCAP recordings (ROS 2 / Foxglove), through the ``mcap`` package.

Which channels are CAN: those whose schema names a CAN frame type, either ROS 2
``can_msgs/msg/Frame`` (ros2msg schema, CDR messages, decoded by
mcap-ros2-support) or a CAN frame schema (``can_msgs/Frame``,
``foxglove.CanFrame``, ...) with JSON messages. Other channels (cameras, IMU,
...) are ignored.

Fields, by name: ``id`` (or ``arbitration_id``), ``is_extended`` (default: id >
0x7FF), ``is_error``, ``is_rtr``, ``is_fd``, ``dlc`` (or ``len``; default: the
data's length) and ``data`` (CDR ``uint8[]``; in JSON a list of ints or a base64
string). ``data`` is cut to ``dlc`` bytes; a remote frame carries none (dlc 0, as
the other readers give it).

Time: the message's ``header.stamp`` (or ``timestamp``; sec + nanosec) when set,
else the record's ``log_time``; integer arithmetic, nanoseconds truncated to
microseconds, so no float ever rounds a timestamp.

Bus: the message's ``bus`` or ``channel`` field when it has one; else the first
topic segment that names an interface (``/can0/rx`` -> ``can0``,
``/vehicle/vcan1/frames`` -> ``vcan1``); else the topic without its slashes
(``/from_can_bus`` -> ``from_can_bus``).

Frames come in file order (as recorded), like every other reader. A message that
does not decode or is not a valid frame is skipped and noted; a file cut short
keeps the messages before the cut. Chunk CRCs are checked, so a flipped bit stops
the read (noted) rather than landing in the table.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from mcap.reader import NonSeekingReader
from mcap.records import Channel, Message, Schema
from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap_ros2.decoder import DecoderFactory as Ros2DecoderFactory

from ingest._reasons import reason
from ingest.interfaces import FRAME_SCHEMA, CanReadResult
from storage.errors import InputError

__all__ = ["McapCanReader", "bus_from_topic", "is_can_type"]

_IFACE = re.compile(r"[A-Za-z]*can[_-]?\d+")
_FRAME_LEAVES = {"frame", "canframe", "can_frame", "canmessage", "can_message"}


def is_can_type(schema_name: str) -> bool:
    """``can_msgs/msg/Frame``, ``can_msgs/Frame``, ``foxglove.CanFrame``, ...: a CAN frame type."""
    low = schema_name.lower()
    return "can" in low and re.split(r"[/.]", low)[-1] in _FRAME_LEAVES


def bus_from_topic(topic: str) -> str:
    parts = [p for p in topic.split("/") if p]
    for p in parts:
        if _IFACE.fullmatch(p):
            return p
    return "/".join(parts) or "0"


class _BadMessage(InputError):
    """A message that decodes but does not hold what its schema promises."""


def _get(msg: Any, *names: str) -> Any:
    for n in names:
        v = msg.get(n) if isinstance(msg, dict) else getattr(msg, n, None)
        if v is not None:
            return v
    return None


def _int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _BadMessage(f"{what} is not an integer (a {type(v).__name__})")
    return v


def _flag(v: Any, what: str, default: bool = False) -> bool:
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise _BadMessage(f"{what} is not a boolean (a {type(v).__name__})")


def _stamp_us(msg: Any, log_time_ns: int) -> int:
    """``header.stamp`` (or ``timestamp``) in integer microseconds; ``log_time`` when unset."""
    header = _get(msg, "header")
    stamp = _get(header, "stamp") if header is not None else _get(msg, "timestamp")
    if stamp is not None:
        sec = _int(_get(stamp, "sec", "secs", "seconds") or 0, "stamp seconds")
        nsec = _int(_get(stamp, "nanosec", "nsec", "nanos", "nsecs") or 0, "stamp nanoseconds")
        if not 0 <= nsec < 1_000_000_000:
            raise _BadMessage(f"stamp nanoseconds out of range: {nsec}")
        if sec or nsec:
            return sec * 1_000_000 + nsec // 1000
    return log_time_ns // 1000


def _json_object(data: bytes) -> dict[str, Any]:
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise _BadMessage("not a JSON object")
    return obj


def _payload(v: Any) -> bytes:
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, str):
        try:
            return base64.b64decode(v, validate=True)
        except ValueError as exc:
            raise _BadMessage("data is not base64") from exc
    if isinstance(v, list):
        if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in v):
            raise _BadMessage("data is not a list of bytes")
        return bytes(v)
    raise _BadMessage(f"data missing or of type {type(v).__name__}")


Row = tuple[int, str, int, bool, bool, bool, int, bytes]


def _frame_row(msg: Any, log_time_ns: int, topic_bus: str, data_size: int | None = None) -> Row:
    """One :data:`FRAME_SCHEMA` row from a decoded message (CDR object or JSON dict).

    ``data_size``: the schema's fixed array size; CDR decoding does not notice a
    message cut inside its last field, this check does.
    """
    ident = _int(_get(msg, "id", "arbitration_id"), "id")
    ext = _flag(_get(msg, "is_extended", "is_extended_id", "extended"), "is_extended", ident > 0x7FF)
    if not 0 <= ident <= (0x1FFFFFFF if ext else 0x7FF):
        raise _BadMessage(f"id {ident:#x} out of range for a{'n extended' if ext else ' standard'} frame")
    fd = _flag(_get(msg, "is_fd", "fd"), "is_fd")
    err = _flag(_get(msg, "is_error", "is_error_frame"), "is_error")
    rtr = _flag(_get(msg, "is_rtr", "is_remote_frame"), "is_rtr")
    data = _payload(_get(msg, "data"))
    if data_size is not None and len(data) != data_size:
        raise _BadMessage(f"{len(data)} data bytes where the schema has {data_size} (truncated message?)")
    dlc = _get(msg, "dlc", "len")
    n = len(data) if dlc is None else _int(dlc, "dlc")
    if not 0 <= n <= (64 if fd else 8):
        raise _BadMessage(f"dlc {n} out of range for a{'n FD' if fd else ' classic'} frame")
    if n > len(data):
        raise _BadMessage(f"dlc {n} but only {len(data)} data bytes")
    data = b"" if rtr else data[:n]
    bus = _get(msg, "bus", "channel")
    return (
        _stamp_us(msg, log_time_ns),
        str(bus) if bus is not None and str(bus) else topic_bus,
        ident,
        ext,
        fd,
        err,
        len(data),
        data,
    )


def _fixed_size(msgdef: bytes, field: str) -> int | None:
    """``N`` of a ``uint8[N] <field>`` line in the top message of a ros2msg schema."""
    top = msgdef.decode(errors="replace").split("\n====")[0]
    m = re.search(rf"^\s*(?:uint8|byte)\[(\d+)\]\s+{field}\s*$", top, re.M)
    return int(m.group(1)) if m else None


@dataclass
class _Channel:
    topic: str
    bus: str
    decode: Callable[[bytes], Any] | None  # None: not a CAN channel
    unusable: str = ""  # a CAN channel this reader cannot decode: why
    data_size: int | None = None
    count: int = 0


def _channel(schema: Schema | None, channel: Channel, ros2: Ros2DecoderFactory) -> _Channel:
    ch = _Channel(channel.topic, bus_from_topic(channel.topic), None)
    name = schema.name if schema is not None else ""
    if not is_can_type(name):
        return ch
    enc = channel.message_encoding
    if enc == MessageEncoding.JSON:
        ch.decode = _json_object
    elif enc == MessageEncoding.CDR and schema is not None and schema.encoding == SchemaEncoding.ROS2:
        try:
            ch.decode = ros2.decoder_for(enc, schema)
            ch.data_size = _fixed_size(schema.data, "data")
        except Exception as exc:  # a schema text mcap-ros2 cannot parse: that channel only
            ch.unusable = f"schema {name} does not parse ({reason(exc)})"
    else:
        ch.unusable = f"{name} as {enc!r} messages is not supported (ROS 2 CDR or JSON)"
    if ch.decode is None and not ch.unusable:
        ch.unusable = f"no decoder for {name}"
    return ch


def _records(data: bytes, stopped: list[str]) -> Iterator[tuple[Schema | None, Channel, Message]]:
    """Messages in file order; a read that breaks off appends why to ``stopped`` and ends."""
    it = iter(NonSeekingReader(io.BytesIO(data), validate_crcs=True).iter_messages(log_time_order=False))
    n = 0
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # mcap, zstd and lz4 raise many types on a cut or corrupt file
            why = reason(exc)
            if n == 0:
                stopped.append(f"not a readable MCAP file ({why})")
            else:
                stopped.append(f"unreadable after {n} messages, truncated or corrupt ({why})")
            return
        n += 1
        yield item


class McapCanReader:
    suffixes: tuple[str, ...] = (".mcap",)

    def read(self, data: bytes, name: str) -> CanReadResult:
        result = CanReadResult(FRAME_SCHEMA.empty_table())
        ros2 = Ros2DecoderFactory()
        channels: dict[int, _Channel] = {}
        rows: list[Row] = []
        stopped: list[str] = []
        for schema, channel, message in _records(data, stopped):
            ch = channels.get(channel.id)
            if ch is None:
                ch = channels[channel.id] = _channel(schema, channel, ros2)
            if ch.decode is None and not ch.unusable:
                continue
            ch.count += 1
            if ch.decode is None:
                if ch.count == 1:
                    result.note(f"{name}: {ch.topic}: {ch.unusable}")
                else:
                    result.skipped += 1
                continue
            try:
                rows.append(_frame_row(ch.decode(message.data), message.log_time, ch.bus, ch.data_size))
            except _BadMessage as exc:
                result.note(f"{name}: {ch.topic} message {ch.count}: {exc}")
            except Exception as exc:  # the CDR/JSON decoders raise many types on garbled bytes
                result.note(f"{name}: {ch.topic} message {ch.count}: undecodable ({reason(exc)})")
        for why in stopped:
            result.note(f"{name}: {why}")
        if not stopped and not any(c.decode is not None or c.unusable for c in channels.values()):
            topics = sorted({c.topic for c in channels.values()})
            result.note(f"{name}: no CAN channels (can_msgs/msg/Frame or a JSON CAN frame); topics {topics}")
        if rows:
            cols = list(zip(*rows, strict=True))
            result.frames = pa.table(
                [pa.array(c, f.type) for c, f in zip(cols, FRAME_SCHEMA, strict=True)], schema=FRAME_SCHEMA
            )
        return result
