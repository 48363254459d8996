"""Embedding: every clip lacking a vector for a model version gets one.

Inputs come from ``clip_frames`` (the keyframes ingest kept), never from the
source video. :class:`EmbedStage` takes :class:`InputWork` items (one date
partition, a few whole drives), reads their inputs itself (no input passes
through the driver), runs the encoder (set up once per worker, with the
resources the encoder declares) and writes the vectors as data files of
``embeddings``; the job (``jobs/embed_job.py``) commits them all at once. A clip
the encoder cannot embed (a corrupt keyframe) is that clip's error, not the job's.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders import make_encoder
from mining.interfaces import ClipInput, ModelSpec
from storage.faults import fault_point
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.sql import in_list, literal
from storage.tables import clips as clips_table
from storage.tables import embeddings

__all__ = ["EmbedBatch", "EmbedReport", "EmbedStage", "InputWork", "load_inputs", "pending", "plan_inputs"]

FEATURES = (*clips_table.FEATURES, "events")
"""What an encoder sees of a clip's signals (each encoder version reads its own frozen subset)."""


@dataclass
class EmbedReport:
    model: str
    embedded: int
    already: int
    run_id: str
    failed: list[tuple[str, str]] = field(default_factory=list)  # (clip_id, reason)


def pending(lake: Lake, spec: ModelSpec) -> tuple[pa.Table, int]:
    """``clip_id, date, drive_id`` of the clips without a vector for ``spec``, and how
    many already have one."""
    lake.create_tables(["clips", "clip_frames", "embeddings"])  # older lakes gain clip_frames.dense
    clips = lake.read("clips", columns=["clip_id", "date", "drive_id"])
    done = lake.read(
        "embeddings",
        columns=["clip_id"],
        where=f"model_name = {literal(spec.name)} AND model_version = {spec.version}",
    ).column("clip_id")
    todo = clips.filter(pc.invert(pc.is_in(clips.column("clip_id"), value_set=done)))
    return todo.sort_by("clip_id"), len(done)


@dataclass(frozen=True)
class InputWork:
    """The clips one Ray task loads inputs for: one date partition, a few drives.

    Ingest writes each drive's rows of a date into their own files, so a scan by
    ``date`` and ``drive_id`` reads only those files (partition pruning plus the
    files' drive_id statistics): every task reads its own slice of the lake once.
    """

    date: dt.date
    drive_ids: tuple[str, ...]
    clip_ids: tuple[str, ...]

    def predicate(self) -> str:
        """The scan that reads only this item's files: its date partition, its drives."""
        return f"date = {literal(self.date)} AND drive_id IN ({in_list(self.drive_ids)})"

    def to_json(self) -> str:
        return json.dumps({"date": self.date.isoformat(), "drives": self.drive_ids, "clips": self.clip_ids})

    @classmethod
    def from_json(cls, text: str) -> InputWork:
        d = json.loads(text)
        return cls(dt.date.fromisoformat(d["date"]), tuple(d["drives"]), tuple(d["clips"]))


def plan_inputs(todo: pa.Table, clips_per_task: int) -> list[InputWork]:
    """Pending clips (:func:`pending`) grouped by date, then by whole drives, into tasks."""
    by_date: dict[dt.date, dict[str, list[str]]] = {}
    for cid, day, drive in zip(
        todo.column("clip_id").to_pylist(),
        todo.column("date").to_pylist(),
        todo.column("drive_id").to_pylist(),
        strict=True,
    ):
        by_date.setdefault(day, {}).setdefault(drive, []).append(cid)
    work = []
    for day, drives in sorted(by_date.items()):
        group: dict[str, list[str]] = {}
        for drive, ids in sorted(drives.items()):
            if group and sum(map(len, group.values())) + len(ids) > clips_per_task:
                work.append(InputWork(day, tuple(group), tuple(c for g in group.values() for c in g)))
                group = {}
            group[drive] = ids
        work.append(InputWork(day, tuple(group), tuple(c for g in group.values() for c in g)))
    return work


