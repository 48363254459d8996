"""openpilot routes as drives: segment folders found, stitched, and their frames timed.

A comma device records a route (one drive) as one-minute segments, each a folder
``<route>--<n>`` holding the road camera ``fcamera.hevc``, the wide road camera
``ecamera.hevc``, the driver camera ``dcamera.hevc`` (raw HEVC, 20 fps), a low-resolution
``qcamera.ts`` and the logs ``rlog`` / ``qlog`` (plain, ``.bz2`` or ``.zst``). Devices and
comma's tools keep them as ``RAW/<dongle_id>/<route>--<n>/`` or
``RAW/<dongle_id>|<route>--<n>/``; the dongle id is the vehicle.

The segments of one route are one drive (``drives.drive`` is the route): each camera's
segment files are read as one stream (a raw HEVC segment starts with its parameter sets
and a keyframe, an MPEG-TS file with its tables and a keyframe, so the files
concatenate), every CAN log of the route is read. ``qcamera.ts`` (the road camera at
526x330) is a camera only where the route has no full one: what devices upload by
default is qlogs and qcamera.ts. A camera's
frames are placed at the start-of-frame times its encode-index events in the logs give
(``roadEncodeIdx``, ``wideRoadEncodeIdx``, ``driverEncodeIdx``: segment, index in the
segment, ``timestampSof`` on the boot clock), moved onto the wall clock the logs record;
without them, at the constant rate with each segment at its minute (``n * 60 s``), and a
warning says so. A segment missing from the route is a gap with a warning, not a failure.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ingest.openpilot.logs import WallClock, decompress, events, kind

__all__ = [
    "CAMERA_FILES",
    "ENCODE_EVENTS",
    "FRAME_TIMES",
    "MAX_FRAME_TIMES_BYTES",
    "QCAMERA",
    "ROUTE",
    "SEGMENT_SECONDS",
    "ConcatFile",
    "EncodeIndex",
    "encode_index",
    "frame_times",
    "is_openpilot_file",
    "log_rank",
    "segment_of",
]

ROUTE = re.compile(r"\d{4}-\d{2}-\d{2}--\d{2}-\d{2}-\d{2}|[0-9a-f]{8}--[0-9a-f]{10}", re.ASCII)
"""An openpilot route name: the device's local start time (``2023-07-27--13-01-19``), or
on newer devices a counter and a random part (``0000002a--9c8f1d2e1b``)."""
_SEGMENT = re.compile(rf"^(?P<route>{ROUTE.pattern})--(?P<n>\d{{1,5}})$", re.ASCII)
QCAMERA = "qcamera.ts"
CAMERA_FILES = {
    "fcamera.hevc": "road",
    "ecamera.hevc": "wide",
    "dcamera.hevc": "driver",
    "video.hevc": "road",  # comma2k19's name for it
    QCAMERA: "qcamera",
}
"""Segment files that are cameras, by the camera name they get (``qcamera.ts``, the road
camera at low resolution in MPEG-TS, only where a route has no full camera)."""
ENCODE_EVENTS = {
    "road": "roadEncodeIdx",
    "wide": "wideRoadEncodeIdx",
    "driver": "driverEncodeIdx",
    "qcamera": "qRoadEncodeIdx",
}
SEGMENT_SECONDS = 60.0
_LOGS = ("rlog", "rlog.zst", "rlog.bz2", "qlog", "qlog.zst", "qlog.bz2", "raw_log.bz2")
FRAME_TIMES = "global_pose/frame_times"
"""comma2k19: the road camera's frame times (seconds on the boot clock), a NumPy array."""
MAX_FRAME_TIMES_BYTES = 16 << 20


def segment_of(name: str) -> tuple[str, int] | None:
    """``("2024-06-14--17-00-00", 3)`` for a folder named ``2024-06-14--17-00-00--3``."""
    m = _SEGMENT.match(name)
    return (m["route"], int(m["n"])) if m else None


def is_openpilot_file(name: str) -> bool:
    return name in CAMERA_FILES or name in _LOGS


def log_rank(name: str) -> int | None:
    """Which log of a segment to read: an rlog (every CAN frame) over a qlog (decimated)."""
    return 0 if name.startswith(("rlog", "raw_log")) else 1 if name.startswith("qlog") else None


