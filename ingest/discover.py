"""Drive discovery under a raw fleet upload tree (local path or s3://, via fsspec)."""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field

from storage.objectstore import Location

__all__ = ["CAN_SUFFIXES", "VIDEO_SUFFIXES", "DriveSource", "discover"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".h264", ".264", ".h265", ".265", ".hevc", ".mcap")
CAN_SUFFIXES = (".log", ".asc", ".blf", ".trc", ".mf4", ".mcap")


@dataclass(frozen=True)
class DriveSource:
    """One ``<vehicle_id>/<drive>/`` folder: what is in it and its content fingerprint."""

    raw: Location
    vehicle_id: str
    drive: str
    cameras: tuple[tuple[str, str], ...]  # (camera name, path)
    can_logs: tuple[str, ...]
    drive_json: str | None
    fingerprint: str
    total_bytes: int
    other: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.vehicle_id}/{self.drive}"

    @property
    def uri(self) -> str:
        return self.raw.join(self.vehicle_id, self.drive).uri


def _stamp(info: dict[str, object]) -> str:
    for k in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(k) is not None:
            return str(info[k])
    return ""


def discover(raw: Location) -> list[DriveSource]:
    """Every drive folder under ``raw``, sorted, with a fingerprint of size + mtime/etag."""
    fs = raw.fs
    root = raw.path.rstrip("/")
    found: dict[tuple[str, str], list[tuple[str, dict[str, object]]]] = {}
    for path, info in sorted(fs.find(root, detail=True).items()):
        rel = posixpath.relpath(path, root)
        parts = rel.split("/")
        if len(parts) < 3 or any(p.startswith(".") for p in parts):
            continue
        found.setdefault((parts[0], parts[1]), []).append(("/".join(parts[2:]), info))
    drives = []
    for (vehicle, drive), files in sorted(found.items()):
        h = hashlib.sha1()
        cams: list[tuple[str, str]] = []
        logs: list[str] = []
        other: list[str] = []
        drive_json = None
        total = 0
        for rel, info in files:
            size = int(str(info.get("size") or 0))
            total += size
            h.update(f"{rel}\0{size}\0{_stamp(info)}\n".encode())
            full = posixpath.join(root, vehicle, drive, rel)
            lower = rel.lower()
            if rel == "drive.json":
                drive_json = full
            elif rel.startswith("cameras/") and lower.endswith(VIDEO_SUFFIXES):
                cams.append((posixpath.splitext(posixpath.basename(rel))[0], full))
            elif rel.startswith("can/") and lower.endswith(CAN_SUFFIXES):
                logs.append(full)
            else:
                other.append(rel)
        drives.append(
            DriveSource(
                raw, vehicle, drive, tuple(cams), tuple(logs), drive_json, h.hexdigest(), total, tuple(other)
            )
        )
    return drives


def read_drive_json(src: DriveSource) -> tuple[dict[str, object], str | None]:
    """The drive's ``drive.json`` (empty if absent) and a problem, if it is unreadable."""
    if src.drive_json is None:
        return {}, None
    try:
        doc = json.loads(src.raw.fs.cat_file(src.drive_json))
    except (OSError, ValueError) as exc:
        return {}, f"drive.json unreadable: {exc}"
    if not isinstance(doc, dict):
        return {}, "drive.json is not a JSON object"
    return doc, None
