"""Datasets: a typed query over clips becomes an immutable, versioned dataset, and a
version becomes WebDataset tar shards plus a wids-compatible manifest.

A version pins the Delta versions it read (``lake_version``), so its clip list,
shards and manifest always mean the same bytes; a new ``create`` is a new version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from mining.media import frame_times
from mining.members import BATCH_ROWS, ids_predicates, member_batches, selected_batches, split_of
from mining.registry import resolve
from storage.bounds import MAX_BASKET, MAX_NAMES, ClipId, Name, Speed
from storage.errors import ConfigError, NotFoundError
from storage.filters import ClipFilter
from storage.lake import Lake
from storage.lease import this_process
from storage.reads import read_clip_signals
from storage.sql import literal
from storage.tables import dataset_clips, datasets
from storage.tables.signals import SIGNAL_COLUMNS, UNITS

__all__ = [
    "DatasetQuery",
    "ExportPlan",
    "ShardStage",
    "ShardWork",
    "SimilarTo",
    "clip_predicate",
    "create_version",
    "finish_export",
    "get_version",
    "manifest",
    "plan_export",
    "render_manifest",
    "select_clips",
    "shard_location",
    "shard_samples",
    "stored_manifest",
]


class SimilarTo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_ids: list[ClipId] = Field(min_length=1, max_length=100)
    k: int = Field(default=50, ge=1, le=10_000)
    max_distance: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    space: Literal["clip", "behaviour"] = Field(
        default="clip", description="what is compared (mining.queries.SPACES): the whole vector or behaviour"
    )


class DatasetQuery(BaseModel):
    """What goes into a dataset. Every field narrows the selection; every list, string and
    number is bounded (:mod:`storage.bounds`), so a query is refused (422) before it runs."""

    model_config = ConfigDict(extra="forbid")
    events: list[Name] = Field(
        default_factory=list, max_length=MAX_NAMES, description="clips with any of these trigger events"
    )
    vehicles: list[Name] = Field(default_factory=list, max_length=MAX_NAMES)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    min_speed: Speed | None = None
    max_speed: Speed | None = None
    similar_to: SimilarTo | None = None
    min_novelty: float | None = Field(default=None, ge=0, le=1)
    dedup: bool = False
    limit: int | None = Field(default=None, ge=1, le=10_000_000)
    val_fraction: float = Field(default=0.1, ge=0, le=0.9)
    model: Name | None = None
    clip_ids: list[ClipId] = Field(
        default_factory=list, max_length=MAX_BASKET, description="only these clips (a reviewer's basket)"
    )
    reviewed: Literal["confirmed", "not_interesting", "mislabelled", "any", "none"] | None = Field(
        default=None,
        description="clips whose latest verdict is this one (`any`: reviewed at all; `none`: never reviewed)",
    )
    tags: list[Name] = Field(
        default_factory=list,
        max_length=MAX_NAMES,
        description="clips whose latest review has any of these tags",
    )
    samples: Literal["clip", "group"] = Field(
        default="clip",
        description="clip: one sample per clip; group: one sample per time window of a drive, with "
        "every camera's clip (`<group_id>.<camera>.mp4`) and one `.signals.npy`",
    )

    def clip_filter(self) -> ClipFilter:
        """The clips the query starts from (before similarity, novelty, dedup and limit)."""
        return ClipFilter(
            events=self.events,
            vehicles=self.vehicles,
            since=self.since,
            until=self.until,
            min_speed=self.min_speed,
            max_speed=self.max_speed,
            clip_ids=self.clip_ids,
        )


def clip_predicate(q: DatasetQuery) -> str | None:
    return q.clip_filter().predicate()


def select_clips(lake: Lake, q: DatasetQuery, versions: dict[str, int]) -> list[dict[str, Any]]:
    """The clips the query selects, at the pinned table versions, sorted by clip id (all
    in memory: for small queries and tests; :func:`create_version` streams them)."""
    return [r for rows in selected_batches(lake, q, versions) for r in rows.to_pylist()]


def _review_matches(q: DatasetQuery, review: dict[str, Any] | None) -> bool:
    """Whether a clip's latest review (None: never reviewed) passes the query's review filters."""
    if q.reviewed == "none":
        return review is None and not q.tags
    if review is None:
        return False
    if q.reviewed not in (None, "any") and review["verdict"] != q.reviewed:
        return False
    want = {t.strip().lower() for t in q.tags}
    return not want or bool(want & set(review["tags"] or []))


def _group_key(clip: dict[str, Any]) -> str:
    return str(clip.get("group_id") or clip["clip_id"])  # clips of older lakes are groups of one


def create_version(lake: Lake, name: str, q: DatasetQuery, batch_rows: int = BATCH_ROWS) -> dict[str, Any]:
    """A new version of ``name``: the clips ``q`` selects, streamed from the engine a span
    of days at a time (:func:`mining.members.selected_batches`) into ``dataset_clips``
    data files, published in one commit, then its ``datasets`` row. Memory holds one
    span, whatever the version's size."""
    if not name or any(c in name for c in "/\\.@ ") or len(name) > 100:
        raise ConfigError(f"dataset name {name!r}: letters, digits, '-' and '_' only")
    lake.create_tables(["datasets", "dataset_clips", "mining_scores", "embeddings", "reviews"])
    pinned = {t: lake.version(t) for t in ("clips", "signals", "embeddings", "mining_scores", "reviews")}
    model = resolve(lake, q.model).ref
    # Versions are numbered per name: two creates at once must not both take
    # max + 1, so the number is claimed and both rows written under a lease.
    with lake.lease(f"dataset:{name}", this_process(), ttl_s=3600.0, wait_s=120.0):
        # Members are written first: a create that died before its datasets row
        # still used its number, so numbers come from both tables.
        version = 1 + max(
            (
                int(v)
                for table in ("datasets", "dataset_clips")
                for v in lake.query(
                    table,
                    columns=["version"],
                    where=f"name = {literal(name)}",
                    order_by=["version DESC"],
                    limit=1,
                )
                .column("version")
                .to_pylist()
            ),
            default=0,
        )
        writer = lake.writer("dataset_clips")
        actions = []
        count = 0
        for rows in selected_batches(lake, q, pinned, batch_rows):
            members = pa.table(
                {
                    "name": pa.array([name] * rows.num_rows, pa.string()),
                    "version": pa.array([version] * rows.num_rows, pa.int32()),
                    "clip_id": rows.column("clip_id"),
                    "split": split_of(rows.column("drive_id").combine_chunks(), q.val_fraction),
                }
            )
            actions += writer.write(dataset_clips.SPEC.conform(members))
            count += rows.num_rows
        if actions:
            lake.commit("dataset_clips", actions)
        row = {
            "name": name,
            "version": version,
            "query": q.model_dump_json(),
            "created_at": dt.datetime.now(dt.UTC),
            "clip_count": count,
            "manifest_uri": None,
            "state": "created",
            "lake_version": json.dumps(pinned, sort_keys=True),
            "model": model,
        }
        lake.append("datasets", pa.Table.from_pylist([row], schema=datasets.SPEC.schema))
    return row