@dataclass
class EncodeIndex:
    """Per camera, ``(segment, index in segment) -> wall time (s)`` of each frame's start."""

    times: dict[str, dict[tuple[int, int], float]]
    clock_source: str
    fingerprint: str | None = None  # carParams.carFingerprint: the car, as openpilot named it
    offset_s: float = 0.0  # wall - boot clock, seconds (0 when the logs set no wall clock)

    def add_frame_times(self, camera: str, segment: int, boot_s: np.ndarray) -> None:
        """Frame times a dataset ships beside the logs (comma2k19's ``frame_times``), for a
        camera segment the logs' encode index does not time."""
        got = self.times.setdefault(camera, {})
        if any(k[0] == segment for k in got):
            return
        for i, t in enumerate(np.asarray(boot_s, np.float64).tolist()):
            got[(segment, i)] = t + self.offset_s


def encode_index(logs: list[bytes]) -> EncodeIndex:
    """The encode-index events of the route's logs, on the wall clock they record (the
    boot clock when none is set)."""
    wanted = {v: k for k, v in ENCODE_EVENTS.items()}
    raw: dict[str, dict[tuple[int, int], int]] = {k: {} for k in ENCODE_EVENTS}
    clock = WallClock()
    fingerprint = None
    for data in logs:
        body, _ = decompress(data)
        for ev in events(body, []):
            what = kind(ev)
            clock.see(ev, what)
            if what == "carParams" and fingerprint is None:
                fingerprint = str(ev.carParams.carFingerprint)[:200] or None
            cam = wanted.get(what or "")
            if cam is None:
                continue
            idx = getattr(ev, what or "")
            if int(idx.timestampSof):  # logs before 2019 have no start-of-frame time (0)
                raw[cam][(int(idx.segmentNum), int(idx.segmentId))] = int(idx.timestampSof)
    offset = clock.offset_ns or 0
    return EncodeIndex(
        {cam: {k: (v + offset) / 1e9 for k, v in got.items()} for cam, got in raw.items() if got},
        clock.source,
        fingerprint,
        offset / 1e9,
    )


def frame_times(
    camera: str, counts: list[tuple[int, int]], index: EncodeIndex, fps: float
) -> tuple[np.ndarray, str | None]:
    """Absolute times (s) of the stitched stream's frames, in stream order, and a warning
    when they could not all come from the encode index. ``counts``: ``(segment, frames)``
    per segment file, in the order they were stitched."""
    got = index.times.get(camera, {})
    out: list[float] = []
    missing = 0
    for seg, n in counts:
        for i in range(n):
            t = got.get((seg, i))
            if t is None:
                missing += 1
            out.append(np.nan if t is None else t)
    times = np.asarray(out, np.float64)
    if not missing:
        return times, None
    # Constant rate where the index has nothing: each segment at its minute, anchored to
    # the indexed frames when some are (so both kinds of time agree).
    const = np.concatenate([seg * SEGMENT_SECONDS + np.arange(n) / fps for seg, n in counts])
    known = ~np.isnan(times)
    shift = float(np.median(times[known] - const[known])) if known.any() else 0.0
    times[~known] = const[~known] + shift
    why = (
        f"{camera}: {missing} of {len(times)} frames have no encode-index time in the logs; "
        f"those are timed at a constant {fps:g} fps (each segment at its minute)"
    )
    return times, why


class ConcatFile:
    """Several files read as one, seekable (PyAV probes, then reads from the start)."""

    def __init__(self, openers: list[Callable[[], BinaryIO]], sizes: list[int]):
        self._openers, self._sizes = openers, sizes
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._pos = 0
        self._i = -1
        self._f: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        total = int(self._starts[-1])
        base = 0 if whence == 0 else self._pos if whence == 1 else total
        self._pos = max(0, min(total, base + offset))
        return self._pos

    def read(self, n: int = -1) -> bytes:
        total = int(self._starts[-1])
        if n is None or n < 0:
            n = total - self._pos
        out = bytearray()
        while n > 0 and self._pos < total:
            i = int(np.searchsorted(self._starts, self._pos, side="right") - 1)
            if i != self._i:
                self._close_part()
                self._f, self._i = self._openers[i](), i
            assert self._f is not None
            self._f.seek(self._pos - int(self._starts[i]))
            chunk = self._f.read(min(n, int(self._starts[i + 1]) - self._pos))
            if not chunk:
                break
            out += chunk
            self._pos += len(chunk)
            n -= len(chunk)
        return bytes(out)

    def _close_part(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def close(self) -> None:
        self._close_part()

    def __enter__(self) -> ConcatFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parent_segment(path: str) -> tuple[str, int] | None:
    return segment_of(posixpath.basename(posixpath.dirname(path)))
