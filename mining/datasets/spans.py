"""Span datasets (``samples="span"``): one sample per scenario span with a margin, so a
training job gets the moment itself rather than the clips around it.

:func:`select_spans` picks the spans (the query's scenarios at the pinned
``scenario_hits`` version, kept where a clip they overlap passes the query's other
filters) and widens each by the margin, within the video of the cameras that record the
whole span: a window never asks for video they do not have. :func:`span_sample` cuts a
window's video per camera that holds all of it (:func:`mining.datasets.media.cut_video`:
every frame inside the window, none outside), names the cameras that do not, and reads
its signals from the drive's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.datasets.media import cut_video
from mining.datasets.members import selected_batches, split_of
from mining.scenarios.hits import versions_predicate
from mining.scenarios.registry import resolve_scenarios
from storage.errors import ConfigError
from storage.lake import Lake
from storage.reads import read_clip_signals
from storage.schema import us_since_epoch
from storage.sql import in_set, literal

__all__ = ["select_spans", "span_id", "span_sample"]


def span_id(drive_id: str, name: str, version: int, start: dt.datetime) -> str:
    """``YYYYMMDD-s<hash>`` like every id (ingest.ids): the drive's day first, no dots
    (a WebDataset key ends at the first dot)."""
    us = round(start.timestamp() * 1e6)
    digest = hashlib.sha1(f"{drive_id}/{name}/{version}/{us}".encode()).hexdigest()[:20]
    return f"{drive_id[:8]}-s{digest}"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _at(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=int(us))


@dataclass(frozen=True)
class _Camera:
    """One camera's clips in a drive, sorted by start (microseconds since 1970)."""

    ids: list[str]
    starts: np.ndarray
    ends: np.ndarray
    reach: np.ndarray  # the latest end so far: where a window's first clip is found
    runs_lo: np.ndarray  # its stretches of unbroken video: clips that follow one another
    runs_hi: np.ndarray
    frame_us: int  # one frame: how far apart two cameras' first frames of a moment may be

    @classmethod
    def of(cls, ids: list[str], starts: np.ndarray, ends: np.ndarray, fps: float | None) -> _Camera:
        frame_us = round(1e6 / (fps if fps and fps > 0 else 20.0))
        reach = np.maximum.accumulate(ends)
        # a clip that starts within half a frame of the video so far continues it
        breaks = np.flatnonzero(starts[1:] > reach[:-1] + frame_us // 2) + 1
        first = np.concatenate([[0], breaks])
        last = np.concatenate([breaks - 1, [len(ids) - 1]])
        return cls(ids, starts, ends, reach, starts[first], reach[last], frame_us)

    def run_over(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The stretch of unbroken video that holds ``[lo, hi)`` (within a frame), if any."""
        k = int(np.searchsorted(self.runs_lo, lo + self.frame_us, side="right")) - 1
        if k >= 0 and self.runs_hi[k] >= hi - self.frame_us:
            return int(self.runs_lo[k]), int(self.runs_hi[k])
        return None

    def overlapping(self, lo: int, hi: int) -> list[str]:
        i = int(np.searchsorted(self.reach, lo, side="right"))
        j = int(np.searchsorted(self.starts, hi, side="left"))
        return [self.ids[k] for k in range(i, j) if self.ends[k] > lo]


def _drive_cameras(clips: pa.Table) -> dict[str, dict[str, _Camera]]:
    """Per drive, per camera, its clips as :class:`_Camera` (sorted once: a span's window
    and clips are then a few binary searches, whatever the drive's length)."""
    clips = clips.sort_by([("drive_id", "ascending"), ("camera", "ascending"), ("start_time", "ascending")])
    drive = clips.column("drive_id").to_pylist()
    camera = [str(c) for c in clips.column("camera").to_pylist()]
    ids = clips.column("clip_id").to_pylist()
    starts = clips.column("start_time").cast(pa.int64()).to_numpy()
    ends = clips.column("end_time").cast(pa.int64()).to_numpy()
    fps = clips.column("fps").to_pylist()
    out: dict[str, dict[str, _Camera]] = {}
    k = 0
    while k < len(ids):
        j = k
        while j < len(ids) and drive[j] == drive[k] and camera[j] == camera[k]:
            j += 1
        out.setdefault(drive[k], {})[camera[k]] = _Camera.of(ids[k:j], starts[k:j], ends[k:j], fps[k])
        k = j
    return out


def _window(cameras: dict[str, _Camera], start: int, end: int, before: int, after: int) -> tuple[int, int]:
    """The span ``[start, end)`` widened by the margin and kept within the video of every
    camera that records the whole span unbroken (so each of them covers the whole window);
    when none does (the span runs past the video, or over a hole in it), within the drive's
    clips. A camera that covers the window in part is left out of the sample at export."""
    held = [r for c in cameras.values() if (r := c.run_over(start, end)) is not None]
    if held:
        lo, hi = max(r[0] for r in held), min(r[1] for r in held)
        if lo < hi:
            return max(start - before, lo), min(end + after, hi)
    first = min(int(c.starts[0]) for c in cameras.values())
    last = max(int(c.reach[-1]) for c in cameras.values())
    return max(start - before, first), min(end + after, last)


def _drive_days(drive_ids: list[str]) -> str:
    """The ``date`` partitions of drives: the day each id begins with (ingest.ids)."""
    try:
        days = {dt.datetime.strptime(d[:8], "%Y%m%d").date() for d in drive_ids}
    except ValueError:
        return "true"
    return f"date IN ({', '.join(literal(d) for d in sorted(days))})"


def select_spans(lake: Lake, q: Any, pinned: Mapping[str, int]) -> list[dict[str, Any]]:
    """The version's samples, in ``span_id`` order: each span of ``q.scenarios`` that
    overlaps a clip ``q`` selects, its window (:func:`_window`: the span widened by
    ``q.margin``, kept within the video of the cameras that record the span), the clips
    (every camera) the window overlaps and its split (by drive). ``limit`` counts spans,
    and ``max_window_s`` holds for the spans the version keeps. Holds the selected clip
    ids, the spans and their drives' clip times in memory: spans are rare moments, and
    the clip ids of one query are what a basket holds many times over."""
    everything = q.model_copy(update={"limit": None, "samples": "clip"})
    chosen = pa.array(
        sorted(
            {
                c
                for rows in selected_batches(lake, everything, dict(pinned))
                for c in rows.column("clip_id").to_pylist()
            }
        ),
        pa.string(),
    )
    versions = {(r["name"], int(r["version"])) for r in resolve_scenarios(lake, list(q.scenarios))}
    if not len(chosen) or not lake.exists("scenario_hits"):
        return []
    table = lake.read(
        "scenario_hits",
        columns=["name", "version", "drive_id", "start", "end", "clip_ids"],
        where=versions_predicate(versions),
        version=pinned.get("scenario_hits"),
    )
    # a span is kept when a clip it overlaps is chosen (one pass over every span's clips)
    lists = table.column("clip_ids").combine_chunks()
    picked = pc.is_in(pc.list_flatten(lists), value_set=chosen).to_numpy(zero_copy_only=False)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    hits = table.take(pa.array(np.unique(parents[picked]), pa.int64())).to_pylist()
    if not hits:
        return []
    drives = sorted({h["drive_id"] for h in hits})
    clips = lake.read(
        "clips",
        columns=["clip_id", "drive_id", "date", "camera", "start_time", "end_time", "fps"],
        where=f"{in_set('drive_id', drives)} AND {_drive_days(drives)}",
        version=pinned["clips"],
    )
    dates = dict(zip(clips.column("drive_id").to_pylist(), clips.column("date").to_pylist(), strict=True))
    by_drive = _drive_cameras(clips)
    before = round(q.margin.before_s * 1e6)
    after = round(q.margin.after_s * 1e6)
    out = []
    for h in hits:
        cameras = by_drive.get(h["drive_id"])
        if not cameras:
            continue  # no clip of the drive at the pinned version: no clip of it was chosen either
        lo, hi = _window(cameras, us_since_epoch(h["start"]), us_since_epoch(h["end"]), before, after)
        out.append(
            {
                "span_id": span_id(h["drive_id"], h["name"], h["version"], h["start"]),
                "drive_id": h["drive_id"],
                "date": dates[h["drive_id"]],
                "scenario": f"{h['name']}@{h['version']}",
                "start": h["start"],
                "end": h["end"],
                "window_start": _at(lo),
                "window_end": _at(hi),
                "clip_ids": sorted(i for c in cameras.values() for i in c.overlapping(lo, hi)),
            }
        )
    out.sort(key=lambda s: s["span_id"])
    if q.limit is not None:
        out = out[: q.limit]
    long = [s for s in out if (s["window_end"] - s["window_start"]).total_seconds() > q.max_window_s]
    if long:
        worst = max(long, key=lambda s: s["window_end"] - s["window_start"])
        seconds = (worst["window_end"] - worst["window_start"]).total_seconds()
        raise ConfigError(
            f"{len(long)} of {len(out)} spans make windows longer than max_window_s={q.max_window_s:g} s "
            f"(the longest: {worst['scenario']} in drive {worst['drive_id']} at "
            f"{worst['start'].isoformat()}, {seconds:g} s): raise max_window_s, or narrow the scenario"
        )
    if out:
        splits = split_of(pa.array([s["drive_id"] for s in out], pa.string()), q.val_fraction).to_pylist()
        for s, split in zip(out, splits, strict=True):
            s["split"] = split
    return out


def _covered(parts: list[dict[str, Any]], lo: dt.datetime, hi: dt.datetime) -> list[list[float]]:
    """Where one camera's clips (sorted by start) hold video in ``[lo, hi)``: stretches
    of seconds from ``lo``, clips that follow one another within half a frame joined."""
    out: list[list[float]] = []
    for c in parts:
        a = max((c["start_time"] - lo).total_seconds(), 0.0)
        b = min((c["end_time"] - lo).total_seconds(), (hi - lo).total_seconds())
        if b <= a:
            continue
        if out and a <= out[-1][1] + 0.5 / float(c.get("fps") or 20.0):
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [[round(a, 6), round(b, 6)] for a, b in out]


def _whole(covered: list[list[float]], length: float, slack: float) -> bool:
    """One stretch from the window's start to its end, within ``slack`` seconds at each."""
    return len(covered) == 1 and covered[0][0] <= slack + 1e-6 and covered[0][1] >= length - slack - 1e-6


def span_sample(
    lake: Lake,
    span: dict[str, Any],
    clips: list[dict[str, Any]],
    read_media: Any,
    signals_version: int | None,
    drive_cameras: list[str] | None = None,
) -> tuple[dict[str, bytes], dict[str, Any], np.ndarray]:
    """A span's videos (``<camera>.mp4``), the metadata of each camera's cut (its frames'
    times, seconds from ``window_start``) and its signals over the window.

    Only cameras whose clips hold the whole window, unbroken, are cut: a camera that
    records part of it (it started later, stopped earlier, a clip of it is missing) is
    named in ``cameras_left_out`` with the stretches it does cover (``covered_s``), as is
    every other camera of ``drive_cameras`` (none of its clips in the window). A sample
    never holds a video shorter than its window."""
    lo: dt.datetime = span["window_start"]
    hi: dt.datetime = span["window_end"]
    length = (hi - lo).total_seconds()
    by_camera: dict[str, list[dict[str, Any]]] = {}
    for c in sorted(clips, key=lambda c: c["start_time"]):
        by_camera.setdefault(str(c["camera"]), []).append(c)
    files: dict[str, bytes] = {}
    cameras = []
    left_out = []
    for camera in sorted({*by_camera, *(drive_cameras or [])}):
        parts = by_camera.get(camera, [])
        covered = _covered(parts, lo, hi)
        fps = float(parts[0].get("fps") or 20.0) if parts else 20.0
        cut = None
        if _whole(covered, length, 1 / fps):  # cameras start a moment within a frame of each other
            cut = cut_video(
                ((read_media(c["video_uri"]), (c["start_time"] - lo).total_seconds()) for c in parts),
                length,
                fps=fps,
            )
            # and the files hold what their rows say (a frame dropped at an end is no hole)
            shown = [[cut.frame_times_s[0], cut.frame_times_s[-1] + 1 / fps]] if cut is not None else []
            if not _whole(shown, length, 2 / fps):
                covered, cut = [[round(a, 6), round(b, 6)] for a, b in shown], None
        if cut is None:
            left_out.append(
                {"camera": camera, "clip_ids": [c["clip_id"] for c in parts], "covered_s": covered}
            )
            continue
        files[f"{camera}.mp4"] = cut.data
        cameras.append(
            {
                "camera": camera,
                "clip_ids": [c["clip_id"] for c in parts],
                "frame_times_s": cut.frame_times_s,
                "calibration": parts[0].get("calibration"),
            }
        )
    signals = read_clip_signals(lake, {**span, "start_time": lo, "end_time": hi}, signals_version)
    return files, {"cameras": cameras, "cameras_left_out": left_out}, signals
