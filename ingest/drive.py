"""One drive folder in, its rows of every ingest table out (as written data files).

:class:`DriveIngest` is the stage: it runs inside a Ray task (or inline in unit
tests), writes Parquet data files and media (clip mp4s, thumbnails) into the
lake, and returns a :class:`DriveResult` with the add-actions for the driver's
one commit per table. It composes the steps of one drive, in order, each in a room of
its own; every file they read, they read through the drive's one
:class:`~ingest.drive_files.DriveFiles` (confined to the raw root):

1. ``drive.json`` (drive_json), the platform (drive_platform), the CAN logs read and
   decoded by the platform's DBC (drive_can), resampled to the signal grid (signals);
2. every camera probed (drive_cameras), the drive's start time (start_time), the
   cameras placed on the drive's clock and one time grid (drive_cameras, timegrid);
3. per camera and window (drive_clips): the clip remuxed, its keyframes decoded, its
   features (features), and, where a signal trigger fired, dense frames around its
   moment (look_closer).

A bad file is data. A drive is ``failed`` only when nothing usable came out of it;
otherwise it is ``ok`` and ``drives.warnings`` says what was dropped and where. A drive
that makes the decoder spin or allocate without bound is stopped by its time and
memory budget (budget: the drives are decoded in a child process the stage watches)
and recorded failed with the budget it exceeded.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.transaction import AddAction

from ingest._reasons import reason
from ingest.budget import Budget, ItemFailed, Sandbox
from ingest.discover import DriveSource, named, not_read
from ingest.drive_cameras import camera_tracks, probe_cameras
from ingest.drive_can import Decoders, read_can
from ingest.drive_clips import ClipCutter
from ingest.drive_files import DriveFiles
from ingest.drive_json import read_drive_json
from ingest.drive_platform import drive_platform
from ingest.ids import drive_id
from ingest.notes import Notes
from ingest.openpilot.logs import LOG_NAMES
from ingest.openpilot.route import FRAME_TIMES, MAX_FRAME_TIMES_BYTES, EncodeIndex, encode_index
from ingest.platform import Platform, platform_for_fingerprint, shipped_platforms
from ingest.signals import resample
from ingest.start_time import EARLIEST, TimeSource, resolve_start
from storage.config import Settings
from storage.errors import ConfigError
from storage.faults import fault_point
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.tables import can_frames, drives, signals

__all__ = ["DATA_TABLES", "DriveIngest", "DriveResult", "drive_rows"]

DATA_TABLES = ("can_frames", "signals", "clips", "clip_frames")
log = logging.getLogger(__name__)


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
        self._decoders = Decoders()  # by DBC content + signal map, never by a name drive.json picks
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

    @staticmethod
    def _encode_index(files: DriveFiles, notes: Notes) -> EncodeIndex:
        """An openpilot route's encode index: when each camera frame began, from its logs."""
        logs = []
        for path in files.src.can_logs:
            try:
                logs.append(files.read(path))
            except OSError:
                continue  # read_can has said why
        index = encode_index(logs)
        for n, path in files.src.frame_times:  # comma2k19 ships the road camera's frame times
            try:
                if files.size(path) > MAX_FRAME_TIMES_BYTES:
                    raise _BadTimes(f"larger than {MAX_FRAME_TIMES_BYTES >> 20} MiB")
                times = np.load(io.BytesIO(files.read(path)), allow_pickle=False)
                if times.ndim != 1 or times.dtype.kind != "f":
                    raise _BadTimes(f"not a 1-d float array ({times.dtype}, {times.ndim}-d)")
                if not np.isfinite(times).all():  # a NaN would place every frame nowhere
                    raise _BadTimes(f"{int((~np.isfinite(times)).sum())} times are not finite")
            except (OSError, ValueError, EOFError) as exc:
                why = str(exc) if isinstance(exc, _BadTimes) else reason(exc)  # ours quote nothing read
                notes.warn(f"segment {n}: {FRAME_TIMES} unusable ({why}); frames timed at the rate")
                continue
            index.add_frame_times("road", n, times)
        if index.times and not index.clock_source:
            notes.warn("the logs record no set wall clock: camera frames timed on the device's boot clock")
        return index

    def process(self, src: DriveSource) -> DriveResult:
        fault_point("ingest.drive")
        files = DriveFiles(src)
        notes = Notes()
        for skipped in src.skipped:
            notes.warn(skipped)
        doc, bad_json = read_drive_json(files)
        if bad_json:
            notes.warn(bad_json)
        dbc = doc.get("dbc")  # read by the platform step, when drive.json names it
        unread = [r for r in src.other if not (isinstance(dbc, str) and r == posixpath.normpath(dbc or "."))]
        notes.warnings.extend(not_read(unread))
        index = self._encode_index(files, notes) if src.stitched or _route_logs(src) else None
        if index is not None and index.fingerprint and "platform" not in doc and "dbc" not in doc:
            name = platform_for_fingerprint(index.fingerprint)
            if name is not None:
                doc = {**doc, "platform": name}  # the car the logs name; drive.json overrides
            else:
                notes.warn(
                    f"the logs' car fingerprint {index.fingerprint!r} maps to no shipped platform "
                    f"({', '.join(shipped_platforms())}): set platform or dbc in drive.json"
                )
        platform = self._platform(files, doc, notes)
        frames = read_can(files, doc, notes)
        decoded: dict[str, Any] = {}
        if platform is not None and frames.num_rows:
            try:
                decoded = self._decoders.decode(platform, frames, notes)
            except Exception as exc:  # a DBC that cannot decode this log: raw frames still land
                notes.warn(f"DBC decode failed: {reason(exc)}")

        cams = doc.get("cameras") if isinstance(doc.get("cameras"), dict) else {}
        probes = probe_cameras(files, cams if isinstance(cams, dict) else {}, notes, index)
        start = resolve_start(
            has_drive_json=src.drive_json is not None,
            drive_json=doc.get("start_time"),
            can_first_us=int(pc.min(frames.column("t_us")).as_py()) if frames.num_rows else None,
            container_times=[c.clock for c in probes if c.clock],
            folder=src.drive,
            mtimes=files.mtimes([c.path for c in probes] or list(src.can_logs)),
        )
        notes.warnings.extend(start.warnings)
        day = start.time.date()
        did = drive_id(day, src.vehicle_id, src.drive)
        result = DriveResult(did, src.key, {})

        sig = pa.table({"t": pa.array([], UTC_TS)})
        if decoded and platform is not None:
            sig = resample(platform, decoded, self.settings.signal_rate_hz)
        tracks = camera_tracks(start.time, probes, notes)
        cutter = ClipCutter(self.lake.root.join("media"), self.settings, self.run_id)
        clip_rows, frame_rows = cutter.cut(src, did, day, tracks, {c.name: c for c in probes}, sig, notes)
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
            held = f"; not read: {named(unread)} (see warnings)" if unread else ""
            notes.fail(f"no camera video and no CAN log in the drive folder{held}")
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
            doc, _ = read_drive_json(DriveFiles(src))
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

    def _platform(self, files: DriveFiles, doc: dict[str, Any], notes: Notes) -> Platform | None:
        if not files.src.can_logs:
            return None
        try:
            platform = drive_platform(files, doc, self.settings.dbc_dirs)
        except ConfigError as exc:
            notes.warn(f"{exc}: CAN kept raw, not decoded")
            return None
        if platform is not None:
            return platform
        notes.warn("drive.json names no platform (or dbc + signals): CAN kept raw, not decoded")
        return None

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


class _BadTimes(ValueError):
    """A frame-times file that loads but cannot time frames; its message quotes nothing read."""


def _route_logs(src: DriveSource) -> bool:
    """Whether the drive has openpilot logs (their carParams name the car)."""
    return any(posixpath.basename(p).startswith(LOG_NAMES) for p in src.can_logs)


def drive_rows(results: list[DriveResult]) -> pa.Table:
    return drives.SPEC.conform(pa.Table.from_pylist([r.row for r in results], schema=drives.SPEC.schema))
