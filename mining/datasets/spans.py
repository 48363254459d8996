"""Span datasets (``samples="span"``): one sample per scenario span with a margin, so a
training job gets the moment itself rather than the clips around it.

:func:`select_spans` picks the spans (the query's scenarios at the pinned
``scenario_hits`` version, kept where a clip they overlap passes the query's other
filters) and widens each by the margin, within the drive's clips: a window never asks
for video the drive does not have. :func:`span_sample` cuts a window's video per camera
from the clips it overlaps (:func:`mining.datasets.media.cut_video`: every frame inside
the window, none outside) and its signals from the drive's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from mining.datasets.media import cut_video
from mining.datasets.members import selected_batches, split_of
from mining.scenarios.registry import resolve_scenarios
from storage.errors import ConfigError
from storage.lake import Lake
from storage.reads import read_clip_signals
from storage.sql import in_set, literal

__all__ = ["select_spans", "span_id", "span_sample"]


def span_id(drive_id: str, name: str, version: int, start: dt.datetime) -> str:
    """``YYYYMMDD-s<hash>`` like every id (ingest.ids): the drive's day first, no dots
    (a WebDataset key ends at the first dot)."""
    us = round(start.timestamp() * 1e6)
    digest = hashlib.sha1(f"{drive_id}/{name}/{version}/{us}".encode()).hexdigest()[:20]
    return f"{drive_id[:8]}-s{digest}"


def select_spans(lake: Lake, q: Any, pinned: Mapping[str, int]) -> list[dict[str, Any]]:
    """The version's samples, in ``span_id`` order: each span of ``q.scenarios`` that
    overlaps a clip ``q`` selects, its window (the span widened by ``q.margin``, kept
    within its drive's clips), the clips the window overlaps and its split (by drive).
    ``limit`` counts spans. Holds the selected clip ids and the spans in memory: spans are
    rare moments, and the clip ids of one query are what a basket holds many times over."""
    everything = q.model_copy(update={"limit": None, "samples": "clip"})
    chosen = {
        c
        for rows in selected_batches(lake, everything, dict(pinned))
        for c in rows.column("clip_id").to_pylist()
    }
    versions = {(r["name"], int(r["version"])) for r in resolve_scenarios(lake, list(q.scenarios))}
    if not chosen or not lake.exists("scenario_hits"):
        return []
    which = " OR ".join(f"(name = {literal(n)} AND version = {v})" for n, v in sorted(versions))
    hits = [
        h
        for h in lake.read(
            "scenario_hits",
            columns=["name", "version", "drive_id", "start", "end", "clip_ids"],
            where=which,
            version=pinned.get("scenario_hits"),
        ).to_pylist()
        if chosen.intersection(h["clip_ids"] or ())
    ]
    if not hits:
        return []
    clips = lake.read(
        "clips",
        columns=["clip_id", "drive_id", "date", "start_time", "end_time"],
        where=in_set("drive_id", sorted({h["drive_id"] for h in hits})),
        version=pinned["clips"],
    ).to_pylist()
    by_drive: dict[str, list[dict[str, Any]]] = {}
    for c in clips:
        by_drive.setdefault(c["drive_id"], []).append(c)
    before = dt.timedelta(seconds=q.margin.before_s)
    after = dt.timedelta(seconds=q.margin.after_s)
    out = []
    for h in hits:
        mine = by_drive.get(h["drive_id"], [])
        if not mine:
            continue
        lo = max(h["start"] - before, min(c["start_time"] for c in mine))
        hi = min(h["end"] + after, max(c["end_time"] for c in mine))
        out.append(
            {
                "span_id": span_id(h["drive_id"], h["name"], h["version"], h["start"]),
                "drive_id": h["drive_id"],
                "date": mine[0]["date"],
                "scenario": f"{h['name']}@{h['version']}",
                "start": h["start"],
                "end": h["end"],
                "window_start": lo,
                "window_end": hi,
                "clip_ids": sorted(c["clip_id"] for c in mine if c["start_time"] < hi and c["end_time"] > lo),
            }
        )
    long = [s for s in out if (s["window_end"] - s["window_start"]).total_seconds() > q.max_window_s]
    if long:
        worst = max(long, key=lambda s: s["window_end"] - s["window_start"])
        seconds = (worst["window_end"] - worst["window_start"]).total_seconds()
        raise ConfigError(
            f"{len(long)} of {len(out)} spans make windows longer than max_window_s={q.max_window_s:g} s "
            f"(the longest: {worst['scenario']} in drive {worst['drive_id']} at "
            f"{worst['start'].isoformat()}, {seconds:g} s): raise max_window_s, or narrow the scenario"
        )
    out.sort(key=lambda s: s["span_id"])
    if q.limit is not None:
        out = out[: q.limit]
    if out:
        splits = split_of(pa.array([s["drive_id"] for s in out], pa.string()), q.val_fraction).to_pylist()
        for s, split in zip(out, splits, strict=True):
            s["split"] = split
    return out


def span_sample(
    lake: Lake,
    span: dict[str, Any],
    clips: list[dict[str, Any]],
    read_media: Any,
    signals_version: int | None,
) -> tuple[dict[str, bytes], dict[str, Any], np.ndarray]:
    """A span's videos (``<camera>.mp4``), the metadata of each camera's cut (its frames'
    times, seconds from ``window_start``) and its signals over the window."""
    lo: dt.datetime = span["window_start"]
    hi: dt.datetime = span["window_end"]
    length = (hi - lo).total_seconds()
    by_camera: dict[str, list[dict[str, Any]]] = {}
    for c in sorted(clips, key=lambda c: c["start_time"]):
        by_camera.setdefault(str(c["camera"]), []).append(c)
    files: dict[str, bytes] = {}
    cameras = []
    for camera, parts in sorted(by_camera.items()):
        cut = cut_video(
            [(read_media(c["video_uri"]), (c["start_time"] - lo).total_seconds()) for c in parts],
            length,
            fps=float(parts[0].get("fps") or 20.0),
        )
        if cut is None:
            continue  # no frame of this camera falls in the window
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
    return files, {"cameras": cameras}, signals
