"""Novelty, rarity and near-duplicates per clip, written to ``mining_scores`` per run.

- ``knn``: mean L2 distance to the ``k`` nearest clips of the reference set (clips
  already in a dataset version, else the whole corpus);
- ``rarity``: how small the clip's k-means cluster is (-log of its share);
- ``signal_rarity``: its trigger events plus the largest robust z-score (median/MAD)
  of its signal features, squashed below one;
- ``novelty``: the weighted mean of the three as percentile ranks (higher = more novel);
- near duplicates (SemDeDup style): within a k-means cluster, clips closer than
  ``dup_eps`` form a group; every member but the earliest gets ``duplicate_of``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.embed import load_vectors
from mining.index import ClipIndex, IndexConfig
from mining.interfaces import ModelSpec
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.sql import literal
from storage.tables import mining_scores

__all__ = ["MineConfig", "MineReport", "MineResult", "MineStage", "MineWork", "latest_scores", "score"]

SIGNALS = (
    "speed_mean",
    "speed_min",
    "max_decel_mps2",
    "max_lat_accel_mps2",
    "max_steering_rate_dps",
    "brake_presses",
    "stop_count",
)


@dataclass(frozen=True)
class MineConfig:
    k: int = 5
    clusters: int | None = None  # default: sqrt(n) capped to 256
    dup_eps: float = 0.08
    w_knn: float = 0.3
    w_rarity: float = 0.1
    w_signal: float = 0.6
    seed: int = 1234


@dataclass
class MineReport:
    model: str
    run_id: str
    scored: int
    duplicates: int
    reference: str


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return order / max(len(x) - 1, 1)


def _signal_rarity(features: pa.Table) -> np.ndarray:
    cols = []
    for name in SIGNALS:
        v = np.array([np.nan if x is None else float(x) for x in features.column(name).to_pylist()])
        med = np.nanmedian(v) if not np.isnan(v).all() else 0.0
        mad = np.nanmedian(np.abs(v - med)) if not np.isnan(v).all() else 0.0
        scale = 1.4826 * mad if mad > 0 else (np.nanstd(v) or 1.0)
        cols.append(np.nan_to_num(np.abs(v - med) / scale))
    # Each trigger event outranks any amount of plain oddness (tanh caps it below 1).
    events = np.array([len(e or []) for e in features.column("events").to_pylist()], float)
    return np.tanh(np.max(np.vstack(cols), axis=0) / 6.0) + events


def score(
    ids: list[str],
    vectors: np.ndarray,
    features: pa.Table,
    starts: dict[str, dt.datetime],
    reference: list[str] | None,
    cfg: MineConfig,
) -> dict[str, np.ndarray | list[object]]:
    """All scores for ``ids`` (rows of ``vectors``); ``features`` rows in the same order."""
    n = len(ids)
    ref_ids = reference if reference else ids
    pos = {c: i for i, c in enumerate(ids)}
    ref_vecs = vectors[[pos[c] for c in ref_ids if c in pos]]
    index = ClipIndex.build(ref_vecs, [c for c in ref_ids if c in pos], IndexConfig())
    k = min(cfg.k, max(len(index) - 1, 1))
    dist, names = index.search(vectors, k + 1)
    knn = np.zeros(n)
    knn_lists: list[object] = []
    for i, c in enumerate(ids):
        row = [float(d) for d, m in zip(dist[i], names[i], strict=False) if m != c][:k]
        knn_lists.append(row)
        knn[i] = float(np.mean(row)) if row else 0.0
    nclusters = cfg.clusters or max(2, min(256, int(math.sqrt(n))))
    nclusters = min(nclusters, n)
    km = faiss.Kmeans(
        vectors.shape[1], nclusters, niter=25, seed=cfg.seed, verbose=False, min_points_per_centroid=1
    )
    km.train(np.ascontiguousarray(vectors))
    _, assign = km.index.search(np.ascontiguousarray(vectors), 1)
    assign = assign.ravel()
    sizes = np.bincount(assign, minlength=nclusters)
    rarity = -np.log(sizes[assign] / n)
    sig = _signal_rarity(features)
    novelty = cfg.w_knn * _ranks(knn) + cfg.w_rarity * _ranks(rarity) + cfg.w_signal * _ranks(sig)
    # Near-duplicates: pairs under dup_eps inside one cluster, grouped by union-find.
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for cl in np.unique(assign):
        in_cluster = np.flatnonzero(assign == cl)
        if len(in_cluster) < 2:
            continue
        sub = vectors[in_cluster]
        d2 = np.maximum(2.0 - 2.0 * (sub @ sub.T), 0.0)  # unit vectors: |a - b|^2 = 2 - 2 a.b
        a_idx, b_idx = np.nonzero(np.triu(d2 < cfg.dup_eps**2, 1))
        for a, b in zip(in_cluster[a_idx].tolist(), in_cluster[b_idx].tolist(), strict=True):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[rb] = ra
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    duplicate_of: list[object] = [None] * n
    for members in groups.values():
        if len(members) < 2:
            continue
        latest = dt.datetime.max.replace(tzinfo=dt.UTC)
        keep = min(members, key=lambda m: (starts.get(ids[m], latest), ids[m]))
        for m in members:
            if m != keep:
                duplicate_of[m] = ids[keep]
    return {
        "novelty": novelty,
        "knn": knn,
        "knn_lists": knn_lists,
        "cluster": assign,
        "rarity": rarity,
        "signal": sig,
        "duplicate_of": duplicate_of,
    }


def latest_scores(lake: Lake, spec: ModelSpec, version: int | None = None) -> list[dict[str, Any]]:
    """The rows of the newest ``mine`` run for ``spec`` (one narrow scan to find it)."""
    where = f"model_version = {literal(spec.ref)}"
    runs = lake.read("mining_scores", columns=["run_id"], where=where, version=version).column("run_id")
    if len(runs) == 0:
        return []
    latest = pc.max(runs).as_py()
    return lake.read(
        "mining_scores", where=f"{where} AND run_id = {literal(latest)}", version=version
    ).to_pylist()


def reference_clips(lake: Lake) -> list[str] | None:
    lake.create_tables(["dataset_clips"])
    ids = lake.read("dataset_clips", columns=["clip_id"]).column("clip_id").to_pylist()
    return sorted(set(ids)) or None


@dataclass(frozen=True)
class MineWork:
    """One mining run of one model version (the whole corpus is one item)."""

    spec: ModelSpec
    run_id: str
    cfg: MineConfig


@dataclass
class MineResult:
    actions: list[Any]
    scored: int
    duplicates: int
    reference: str


class MineStage:
    """Stage: scores every embedded clip of a model version; writes ``mining_scores`` files."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake):
        self.lake = lake

    def setup(self) -> None:
        self.lake.create_tables(["mining_scores", "dataset_clips"])

    def process_batch(self, items: list[MineWork]) -> list[MineResult]:
        return [self.process(w) for w in items]

    def process(self, w: MineWork) -> MineResult:
        lake, spec, cfg = self.lake, w.spec, w.cfg
        ids, vectors = load_vectors(lake, spec)
        reference = reference_clips(lake)
        kind = "datasets" if reference else "corpus"
        if len(ids) < 2:
            return MineResult([], 0, 0, kind)
        clips = lake.read("clips", columns=["clip_id", "date", "start_time", "events", *SIGNALS[:7]])
        order = {c: i for i, c in enumerate(clips.column("clip_id").to_pylist())}
        features = clips.take(pa.array([order[c] for c in ids]))
        starts = dict(zip(ids, features.column("start_time").to_pylist(), strict=True))
        s = score(ids, vectors, features, starts, reference, cfg)
        now = dt.datetime.now(dt.UTC)
        n = len(ids)
        table = mining_scores.SPEC.conform(
            pa.table(
                {
                    "clip_id": ids,
                    "date": features.column("date"),
                    "model_version": [spec.ref] * n,
                    "run_id": [w.run_id] * n,
                    "novelty": pa.array(s["novelty"], pa.float64()),
                    "knn_distances": pa.array(s["knn_lists"], pa.list_(pa.float32())),
                    "cluster_id": pa.array(np.asarray(s["cluster"]), pa.int32()),
                    "rarity": pa.array(s["rarity"], pa.float64()),
                    "signal_rarity": pa.array(s["signal"], pa.float64()),
                    "duplicate_of": pa.array(s["duplicate_of"], pa.string()),
                    "computed_at": pa.array([now] * n, UTC_TS),
                }
            )
        )
        actions = lake.writer("mining_scores").write(table, prefix=w.run_id)
        return MineResult(actions, n, sum(d is not None for d in s["duplicate_of"]), kind)
