"""openpilot logs written at test time with pycapnp, as comma devices write them.

CAN events go through opendbc's own ``rlog.capnp`` (comma's schema for them); the
events it does not declare (initData, clocks, carParams, encode indices) through
fleetmine's subset of cereal's schema, which must agree with it field for field.
"""

from __future__ import annotations

import bz2
from collections.abc import Iterable
from typing import Any

import zstandard
from opendbc.car.logreader import capnp_log as opendbc_log

from ingest.openpilot.logs import SCHEMA

Frame = tuple[int, int, bytes, int]  # (time ns on the boot clock, address, payload, bus)


def can_events(frames: Iterable[Frame]) -> list[bytes]:
    """One ``can`` event per distinct time (a panda batch), in time order."""
    batches: dict[int, list[Frame]] = {}
    for f in frames:
        batches.setdefault(f[0], []).append(f)
    out = []
    for t in sorted(batches):
        ev = opendbc_log.Event.new_message(logMonoTime=t)
        cans = ev.init("can", len(batches[t]))
        for c, (_, address, dat, src) in zip(cans, batches[t], strict=True):
            c.address, c.dat, c.src = address, dat, src
        out.append(ev.to_bytes())
    return out


def event(mono_ns: int, **member: Any) -> bytes:
    """One event of fleetmine's schema: ``event(t, initData={"wallTimeNanos": w})``."""
    return SCHEMA.Event.new_message(logMonoTime=mono_ns, **member).to_bytes()


def log_file(events: Iterable[bytes], compress: str = "") -> bytes:
    """Events as one log file: ``compress`` "" (plain), "zst" or "bz2"."""
    raw = b"".join(events)
    if compress == "zst":
        return zstandard.ZstdCompressor().compress(raw)
    if compress == "bz2":
        return bz2.compress(raw)
    return raw


def candump_frames(text: bytes, mono0_ns: int) -> tuple[list[Frame], int]:
    """A candump -L log's frames on a boot clock starting at ``mono0_ns``, and the wall
    time (ns) of its first frame: the log's own microseconds, exactly."""
    frames: list[Frame] = []
    wall0 = None
    for line in text.decode().splitlines():
        stamp, iface, frame = line.split()
        sec, _, frac = stamp.strip("()").partition(".")
        us = int(sec) * 1_000_000 + int(frac.ljust(6, "0")[:6])
        wall0 = us * 1000 if wall0 is None else wall0
        ident, _, data = frame.partition("#")
        frames.append((mono0_ns + us * 1000 - wall0, int(ident, 16), bytes.fromhex(data), int(iface[3:])))
    assert wall0 is not None
    return frames, wall0
