"""Where a drive's start time comes from, in order of trust.

1. ``drive.json`` ``start_time`` (the uploader knew it),
2. the CAN log's first timestamp (an absolute clock on the bus logger),
3. the video container's ``creation_time`` (the earliest camera's),
4. a timestamp in the drive folder's name (comma/openpilot ``2018-08-02--08-34-47``,
   ``20240614_170000``, ISO-like ``2024-06-14T17:00:00Z``),
5. the video (else any) file's modification time.

The last two are guesses: the drive gets a warning naming the source. A drive is
never failed for its start time alone; ``drives.time_source`` records which one was used.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["StartTime", "TimeSource", "folder_time", "parse_time", "resolve_start"]


class TimeSource(StrEnum):
    DRIVE_JSON = "drive_json"
    CAN = "can"
    CONTAINER = "container"
    FOLDER_NAME = "folder_name"
    MTIME = "mtime"
    NONE = "none"


@dataclass(frozen=True)
class StartTime:
    time: dt.datetime
    source: TimeSource
    warnings: list[str] = field(default_factory=list)


def parse_time(value: object) -> dt.datetime | None:
    """An ISO-8601 string as UTC (naive means UTC); anything else is None."""
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.astimezone(dt.UTC) if t.tzinfo else t.replace(tzinfo=dt.UTC)


_FOLDER_PATTERNS = (
    # 2018-08-02--08-34-47 (openpilot/comma), 2024-06-14_17-00-00, 2024-06-14 17:00:00, ISO T
    re.compile(
        r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?:--|[_ T])(\d{2})[-:_](\d{2})[-:_](\d{2})"
        r"(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?"
    ),
    # 20240614_170000, 20240614-170000, 20240614T170000Z
    re.compile(r"(?<!\d)(\d{4})(\d{2})(\d{2})[_T-](\d{2})(\d{2})(\d{2})(?!\d)(Z)?"),
)


def folder_time(name: str) -> dt.datetime | None:
    """The first date-time in a folder name, read as UTC unless it carries an offset."""
    for pattern in _FOLDER_PATTERNS:
        for m in pattern.finditer(name):
            y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
            tz = m.groups()[6]
            try:
                t = dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC)
            except ValueError:
                continue
            if tz and tz != "Z":
                sign = 1 if tz[0] == "+" else -1
                hh, mm = int(tz[1:3]), int(tz[-2:])
                t -= sign * dt.timedelta(hours=hh, minutes=mm)
            return t
    return None


def resolve_start(
    *,
    drive_json: object,
    can_first_us: int | None,
    container_times: list[dt.datetime],
    folder: str,
    mtimes: list[dt.datetime],
) -> StartTime:
    """The best start time the drive has, with the source and any warning."""
    t = parse_time(drive_json)
    warnings: list[str] = []
    if drive_json is not None and t is None:
        warnings.append("drive.json start_time is not an ISO-8601 time; ignored")
    if t is not None:
        return StartTime(t, TimeSource.DRIVE_JSON, warnings)
    if can_first_us is not None:
        return StartTime(dt.datetime.fromtimestamp(can_first_us / 1e6, dt.UTC), TimeSource.CAN, warnings)
    if container_times:
        return StartTime(min(container_times), TimeSource.CONTAINER, warnings)
    t = folder_time(folder)
    if t is not None:
        warnings.append(
            f"start time guessed from the folder name {folder!r} (no drive.json, CAN or creation_time)"
        )
        return StartTime(t, TimeSource.FOLDER_NAME, warnings)
    if mtimes:
        t = min(mtimes)
        warnings.append(f"start time guessed from file modification time {t.isoformat()} (nothing better)")
        return StartTime(t, TimeSource.MTIME, warnings)
    warnings.append("no start time found; 1970-01-01 used")
    return StartTime(dt.datetime.fromtimestamp(0, dt.UTC), TimeSource.NONE, warnings)
