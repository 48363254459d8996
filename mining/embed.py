"""The embedding job: every clip lacking a vector for a model version gets one.

Inputs come from ``clip_frames`` (the keyframes ingest kept), never from the
source video. On Ray, tasks read the inputs, each for one date partition and a
few drives (:class:`InputWork`), so no input passes through the driver; a Ray
Data actor pool runs the encoder stage (``setup`` in each actor; GPU actors when
the cluster has GPUs and the encoder can use them), and the vectors reach
``embeddings`` through one idempotent commit.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders import make_encoder
from mining.interfaces import ClipInput, ModelSpec
from mining.registry import resolve
from storage.config import Settings
from storage.delta import Txn
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.sql import in_list, literal
from storage.tables import embeddings

__all__ = ["EmbedReport", "InputWork", "load_inputs", "pending", "plan_inputs", "run_embed"]

FEATURES = (
    "speed_mean",
    "speed_min",
    "speed_max",
    "max_decel_mps2",
    "max_lat_accel_mps2",
    "max_steering_rate_dps",
    "brake_presses",
    "stop_count",
    "events",
)


@dataclass
class EmbedReport:
    model: str
    embedded: int
    already: int
    run_id: str


def pending(lake: Lake, spec: ModelSpec) -> tuple[pa.Table, int]:
    """``clip_id, date, drive_id`` of the clips without a vector for ``spec``, and how
    many already have one."""
    lake.create_tables(["clips", "embeddings"])
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
    """``clip_id, date, jpegs, features`` per clip: what an encoder consumes.

    ``where`` narrows both scans further (a date and drives: see :class:`InputWork`).
    """
    if not clip_ids:
        return pa.table(
            {
                "clip_id": [],
                "date": pa.array([], pa.date32()),
                "jpegs": pa.array([], pa.list_(pa.binary())),
                "features": [],
            }
        )
    where = f"clip_id IN ({in_list(clip_ids)})" + (f" AND {where}" if where else "")
    clips = lake.read("clips", columns=["clip_id", "date", *FEATURES], where=where)
    frames = lake.read("clip_frames", columns=["clip_id", "frame_index", "jpeg"], where=where)
    frames = frames.sort_by([("clip_id", "ascending"), ("frame_index", "ascending")])
    by_clip: dict[str, list[bytes]] = {}
    for cid, jpeg in zip(
        frames.column("clip_id").to_pylist(), frames.column("jpeg").to_pylist(), strict=True
    ):
        by_clip.setdefault(cid, []).append(jpeg)
    rows = clips.to_pylist()
    return pa.table(
        {
            "clip_id": [r["clip_id"] for r in rows],
            "date": pa.array([r["date"] for r in rows], pa.date32()),
            "jpegs": pa.array([by_clip.get(r["clip_id"], []) for r in rows], pa.list_(pa.binary())),
            "features": [json.dumps({k: r[k] for k in FEATURES}) for r in rows],
        }
    )


def embed_table(encoder: Any, spec: ModelSpec, batch: pa.Table, run_id: str) -> pa.Table:
    clips = [
        ClipInput(c, j or [], json.loads(f))
        for c, j, f in zip(
            batch.column("clip_id").to_pylist(),
            batch.column("jpegs").to_pylist(),
            batch.column("features").to_pylist(),
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


def load_work(batch: pa.Table, uri: str, storage_options: dict[str, str]) -> pa.Table:
    """Ray Data task: the inputs of the :class:`InputWork` items in ``batch`` (``work`` column, JSON)."""
    lake = Lake(uri, storage_options)
    parts = []
    for item in batch.column("work").to_pylist():
        w = InputWork.from_json(item)
        where = f"date = {literal(w.date)} AND drive_id IN ({in_list(w.drive_ids)})"
        parts.append(load_inputs(lake, list(w.clip_ids), where))
    return pa.concat_tables(parts)


class EmbedActor:
    """Ray Data callable class: the encoder is built and set up inside the actor."""

    def __init__(self, spec: dict[str, Any], storage_options: dict[str, str], run_id: str):
        self.spec = ModelSpec(**spec)
        self.run_id = run_id
        self.encoder = make_encoder(self.spec, storage_options)
        self.encoder.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return embed_table(self.encoder, self.spec, batch, self.run_id)


def run_embed(
    settings: Settings, model: str | None = None, runner: str = "ray", batch_size: int = 64
) -> EmbedReport:
    lake = Lake.from_settings(settings)
    spec = resolve(lake, model)
    todo_rows, already = pending(lake, spec)
    todo = todo_rows.column("clip_id").to_pylist()
    app_id = f"embed:{spec.ref}"
    number = lake.last_run_number(app_id, ["embeddings"]) + 1
    run_id = f"embed-{spec.name}-{spec.version}-{number:06d}"
    report = EmbedReport(spec.ref, len(todo), already, run_id)
    if not todo:
        return report
    txn = Txn(app_id, number)
    if runner == "local":
        encoder = make_encoder(spec, lake.root.storage_options)
        encoder.setup()
        parts = [
            embed_table(encoder, spec, load_inputs(lake, todo[i : i + batch_size]), run_id)
            for i in range(0, len(todo), batch_size)
        ]
        lake.append("embeddings", pa.concat_tables(parts), txn)
        return report

    from jobs.runtime import init_ray
    from storage.datasink import DeltaTxnDatasink

    ray = init_ray(settings.ray_address)
    gpus = ray.cluster_resources().get("GPU", 0)
    wants_gpu = spec.kind != "builtin" and gpus > 0
    # Leave a CPU for the read and write tasks, or the actor pool starves them.
    cpus = int(ray.cluster_resources().get("CPU", 2))
    actors = max(1, int(gpus)) if wants_gpu else max(1, min(8, cpus - 1))
    # Inputs are read by Ray tasks, each its own date and drives, never through the driver.
    work = plan_inputs(todo_rows, clips_per_task=max(batch_size, 256))
    inputs = ray.data.from_items([{"work": w.to_json()} for w in work]).map_batches(
        load_work,
        fn_kwargs={"uri": lake.root.uri, "storage_options": lake.root.storage_options},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=1,
    )
    vectors = inputs.map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "spec": asdict(spec),
            "storage_options": lake.root.storage_options,
            "run_id": run_id,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),  # (`concurrency=` is deprecated since Ray 2.51)
        num_gpus=1 if wants_gpu else 0,
        num_cpus=1,
    )
    vectors.write_datasink(DeltaTxnDatasink(lake, "embeddings", txn))
    return report


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