def get_version(lake: Lake, name: str, version: int) -> dict[str, Any]:
    rows = lake.read("datasets", where=f"name = {literal(name)} AND version = {int(version)}").to_pylist()
    if not rows:
        raise NotFoundError(f"no dataset {name} version {version}")
    return rows[0]


def _location(lake: Lake, name: str, version: int) -> Any:
    return lake.root.join("datasets", name, str(version))


def _meta(clip: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: (v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v)
        for k, v in clip.items()
        if k not in ("video_uri", "thumbnail_uri", "calibration")
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
    import webdataset as wds  # here, not at import: it pulls in torch where torch is installed

    buf = io.BytesIO()
    writer = wds.TarWriter(buf, mtime=0, user="fleetmine", group="fleetmine", encoder=False)
    common = {
        "signals_columns": list(SIGNAL_COLUMNS),
        "signals_units": {c: UNITS[c] for c in SIGNAL_COLUMNS},
        "signal_rate_hz": 20.0,
        "dataset": {"name": plan.name, "version": plan.version},
    }
    signals_version = plan.pinned["signals"]
    samples, scores = _shard_rows(lake, plan, work)
    for members in samples:
        first = members[0]
        npy = io.BytesIO()
        selected = _selected_by(plan, scores, members)
        if not plan.by_group:
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


def _shard_rows(
    lake: Lake, plan: ExportPlan, work: ShardWork
) -> tuple[list[list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """A shard's samples as clip rows (at the pinned version) and their mining scores:
    read by the stage that writes it, so the plan holds ids alone."""
    ids = [c for sample in work.samples for c in sample]
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
    return [[clips[c] for c in sample] for sample in work.samples], scores


def shard_samples(lake: Lake, plan: ExportPlan, work: ShardWork) -> list[list[dict[str, Any]]]:
    """A shard's samples, each its clips' rows (one clip, or a group's cameras)."""
    return _shard_rows(lake, plan, work)[0]


@dataclass(frozen=True)
class ShardWork:
    """One tar of a version: its number, its samples (each the ids of its clips: one, or a
    group's cameras) and their splits. Clip rows are read when the tar is written."""

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
    days at a time (:func:`mining.members.member_batches`), and the plan keeps their
    ids and splits only; the shard stages read the clip rows.
    """
    ds = get_version(lake, name, version)
    pinned = json.loads(ds["lake_version"])
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
