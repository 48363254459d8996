"""A drive's ``drive.json``: read with bounds, and the numbers it gives checked.

The file is read only up to :data:`MAX_DRIVE_JSON_BYTES` and :data:`MAX_DRIVE_JSON_DEPTH`
levels of nesting, else ignored with a warning (the drive's files still land: that loses
less than failing it). Whatever is wrong with it is said without its bytes. The keys and
what they mean are in ``docs/raw-layout.md``; the steps that use a key read it where they
use it, through :func:`doc_number` for numbers, so each warning names its key.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ingest._reasons import reason
from ingest.drive_files import DriveFiles, LinkedOut, linked_out
from ingest.notes import Notes
from ingest.start_time import MAX_OFFSET_S

__all__ = ["MAX_DRIVE_JSON_BYTES", "MAX_DRIVE_JSON_DEPTH", "calibration", "doc_number", "read_drive_json"]

MAX_DRIVE_JSON_BYTES = 1 << 20
"""A drive.json is a few hundred bytes (cameras' calibrations: a few KiB); 1 MiB is ample,
and a 21 MiB one once held 520 MB while parsed."""
MAX_DRIVE_JSON_DEPTH = 32
"""A drive.json nests about five levels (cameras, a camera, intrinsics, a matrix, a row);
deeper ones are refused, so no later step recurses into an attacker's depth."""


def read_drive_json(files: DriveFiles) -> tuple[dict[str, object], str | None]:
    """The drive's ``drive.json`` (empty if absent) and a problem, if it is unreadable.

    Never raises: whatever is wrong with the file (too big, nested too deep, not JSON)
    is the problem returned, and the drive goes on without it. The problem names what
    was wrong (and the line), never the file's bytes."""
    path = files.src.drive_json
    if path is None:
        return {}, None
    try:
        return _parse_drive_json(files, path)
    except LinkedOut:
        return {}, linked_out("drive.json")
    except Exception as exc:  # RecursionError, MemoryError, a filesystem's own errors: this drive's only
        return {}, f"drive.json unreadable: {reason(exc)}"


def _parse_drive_json(files: DriveFiles, path: str) -> tuple[dict[str, object], str | None]:
    limit = MAX_DRIVE_JSON_BYTES
    too_big = f"drive.json is over the {limit >> 20} MiB limit; ignored"
    if files.size(path) > limit:  # refused before a byte is read
        return {}, too_big
    data = files.read(path, end=limit + 1)  # the file may have grown since
    if len(data) > limit:
        return {}, too_big
    try:
        doc = json.loads(data)
    except RecursionError:
        return {}, f"drive.json is nested deeper than {MAX_DRIVE_JSON_DEPTH} levels; ignored"
    except ValueError as exc:
        return {}, f"drive.json unreadable: {reason(exc)}"
    if not isinstance(doc, dict):
        return {}, "drive.json is not a JSON object"
    if _depth(doc) > MAX_DRIVE_JSON_DEPTH:
        return {}, f"drive.json is nested deeper than {MAX_DRIVE_JSON_DEPTH} levels; ignored"
    return doc, None


def _depth(doc: object) -> int:
    """How deep lists and objects nest in a parsed document, without recursing."""
    deepest = 0
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, d)
            if d > MAX_DRIVE_JSON_DEPTH:
                return d
            stack.extend((v, d + 1) for v in (node.values() if isinstance(node, dict) else node))
    return deepest


def doc_number(
    doc: dict[str, Any], key: str, notes: Notes | None, limit: float = MAX_OFFSET_S, label: str = ""
) -> float:
    """A number drive.json gives (0 if absent); one that is not a finite number within
    ``±limit`` is ignored, said once (its key named: ``label`` or ``key``)."""
    value = doc.get(key)
    if value is None:
        return 0.0
    name = label or key
    # JSON integers have no bound (np.isfinite(10**20) raises, float(10**400) overflows):
    # an int is finite, and compared with the limit as an int
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if not finite or isinstance(value, bool):
        if notes is not None:
            notes.warn(f"drive.json {name} is not a number; ignored")
        return 0.0
    if abs(value) > limit:
        if notes is not None:
            notes.warn(f"drive.json {name} is beyond ±{limit:.0f}; ignored")
        return 0.0
    return float(value)


def calibration(doc: dict[str, Any]) -> str | None:
    """A camera's ``intrinsics`` and ``extrinsics`` from drive.json, as given, if any."""
    cal = {k: doc[k] for k in ("intrinsics", "extrinsics") if doc.get(k) is not None}
    return json.dumps(cal, sort_keys=True) if cal else None
