"""A drive's cameras: every usable video stream probed, then placed on the drive's clock.

A file with several video streams (front + rear in one recording), or an MCAP with
several video topics, gives one camera per stream: the second is ``<camera>_1``, and so
on. A file that cannot be read is a warning; the other cameras still land.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingest._reasons import reason
from ingest.drive_files import DriveFiles, LinkedOut, linked_out
from ingest.drive_json import doc_number
from ingest.notes import Notes
from ingest.openpilot.route import ConcatFile, EncodeIndex, frame_times
from ingest.start_time import MAX_OFFSET_S, check_time
from ingest.timegrid import CameraTrack
from ingest.video import Source, VideoError, VideoProbe, from_bytes, probe_all

__all__ = ["MAX_FPS", "Camera", "camera_tracks", "probe_cameras"]

MAX_FPS = 1000.0


@dataclass(frozen=True)
class Camera:
    name: str
    path: str
    source: Source
    suffix: str
    probe: VideoProbe
    doc: dict[str, Any]  # its drive.json ``cameras`` entry
    clock: dt.datetime | None  # an absolute time of its first frame the file carries


def probe_cameras(
    files: DriveFiles, cams: dict[str, Any], notes: Notes, index: EncodeIndex | None = None
) -> list[Camera]:
    """Every usable video stream of the drive, as a camera (``cams``: drive.json's
    ``cameras``). An MCAP camera is converted to mp4 once (packets copied, times from
    its messages) and read from memory. An openpilot route's camera is its segment files
    read as one stream, its frames at the times ``index`` (the logs' encode index) gives."""
    out: list[Camera] = []
    stitched = dict(files.src.stitched)
    for cam, path in files.src.cameras:
        cam_doc = cams.get(cam, {})
        cam_doc = cam_doc if isinstance(cam_doc, dict) else {}
        suffix = posixpath.splitext(path)[1].lower()
        try:
            if not files.size(path):
                raise VideoError("empty file")
            if suffix == ".mcap":
                out.extend(_mcap_cameras(files, cam, path, cam_doc, notes))
                continue
            if cam in stitched:
                out.append(_route_camera(files, cam, stitched[cam], suffix, cam_doc, index, notes))
                continue
            opener = files.opener(path)
            found = probe_all(
                opener,
                suffix,
                doc_number(cam_doc, "fps", notes, MAX_FPS, f"cameras.{cam}.fps") or None,
                cam,
            )
        except LinkedOut:
            notes.warn(linked_out(cam))
            continue
        except VideoError as exc:
            notes.warn(f"{cam}: {exc}")
            continue
        except OSError as exc:
            notes.warn(f"{cam}: unreadable ({reason(exc)})", transient=True)
            continue
        for p in found:
            name = cam if p.stream == 0 else f"{cam}_{p.stream}"
            notes.warnings.extend(f"{name}: {w}" for w in p.warnings)
            out.append(Camera(name, path, opener, suffix, p, cam_doc, p.creation_time))
    return out


def _route_camera(
    files: DriveFiles,
    cam: str,
    parts: tuple[tuple[int, str], ...],
    suffix: str,
    cam_doc: dict[str, Any],
    index: EncodeIndex | None,
    notes: Notes,
) -> Camera:
    """One camera of an openpilot route: its segment files as one stream, each frame at
    its encode-index time on the wall clock (the camera's ``start_time`` its first frame's,
    unless drive.json gives one)."""
    fps = doc_number(cam_doc, "fps", notes, MAX_FPS, f"cameras.{cam}.fps") or None
    openers = [files.opener(p) for _, p in parts]
    sizes = [files.size(p) for _, p in parts]

    def opener() -> Any:
        return ConcatFile(openers, sizes)

    named = f"{posixpath.basename(parts[0][1])} of segments {', '.join(str(n) for n, _ in parts)}"
    try:
        (p, *_) = probe_all(opener, suffix, fps, cam)
        counts = [(n, probe_all(files.opener(path), suffix, fps, cam)[0].packets) for n, path in parts]
    except VideoError as exc:
        raise VideoError(f"{named}: {exc}") from exc
    apart = sum(c for _, c in counts)
    if apart != p.packets:
        raise VideoError(f"its segment files give {apart} frames apart, {p.packets} together")
    times, why = frame_times(cam, counts, index or EncodeIndex({}, ""), p.fps)
    if why:
        notes.warn(why)
    first = float(np.min(times))
    # Timed from the logs, never from the container: each segment's file restarts its own
    # clock (qcamera.ts), so its packets are re-timed as a raw stream's are
    p.raw_stream = True
    p.times = times - first
    p.start_s = 0.0
    step = float(np.median(np.diff(np.sort(p.times)))) if len(p.times) > 1 else 1.0 / p.fps
    p.duration_s = float(p.times.max()) + step
    clock = dt.datetime.fromtimestamp(first, dt.UTC)
    doc = {"start_time": clock.isoformat(), **cam_doc}
    notes.warnings.extend(f"{cam}: {w}" for w in p.warnings)
    return Camera(cam, parts[0][1], opener, suffix, p, doc, clock)


def _mcap_cameras(
    files: DriveFiles, cam: str, path: str, cam_doc: dict[str, Any], notes: Notes
) -> list[Camera]:
    from ingest.mcap_video import to_container, video_topics

    out: list[Camera] = []
    data = files.read(path)
    topics = video_topics(data)
    if not topics:
        raise VideoError("no foxglove.CompressedVideo topic in the MCAP file")
    for i, topic in enumerate(topics):
        name = cam if i == 0 else f"{cam}_{i}"
        try:
            v = to_container(data, topic)
            (p,) = probe_all(from_bytes(v.data), v.suffix)
        except VideoError as exc:
            notes.warn(f"{name} ({topic}): {exc}")
            continue
        notes.warnings.extend(f"{name} ({topic}): {w}" for w in [*v.warnings, *p.warnings])
        doc = {"start_time": v.start_time.isoformat(), **cam_doc}  # its messages carry the clock
        out.append(Camera(name, path, from_bytes(v.data), v.suffix, p, doc, v.start_time))
    return out


def camera_tracks(start: dt.datetime, cameras: list[Camera], notes: Notes) -> list[CameraTrack]:
    """Each camera on the drive's clock: its own ``start_time`` (drive.json, or an MCAP's
    message times), else the drive's start plus its ``offset_s`` (within a day); streams
    of one file keep their offsets to each other. A camera time outside 1970..2200 or an
    offset past a day is a warning naming the key, and the next source is used."""
    file_t0: dict[str, float] = {}
    for c in cameras:
        file_t0[c.path] = min(file_t0.get(c.path, c.probe.start_s), c.probe.start_s)
    tracks = []
    for c in cameras:
        own, why = check_time(c.doc["start_time"]) if "start_time" in c.doc else (None, None)
        if why:
            notes.warn(f"drive.json cameras.{c.name}.start_time {why}; ignored")
        offset = doc_number(c.doc, "offset_s", notes, MAX_OFFSET_S, f"cameras.{c.name}.offset_s")
        offset += c.probe.start_s - file_t0[c.path]
        if not abs(offset) <= MAX_OFFSET_S:  # a stream starting days into its file
            notes.warn(f"{c.name}: its stream starts more than a day into the file; offset ignored")
            offset = 0.0
        tracks.append(CameraTrack(c.name, c.path, own or start + dt.timedelta(seconds=offset), c.probe))
    return tracks
