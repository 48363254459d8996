"""A dataset version as WebDataset tar shards plus a wids-compatible manifest.

The plan (:func:`plan_export`) cuts the version's samples into shards, deterministically;
:class:`ShardStage` writes each tar in a worker; :func:`finish_export` writes the
manifest and marks the version exported. The bytes depend only on the version
(:mod:`mining.datasets.curation`), so re-exporting gives the same shards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.datasets.curation import get_version
from mining.datasets.media import frame_times
from mining.datasets.members import BATCH_ROWS, ids_predicates, member_batches
from mining.datasets.spans import span_sample
from mining.datasets.tar import SampleTar
from storage.errors import NotFoundError
from storage.lake import Lake
from storage.reads import read_clip_signals
from storage.sql import in_set, literal
from storage.tables import datasets
from storage.tables.signals import SIGNAL_COLUMNS, UNITS

__all__ = [
    "ExportPlan",
    "ShardStage",
    "ShardWork",
    "finish_export",
    "manifest",
    "plan_export",
    "render_manifest",
    "shard_location",
    "shard_samples",
    "stored_manifest",
]


def _group_key(clip: dict[str, Any]) -> str:
    return str(clip.get("group_id") or clip["clip_id"])  # clips of older lakes are groups of one


def _location(lake: Lake, name: str, version: int) -> Any:
    return lake.root.join("datasets", name, str(version))


def _meta(clip: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: (v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v)
        for k, v in clip.items()
        if k not in ("video_uri", "preview_uri", "thumbnail_uri", "calibration")
    }
    if clip.get("calibration"):  # the camera's intrinsics / extrinsics from drive.json
        out["calibration"] = json.loads(clip["calibration"])
    return out


def _clip_meta(clip: dict[str, Any], mp4: bytes) -> dict[str, Any]:
    """A clip's metadata plus each shown frame's time (s from ``start_time``, presentation
    order), so frames line up with ``signals.npy``'s ``t_us`` without counting them."""
    return {**_meta(clip), "frame_times_s": frame_times(mp4)}


