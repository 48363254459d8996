"""openpilot logs: rlog / qlog files, plain, ``.bz2`` or ``.zst``, as a stream of events.

An openpilot log is a sequence of Cap'n Proto messages, one ``Event`` each (cereal's
``log.capnp``): ``logMonoTime`` (nanoseconds on the device's boot clock) and one member
of a union: CAN frames, clocks, car parameters, each camera's encode index, and a hundred
more. comma's own ``LogReader`` (shipped with opendbc) reads ``.zst`` and plain logs with
a schema that holds CAN only; this module also reads ``.bz2`` (older devices, comma2k19)
and the events :file:`log.capnp` declares beside CAN.

Decompression is bounded (:data:`MAX_LOG_BYTES`): a log is untrusted input, and a
bomb must not take the worker down. A file cut short (a segment the device was still
writing, an upload broken off) gives the events before the cut, and says where it
stopped; nothing here raises on bad bytes.

Wall time: ``logMonoTime`` counts from the device's boot. A ``clocks`` event pairs it
with the wall clock; ``initData`` carries the wall time the log began at. The first of
those whose wall time is set (after :data:`CLOCK_SET_AFTER`: a device without GPS fix or
network starts at its build date or at 1970) gives the offset; without one the times
stay boot-relative and the reader says so (``can_time_offset_s`` can move them).
"""

from __future__ import annotations

import bz2
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import capnp
import zstandard

from ingest._reasons import reason

__all__ = [
    "CLOCK_SET_AFTER",
    "LOG_NAMES",
    "MAX_LOG_BYTES",
    "SCHEMA",
    "WallClock",
    "decompress",
    "events",
    "kind",
]

SCHEMA: Any = capnp.load(str(Path(__file__).with_name("log.capnp")))

LOG_NAMES = ("rlog", "qlog", "raw_log")
"""Stems of openpilot log files (``raw_log.bz2`` is comma2k19's name for an rlog)."""

MAX_LOG_BYTES = 1 << 30
"""The most a log may decompress to (a minute's rlog is ~50-100 MB): above it the rest is
not read, and the reader says so."""

CLOCK_SET_AFTER = int(dt.datetime(2010, 1, 1, tzinfo=dt.UTC).timestamp() * 1e9)
"""A device wall clock before this (ns since the epoch) was never set."""

_ZSTD = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20


def decompress(data: bytes) -> tuple[bytes, str | None]:
    """The log's bytes (zstd and bzip2 found by their magic, else plain) and, where
    decompression broke off or hit :data:`MAX_LOG_BYTES`, why: the bytes before are kept."""
    if data[:4] == _ZSTD:
        dz: Any = zstandard.ZstdDecompressor().decompressobj()
        what = "zstd"
    elif data[:3] == b"BZh":
        dz = bz2.BZ2Decompressor()
        what = "bzip2"
    else:
        return data[:MAX_LOG_BYTES], (
            f"larger than {MAX_LOG_BYTES >> 20} MiB; the rest not read" if len(data) > MAX_LOG_BYTES else None
        )
    out = bytearray()
    for i in range(0, len(data), _CHUNK):
        try:
            out += dz.decompress(data[i : i + _CHUNK])
        except (OSError, EOFError, ValueError, zstandard.ZstdError) as exc:
            return bytes(out), f"{what} data corrupt after {len(out)} bytes ({reason(exc)})"
        if len(out) > MAX_LOG_BYTES:
            return bytes(
                out[:MAX_LOG_BYTES]
            ), f"decompresses past {MAX_LOG_BYTES >> 20} MiB; the rest not read"
        if dz.eof:
            break
    if not dz.eof:
        return bytes(out), f"{what} stream cut short (the file ends inside it)"
    return bytes(out), None


def events(raw: bytes, stopped: list[str]) -> Iterator[Any]:
    """The log's events in file order; a read that breaks off appends why to ``stopped``."""
    it = iter(SCHEMA.Event.read_multiple_bytes(raw))
    n = 0
    while True:
        try:
            ev = next(it)
        except StopIteration:
            return
        except Exception as exc:  # pycapnp raises KjException (and others) on cut or garbled bytes
            why = reason(exc)
            stopped.append(
                f"not an openpilot log ({why})"
                if n == 0
                else f"unreadable after {n} events, cut or corrupt ({why})"
            )
            return
        n += 1
        yield ev


def kind(ev: Any) -> str | None:
    """The event's union member, or None for one newer than :file:`log.capnp`."""
    try:
        return str(ev.which())
    except Exception:  # an unknown discriminant: a member added upstream after this schema
        return None


@dataclass
class WallClock:
    """``wall_ns - mono_ns`` from the first event that has both, and which kind it was."""

    offset_ns: int | None = None
    source: str = ""

    def see(self, ev: Any, what: str | None) -> None:
        if self.offset_ns is not None and self.source == "clocks":
            return
        if what == "clocks":
            wall = int(ev.clocks.wallTimeNanos)
            if wall > CLOCK_SET_AFTER:
                self.offset_ns, self.source = wall - int(ev.logMonoTime), "clocks"
        elif what == "initData" and self.offset_ns is None:
            wall = int(ev.initData.wallTimeNanos)
            if wall > CLOCK_SET_AFTER:
                self.offset_ns, self.source = wall - int(ev.logMonoTime), "initData"
