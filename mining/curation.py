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
from pydantic import BaseModel, ConfigDict, Field

from mining.media import frame_times
from mining.novelty import latest_scores
from mining.queries import similar
from mining.registry import resolve
from mining.reviews import latest_verdicts
from storage.errors import ConfigError, NotFoundError
from storage.filters import ClipFilter
from storage.lake import Lake
from storage.lease import this_process
from storage.reads import read_clip_signals
from storage.sql import in_list, literal
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
    "stored_manifest",
]


class SimilarTo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clip_ids: list[str] = Field(min_length=1, max_length=100)
    k: int = Field(default=50, ge=1, le=10_000)
    max_distance: float | None = Field(default=None, gt=0)


class DatasetQuery(BaseModel):
    """What goes into a dataset. Every field narrows the selection."""

    model_config = ConfigDict(extra="forbid")
    events: list[str] = Field(default_factory=list, description="clips with any of these trigger events")
    vehicles: list[str] = Field(default_factory=list)
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    min_speed: float | None = None
    max_speed: float | None = None
    similar_to: SimilarTo | None = None
    min_novelty: float | None = Field(default=None, ge=0, le=1)
    dedup: bool = False
    limit: int | None = Field(default=None, ge=1, le=10_000_000)
    val_fraction: float = Field(default=0.1, ge=0, le=0.9)
    model: str | None = None
    clip_ids: list[str] = Field(
        default_factory=list, max_length=10_000, description="only these clips (a reviewer's basket)"
    )
    reviewed: Literal["confirmed", "not_interesting", "mislabelled", "any", "none"] | None = Field(
        default=None,
        description="clips whose latest verdict is this one (`any`: reviewed at all; `none`: never reviewed)",
    )
    tags: list[str] = Field(
        default_factory=list, description="clips whose latest review has any of these tags"
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
    """The clips the query selects, at the pinned table versions, sorted by clip id."""
    where = clip_predicate(q)
    rows = lake.read(
        "clips",
        columns=["clip_id", "drive_id", "start_time", "group_id"],
        where=where,
        version=versions["clips"],
    ).to_pylist()
    spec = resolve(lake, q.model)
    if q.similar_to is not None:
        allowed: set[str] = set()
        for cid in q.similar_to.clip_ids:
            near = similar(lake, clip_id=cid, k=q.similar_to.k, where=where, model=spec.ref)
            allowed |= {
                n.clip_id
                for n in near
                if q.similar_to.max_distance is None or n.distance <= q.similar_to.max_distance
            }
            allowed.add(cid)
        rows = [r for r in rows if r["clip_id"] in allowed]
    if q.min_novelty is not None or q.dedup:
        scores = latest_scores(lake, spec, versions.get("mining_scores"))
        by_clip: dict[str, Any] = {s["clip_id"]: s for s in scores}
        if not by_clip:
            raise ConfigError(f"min_novelty/dedup need mining scores for {spec.ref}: run `fleetmine mine`")
        if q.min_novelty is not None:
            rows = [
                r
                for r in rows
                if r["clip_id"] in by_clip and by_clip[r["clip_id"]]["novelty"] >= q.min_novelty
            ]
        if q.dedup:
            rows = [r for r in rows if by_clip.get(r["clip_id"], {}).get("duplicate_of") is None]
    if q.reviewed is not None or q.tags:
        verdicts = latest_verdicts(lake, versions.get("reviews"))
        rows = [r for r in rows if _review_matches(q, verdicts.get(r["clip_id"]))]
    rows.sort(key=lambda r: r["clip_id"])
    if q.samples == "clip":
        return rows[: q.limit] if q.limit else rows
    return _whole_groups(lake, rows, q.limit, versions["clips"])


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


def _whole_groups(
    lake: Lake, rows: list[dict[str, Any]], limit: int | None, version: int
) -> list[dict[str, Any]]:
    """Every camera's clip of each group a selected clip belongs to (``limit`` counts groups)."""
    groups = sorted({_group_key(r) for r in rows})[:limit]
    chosen = {r["clip_id"]: r for r in rows if _group_key(r) in set(groups)}
    named = [g for g in groups if g not in chosen]
    if named:
        for r in lake.read(
            "clips",
            columns=["clip_id", "drive_id", "start_time", "group_id"],
            where=f"group_id IN ({in_list(named)})",
            version=version,
        ).to_pylist():
            chosen[r["clip_id"]] = r
    return sorted(chosen.values(), key=lambda r: r["clip_id"])


def _split(drive_id: str, val_fraction: float) -> str:
    """By drive, deterministically: one drive never lands in both splits."""
    h = int(hashlib.sha1(drive_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def create_version(lake: Lake, name: str, q: DatasetQuery) -> dict[str, Any]:
    if not name or any(c in name for c in "/\\.@ ") or len(name) > 100:
        raise ConfigError(f"dataset name {name!r}: letters, digits, '-' and '_' only")
    lake.create_tables(["datasets", "dataset_clips", "mining_scores", "embeddings", "reviews"])
    pinned = {t: lake.version(t) for t in ("clips", "signals", "embeddings", "mining_scores", "reviews")}
    rows = select_clips(lake, q, pinned)
    # Versions are numbered per name: two creates at once must not both take
    # max + 1, so the number is claimed and both rows written under a lease.
    with lake.lease(f"dataset:{name}", this_process(), ttl_s=600.0, wait_s=120.0):
        # Members are written first: a create that died before its datasets row
        # still used its number, so numbers come from both tables.
        version = 1 + max(
            (
                v
                for table in ("datasets", "dataset_clips")
                for v in lake.read(table, columns=["version"], where=f"name = {literal(name)}")
                .column("version")
                .to_pylist()
            ),
            default=0,
        )
        members = pa.Table.from_pylist(
            [
                {
                    "name": name,
                    "version": version,
                    "clip_id": r["clip_id"],
                    "split": _split(r["drive_id"], q.val_fraction),
                }
                for r in rows
            ],
            schema=dataset_clips.SPEC.schema,
        )
        lake.append("dataset_clips", members)
        row = {
            "name": name,
            "version": version,
            "query": q.model_dump_json(),
            "created_at": dt.datetime.now(dt.UTC),
            "clip_count": len(rows),
            "manifest_uri": None,
            "state": "created",
            "lake_version": json.dumps(pinned, sort_keys=True),
            "model": resolve(lake, q.model).ref,
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
    for members in work.samples:
        first = members[0]
        npy = io.BytesIO()
        selected = _selected_by(plan, members)
        if not plan.by_group:
            mp4 = fs.cat_file(_media_path(lake, first["video_uri"]))
            np.save(npy, read_clip_signals(lake, first, signals_version))
            meta = {**_clip_meta(first, mp4), "split": plan.split[first["clip_id"]], **common, **selected}
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
                "split": plan.split[first["clip_id"]],
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


def _selected_by(plan: ExportPlan, members: list[dict[str, Any]]) -> dict[str, Any]:
    """The dataset's model version and the scores its newest mining run gave the sample
    (a group: its most novel clip); nulls where the clip was never mined."""
    scored = [plan.scores[m["clip_id"]] for m in members if m["clip_id"] in plan.scores]
    best = max(scored, key=lambda r: r.get("novelty") or 0.0, default={})
    keys = ("novelty", "rarity", "cluster_id", "duplicate_of", "run_id")
    return {"model": plan.dataset.get("model"), "selection": {k: best.get(k) for k in keys}}


def _scores(lake: Lake, model: str | None, ids: list[str], version: int | None) -> dict[str, dict[str, Any]]:
    """Per clip, its row of the newest mining run of ``model`` (at the pinned version)."""
    if not model or not ids or not lake.exists("mining_scores"):
        return {}
    rows = lake.read(
        "mining_scores",
        columns=["clip_id", "run_id", "novelty", "rarity", "cluster_id", "duplicate_of"],
        where=f"model_version = {literal(model)} AND clip_id IN ({in_list(ids)})",
        version=version,
    ).to_pylist()
    return {r["clip_id"]: r for r in sorted(rows, key=lambda r: r["run_id"])}


def _media_path(lake: Lake, uri: str) -> str:
    loc = lake.locate(uri)
    return loc.path if loc is not None else uri


@dataclass(frozen=True)
class ShardWork:
    """One tar of a version: its number and its samples (each a list of clips: one, or a group)."""

    index: int
    samples: list[list[dict[str, Any]]]


@dataclass
class ExportPlan:
    name: str
    version: int
    dataset: dict[str, Any]
    pinned: dict[str, int]
    split: dict[str, str]
    by_group: bool
    num_samples: int
    shards: list[ShardWork]
    scores: dict[str, dict[str, Any]]  # clip id -> its scores in the latest mining run of the model


def plan_export(lake: Lake, name: str, version: int, shard_bytes: int = 512 * 1024 * 1024) -> ExportPlan:
    """The version's samples cut into shards, deterministically.

    Samples (clips, or clip groups for a ``samples="group"`` query) go to shards in
    id order, cut where the running size (video size plus a fixed allowance for the
    JSON and signals) passes ``shard_bytes``: the plan depends only on the version's
    clips, so re-exporting gives the same bytes.
    """
    ds = get_version(lake, name, version)
    pinned = json.loads(ds["lake_version"])
    members = (
        lake.read("dataset_clips", where=f"name = {literal(name)} AND version = {int(version)}")
        .sort_by("clip_id")
        .to_pylist()
    )
    ids = [m["clip_id"] for m in members]
    split = {m["clip_id"]: m["split"] for m in members}
    clips = {
        r["clip_id"]: r
        for r in lake.read(
            "clips",
            where=f"clip_id IN ({in_list(ids)})" if ids else "false",
            version=pinned["clips"],
        ).to_pylist()
    }
    fs = lake.root.fs
    by_group = json.loads(ds["query"]).get("samples") == "group"
    units: dict[str, list[dict[str, Any]]] = {}
    for cid in ids:
        units.setdefault(_group_key(clips[cid]) if by_group else cid, []).append(clips[cid])
    plan: list[list[list[dict[str, Any]]]] = [[]]
    size = 0
    for key in sorted(units):
        if plan[-1] and size >= shard_bytes:
            plan.append([])
            size = 0
        group = sorted(units[key], key=lambda c: str(c["camera"]))
        plan[-1].append(group)
        size += sum(int(fs.size(_media_path(lake, c["video_uri"]))) for c in group) + 24 * 1024
    shards = [ShardWork(i, part) for i, part in enumerate(plan)]
    scores = _scores(lake, ds.get("model"), ids, pinned.get("mining_scores"))
    return ExportPlan(name, int(version), ds, pinned, split, by_group, len(units), shards, scores)


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