def _write_shard(lake: Lake, plan: ExportPlan, work: ShardWork) -> dict[str, Any]:
    """One WebDataset tar; runs in a Ray task. Per sample, by clip: ``<clip_id>.mp4/.json/
    .signals.npy``; by group: ``<group_id>.<camera>.mp4`` per camera, one ``.json`` (its
    ``cameras`` list each clip's metadata) and one ``.signals.npy`` over the whole window.

    Every ``.json`` says what a training job needs beside the bytes: the signal columns,
    their units and rate, each video frame's time, the cameras' calibration from drive.json
    where given, and the model version and scores that selected the sample."""
    loc = _location(lake, plan.name, plan.version)
    fs = loc.fs
    buf = io.BytesIO()
    writer = SampleTar(buf)
    common = {
        "signals_columns": list(SIGNAL_COLUMNS),
        "signals_units": {c: UNITS[c] for c in SIGNAL_COLUMNS},
        "signal_rate_hz": 20.0,
        "dataset": {"name": plan.name, "version": plan.version},
    }
    signals_version = plan.pinned["signals"]
    samples, scores = _shard_rows(lake, plan, work)
    spans = _spans(lake, plan, work) if plan.by_span else {}
    drive_cameras = _drive_cameras(lake, plan, spans) if plan.by_span else {}
    for key, members in zip((w[0] for w in work.samples), samples, strict=True):
        first = members[0]
        npy = io.BytesIO()
        selected = _selected_by(plan, scores, members)
        if plan.by_span:
            span = spans[key]
            files, cut, window_signals = span_sample(
                lake,
                span,
                members,
                lambda uri: fs.cat_file(_media_path(lake, uri)),
                signals_version,
                drive_cameras.get(span["drive_id"], []),
            )
            np.save(npy, window_signals)
            sample = {"__key__": key, **files}
            meta = {
                "span_id": key,
                "scenario": span["scenario"],
                "drive_id": span["drive_id"],
                "vehicle_id": first["vehicle_id"],
                "span_start": span["start"].isoformat(),
                "span_end": span["end"].isoformat(),
                "start_time": span["window_start"].isoformat(),
                "end_time": span["window_end"].isoformat(),
                "split": work.split[key],
                "cameras": [
                    {**c, "calibration": json.loads(c["calibration"]) if c["calibration"] else None}
                    for c in cut["cameras"]
                ],
                "cameras_left_out": cut["cameras_left_out"],
                **common,
                **selected,
            }
        elif not plan.by_group:
            mp4 = fs.cat_file(_media_path(lake, first["video_uri"]))
            np.save(npy, read_clip_signals(lake, first, signals_version))
            meta = {**_clip_meta(first, mp4), "split": work.split[first["clip_id"]], **common, **selected}
            sample = {"__key__": first["clip_id"], "mp4": mp4}
        else:
            window = {
                **first,
                "start_time": min(m["start_time"] for m in members),
                "end_time": max(m["end_time"] for m in members),
            }
            np.save(npy, read_clip_signals(lake, window, signals_version))
            sample = {"__key__": _group_key(first)}
            cameras = []
            for m in members:
                mp4 = fs.cat_file(_media_path(lake, m["video_uri"]))
                sample[f"{m['camera']}.mp4"] = mp4
                cameras.append(_clip_meta(m, mp4))
            meta = {
                "group_id": _group_key(first),
                "drive_id": first["drive_id"],
                "vehicle_id": first["vehicle_id"],
                "start_time": window["start_time"].isoformat(),
                "end_time": window["end_time"].isoformat(),
                "split": work.split[first["clip_id"]],
                "cameras": cameras,
                **common,
                **selected,
            }
        sample["json"] = json.dumps(meta, sort_keys=True).encode()
        sample["signals.npy"] = npy.getvalue()
        writer.write(sample)
    writer.close()
    data = buf.getvalue()
    fs.pipe_file(loc.join(f"{work.index:06d}.tar").path, data)
    return {
        "path": f"{work.index:06d}.tar",
        "nsamples": len(work.samples),
        "filesize": len(data),
        "md5sum": hashlib.md5(data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _selected_by(
    plan: ExportPlan, scores: dict[str, dict[str, Any]], members: list[dict[str, Any]]
) -> dict[str, Any]:
    """The dataset's model version and the scores its newest mining run gave the sample
    (a group: its most novel clip); nulls where the clip was never mined."""
    scored = [scores[m["clip_id"]] for m in members if m["clip_id"] in scores]
    best = max(scored, key=lambda r: r.get("novelty") or 0.0, default={})
    keys = ("novelty", "rarity", "cluster_id", "duplicate_of", "run_id")
    return {"model": plan.dataset.get("model"), "selection": {k: best.get(k) for k in keys}}


def _scores(lake: Lake, model: str | None, ids: list[str], version: int | None) -> dict[str, dict[str, Any]]:
    """Per clip, its row of the newest mining run of ``model`` (at the pinned version)."""
    if not model or not ids or not lake.exists("mining_scores"):
        return {}
    rows = [
        r
        for where in ids_predicates(ids)
        for r in lake.read(
            "mining_scores",
            columns=["clip_id", "run_id", "novelty", "rarity", "cluster_id", "duplicate_of"],
            where=f"model_version = {literal(model)} AND {where}",
            version=version,
        ).to_pylist()
    ]
    return {r["clip_id"]: r for r in sorted(rows, key=lambda r: r["run_id"])}


def _media_path(lake: Lake, uri: str) -> str:
    loc = lake.locate(uri)
    return loc.path if loc is not None else uri


def _spans(lake: Lake, plan: ExportPlan, work: ShardWork) -> dict[str, dict[str, Any]]:
    """A span version's ``dataset_spans`` rows of one shard, by span id."""
    keys = [w[0] for w in work.samples]
    this = f"name = {literal(plan.name)} AND version = {int(plan.version)}"
    rows = lake.read("dataset_spans", where=f"{this} AND {in_set('span_id', keys)}").to_pylist()
    return {r["span_id"]: r for r in rows}


def _drive_cameras(lake: Lake, plan: ExportPlan, spans: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The cameras of each drive of a shard's spans (the clips at the pinned version), in
    one read: a sample names the ones it leaves out."""
    drives = sorted({s["drive_id"] for s in spans.values()})
    if not drives:
        return {}
    days = sorted({s["date"] for s in spans.values()})
    rows = lake.read(
        "clips",
        columns=["drive_id", "camera"],
        where=f"{in_set('drive_id', drives)} AND date IN ({', '.join(literal(d) for d in days)})",
        version=plan.pinned["clips"],
    ).to_pylist()
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["drive_id"], set()).add(str(r["camera"]))
    return {d: sorted(c) for d, c in out.items()}


def _shard_rows(
    lake: Lake, plan: ExportPlan, work: ShardWork
) -> tuple[list[list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """A shard's samples as clip rows (at the pinned version) and their mining scores:
    read by the stage that writes it, so the plan holds ids alone. A span sample's clips
    are the ones after its span id (``[span_id, clip_id, ...]``)."""
    ids = [c for sample in work.samples for c in (sample[1:] if plan.by_span else sample)]
    if not ids:
        return [], {}
    clips = {
        r["clip_id"]: r
        for where in ids_predicates(ids)
        for r in lake.read("clips", where=where, version=plan.pinned["clips"]).to_pylist()
    }
    missing = [c for c in ids if c not in clips]
    if missing:
        raise NotFoundError(f"{plan.name}@{plan.version}: clip {missing[0]} is not in clips")
    scores = _scores(lake, plan.dataset.get("model"), ids, plan.pinned.get("mining_scores"))
    skip = 1 if plan.by_span else 0
    return [[clips[c] for c in sample[skip:]] for sample in work.samples], scores


def shard_samples(lake: Lake, plan: ExportPlan, work: ShardWork) -> list[list[dict[str, Any]]]:
    """A shard's samples, each its clips' rows (one clip, or a group's cameras)."""
    return _shard_rows(lake, plan, work)[0]


@dataclass(frozen=True)
class ShardWork:
    """One tar of a version: its number, its samples (each the ids of its clips: one, or a
    group's cameras; a span: its span id, then the clips its window overlaps) and their
    splits. Clip rows are read when the tar is written."""

    index: int
    samples: list[list[str]]
    split: dict[str, str]


@dataclass
class ExportPlan:
    name: str
    version: int
    dataset: dict[str, Any]
    pinned: dict[str, int]
    by_group: bool
    num_samples: int
    shards: list[ShardWork]
    by_span: bool = False

    def split(self) -> dict[str, str]:
        """Every clip's split (the whole version in memory: for in-process exporters)."""
        return {c: s for w in self.shards for c, s in w.split.items()}


_ALLOWANCE = 24 * 1024  # per sample: its JSON and signals, beside the video


def _clip_bytes(lake: Lake, uri: str | None) -> int:
    return int(lake.root.fs.size(_media_path(lake, uri))) if uri else 0


def plan_export(
    lake: Lake, name: str, version: int, shard_bytes: int = 512 * 1024 * 1024, batch_rows: int = BATCH_ROWS
) -> ExportPlan:
    """The version's samples cut into shards, deterministically.

    Samples (clips, or clip groups for a ``samples="group"`` query) go to shards in
    id order, cut where the running size (video size plus a fixed allowance for the
    JSON and signals) passes ``shard_bytes``: the plan depends only on the version's
    clips, so re-exporting gives the same bytes. The members are streamed a span of
    days at a time (:func:`mining.datasets.members.member_batches`), and the plan keeps their
    ids and splits only; the shard stages read the clip rows.
    """
    ds = get_version(lake, name, version)
    pinned = json.loads(ds["lake_version"])
    if json.loads(ds["query"]).get("samples") == "span":
        return _plan_spans(lake, ds, pinned, shard_bytes)
    by_group = json.loads(ds["query"]).get("samples") == "group"
    shards: list[ShardWork] = []
    current: list[list[str]] = []
    split: dict[str, str] = {}
    size = seen = samples = 0
    for span, members in member_batches(lake, name, int(version), pinned["clips"], batch_rows):
        ids = members.column("clip_id")
        split_of_span = dict(zip(ids.to_pylist(), members.column("split").to_pylist(), strict=True))
        span_clips = lake.query(
            "clips",
            columns=["clip_id", "group_id", "camera", "video_uri"],
            where=span,
            version=pinned["clips"],
        )
        clips = span_clips.filter(pc.is_in(span_clips.column("clip_id"), ids.combine_chunks())).to_pylist()
        units: dict[str, list[dict[str, Any]]] = {}
        for c in clips:
            units.setdefault(_group_key(c) if by_group else c["clip_id"], []).append(c)
        seen += len(clips)
        for key in sorted(units):
            if current and size >= shard_bytes:
                shards.append(ShardWork(len(shards), current, split))
                current, split, size = [], {}, 0
            group = sorted(units[key], key=lambda c: (str(c["camera"]), c["clip_id"]))
            current.append([c["clip_id"] for c in group])
            split.update({c["clip_id"]: split_of_span[c["clip_id"]] for c in group})
            size += sum(_clip_bytes(lake, c["video_uri"]) for c in group) + _ALLOWANCE
            samples += 1
    if current:
        shards.append(ShardWork(len(shards), current, split))
    if seen != int(ds["clip_count"] or 0):
        raise NotFoundError(f"{name}@{version} lists {ds['clip_count']} clips; {seen} of them found in clips")
    return ExportPlan(name, int(version), ds, pinned, by_group, samples, shards)


def _plan_spans(lake: Lake, ds: dict[str, Any], pinned: dict[str, int], shard_bytes: int) -> ExportPlan:
    """A span version's samples cut into shards in span-id order, sized by the clips each
    window is cut from (an upper bound on its video)."""
    name, version = ds["name"], int(ds["version"])
    this = f"name = {literal(name)} AND version = {version}"
    spans = sorted(
        lake.read("dataset_spans", columns=["span_id", "clip_ids", "split"], where=this).to_pylist(),
        key=lambda r: r["span_id"],
    )
    ids = sorted({c for r in spans for c in r["clip_ids"]})
    uris = {
        r["clip_id"]: r["video_uri"]
        for where in ids_predicates(ids)
        for r in lake.read(
            "clips", columns=["clip_id", "video_uri"], where=where, version=pinned["clips"]
        ).to_pylist()
    }
    if len(uris) != int(ds["clip_count"] or 0):
        raise NotFoundError(
            f"{name}@{version} lists {ds['clip_count']} clips; {len(uris)} of them found in clips"
        )
    sizes = {c: _clip_bytes(lake, uri) for c, uri in uris.items()}  # one stat per clip, not per span
    shards: list[ShardWork] = []
    current: list[list[str]] = []
    split: dict[str, str] = {}
    size = 0
    for r in spans:
        if current and size >= shard_bytes:
            shards.append(ShardWork(len(shards), current, split))
            current, split, size = [], {}, 0
        current.append([r["span_id"], *r["clip_ids"]])
        split[r["span_id"]] = r["split"]
        size += sum(sizes[c] for c in r["clip_ids"]) + _ALLOWANCE
    if current:
        shards.append(ShardWork(len(shards), current, split))
    return ExportPlan(name, version, ds, pinned, False, len(spans), shards, by_span=True)


class ShardStage:
    """Stage: writes the tars of :class:`ShardWork` items; returns their manifest entries."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake, plan: ExportPlan):
        self.lake = lake
        self.plan = plan

    def setup(self) -> None:
        loc = _location(self.lake, self.plan.name, self.plan.version)
        loc.fs.makedirs(loc.path, exist_ok=True)

    def process_batch(self, items: list[ShardWork]) -> list[dict[str, Any]]:
        return [_write_shard(self.lake, self.plan, w) for w in items]


def finish_export(lake: Lake, plan: ExportPlan, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest of the written shards, and the version marked exported."""
    ds = plan.dataset
    loc = _location(lake, plan.name, plan.version)
    loc.fs.makedirs(loc.path, exist_ok=True)
    doc = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": plan.name,
        "dataset": plan.name,
        "version": plan.version,
        "created_at": ds["created_at"].isoformat(),
        "lake_version": plan.pinned,
        "model": ds["model"],
        "query": json.loads(ds["query"]),
        "num_samples": plan.num_samples,
        "format": "webdataset",
        "shardlist": shards,
    }
    loc.fs.pipe_file(loc.join("manifest.json").path, json.dumps(doc, sort_keys=True, indent=1).encode())
    lake.upsert(
        "datasets",
        pa.Table.from_pylist(
            [{**ds, "manifest_uri": loc.join("manifest.json").uri, "state": "exported"}],
            schema=datasets.SPEC.schema,
        ),
    )
    return doc


def stored_manifest(lake: Lake, name: str, version: int) -> dict[str, Any]:
    """The manifest as export wrote it (shard paths relative to the version's folder)."""
    loc = _location(lake, name, version)
    doc: dict[str, Any] = json.loads(loc.fs.cat_file(loc.join("manifest.json").path))
    return doc


def render_manifest(doc: dict[str, Any], base_url: str, grant: str | None = None) -> bytes:
    """A stored manifest with absolute shard URLs under ``base_url``, each carrying
    ``grant`` (see :mod:`api.grants`) when given; deterministic bytes."""
    out = {**doc, "shardlist": []}
    suffix = f"?grant={grant}" if grant else ""
    for s in doc["shardlist"]:
        entry = {k: v for k, v in s.items() if k != "path"}
        entry["url"] = f"{base_url.rstrip('/')}/v1/shards/{doc['name']}/{doc['version']}/{s['path']}{suffix}"
        out["shardlist"].append(entry)
    return json.dumps(out, sort_keys=True, indent=1).encode()


def manifest(lake: Lake, name: str, version: int, base_url: str, grant: str | None = None) -> bytes:
    """The stored manifest with absolute shard URLs for ``base_url`` (deterministic bytes)."""
    return render_manifest(stored_manifest(lake, name, version), base_url, grant)


def shard_location(lake: Lake, name: str, version: int, shard: str) -> Any:
    return _location(lake, name, version).join(shard)
