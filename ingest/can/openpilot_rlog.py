"""CAN frames from openpilot logs (``rlog``, ``qlog``; plain, ``.bz2`` or ``.zst``).

Each ``can`` event holds the frames the panda read in one batch: ``address``, ``dat``
and ``src`` (the bus: 0-2 as read, 128+ the panda's echo of what openpilot sent, 192+
frames it refused to send), all stamped with the event's ``logMonoTime``. The bus is
``src`` as text (``"0"``), the name a platform's ``buses`` lists; an address above
0x7FF is an extended id, a payload over 8 bytes CAN FD.

Times: the event's boot-clock time moved onto the wall clock the log itself records
(:class:`ingest.openpilot.logs.WallClock`), in integer microseconds; a log with no set
wall clock keeps boot-relative times and says so. ``sendcan`` (what openpilot asked the
car to do) is not a bus reading and is not taken.
"""

from __future__ import annotations

import pyarrow as pa

from ingest.interfaces import FRAME_SCHEMA, CanReadResult
from ingest.openpilot.logs import WallClock, decompress, events, kind

__all__ = ["OpenpilotLogReader"]


class OpenpilotLogReader:
    suffixes: tuple[str, ...] = (
        "rlog",
        "rlog.bz2",
        "rlog.zst",
        "qlog",
        "qlog.bz2",
        "qlog.zst",
        "raw_log.bz2",
    )

    def read(self, data: bytes, name: str) -> CanReadResult:
        result = CanReadResult(FRAME_SCHEMA.empty_table())
        raw, cut = decompress(data)
        stopped: list[str] = []
        clock = WallClock()
        mono: list[int] = []
        buses: list[str] = []
        ids: list[int] = []
        payloads: list[bytes] = []
        n_events = 0
        for ev in events(raw, stopped):
            n_events += 1
            what = kind(ev)
            clock.see(ev, what)
            if what != "can":
                continue
            t = int(ev.logMonoTime)
            for frame in ev.can:
                mono.append(t)
                buses.append(str(frame.src))
                ids.append(int(frame.address))
                payloads.append(bytes(frame.dat))
        for why in (cut, *stopped):
            if why:
                result.note(f"{name}: {why}")
        if not mono:
            if n_events and not stopped:
                result.note(f"{name}: no CAN events among its {n_events} events")
            return result
        offset = clock.offset_ns
        if offset is None:
            offset = 0
            result.warnings.append(
                f"{name}: no set wall clock in the log (no clocks or initData time): frame times are "
                "since the device booted; can_time_offset_s in drive.json moves them"
            )
        lengths = [len(d) for d in payloads]
        result.frames = pa.table(
            {
                "t_us": pa.array([(t + offset) // 1000 for t in mono], pa.int64()),
                "bus": pa.array(buses, pa.string()),
                "arbitration_id": pa.array(ids, pa.int64()),
                "is_extended": pa.array([a > 0x7FF for a in ids], pa.bool_()),
                "is_fd": pa.array([n > 8 for n in lengths], pa.bool_()),
                "is_error": pa.array([False] * len(ids), pa.bool_()),
                "dlc": pa.array(lengths, pa.int16()),
                "data": pa.array(payloads, pa.binary()),
            },
            schema=FRAME_SCHEMA,
        )
        return result
