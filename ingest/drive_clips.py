"""A drive's clips: each camera cut on the drive's time grid, its media written to the lake.

Per camera and window of the grid (:mod:`ingest.timegrid`): the clip remuxed (an mp4,
a thumbnail and, for a codec browsers do not play, an H.264 preview
(:mod:`ingest.preview`) written under the lake's ``media/``), its keyframes decoded, its
features from the signals of its span (:mod:`ingest.features`) and, where a signal
trigger fired, dense frames around its moment (:mod:`ingest.look_closer`). A clip that
cannot be cut is a warning; the others still land.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ingest._reasons import reason
from ingest.discover import DriveSource
from ingest.drive_cameras import Camera
from ingest.drive_json import calibration
from ingest.features import clip_features, drive_trigger_spans
from ingest.ids import clip_id, group_id
from ingest.look_closer import dense_frames, wants_closer_look
from ingest.notes import Notes
from ingest.preview import needs_preview, preview_mp4
from ingest.timegrid import CameraTrack, TimeGrid
from ingest.video import ClipCut, VideoError, clip_media
from storage.config import Settings
from storage.faults import fault_point
from storage.objectstore import Location
from storage.tables import clip_frames, clips

__all__ = ["ClipCutter"]


@dataclass(frozen=True)
class ClipCutter:
    """Cuts a drive's clips into ``media`` (the lake's media folder) for run ``run_id``."""

    media: Location
    settings: Settings
    run_id: str

    @staticmethod
    def _shown_by(track: CameraTrack | None, cut: ClipCut | None, cameras: dict[str, Camera]) -> bytes | None:
        """The same window cut from a camera browsers play (an openpilot route's qcamera.ts
        for its HEVC road camera): the preview as a packet copy, no transcoding. None when
        there is no such camera or it has no frames in the window."""
        if track is None or cut is None or needs_preview(track.probe.codec):
            return None
        cam = cameras[track.name]
        try:
            return clip_media(cam.source, cam.suffix, track.probe, cut, max_frames=1).mp4
        except (VideoError, OSError):
            return None

    def cut(
        self,
        src: DriveSource,
        did: str,
        day: dt.date,
        tracks: list[CameraTrack],
        cameras: dict[str, Camera],
        sig: pa.Table,
        notes: Notes,
    ) -> tuple[pa.Table, pa.Table]:
        """The drive's ``clips`` and ``clip_frames`` rows; the media already written."""
        rows: list[dict[str, Any]] = []
        frames: list[dict[str, Any]] = []
        if not tracks:
            return clips.SPEC.conform(clips.SPEC.schema.empty_table()), clip_frames.SPEC.conform(
                clip_frames.SPEC.schema.empty_table()
            )
        settings = self.settings
        sig_t = sig.column("t").cast(pa.int64()).to_numpy() if sig.num_rows else np.zeros(0, np.int64)
        # the triggers over the whole drive: a stop or a creep that crosses a clip's edge is
        # named in every clip it overlaps, as the shipped scenarios find it in the lake
        spans = drive_trigger_spans(sig, settings.signal_rate_hz, settings.triggers)
        sources = {of: cam for cam, of in src.preview_of}
        by_name = {t.name: t for t in tracks}
        main = [t for t in tracks if t.name not in dict(src.preview_of)] or tracks
        grid = TimeGrid.for_cameras(main, settings.clip_seconds)
        for track in main:
            shown = by_name.get(sources.get(track.name, ""))  # its preview from another camera
            shown_cuts = {c.index: c for c in grid.cuts(shown)} if shown is not None else {}
            p = track.probe
            opener, suffix = cameras[track.name].source, cameras[track.name].suffix
            windows = grid.windows(track)
            for short, kept in windows:
                if not kept:
                    notes.warn(
                        f"{track.name}: {short.end_s - short.start_s:.2f} s from {short.start_s:.2f}s "
                        f"in no clip (an edge of the drive shorter than {grid.min_clip_s:g} s)"
                    )
            for cut in (cut for cut, kept in windows if kept):
                c_start = track.start + dt.timedelta(seconds=cut.start_s)
                c_end = track.start + dt.timedelta(seconds=cut.end_s)
                cid = clip_id(day, src.vehicle_id, src.drive, track.name, c_start)
                fault_point(f"video.decode:{src.key}")
                try:
                    cm = clip_media(opener, suffix, p, cut, settings.keyframes_per_clip)
                except VideoError as exc:
                    notes.warn(f"{track.name} clip at {cut.start_s:.2f}s dropped: {exc}")
                    continue
                except OSError as exc:
                    notes.warn(
                        f"{track.name} clip at {cut.start_s:.2f}s dropped ({reason(exc)})", transient=True
                    )
                    continue
                video = self.media.join("clips", f"{day:%Y-%m-%d}", f"{cid}.mp4")
                thumb = self.media.join("thumbnails", f"{day:%Y-%m-%d}", f"{cid}.jpg")
                media = [(video, cm.mp4), (thumb, cm.images[0].jpeg)]
                preview = None
                if settings.previews and needs_preview(p.codec):
                    try:
                        preview = self.media.join("previews", f"{day:%Y-%m-%d}", f"{cid}.mp4")
                        blob = self._shown_by(shown, shown_cuts.get(cut.index), cameras)
                        media.append((preview, blob or preview_mp4(cm.mp4, cm.rotation_deg)))
                    except VideoError as exc:
                        notes.warn(f"{track.name} clip at {cut.start_s:.2f}s: no browser preview: {exc}")
                        preview = None
                for loc, blob in media:
                    loc.fs.makedirs(posixpath.dirname(loc.path), exist_ok=True)
                    loc.fs.pipe_file(loc.path, blob)
                lo = round(c_start.timestamp() * 1e6)
                hi = round(c_end.timestamp() * 1e6)
                i0, i1 = np.searchsorted(sig_t, [lo, hi])
                feats = clip_features(
                    sig.slice(i0, i1 - i0), settings.signal_rate_hz, settings.triggers, spans, offset=int(i0)
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
                        "preview_uri": preview.uri if preview is not None else None,
                        "width": p.width,
                        "height": p.height,
                        "fps": p.fps,
                        "codec": p.codec,
                        "rotation_deg": cm.rotation_deg,
                        "thumbnail_uri": thumb.uri,
                        "ingest_run_id": self.run_id,
                        "calibration": calibration(cameras[track.name].doc),
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
                look = settings.look_closer
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
