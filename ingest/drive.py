"""One drive folder in, its rows of every ingest table out (as written data files).

:class:`DriveIngest` is the stage: it runs inside a Ray task (or inline in unit
tests), writes Parquet data files and media (clip mp4s, thumbnails) into the
lake, and returns a :class:`DriveResult` with the add-actions for the driver's
one commit per table. It composes the steps of one drive, in order:

1. ``drive.json`` (discover), the platform (platform), the CAN logs (can/) decoded
   by the platform's DBC, resampled to the signal grid (signals);
2. every camera probed (video), the drive's start time (start_time), the cameras
   placed on one time grid (timegrid);
3. per camera and window: the clip remuxed, its keyframes decoded, its features (features),
   and, where a signal trigger fired, dense frames around its moment (look_closer).

A bad file is data. A drive is ``failed`` only when nothing usable came out of it;
otherwise it is ``ok`` and ``drives.warnings`` says what was dropped and where. A drive
that makes the decoder spin or allocate without bound is stopped by its time and
memory budget (budget: the drives are decoded in a child process the stage watches)
and recorded failed with the budget it exceeded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import posixpath
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.transaction import AddAction

from ingest._reasons import reason
from ingest.budget import Budget, ItemFailed, Sandbox
from ingest.can import read_can_log
from ingest.can.dbc import VectorDecoder
from ingest.discover import DriveSource, read_drive_json
from ingest.drive_platform import drive_platform
from ingest.features import clip_features
from ingest.ids import clip_id, drive_id, group_id
from ingest.interfaces import FRAME_SCHEMA
from ingest.look_closer import dense_frames, wants_closer_look
from ingest.platform import Platform
from ingest.signals import resample
from ingest.start_time import (
    EARLIEST,
    EARLIEST_US,
    LATEST_US,
    MAX_OFFSET_S,
    RANGE,
    TimeSource,
    check_time,
    resolve_start,
)
from ingest.timegrid import CameraTrack, TimeGrid
from ingest.video import Source, VideoError, VideoProbe, clip_media, from_bytes, probe_all
from storage.config import Settings
from storage.errors import ConfigError
from storage.faults import fault_point
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.tables import can_frames, clip_frames, clips, drives, signals

__all__ = ["DATA_TABLES", "DriveIngest", "DriveResult"]

DATA_TABLES = ("can_frames", "signals", "clips", "clip_frames")
log = logging.getLogger(__name__)
MAX_CAN_OFFSET_S = (LATEST_US - EARLIEST_US) / 1e6
"""``can_time_offset_s`` may move a logger's clock counted from its boot onto UTC, so it may
be as large as the whole time range (1970..2200), no larger; the frames it gives must
still lie in that range."""
MAX_FPS = 1000.0


@dataclass
class DriveResult:
    drive_id: str
    key: str
    row: dict[str, Any]
    actions: dict[str, list[AddAction]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.row.get("status") == "ok"


class DriveIngest:
    """Stage: decode one drive. Heavy state (DBC databases) loads in :meth:`setup`."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake, settings: Settings, run_id: str, attempt: str = ""):
        self.lake = lake
        self.settings = settings
        self.run_id = run_id
        # Data files are named by run, attempt and drive: a Ray retry of one attempt rewrites
        # its own unreferenced files, and a resumed run never rewrites files already committed.
        self.attempt = attempt
        # By Platform.key (DBC content + signal map), never by name: a drive.json picks names.
        self._decoders: OrderedDict[str, VectorDecoder] = OrderedDict()
        self._raw_fs: Any = None
        self._sandbox: Sandbox | None = None

    def setup(self) -> None:
        self.lake.root.fs  # noqa: B018  (open the object store client in the worker)

    @property
    def budget(self) -> Budget | None:
        s = self.settings
        if not s.drive_time_budget_s and not s.drive_memory_budget_mib:
            return None
        return Budget(
            s.drive_time_budget_s or float("inf"),
            s.drive_time_budget_per_gib_s if s.drive_time_budget_s else 0.0,
            s.drive_memory_budget_mib << 20,
        )

    def process_batch(self, items: list[DriveSource]) -> list[DriveResult]:
        budget = self.budget
        if budget is None:
            return [self.process(src) for src in items]
        if self._sandbox is None:  # this class, built again in the child: its process() runs there
            args = (self.lake, self.settings, self.run_id, self.attempt)
            self._sandbox = Sandbox(type(self), args, retries=self.settings.ingest_max_retries)
        out = []
        for src in items:
            try:
                out.append(self._sandbox.run(src, budget, src.total_bytes))
            except ItemFailed as exc:
                out.append(self.failed(src, str(exc)))
        return out

    # -- one drive -----------------------------------------------------------------

    def process(self, src: DriveSource) -> DriveResult:
        fault_point("ingest.drive")
        self._raw_fs = src.raw.fs
        notes = _Notes()
        for skipped in src.skipped:
            notes.warn(skipped)
        doc, bad_json = read_drive_json(src)
        if bad_json:
            notes.warn(bad_json)
        platform = self._platform(src, doc, notes)
        frames = self._read_can(src, doc, notes)
        decoded: dict[str, Any] = {}
        if platform is not None and frames.num_rows:
            try:
                decoded = self._decode(platform, frames, notes)
            except Exception as exc:  # a DBC that cannot decode this log: raw frames still land
                notes.warn(f"DBC decode failed: {reason(exc)}")

        cams = doc.get("cameras") if isinstance(doc.get("cameras"), dict) else {}
        probes = self._probe_cameras(src, cams if isinstance(cams, dict) else {}, notes)
        start = resolve_start(
            drive_json=doc.get("start_time"),
            can_first_us=int(pc.min(frames.column("t_us")).as_py()) if frames.num_rows else None,
            container_times=[c.clock for c in probes if c.clock],
            folder=src.drive,
            mtimes=self._mtimes([c.path for c in probes] or list(src.can_logs)),
        )
        notes.warnings.extend(start.warnings)
        day = start.time.date()
        did = drive_id(day, src.vehicle_id, src.drive)
        result = DriveResult(did, src.key, {})

        sig = pa.table({"t": pa.array([], UTC_TS)})
        if decoded and platform is not None:
            sig = resample(platform, decoded, self.settings.signal_rate_hz)
        tracks = self._tracks(start.time, probes, notes)
        clip_rows, frame_rows = self._clips(src, did, day, tracks, {c.name: c for c in probes}, sig, notes)
        writes: dict[str, pa.Table] = {
            "can_frames": self._can_rows(did, day, frames),
            "signals": self._signal_rows(did, day, sig),
            "clips": clip_rows,
            "clip_frames": frame_rows,
        }
        for table, data in writes.items():
            if data.num_rows:
                result.actions[table] = self.lake.writer(table).write(
                    data, prefix="-".join(p for p in (self.run_id, self.attempt, did) if p)
                )
        result.counts = {t: d.num_rows for t, d in writes.items()}
        result.counts["bytes"] = src.total_bytes
        looked = frame_rows.filter(pc.field("dense")) if frame_rows.num_rows else frame_rows
        result.counts["dense_clips"] = len(set(looked.column("clip_id").to_pylist()))
        duration = (sig.num_rows - 1) / self.settings.signal_rate_hz if sig.num_rows else 0.0
        for t in tracks:
            duration = max(duration, (t.start - start.time).total_seconds() + t.probe.duration_s)
        if not src.cameras and not src.can_logs:
            notes.fail("no camera video and no CAN log in the drive folder")
        usable = clip_rows.num_rows > 0 or frames.num_rows > 0
        if not usable and not notes.reasons:
            notes.fail("; ".join(notes.warnings) or "nothing usable: no clip and no CAN frame decoded")
        failed = not usable or bool(notes.reasons)
        result.row = {
            "drive_id": did,
            "date": day,
            "vehicle_id": src.vehicle_id,
            "drive": src.drive,
            "platform": platform.name if platform else None,
            "start_time": start.time,
            "time_source": str(start.source),
            "duration_s": duration,
            "source_uri": src.uri,
            "fingerprint": src.fingerprint,
            "status": "failed" if failed else "ok",
            "error": "; ".join(notes.reasons) if failed else None,
            "warnings": notes.warnings,
            "retryable": failed and notes.transient,
            "skipped_lines": notes.skipped_lines,
            "n_clips": clip_rows.num_rows,
            "n_can_frames": frames.num_rows,
            "ingest_run_id": self.run_id,
            "ingested_at": dt.datetime.now(dt.UTC),
        }
        return result

    def failed(self, src: DriveSource, why: str) -> DriveResult:
        """The record of a drive whose task died (e.g. the decoder crashed the worker).

        Never raises: it is the fallback of a drive that already broke something, called
        in the worker and again in the job's process, where an exception would end the
        whole job (every drive lost, on every retry). Whatever reading the drive again
        raises, the row is still written, dated 1970-01-01 if nothing better is known."""
        try:
            doc, _ = read_drive_json(src)
            start = resolve_start(
                drive_json=doc.get("start_time"),
                can_first_us=None,
                container_times=[],
                folder=src.drive,
                mtimes=[],
            )
            when, source = start.time, str(start.source)
        except Exception as exc:  # anything (see the docstring)
            log.warning(
                "drive %s: its failure record could not read it again: %s", src.key, type(exc).__name__
            )
            when, source = EARLIEST, str(TimeSource.NONE)
        did = drive_id(when.date(), src.vehicle_id, src.drive)
        row = {
            "drive_id": did,
            "date": when.date(),
            "vehicle_id": src.vehicle_id,
            "drive": src.drive,
            "start_time": when,
            "time_source": source,
            "source_uri": src.uri,
            "fingerprint": src.fingerprint,
            "status": "failed",
            "error": why,
            "warnings": [],
            "retryable": False,
            "ingest_run_id": self.run_id,
            "ingested_at": dt.datetime.now(dt.UTC),
        }
        return DriveResult(did, src.key, row, {}, {"bytes": src.total_bytes})

    # -- parts -----------------------------------------------------------------------

    def _opener(self, path: str) -> Any:
        fs = self._raw_fs
        return lambda: fs.open(path, "rb")

    def _mtimes(self, paths: list[str]) -> list[dt.datetime]:
        out = []
        for path in paths:
            try:
                info = self._raw_fs.info(path)
            except OSError:
                continue
            stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
            if isinstance(stamp, dt.datetime):
                out.append(stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC))
            elif isinstance(stamp, int | float):
                try:
                    out.append(dt.datetime.fromtimestamp(float(stamp), dt.UTC))
                except (OverflowError, OSError, ValueError):  # a file dated past year 9999
                    continue
        return out

    def _platform(self, src: DriveSource, doc: dict[str, Any], notes: _Notes) -> Platform | None:
        if not src.can_logs:
            return None
        try:
            platform = drive_platform(src, doc, self.settings.dbc_dirs)
        except ConfigError as exc:
            notes.warn(f"{exc}: CAN kept raw, not decoded")
            return None
        if platform is not None:
            return platform
        notes.warn("drive.json names no platform (or dbc + signals): CAN kept raw, not decoded")
        return None

    def _read_can(self, src: DriveSource, doc: dict[str, Any], notes: _Notes) -> pa.Table:
        tables = []
        offset_us = round(_number(doc, "can_time_offset_s", notes, MAX_CAN_OFFSET_S) * 1e6)
        for path in src.can_logs:
            name = posixpath.basename(path)
            if not src.confined(path):
                notes.warn(
                    f"can/{name}: skipped, a symbolic link out of the raw root (links out are not followed)"
                )
                continue
            try:
                data = self._raw_fs.cat_file(path)
            except OSError as exc:
                notes.warn(f"{name}: unreadable ({reason(exc)})", transient=True)
                continue
            if not data:
                notes.warn(f"{name}: empty file")
                continue
            try:
                res = read_can_log(data, name)
            except Exception as exc:  # a reader library that raises on a corrupt file: this log only
                notes.warn(f"{name}: unreadable {posixpath.splitext(name)[1]} log: {reason(exc)}")
                continue
            notes.skipped_lines += res.skipped
            if res.skipped:
                notes.warn(
                    f"{name}: {res.skipped} unreadable lines skipped, {res.frames.num_rows} frames kept "
                    f"({'; '.join(res.problems[:3])})"
                )
            if res.frames.num_rows == 0 and not res.skipped:
                notes.warn(f"{name}: no CAN frames")
            f = self._in_range(res.frames, offset_us, name, notes)
            f = f.append_column("source", pa.array([name] * f.num_rows, pa.string()))
            if offset_us:
                f = f.set_column(0, "t_us", pc.add(f.column("t_us"), offset_us))
            tables.append(f)
        if not tables:
            empty = FRAME_SCHEMA.empty_table()
            return empty.append_column("source", pa.array([], pa.string()))
        return pa.concat_tables(tables).sort_by("t_us")

    @staticmethod
    def _in_range(frames: pa.Table, offset_us: int, name: str, notes: _Notes) -> pa.Table:
        """The frames whose times (with the offset) lie in 1970..2200; the rest are dropped
        with a warning (a logger clock far off, a garbled timestamp: 999999999999.0 would
        make the signal grid span millennia). Compared before the offset is added, so the
        sum cannot overflow."""
        t = frames.column("t_us")
        keep = pc.and_(
            pc.greater_equal(t, pa.scalar(EARLIEST_US - offset_us, pa.int64())),
            pc.less(t, pa.scalar(LATEST_US - offset_us, pa.int64())),
        )
        kept = frames.filter(keep)
        if kept.num_rows < frames.num_rows:
            dropped = frames.num_rows - kept.num_rows
            notes.warn(
                f"{name}: {dropped} CAN frames timed outside {RANGE} (can_time_offset_s added) dropped"
            )
        return kept

    def _decode(self, platform: Platform, frames: pa.Table, notes: _Notes) -> dict[str, Any]:
        dec = self._decoders.get(platform.key)
        if dec is None:
            dec = self._decoders[platform.key] = VectorDecoder(platform.database)
            while len(self._decoders) > 8:
                self._decoders.popitem(last=False)
        if platform.buses:
            frames = frames.filter(pc.is_in(frames.column("bus"), value_set=pa.array(list(platform.buses))))
        out, stats = dec.decode(frames)
        if stats.short_frames:
            notes.warn(f"{stats.short_frames} frames too short for their DBC message, not decoded")
        return out

    def _probe_cameras(self, src: DriveSource, cams: dict[str, Any], notes: _Notes) -> list[_Camera]:
        """Every usable video stream of the drive, as a camera.

        A file with several video streams (front + rear in one recording), or an MCAP
        with several video topics, gives one camera per stream: the second is
        ``<camera>_1``, and so on. An MCAP camera is converted to mp4 once (packets
        copied, times from its messages) and read from memory.
        """
        out: list[_Camera] = []
        for cam, path in src.cameras:
            cam_doc = cams.get(cam, {})
            cam_doc = cam_doc if isinstance(cam_doc, dict) else {}
            suffix = posixpath.splitext(path)[1].lower()
            if not src.confined(path):
                notes.warn(
                    f"{cam}: skipped, a symbolic link out of the raw root (links out are not followed)"
                )
                continue
            try:
                if not self._raw_fs.size(path):
                    raise VideoError("empty file")
                if suffix == ".mcap":
                    out.extend(self._mcap_cameras(cam, path, cam_doc, notes))
                    continue
                found = probe_all(
                    self._opener(path),
                    suffix,
                    _number(cam_doc, "fps", notes, MAX_FPS, f"cameras.{cam}.fps") or None,
                )
            except VideoError as exc:
                notes.warn(f"{cam}: {exc}")
                continue
            except OSError as exc:
                notes.warn(f"{cam}: unreadable ({reason(exc)})", transient=True)
                continue
            for p in found:
                name = cam if p.stream == 0 else f"{cam}_{p.stream}"
                notes.warnings.extend(f"{name}: {w}" for w in p.warnings)
                out.append(_Camera(name, path, self._opener(path), suffix, p, cam_doc, p.creation_time))
        return out

    def _mcap_cameras(self, cam: str, path: str, cam_doc: dict[str, Any], notes: _Notes) -> list[_Camera]:
        from ingest.mcap_video import to_container, video_topics

        out: list[_Camera] = []
        data = self._raw_fs.cat_file(path)
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
            out.append(_Camera(name, path, from_bytes(v.data), v.suffix, p, doc, v.start_time))
        return out

    @staticmethod
    def _tracks(start: dt.datetime, cameras: list[_Camera], notes: _Notes) -> list[CameraTrack]:
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
            offset = _number(c.doc, "offset_s", notes, MAX_OFFSET_S, f"cameras.{c.name}.offset_s")
            offset += c.probe.start_s - file_t0[c.path]
            if not abs(offset) <= MAX_OFFSET_S:  # a stream starting days into its file
                notes.warn(f"{c.name}: its stream starts more than a day into the file; offset ignored")
                offset = 0.0
            tracks.append(CameraTrack(c.name, c.path, own or start + dt.timedelta(seconds=offset), c.probe))
        return tracks

    @staticmethod
    def _can_rows(did: str, day: dt.date, frames: pa.Table) -> pa.Table:
        n = frames.num_rows
        return can_frames.SPEC.conform(
            pa.table(
                {
                    "drive_id": pa.array([did] * n, pa.string()),
                    "date": pa.array([day] * n, pa.date32()),
                    "bus": frames.column("bus"),
                    "t": frames.column("t_us").cast(UTC_TS),
                    **{f.name: frames.column(f.name) for f in can_frames.FRAME},
                    "source": frames.column("source"),
                }
            )
        )

    @staticmethod
    def _signal_rows(did: str, day: dt.date, sig: pa.Table) -> pa.Table:
        n = sig.num_rows
        cols = {"drive_id": pa.array([did] * n, pa.string()), "date": pa.array([day] * n, pa.date32())}
        cols.update({c: sig.column(c) for c in sig.column_names})
        return signals.SPEC.conform(pa.table(cols))

    def _clips(
        self,
        src: DriveSource,
        did: str,
        day: dt.date,
        tracks: list[CameraTrack],
        cameras: dict[str, _Camera],
        sig: pa.Table,
        notes: _Notes,
    ) -> tuple[pa.Table, pa.Table]:
        rows: list[dict[str, Any]] = []
        frames: list[dict[str, Any]] = []
        if not tracks:
            return clips.SPEC.conform(clips.SPEC.schema.empty_table()), clip_frames.SPEC.conform(
                clip_frames.SPEC.schema.empty_table()
            )
        sig_t = sig.column("t").cast(pa.int64()).to_numpy() if sig.num_rows else np.zeros(0, np.int64)
        media = self.lake.root.join("media")
        grid = TimeGrid.for_cameras(tracks, self.settings.clip_seconds)
        for track in tracks:
            p = track.probe
            opener, suffix = cameras[track.name].source, cameras[track.name].suffix
            for cut in grid.cuts(track):
                c_start = track.start + dt.timedelta(seconds=cut.start_s)
                c_end = track.start + dt.timedelta(seconds=cut.end_s)
                cid = clip_id(day, src.vehicle_id, src.drive, track.name, c_start)
                fault_point(f"video.decode:{src.key}")
                try:
                    cm = clip_media(opener, suffix, p, cut, self.settings.keyframes_per_clip)
                except VideoError as exc:
                    notes.warn(f"{track.name} clip at {cut.start_s:.2f}s dropped: {exc}")
                    continue
                except OSError as exc:
                    notes.warn(
                        f"{track.name} clip at {cut.start_s:.2f}s dropped ({reason(exc)})", transient=True
                    )
                    continue
                video = media.join("clips", f"{day:%Y-%m-%d}", f"{cid}.mp4")
                thumb = media.join("thumbnails", f"{day:%Y-%m-%d}", f"{cid}.jpg")
                for loc, blob in ((video, cm.mp4), (thumb, cm.images[0].jpeg)):
                    loc.fs.makedirs(posixpath.dirname(loc.path), exist_ok=True)
                    loc.fs.pipe_file(loc.path, blob)
                lo = round(c_start.timestamp() * 1e6)
                hi = round(c_end.timestamp() * 1e6)
                i0, i1 = np.searchsorted(sig_t, [lo, hi])
                feats = clip_features(
                    sig.slice(i0, i1 - i0), self.settings.signal_rate_hz, self.settings.triggers
                )
                rows.append(
                    {
                        "clip_id": cid,
                        "date": day,
                        "drive_id": did,
                        "vehicle_id": src.vehicle_id,
                        "camera": track.name,
                        "group_id": group_id(day, src.vehicle_id, src.drive, grid.window_start(cut.index)),
                        "start_time": c_start,
                        "end_time": c_end,
                        "duration_s": cut.end_s - cut.start_s,
                        "video_uri": video.uri,
                        "width": p.width,
                        "height": p.height,
                        "fps": p.fps,
                        "codec": p.codec,
                        "rotation_deg": cm.rotation_deg,
                        "thumbnail_uri": thumb.uri,
                        "ingest_run_id": self.run_id,
                        "calibration": _calibration(cameras[track.name].doc),
                        **feats,
                    }
                )
                for k, im in enumerate(cm.images):
                    frames.append(
                        {
                            "clip_id": cid,
                            "date": day,
                            "frame_index": k,
                            "drive_id": did,
                            "t": track.start + dt.timedelta(seconds=im.t_s),
                            "width": im.width,
                            "height": im.height,
                            "jpeg": im.jpeg,
                            "dense": False,
                        }
                    )
                look = self.settings.look_closer
                at_s = feats.get("trigger_at_s")
                if isinstance(at_s, float) and wants_closer_look(feats["events"], at_s, look):  # type: ignore[arg-type]
                    try:
                        dense = dense_frames(cm.mp4, at_s, look)
                    except VideoError as exc:
                        notes.warn(f"{track.name} clip at {cut.start_s:.2f}s: no closer look: {exc}")
                        dense = []
                    for k, im in enumerate(dense, start=len(cm.images)):
                        frames.append(
                            {
                                "clip_id": cid,
                                "date": day,
                                "frame_index": k,
                                "drive_id": did,
                                "t": c_start + dt.timedelta(seconds=im.t_s),
                                "width": im.width,
                                "height": im.height,
                                "jpeg": im.jpeg,
                                "dense": True,
                            }
                        )
        clip_t = clips.SPEC.conform(pa.Table.from_pylist(rows, schema=clips.SPEC.schema))
        frame_t = clip_frames.SPEC.conform(pa.Table.from_pylist(frames, schema=clip_frames.SPEC.schema))
        return clip_t, frame_t


