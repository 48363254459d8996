"""A synthetic catalog lake of any size: ``clips`` and ``embeddings`` rows, no media.

Rows go through the project's own writers (``Lake.append``, one commit per table
and batch). Vectors come from :func:`embeddings_like` (1,000 clusters on a
low-dimensional manifold), so approximate indexes behave as on real embeddings.
Two trigger events are planted on exact fractions of the clips, at random and
independent of the vectors, so filters on them are as selective as stated:
``hard_brake`` on 1 %, ``driver_override`` on 0.1 %.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fleetmine.bench.faiss_search import embeddings_like
from mining.interfaces import ModelSpec
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.tables import clips, embeddings

__all__ = ["RARE_EVENTS", "CatalogBatch", "CatalogConfig", "add_clips", "add_scores"]

RARE_EVENTS = {"hard_brake": 0.01, "driver_override": 0.001}


@dataclass(frozen=True)
class CatalogConfig:
    clips_per_day: int = 2000
    vehicles: int = 50
    clip_seconds: float = 10.0
    seed: int = 0
    first_day: dt.date = dt.date(2024, 1, 1)


@dataclass(frozen=True)
class CatalogBatch:
    """What one :func:`add_clips` call wrote: ids in row order, their vectors, their events."""

    clip_ids: list[str]
    vectors: np.ndarray
    events: dict[str, np.ndarray]  # event -> bool mask over the batch's rows


def clip_id(i: int, cfg: CatalogConfig) -> str:
    day = cfg.first_day + dt.timedelta(days=i // cfg.clips_per_day)
    return f"{day:%Y%m%d}-{hashlib.sha1(f'catalog/{i}'.encode()).hexdigest()[:16]}"


def add_clips(
    lake: Lake,
    spec: ModelSpec,
    start: int,
    n: int,
    cfg: CatalogConfig | None = None,
    *,
    vectors: bool = True,
    given: np.ndarray | None = None,
) -> CatalogBatch:
    """Clips ``start .. start + n`` (ids are stable per index) with their ``spec`` vectors
    (none with ``vectors=False``: the catalog's routes never read them; ``given``: these
    rows, e.g. more of the corpus's own distribution)."""
    cfg = cfg or CatalogConfig()
    lake.create_tables(["clips", "embeddings"])
    idx = np.arange(start, start + n)
    ids = [clip_id(int(i), cfg) for i in idx]
    day = idx // cfg.clips_per_day
    dates = [cfg.first_day + dt.timedelta(days=int(d)) for d in day]
    midnight = np.array([(d - dt.date(1970, 1, 1)).days * 86_400_000_000 for d in dates], dtype=np.int64)
    start_us = midnight + (idx % cfg.clips_per_day) * int(cfg.clip_seconds * 1e6)
    # A distinct seed per batch keeps the vectors of an incremental batch new.
    if given is not None:
        embedded = np.ascontiguousarray(given, dtype=np.float32)
    elif vectors:
        embedded = embeddings_like(n, spec.dim, seed=cfg.seed + start)
    else:
        embedded = np.zeros((0, spec.dim), np.float32)
    rng = np.random.default_rng(cfg.seed + 7919 + start)
    events: dict[str, np.ndarray] = {}
    labels: list[list[str]] = [[] for _ in range(n)]
    for name, fraction in RARE_EVENTS.items():
        mask = np.zeros(n, bool)
        mask[rng.choice(n, round(n * fraction), replace=False)] = True
        events[name] = mask
        for i in np.flatnonzero(mask):
            labels[i].append(name)
    vehicle = [f"veh-{v:03d}" for v in idx % cfg.vehicles]
    speed = rng.uniform(0, 30, n)
    clip_rows = pa.table(
        {
            "clip_id": ids,
            "date": pa.array(dates, pa.date32()),
            "drive_id": [f"{v}-{d:%Y%m%d}" for v, d in zip(vehicle, dates, strict=True)],
            "vehicle_id": vehicle,
            "camera": ["front"] * n,
            "start_time": pa.array(start_us, pa.int64()).cast(UTC_TS),
            "end_time": pa.array(start_us + int(cfg.clip_seconds * 1e6), pa.int64()).cast(UTC_TS),
            "duration_s": pa.array(np.full(n, cfg.clip_seconds)),
            "speed_mean": pa.array(speed),
            "speed_min": pa.array(speed * 0.5),
            "speed_max": pa.array(speed * 1.5),
            "events": pa.array(labels, pa.list_(pa.string())),
            "ingest_run_id": ["catalog-synth"] * n,
        }
    )
    lake.append("clips", clips.SPEC.conform(clip_rows))
    if not vectors:
        return CatalogBatch(ids, embedded, events)
    flat = pa.array(embedded.reshape(-1), pa.float32())
    offsets = pa.array(np.arange(0, n * spec.dim + 1, spec.dim, dtype=np.int32))
    emb_rows = pa.table(
        {
            "clip_id": ids,
            "date": pa.array(dates, pa.date32()),
            "model_name": [spec.name] * n,
            "model_version": pa.array([spec.version] * n, pa.int32()),
            "vector": pa.ListArray.from_arrays(offsets, flat),
            "run_id": ["catalog-synth"] * n,
            "created_at": pa.array([dt.datetime.now(dt.UTC)] * n, UTC_TS),
        }
    )
    lake.append("embeddings", embeddings.SPEC.conform(emb_rows))
    return CatalogBatch(ids, embedded, events)


def add_scores(lake: Lake, spec: ModelSpec, batch: CatalogBatch, run: int = 1, seed: int = 0) -> pa.Table:
    """A ``mine`` run's rows for ``batch`` without running mine: ``mining_scores`` (novelty
    uniform at random, 1 % near-duplicates) and the ``corner_cases`` lists ranked from
    them, written and committed the way ``fleetmine mine`` does. Returns the scores."""
    from mining.search.ready import corner_case_lists, write_corner_cases
    from storage.delta import Txn
    from storage.tables import mining_scores

    lake.create_tables(["mining_scores", "corner_cases"])
    n = len(batch.clip_ids)
    rng = np.random.default_rng(seed + 104_729)
    run_id = f"mine-{spec.name}-{spec.version}-{run:06d}"
    dup = rng.random(n) < 0.01
    labels = [[e for e in RARE_EVENTS if batch.events[e][i]] for i in range(n)]
    ids = pa.array(batch.clip_ids, pa.string())
    scores = mining_scores.SPEC.conform(
        pa.table(
            {
                "clip_id": ids,
                "date": pc.strptime(pc.utf8_slice_codeunits(ids, 0, 8), "%Y%m%d", "s").cast(pa.date32()),
                "model_version": [spec.ref] * n,
                "run_id": [run_id] * n,
                "novelty": pa.array(rng.random(n)),
                "knn_distances": pa.ListArray.from_arrays(
                    pa.array(np.arange(0, 5 * n + 1, 5, dtype=np.int32)),
                    pa.array(rng.random(5 * n).astype(np.float32)),
                ),
                "cluster_id": pa.array(rng.integers(0, 1000, n), pa.int32()),
                "rarity": pa.array(rng.random(n)),
                "signal_rarity": pa.array(rng.random(n)),
                "duplicate_of": pa.array([batch.clip_ids[0] if d else None for d in dup], pa.string()),
                "computed_at": pa.array([dt.datetime.now(dt.UTC)] * n, UTC_TS),
            }
        )
    )
    txn = Txn(f"mine:{spec.ref}", run)
    lake.append("mining_scores", scores, txn)
    lists = corner_case_lists(scores, pa.array(labels, pa.list_(pa.string())))
    lake.commit("corner_cases", write_corner_cases(lake, lists, run_id), txn)
    return scores
