"""Where a drive's start time comes from, in order of trust.

1. ``drive.json`` ``start_time`` (the uploader knew it),
2. the CAN log's first timestamp (an absolute clock on the bus logger),
3. the video container's ``creation_time`` (the earliest camera's),
4. a timestamp in the drive folder's name (comma/openpilot ``2018-08-02--08-34-47``,
   ``20240614_170000``, ISO-like ``2024-06-14T17:00:00Z``),
5. the video (else any) file's modification time.

The last two are guesses: the drive gets a warning naming the source. A drive is
never failed for its start time alone; ``drives.time_source`` records which one was used.

Every time must lie in [:data:`EARLIEST`, :data:`LATEST`) (1970-01-01 to 2200-01-01 UTC):
a vehicle log is neither older than the Unix epoch nor two centuries ahead, and a time
outside that range (``9999-12-31T23:59:59Z``, a year-1 time with a +23:59 offset) would
overflow the clip arithmetic further on. One outside it is a warning naming its source,
and the next source is used.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_OFFSET_S",
    "StartTime",
    "TimeSource",
    "check_time",
    "folder_time",
    "in_range",
    "parse_time",
    "resolve_start",
]

EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
EARLIEST_US = 0
LATEST_US = round((LATEST - EARLIEST).total_seconds()) * 1_000_000
RANGE = "1970-01-01..2200-01-01 UTC"
MAX_OFFSET_S = 86_400.0
"""The largest offset between two clocks of one drive (a camera's ``offset_s``): a day."""


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


def in_range(t: dt.datetime) -> bool:
    """Whether an aware time lies in [EARLIEST, LATEST) (see the module's docstring)."""
    try:
        return EARLIEST <= t < LATEST
    except (OverflowError, TypeError):  # naive, or beyond what a comparison can shift
        return False


def check_time(value: object) -> tuple[dt.datetime | None, str | None]:
    """An ISO-8601 string as UTC (naive means UTC) within range, or why it is not one."""
    if not isinstance(value, str):
        return None, "is not an ISO-8601 time"
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None, "is not an ISO-8601 time"
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    if not in_range(t):  # checked before converting: year 1 at +23:59 is year 0 in UTC
        return None, f"lies outside {RANGE}"
    return t.astimezone(dt.UTC), None


def parse_time(value: object) -> dt.datetime | None:
    """:func:`check_time`'s time, None if it gave a reason."""
    return check_time(value)[0]


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
    return _folder_time(name)[0]


def _folder_time(name: str) -> tuple[dt.datetime | None, bool]:
    """:func:`folder_time`, and whether the name said its zone (``Z`` or an offset)."""
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
            return (t if in_range(t) else None), bool(tz)
    return None, False


def resolve_start(
    *,
    drive_json: object,
    can_first_us: int | None,
    container_times: list[dt.datetime],
    folder: str,
    mtimes: list[dt.datetime],
    has_drive_json: bool = False,
) -> StartTime:
    """The best start time the drive has, with the source and any warning. A guess (the
    folder name, file times) says which better sources were really missing, and a folder
    name without a zone says it was read as UTC (a device's local time is off by its zone)."""
    t, why = check_time(drive_json)
    warnings: list[str] = []
    if drive_json is not None and t is None:
        warnings.append(f"drive.json start_time {why}; ignored")
    if t is not None:
        return StartTime(t, TimeSource.DRIVE_JSON, warnings)
    if can_first_us is not None and EARLIEST_US <= can_first_us < LATEST_US:
        return StartTime(EARLIEST + dt.timedelta(microseconds=can_first_us), TimeSource.CAN, warnings)
    if can_first_us is not None:
        warnings.append(f"the CAN log's first time lies outside {RANGE}; not used as the start time")
    bad = [c for c in container_times if not in_range(c)]
    if bad:
        warnings.append(f"a video creation_time lies outside {RANGE}; ignored")
    container_times = [c.astimezone(dt.UTC) for c in container_times if in_range(c)]
    mtimes = [m for m in mtimes if in_range(m)]
    if container_times:
        return StartTime(min(container_times), TimeSource.CONTAINER, warnings)
    missing = ", ".join(
        (
            "drive.json has no start_time" if has_drive_json else "no drive.json",
            "no CAN frame" if can_first_us is None else "CAN times out of range",
            "no video creation_time",
        )
    )
    t, zoned = _folder_time(folder)
    if t is not None:
        zone = (
            "its zone as written"
            if zoned
            else "read as UTC: the name carries no zone, and a device's local time would be off by "
            "its zone; set start_time in drive.json"
        )
        warnings.append(f"start time guessed from the folder name {folder!r} ({zone}); {missing}")
        return StartTime(t, TimeSource.FOLDER_NAME, warnings)
    if mtimes:
        t = min(mtimes)
        warnings.append(f"start time guessed from file modification time {t.isoformat()}; {missing}")
        return StartTime(t, TimeSource.MTIME, warnings)
    warnings.append("no start time found; 1970-01-01 used")
    return StartTime(dt.datetime.fromtimestamp(0, dt.UTC), TimeSource.NONE, warnings)