def load_inputs(lake: Lake, clip_ids: list[str], where: str | None = None) -> pa.Table:
    """``clip_id, date, jpegs, dense, features`` per clip: what an encoder consumes
    (``dense``: the look-closer frames of a triggered clip, else empty).

    ``where`` narrows both scans further (a date and drives: see :class:`InputWork`).
    """
    if not clip_ids:
        return pa.table(
            {
                "clip_id": [],
                "date": pa.array([], pa.date32()),
                "jpegs": pa.array([], pa.list_(pa.binary())),
                "dense": pa.array([], pa.list_(pa.binary())),
                "features": [],
            }
        )
    where = f"clip_id IN ({in_list(clip_ids)})" + (f" AND {where}" if where else "")
    clips = lake.read("clips", columns=["clip_id", "date", *FEATURES], where=where)
    frames = lake.read("clip_frames", columns=["clip_id", "frame_index", "jpeg", "dense"], where=where)
    frames = frames.sort_by([("clip_id", "ascending"), ("frame_index", "ascending")])
    by_clip: dict[str, list[bytes]] = {}
    dense: dict[str, list[bytes]] = {}
    for cid, jpeg, is_dense in zip(
        frames.column("clip_id").to_pylist(),
        frames.column("jpeg").to_pylist(),
        frames.column("dense").to_pylist(),
        strict=True,
    ):
        (dense if is_dense else by_clip).setdefault(cid, []).append(jpeg)
    rows = clips.to_pylist()
    return pa.table(
        {
            "clip_id": [r["clip_id"] for r in rows],
            "date": pa.array([r["date"] for r in rows], pa.date32()),
            "jpegs": pa.array([by_clip.get(r["clip_id"], []) for r in rows], pa.list_(pa.binary())),
            "dense": pa.array([dense.get(r["clip_id"], []) for r in rows], pa.list_(pa.binary())),
            "features": [json.dumps({k: r[k] for k in FEATURES}) for r in rows],
        }
    )


def embed_table(encoder: Any, spec: ModelSpec, batch: pa.Table, run_id: str) -> pa.Table:
    clips = [
        ClipInput(c, j or [], json.loads(f), d or [])
        for c, j, f, d in zip(
            batch.column("clip_id").to_pylist(),
            batch.column("jpegs").to_pylist(),
            batch.column("features").to_pylist(),
            batch.column("dense").to_pylist(),
            strict=True,
        )
    ]
    vectors = encoder.process_batch(clips)
    n = len(clips)
    return embeddings.SPEC.conform(
        pa.table(
            {
                "clip_id": batch.column("clip_id"),
                "date": batch.column("date"),
                "model_name": pa.array([spec.name] * n),
                "model_version": pa.array([spec.version] * n, pa.int32()),
                "vector": pa.array(list(np.asarray(vectors, np.float32)), pa.list_(pa.float32())),
                "run_id": pa.array([run_id] * n),
                "created_at": pa.array([dt.datetime.now(dt.UTC)] * n, UTC_TS),
            }
        )
    )


@dataclass
class EmbedBatch:
    """What one :class:`InputWork` gave: data files to commit, and the clips that failed."""

    actions: list[Any]
    embedded: int
    errors: list[tuple[str, str]] = field(default_factory=list)  # (clip_id, reason)


class EmbedStage:
    """Stage: the vectors of the clips of a few drives, as written ``embeddings`` files."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake, spec: ModelSpec, run_id: str, batch_size: int = 64):
        self.lake = lake
        self.spec = spec
        self.run_id = run_id
        self.batch_size = batch_size
        self.encoder: Any = None

    def setup(self) -> None:
        self.encoder = make_encoder(self.spec, self.lake.root.storage_options)
        self.encoder.setup()

    def process_batch(self, items: list[InputWork]) -> list[EmbedBatch]:
        return [self.process(w) for w in items]

    def process(self, w: InputWork) -> EmbedBatch:
        fault_point("embed.batch")
        inputs = load_inputs(self.lake, list(w.clip_ids), w.predicate())
        parts: list[pa.Table] = []
        errors: list[tuple[str, str]] = []
        for i in range(0, inputs.num_rows, self.batch_size):
            batch = inputs.slice(i, self.batch_size)
            try:
                parts.append(embed_table(self.encoder, self.spec, batch, self.run_id))
            except Exception:  # find the clips that broke it; the others still get their vectors
                for j in range(batch.num_rows):
                    one = batch.slice(j, 1)
                    try:
                        parts.append(embed_table(self.encoder, self.spec, one, self.run_id))
                    except Exception as exc:
                        errors.append((one.column("clip_id")[0].as_py(), f"{type(exc).__name__}: {exc}"))
        table = pa.concat_tables(parts) if parts else None
        if table is None or table.num_rows == 0:
            return EmbedBatch([], 0, errors)
        prefix = f"{self.run_id}-{w.date:%Y%m%d}-{w.drive_ids[0]}"
        return EmbedBatch(self.lake.writer("embeddings").write(table, prefix=prefix), table.num_rows, errors)


def load_vectors(
    lake: Lake, spec: ModelSpec, clip_ids: list[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """Clip ids and their vectors for one model version (latest vector per clip)."""
    where = f"model_name = {literal(spec.name)} AND model_version = {spec.version}"
    if clip_ids is not None:
        where += f" AND clip_id IN ({in_list(clip_ids)})" if clip_ids else " AND false"
    t = lake.read("embeddings", columns=["clip_id", "vector"], where=where).sort_by("clip_id")
    ids = t.column("clip_id").to_pylist()
    if not ids:
        return [], np.zeros((0, spec.dim), np.float32)
    flat = pc.list_flatten(t.column("vector")).to_numpy()
    return ids, flat.reshape(len(ids), spec.dim).astype(np.float32)
