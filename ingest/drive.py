"""One drive folder in, its rows of every ingest table out (as written data files).

:class:`DriveIngest` is the stage: it runs inside a Ray task (or inline in unit
tests), writes Parquet data files and media (clip mp4s, thumbnails) into the
lake, and returns a :class:`DriveResult` with the add-actions for the driver's
one commit per table. A bad file is data: it becomes a reason in the drive's
record, what is decodable is kept, and the drive is marked ``failed``.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.transaction import AddAction

from ingest.can import read_can_log
from ingest.can.dbc import VectorDecoder
from ingest.discover import DriveSource, read_drive_json
from ingest.features import clip_features
from ingest.ids import clip_id, drive_id
from ingest.interfaces import FRAME_SCHEMA
from ingest.platform import Platform, load_platform, parse_platform
from ingest.signals import resample
from ingest.video import VideoError, keyframe_images, plan_clips, probe, remux
from storage.config import Settings
from storage.errors import ConfigError
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.tables import can_frames, clip_frames, clips, drives, signals

__all__ = ["DATA_TABLES", "DriveIngest", "DriveResult"]

DATA_TABLES = ("can_frames", "signals", "clips", "clip_frames")


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


def _ts(us: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC)


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


class DriveIngest:
    """Stage: decode one drive. Heavy state (DBC databases) loads in :meth:`setup`."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake, settings: Settings, run_id: str):
        self.lake = lake
        self.settings = settings
        self.run_id = run_id
        self._decoders: dict[str, VectorDecoder] = {}
        self._raw_fs: Any = None

    def setup(self) -> None:
        self.lake.root.fs  # noqa: B018  (open the object store client in the worker)

    def process_batch(self, items: list[DriveSource]) -> list[DriveResult]:
        return [self.process(src) for src in items]

    # -- one drive -----------------------------------------------------------------

    def process(self, src: DriveSource) -> DriveResult:
        self._raw_fs = src.raw.fs
        problems: list[str] = []
        skipped = 0
        doc, bad_json = read_drive_json(src)
        if bad_json:
            problems.append(bad_json)
        platform = self._platform(src, doc, problems)

        frames, can_skipped = self._read_can(src, doc, problems)
        skipped += can_skipped
        decoded: dict[str, Any] = {}
        if platform is not None and frames.num_rows:
            try:
                decoded = self._decode(platform, frames, problems)
            except Exception as exc:  # a DBC that cannot decode this log is this drive's failure
                problems.append(f"DBC decode failed: {type(exc).__name__}: {exc}")

        start = _parse_time(doc.get("start_time"))
        if start is None and frames.num_rows:
            start = _ts(int(pc.min(frames.column("t_us")).as_py()))
        cams = doc.get("cameras") if isinstance(doc.get("cameras"), dict) else {}
        probes: dict[str, Any] = {}
        for cam, path in src.cameras:
            cam_doc = cams.get(cam, {}) if isinstance(cams, dict) else {}
            fps_hint = cam_doc.get("fps") if isinstance(cam_doc, dict) else None
            try:
                if not self._raw_fs.size(path):
                    raise VideoError("empty file")
                p = probe(self._opener(path), posixpath.splitext(path)[1], fps_hint)
            except VideoError as exc:
                problems.append(f"{cam}: {exc}")
                continue
            problems.extend(f"{cam}: {w}" for w in p.warnings)
            probes[cam] = (path, p, cam_doc)
            if start is None:
                start = self._container_time(path)
        if start is None:
            start = dt.datetime.fromtimestamp(0, dt.UTC)
            problems.append("no start time: no drive.json start_time, no CAN frames, no video creation_time")
        day = start.date()
        did = drive_id(day, src.vehicle_id, src.drive)
        result = DriveResult(did, src.key, {})

        sig = pa.table({"t": pa.array([], UTC_TS)})
        if decoded and platform is not None:
            sig = resample(platform, decoded, self.settings.signal_rate_hz)
        writes: dict[str, pa.Table] = {
            "can_frames": self._can_rows(did, day, frames),
            "signals": self._signal_rows(did, day, sig),
        }
        clip_rows, frame_rows = self._clips(src, did, day, start, probes, sig, problems)
        writes["clips"] = clip_rows
        writes["clip_frames"] = frame_rows

        for table, data in writes.items():
            if data.num_rows:
                result.actions[table] = self.lake.writer(table).write(data, prefix=f"{self.run_id}-{did}")
        result.counts = {t: d.num_rows for t, d in writes.items()}
        result.counts["bytes"] = src.total_bytes
        duration = 0.0
        if sig.num_rows:
            duration = (sig.num_rows - 1) / self.settings.signal_rate_hz
        for _, p, _ in probes.values():
            duration = max(duration, p.duration_s)
        if not src.cameras and not src.can_logs:
            problems.append("no camera video and no CAN log in the drive folder")
        result.row = {
            "drive_id": did,
            "date": day,
            "vehicle_id": src.vehicle_id,
            "drive": src.drive,
            "platform": platform.name if platform else None,
            "start_time": start,
            "duration_s": duration,
            "source_uri": src.uri,
            "fingerprint": src.fingerprint,
            "status": "failed" if problems else "ok",
            "error": "; ".join(problems) if problems else None,
            "skipped_lines": skipped,
            "n_clips": clip_rows.num_rows,
            "n_can_frames": frames.num_rows,
            "ingest_run_id": self.run_id,
            "ingested_at": dt.datetime.now(dt.UTC),
        }
        return result

    def failed(self, src: DriveSource, reason: str) -> DriveResult:
        """The record of a drive whose task died (e.g. the decoder crashed the worker)."""
        doc, _ = read_drive_json(src)
        start = _parse_time(doc.get("start_time")) or dt.datetime.fromtimestamp(0, dt.UTC)
        did = drive_id(start.date(), src.vehicle_id, src.drive)
        row = {
            "drive_id": did,
            "date": start.date(),
            "vehicle_id": src.vehicle_id,
            "drive": src.drive,
            "start_time": start,
            "source_uri": src.uri,
            "fingerprint": src.fingerprint,
            "status": "failed",
            "error": reason,
            "ingest_run_id": self.run_id,
            "ingested_at": dt.datetime.now(dt.UTC),
        }
        return DriveResult(did, src.key, row, {}, {"bytes": src.total_bytes})

    # -- parts -----------------------------------------------------------------------

    def _opener(self, path: str) -> Any:
        fs = self._raw_fs
        return lambda: fs.open(path, "rb")

    def _container_time(self, path: str) -> dt.datetime | None:
        import av

        try:
            with self._raw_fs.open(path, "rb") as f, av.open(f) as c:
                return _parse_time(c.metadata.get("creation_time"))
        except Exception:
            return None

    def _platform(self, src: DriveSource, doc: dict[str, Any], problems: list[str]) -> Platform | None:
        if not src.can_logs:
            return None
        try:
            if isinstance(doc.get("platform"), str):
                return load_platform(str(doc["platform"]))
            if isinstance(doc.get("dbc"), str):
                base = posixpath.join(src.raw.path, src.vehicle_id, src.drive)
                return parse_platform(
                    {
                        "name": doc.get("platform_name", "custom"),
                        "dbc": posixpath.join(base, str(doc["dbc"])),
                        "signals": doc.get("signals", {}),
                    },
                    base_dir=Path(base),
                )
        except ConfigError as exc:
            problems.append(str(exc))
            return None
        problems.append("drive.json names no platform (or dbc + signals): CAN kept raw, not decoded")
        return None

    def _read_can(self, src: DriveSource, doc: dict[str, Any], problems: list[str]) -> tuple[pa.Table, int]:
        tables = []
        skipped = 0
        offset_us = round(float(doc.get("can_time_offset_s", 0.0) or 0.0) * 1e6)
        for path in src.can_logs:
            name = posixpath.basename(path)
            try:
                data = self._raw_fs.cat_file(path)
            except OSError as exc:
                problems.append(f"{name}: unreadable: {exc}")
                continue
            if not data:
                problems.append(f"{name}: empty file")
                continue
            res = read_can_log(data, name)
            skipped += res.skipped
            if res.skipped:
                problems.append(
                    f"{name}: {res.skipped} unreadable lines skipped ({'; '.join(res.problems[:3])})"
                )
            if res.frames.num_rows == 0 and not res.skipped:
                problems.append(f"{name}: no CAN frames")
            f = res.frames.append_column("source", pa.array([name] * res.frames.num_rows, pa.string()))
            if offset_us:
                f = f.set_column(0, "t_us", pc.add(f.column("t_us"), offset_us))
            tables.append(f)
        if not tables:
            empty = FRAME_SCHEMA.empty_table()
            return empty.append_column("source", pa.array([], pa.string())), skipped
        return pa.concat_tables(tables).sort_by("t_us"), skipped

    def _decode(self, platform: Platform, frames: pa.Table, problems: list[str]) -> dict[str, Any]:
        dec = self._decoders.get(platform.name)
        if dec is None:
            dec = self._decoders[platform.name] = VectorDecoder(platform.database)
        if platform.buses:
            frames = frames.filter(pc.is_in(frames.column("bus"), value_set=pa.array(list(platform.buses))))
        out, stats = dec.decode(frames)
        if stats.short_frames:
            problems.append(f"{stats.short_frames} frames too short for their DBC message, not decoded")
        return out

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
                    "arbitration_id": frames.column("arbitration_id"),
                    "is_extended": frames.column("is_extended"),
                    "is_fd": frames.column("is_fd"),
                    "is_error": frames.column("is_error"),
                    "dlc": frames.column("dlc"),
                    "data": frames.column("data"),
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
        start: dt.datetime,
        probes: dict[str, Any],
        sig: pa.Table,
        problems: list[str],
    ) -> tuple[pa.Table, pa.Table]:
        rows: list[dict[str, Any]] = []
        frames: list[dict[str, Any]] = []
        sig_t = sig.column("t").cast(pa.int64()).to_numpy() if sig.num_rows else np.zeros(0, np.int64)
        media = self.lake.root.join("media")
        for cam, (path, p, cam_doc) in probes.items():
            suffix = posixpath.splitext(path)[1]
            cam_start = _parse_time(cam_doc.get("start_time")) if isinstance(cam_doc, dict) else None
            cam_start = cam_start or start
            opener = self._opener(path)
            for plan in plan_clips(p, self.settings.clip_seconds):
                c_start = cam_start + dt.timedelta(seconds=plan.start_s)
                c_end = cam_start + dt.timedelta(seconds=plan.end_s)
                cid = clip_id(day, src.vehicle_id, src.drive, cam, c_start)
                try:
                    mp4 = remux(opener, suffix, p, plan)
                    images = keyframe_images(opener, suffix, p, plan, self.settings.keyframes_per_clip)
                except VideoError as exc:
                    problems.append(f"{cam} clip {plan.index}: {exc}")
                    continue
                video = media.join("clips", f"{day:%Y-%m-%d}", f"{cid}.mp4")
                thumb = media.join("thumbnails", f"{day:%Y-%m-%d}", f"{cid}.jpg")
                for loc, blob in ((video, mp4), (thumb, images[0].jpeg)):
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
                        "camera": cam,
                        "start_time": c_start,
                        "end_time": c_end,
                        "duration_s": plan.end_s - plan.start_s,
                        "video_uri": video.uri,
                        "width": p.width,
                        "height": p.height,
                        "fps": p.fps,
                        "codec": p.codec,
                        "thumbnail_uri": thumb.uri,
                        "ingest_run_id": self.run_id,
                        **feats,
                    }
                )
                for k, im in enumerate(images):
                    frames.append(
                        {
                            "clip_id": cid,
                            "date": day,
                            "frame_index": k,
                            "drive_id": did,
                            "t": cam_start + dt.timedelta(seconds=im.t_s),
                            "width": im.width,
                            "height": im.height,
                            "jpeg": im.jpeg,
                        }
                    )
        clip_t = clips.SPEC.conform(pa.Table.from_pylist(rows, schema=clips.SPEC.schema))
        frame_t = clip_frames.SPEC.conform(pa.Table.from_pylist(frames, schema=clip_frames.SPEC.schema))
        return clip_t, frame_t


def drive_rows(results: list[DriveResult]) -> pa.Table:
    return drives.SPEC.conform(pa.Table.from_pylist([r.row for r in results], schema=drives.SPEC.schema))