def _number(
    doc: dict[str, Any], key: str, notes: _Notes | None, limit: float = MAX_OFFSET_S, label: str = ""
) -> float:
    """A number drive.json gives (0 if absent); one that is not a finite number within
    ``±limit`` is ignored, said once (its key named: ``label`` or ``key``)."""
    value = doc.get(key)
    if value is None:
        return 0.0
    name = label or key
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
        if notes is not None:
            notes.warn(f"drive.json {name} is not a number; ignored")
        return 0.0
    if abs(value) > limit:
        if notes is not None:
            notes.warn(f"drive.json {name} is beyond ±{limit:.0f}; ignored")
        return 0.0
    return float(value)


def _calibration(doc: dict[str, Any]) -> str | None:
    """A camera's ``intrinsics`` and ``extrinsics`` from drive.json, as given, if any."""
    cal = {k: doc[k] for k in ("intrinsics", "extrinsics") if doc.get(k) is not None}
    return json.dumps(cal, sort_keys=True) if cal else None


@dataclass(frozen=True)
class _Camera:
    name: str
    path: str
    source: Source
    suffix: str
    probe: VideoProbe
    doc: dict[str, Any]  # its drive.json ``cameras`` entry
    clock: dt.datetime | None  # an absolute time of its first frame the file carries


@dataclass
class _Notes:
    """What one drive's ingest dropped (warnings) and, if it has to fail, why (reasons)."""

    warnings: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    transient: bool = False  # an I/O error: a re-run may succeed
    skipped_lines: int = 0

    def warn(self, message: str, *, transient: bool = False) -> None:
        self.warnings.append(message)
        self.transient = self.transient or transient

    def fail(self, message: str) -> None:
        self.reasons.append(message)


def drive_rows(results: list[DriveResult]) -> pa.Table:
    return drives.SPEC.conform(pa.Table.from_pylist([r.row for r in results], schema=drives.SPEC.schema))
