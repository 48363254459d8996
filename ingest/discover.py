"""Drive discovery under a raw fleet upload tree (local path or s3://, via fsspec).

The raw root holds ``<vehicle_id>/<drive>/`` folders, and openpilot routes as comma
devices keep them: ``<dongle_id>/<route>--<n>/`` or ``<dongle_id>|<route>--<n>/`` segment
folders, the segments of one route one drive (:mod:`ingest.openpilot.route`). On a local
tree a file whose real path (symlinks resolved) lies outside the raw root is not read: it
is listed in its drive's ``skipped`` and the drive's warnings say so, so a link in an
upload cannot make the ingest read (and quote) a file of the worker. A root that does not exist, or one
that is a vehicle or drive folder instead of the folder above them, is refused with a
message saying which folder to give.

One hostile drive must never fail the whole ingest: a vehicle or drive folder whose
name is not valid UTF-8 cannot be recorded (ids and tables are UTF-8) and is skipped
with a logged warning; such a file inside a drive is listed in its ``skipped``.
Discovery reads no file: the drive's stage reads them through
:class:`ingest.drive_files.DriveFiles`, ``drive.json`` with :mod:`ingest.drive_json`.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from dataclasses import dataclass, field

from ingest.can import CAN_SUFFIXES
from ingest.drive_files import RawRoot, linked_out
from ingest.openpilot.route import (
    CAMERA_FILES,
    FRAME_TIMES,
    QCAMERA,
    ROUTE,
    is_openpilot_file,
    log_rank,
    segment_of,
)
from storage.errors import ConfigError
from storage.objectstore import Location

__all__ = ["MAX_UNREAD_LISTED", "VIDEO_SUFFIXES", "DriveSource", "discover", "named", "not_read"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".h264", ".264", ".h265", ".265", ".hevc", ".mcap")
log = logging.getLogger(__name__)
_LINKED_FOLDER = "the drive folder is a symbolic link: skipped (links to folders are not followed)"
_DRIVE_PARTS = ("cameras", "can")  # folders of a drive; seen one level up, the root is too deep
_NOT_UTF8 = "a file name that is not valid UTF-8: skipped (names must be UTF-8)"
_COMMA_UNREAD = {
    "processed_log/": "comma2k19's signals processed from the log (its CAN is read from the log itself)",
    "global_pose/": "comma2k19's poses (its frame_times are read)",
    "preview.png": "comma2k19's preview image",
}
MAX_UNREAD_LISTED = 20  # files not read that a drive's warnings name one by one; the rest are counted


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
    # An openpilot route (ingest.openpilot.route): each camera's segment files, in order,
    # read as one stream, as (segment number, path); ``cameras`` names their first file.
    stitched: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = field(default=())
    # comma2k19: the road camera's frame times per segment, (segment number, path)
    frame_times: tuple[tuple[int, str], ...] = field(default=())
    # (camera, of): a camera cut only as the browser preview of another camera's clips
    # (an openpilot route's qcamera.ts for its HEVC road camera), never a clip of its own
    preview_of: tuple[tuple[str, str], ...] = field(default=())

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
    inside = RawRoot(raw)
    found: dict[tuple[str, str], list[tuple[str, dict[str, object]]]] = {}
    folders: dict[tuple[str, str], str] = {}  # a folder's path under the root, where not <vehicle>/<drive>
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
        comma = _comma_folder(parts)
        if comma is not None:  # RAW/<dongle_id>|<route>--<n>/, or comma2k19's <dongle_id>|<route>/<n>/
            key, depth = comma
            folders[key] = "/".join(parts[:depth])
            found.setdefault(key, []).append(("/".join(parts[depth:]), info))
            continue
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
    drives: list[DriveSource] = []
    routes: dict[tuple[str, str], list[tuple[int, str, list[tuple[str, dict[str, object]]]]]] = {}
    for (v, d), files in sorted(found.items()):
        seg = segment_of(d)
        if seg is not None and ((v, d) in folders or any(is_openpilot_file(rel) for rel, _ in files)):
            routes.setdefault((v, seg[0]), []).append((seg[1], folders.get((v, d), f"{v}/{d}"), files))
        else:
            drives.append(_drive(raw, root, inside, v, d, files))
    drives += [_route(raw, root, inside, v, r, sorted(segs)) for (v, r), segs in routes.items()]
    return sorted(drives, key=lambda s: (s.vehicle_id, s.drive))


def _comma_folder(parts: list[str]) -> tuple[tuple[str, str], int] | None:
    """``((dongle_id, "<route>--<n>"), folder depth)`` for a path inside a segment folder
    named with a ``|``: ``<dongle_id>|<route>--<n>/...``, or comma2k19's
    ``[Chunk_k/]<dongle_id>|<route>/<n>/...``; None for any other path."""
    for i in (0, 1):
        if len(parts) <= i + 1 or "|" not in parts[i]:
            continue
        dongle, _, rest = parts[i].partition("|")
        if not dongle:
            return None
        if i == 0 and segment_of(rest):
            return (dongle, rest), 1
        seg = parts[i + 1] if len(parts) > i + 2 else ""
        if ROUTE.fullmatch(rest) and seg.isascii() and seg.isdigit() and len(seg) <= 5:  # not "²"
            return (dongle, f"{rest}--{int(seg)}"), i + 2
    return None


def _route(
    raw: Location,
    root: str,
    inside: RawRoot,
    vehicle: str,
    route: str,
    segments: list[tuple[int, str, list[tuple[str, dict[str, object]]]]],
) -> DriveSource:
    """The segments of one openpilot route as one drive (:mod:`ingest.openpilot.route`):
    each camera's segment files in order, one log per segment (its rlog, else its qlog);
    what is not read, and each segment missing between the first and the last, said. A
    route uploaded as devices do by default (qlogs and ``qcamera.ts``) gives its road
    camera from ``qcamera.ts``, camera ``qcamera``."""
    h = hashlib.sha1()
    cams: dict[str, list[tuple[int, str]]] = {}
    logs: list[str] = []
    skipped: list[str] = []
    drive_json: str | None = None
    qcams: list[tuple[int, str, str]] = []
    frame_times: list[tuple[int, str]] = []
    unread: dict[str, list[str]] = {}  # not read, by top-level name in a segment
    total = 0
    for n, folder, files in segments:
        seg = posixpath.basename(folder)
        best: tuple[int, str, str] | None = None
        for rel, info in files:
            full = posixpath.join(root, folder, rel)
            shown = f"{seg}/{rel}"
            if not rel or not _utf8(rel) or not inside.holds(full):
                why = _LINKED_FOLDER if not rel else _NOT_UTF8 if not _utf8(rel) else linked_out(shown)
                skipped.append(why)
                continue
            size = int(str(info.get("size") or 0))
            total += size
            h.update(f"{n}\0{rel}\0{size}\0{_stamp(info)}\n".encode())
            rank = log_rank(rel)
            if rel == "drive.json":  # the route's drive.json may sit in any of its segments
                drive_json = drive_json or full
            elif rel in CAMERA_FILES and rel != QCAMERA:
                cams.setdefault(CAMERA_FILES[rel], []).append((n, full))
            elif rank is not None and is_openpilot_file(rel):
                if best is None or rank < best[0]:
                    if best is not None:
                        skipped.append(f"{seg}/{best[2]}: not read (the segment's {rel} holds every frame)")
                    best = (rank, full, rel)
                else:
                    skipped.append(f"{shown}: not read (the segment's {best[2]} holds every frame)")
            elif rel == QCAMERA:
                qcams.append((n, full, shown))
            elif rel == FRAME_TIMES:
                frame_times.append((n, full))
            else:
                top = rel.split("/")[0] + ("/" if "/" in rel else "")
                unread.setdefault(top, []).append(shown)
        if best is not None:
            logs.append(best[1])
    for top, paths in sorted(unread.items())[:MAX_UNREAD_LISTED]:  # a few by name, a folder's many as one
        what = _COMMA_UNREAD.get(top, "not a file of an openpilot segment")
        if len(paths) <= 3:
            skipped += [f"{_shown(shown)}: {what}; not read" for shown in paths]
        else:
            skipped.append(f"{_shown(top)} ({len(paths)} files in the route's segments): {what}; not read")
    preview_of: tuple[tuple[str, str], ...] = ()
    if qcams and "road" in cams:  # H.264 already: the road camera's browser preview, no transcoding
        cams[CAMERA_FILES[QCAMERA]] = [(n, full) for n, full, _ in qcams]
        preview_of = ((CAMERA_FILES[QCAMERA], "road"),)
    elif cams:  # full cameras but no road camera to be the preview of
        skipped += [f"{shown}: the low-resolution copy of the road camera; not read" for _, _, shown in qcams]
    elif qcams:  # what devices upload by default (qlog + qcamera.ts): the road camera at 526x330
        cams[CAMERA_FILES[QCAMERA]] = [(n, full) for n, full, _ in qcams]
    present = [n for n, _, _ in segments]
    gaps = sorted(set(range(present[0], present[-1] + 1)) - set(present))
    if gaps:
        skipped.append(
            f"route {route}: segments {', '.join(map(str, gaps[:20]))} missing (a gap in the drive); "
            f"present: {len(present)} segments"
        )
    parts = {name: tuple(p) for name, p in sorted(cams.items())}
    return DriveSource(
        raw,
        vehicle,
        route,
        tuple((name, p[0][1]) for name, p in parts.items()),
        tuple(logs),
        drive_json,
        h.hexdigest(),
        total,
        (),
        tuple(skipped),
        tuple(parts.items()),
        tuple(frame_times),
        preview_of,
    )


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
    inside: RawRoot,
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
        if not inside.holds(full):
            skipped.append(linked_out(rel))
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


def _shown(rel: str) -> str:
    """A file name as a warning shows it: control characters escaped, at most 160 characters."""
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in rel)
    return text if len(text) <= 160 else text[:157] + "..."


def _why_not(rel: str) -> str:
    lower = rel.lower()
    if rel.startswith("cameras/"):
        return f"not a video file fleetmine reads ({', '.join(VIDEO_SUFFIXES)})"
    if rel.startswith("can/"):
        if "rlog" in lower or "qlog" in lower:
            return f"an openpilot log in a form not read; CAN logs are {', '.join(CAN_SUFFIXES)}"
        return f"not a CAN log format fleetmine reads ({', '.join(CAN_SUFFIXES)})"
    return "not in cameras/ or can/ (video goes in cameras/, CAN logs in can/)"


def not_read(unread: list[str]) -> list[str]:
    """One warning per file of a drive that no reader took (paths relative to the drive
    folder), each with why, at most :data:`MAX_UNREAD_LISTED` by name and the rest
    counted: no file is left out of a drive without a word."""
    out = [f"{_shown(rel)}: {_why_not(rel)}; not read" for rel in unread[:MAX_UNREAD_LISTED]]
    if len(unread) > MAX_UNREAD_LISTED:
        out.append(f"{len(unread) - MAX_UNREAD_LISTED} more files not read (not camera video or CAN logs)")
    return out


def named(unread: list[str], most: int = 3) -> str:
    """The first ``most`` of ``unread`` by name, and how many more."""
    text = ", ".join(_shown(r) for r in unread[:most])
    return text + (f" and {len(unread) - most} more" if len(unread) > most else "")
