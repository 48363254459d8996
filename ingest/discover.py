"""Drive discovery under a raw fleet upload tree (local path or s3://, via fsspec).

The raw root holds ``<vehicle_id>/<drive>/`` folders. On a local tree a file whose real
path (symlinks resolved) lies outside the raw root is not read: it is listed in its
drive's ``skipped`` and the drive's warnings say so, so a link in an upload cannot make
the ingest read (and quote) a file of the worker. A root that does not exist, or one
that is a vehicle or drive folder instead of the folder above them, is refused with a
message saying which folder to give.

One hostile drive must never fail the whole ingest: a vehicle or drive folder whose
name is not valid UTF-8 cannot be recorded (ids and tables are UTF-8) and is skipped
with a logged warning; such a file inside a drive is listed in its ``skipped``; and
``drive.json`` is read only up to :data:`MAX_DRIVE_JSON_BYTES` and
:data:`MAX_DRIVE_JSON_DEPTH` levels of nesting, else ignored with a warning (the drive's
files still land: that loses less than failing it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from ingest._reasons import reason
from ingest.can import READERS
from storage.errors import ConfigError
from storage.objectstore import Location

__all__ = ["CAN_SUFFIXES", "VIDEO_SUFFIXES", "DriveSource", "discover", "read_drive_json"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".h264", ".264", ".h265", ".265", ".hevc", ".mcap")
# The CAN reader registry names them (one place): a suffix a reader takes is a file discovery lists.
CAN_SUFFIXES = tuple(sorted({s for r in READERS for s in r.suffixes}))
log = logging.getLogger(__name__)
_LINKED_FOLDER = "the drive folder is a symbolic link: skipped (links to folders are not followed)"
_DRIVE_PARTS = ("cameras", "can")  # folders of a drive; seen one level up, the root is too deep
MAX_DRIVE_JSON_BYTES = 1 << 20
"""A drive.json is a few hundred bytes (cameras' calibrations: a few KiB); 1 MiB is ample,
and a 21 MiB one once held 520 MB while parsed."""
MAX_DRIVE_JSON_DEPTH = 32
"""A drive.json nests about five levels (cameras, a camera, intrinsics, a matrix, a row);
deeper ones are refused, so no later step recurses into an attacker's depth."""
_NOT_UTF8 = "a file name that is not valid UTF-8: skipped (names must be UTF-8)"


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
    other: tuple[str, ...] = field(default=())  # paths relative to the drive folder
    skipped: tuple[str, ...] = field(default=())  # files not read, each with why

    @property
    def key(self) -> str:
        return f"{self.vehicle_id}/{self.drive}"

    @property
    def uri(self) -> str:
        return self.raw.join(self.vehicle_id, self.drive).uri

    @property
    def folder(self) -> str:
        """The drive folder's path on the raw tree's filesystem."""
        return posixpath.join(self.raw.path.rstrip("/"), self.vehicle_id, self.drive)

    def confined(self, path: str) -> bool:
        """Whether ``path`` (on a local tree: its real path, links resolved) is inside the
        raw root; checked again when a file is read, since a link may appear after discovery."""
        return not self.raw.is_local or _inside(_real(self.raw.path), path)


def _real(path: str) -> str:
    return os.path.realpath(path.rstrip("/") or "/")


def _inside(root_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip("/") + "/")


def _utf8(name: str) -> bool:
    """Whether a listed name is valid UTF-8 (fsspec decodes other bytes to surrogates)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _stamp(info: dict[str, object]) -> str:
    for k in ("ETag", "etag", "mtime", "LastModified", "created"):
        if info.get(k) is not None:
            return str(info[k])
    return ""


def _check_root(raw: Location, root: str) -> None:
    fs = raw.fs
    if not fs.exists(root):
        raise ConfigError(f"raw tree {raw.uri} does not exist (give the folder holding <vehicle>/<drive>/)")
    if not fs.isdir(root):
        raise ConfigError(f"raw tree {raw.uri} is a file, not a folder of <vehicle>/<drive>/ folders")


def _check_layout(raw: Location, rels: list[list[str]]) -> None:
    """Refuse a root one or two levels too deep: drive folders seen as vehicles (their
    ``cameras``/``can`` as drives) would be recorded as failed drives named ``can``."""
    if any((p[0] in _DRIVE_PARTS and len(p) > 1) or p == ["drive.json"] for p in rels):
        raise ConfigError(
            f"raw tree {raw.uri} looks like one drive folder (it holds cameras/, can/ or drive.json): "
            "the raw root is the folder two levels above it, holding <vehicle>/<drive>/"
        )
    if any((len(p) > 2 and p[1] in _DRIVE_PARTS) or p[1:] == ["drive.json"] for p in rels if len(p) > 1):
        raise ConfigError(
            f"raw tree {raw.uri} looks like a vehicle folder (its folders hold cameras/, can/, "
            "drive.json): "
            "the raw root is the folder above it, holding <vehicle>/<drive>/"
        )


def discover(raw: Location) -> list[DriveSource]:
    """Every drive folder under ``raw``, sorted, with a fingerprint of size + mtime/etag."""
    fs = raw.fs
    root = raw.path.rstrip("/")
    _check_root(raw, root)
    root_real = _real(root) if raw.is_local else ""
    found: dict[tuple[str, str], list[tuple[str, dict[str, object]]]] = {}
    rels: list[list[str]] = []
    undecodable: set[tuple[str, ...]] = set()
    for path, info in sorted(fs.find(root, detail=True).items()):
        parts = posixpath.relpath(path, root).split("/")
        if any(p.startswith(".") for p in parts):
            continue
        if not all(_utf8(p) for p in parts[:2]):
            undecodable.add((parts[0],) if not _utf8(parts[0]) else (parts[0], parts[1]))
            continue
        rels.append(parts)
        if info.get("islink") and len(parts) < 3 and fs.isdir(path):
            # fsspec lists a linked folder without entering it: say so rather than drop it unseen.
            if len(parts) == 2:
                found.setdefault((parts[0], parts[1]), []).append(("", info))
            else:
                log.warning(
                    "raw tree: vehicle folder %s is a symbolic link: skipped (not followed)", parts[0]
                )
        elif len(parts) >= 3:
            found.setdefault((parts[0], parts[1]), []).append(("/".join(parts[2:]), info))
    _skip_folders(undecodable)
    _check_layout(raw, rels)
    return [_drive(raw, root, root_real, v, d, files) for (v, d), files in sorted(found.items())]


def _skip_folders(folders: set[tuple[str, ...]]) -> None:
    """Vehicle or drive folders whose names are not UTF-8: they cannot be recorded (their
    ids, ``drives.vehicle_id`` and ``source_uri`` are UTF-8), so the operator is told,
    once per folder, with the name escaped."""
    for f in sorted(folders):
        what = f"drive folder {f[1]!a} of vehicle {f[0]}" if len(f) > 1 else f"vehicle folder {f[0]!a}"
        log.warning("raw tree: %s: skipped, its name is not valid UTF-8 (rename it to ingest it)", what)


def _drive(
    raw: Location,
    root: str,
    root_real: str,
    vehicle: str,
    drive: str,
    files: list[tuple[str, dict[str, object]]],
) -> DriveSource:
    h = hashlib.sha1()
    cams: list[tuple[str, str]] = []
    logs: list[str] = []
    other: list[str] = []
    skipped: list[str] = []
    drive_json = None
    total = 0
    for rel, info in files:
        if not rel:
            skipped.append(_LINKED_FOLDER)
            h.update(b"\0folder-link\n")
            continue
        full = posixpath.join(root, vehicle, drive, rel)
        if not _utf8(rel):
            skipped.append(_NOT_UTF8)
            h.update(rel.encode(errors="surrogateescape") + b"\0not-utf8\n")
            continue
        if root_real and not _inside(root_real, full):
            skipped.append(
                f"{rel}: skipped, a symbolic link out of the raw root (links out are not followed)"
            )
            h.update(f"{rel}\0link\n".encode())
            continue
        size = int(str(info.get("size") or 0))
        total += size
        h.update(f"{rel}\0{size}\0{_stamp(info)}\n".encode())
        lower = rel.lower()
        if rel == "drive.json":
            drive_json = full
        elif rel.startswith("cameras/") and lower.endswith(VIDEO_SUFFIXES):
            cams.append((posixpath.splitext(posixpath.basename(rel))[0], full))
        elif rel.startswith("can/") and lower.endswith(CAN_SUFFIXES):
            logs.append(full)
        else:
            other.append(rel)
    return DriveSource(
        raw,
        vehicle,
        drive,
        tuple(cams),
        tuple(logs),
        drive_json,
        h.hexdigest(),
        total,
        tuple(other),
        tuple(skipped),
    )


def read_drive_json(src: DriveSource) -> tuple[dict[str, object], str | None]:
    """The drive's ``drive.json`` (empty if absent) and a problem, if it is unreadable.

    Never raises: whatever is wrong with the file (too big, nested too deep, not JSON)
    is the problem returned, and the drive goes on without it. The problem names what
    was wrong (and the line), never the file's bytes."""
    if src.drive_json is None:
        return {}, None
    if not src.confined(src.drive_json):
        return {}, "drive.json: skipped, a symbolic link out of the raw root (links out are not followed)"
    try:
        return _parse_drive_json(src.raw.fs, src.drive_json)
    except Exception as exc:  # RecursionError, MemoryError, a filesystem's own errors: this drive's only
        return {}, f"drive.json unreadable: {reason(exc)}"


def _parse_drive_json(fs: Any, path: str) -> tuple[dict[str, object], str | None]:
    limit = MAX_DRIVE_JSON_BYTES
    too_big = f"drive.json is over the {limit >> 20} MiB limit; ignored"
    if int(fs.size(path) or 0) > limit:  # refused before a byte is read
        return {}, too_big
    data = fs.cat_file(path, start=0, end=limit + 1)  # the file may have grown since
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
