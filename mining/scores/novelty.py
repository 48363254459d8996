"""What a clip's scores are, from its feature row and its neighbours: the columns of
``mining_scores`` that :mod:`mining.scores.mine` writes per run.

- ``knn``: mean L2 distance to the ``k`` nearest clips of the reference set (clips
  already in a dataset version, else the whole corpus), searched on the model
  version's index (:mod:`mining.search.serving`: the saved build plus what was embedded since);
- ``rarity``: how small a share of the corpus the clip's scenario is: -log of the share
  of its k-means cluster (:meth:`~mining.scores.mining_model.MiningModel.rarity_of`);
- ``signal_rarity``: its trigger events plus the largest robust z-score (median/MAD)
  of its signal features, squashed below one;
- ``novelty``: the clip's percentile rank in the corpus by the evidence of the three
  together (:func:`evidence`: each one's upper-tail surprisal, weighted).

The near-duplicate pairs the same searches find are grouped in :mod:`mining.scores.dedup`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders.vectors import read_by_ids
from mining.interfaces import ModelSpec
from mining.scores.mining_model import SKETCH, percentile
from mining.scores.rescore import Reached
from mining.search.index import Ids, RawVectors
from mining.search.serving import read_vectors
from storage.errors import TableNotFoundError
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.sql import in_list, literal
from storage.tables import mining_scores

if TYPE_CHECKING:
    from mining.scores.mine import MineConfig, MineWork

__all__ = [
    "SIGNALS",
    "Nearest",
    "Neighbours",
    "day_features",
    "evidence",
    "features_of",
    "knn_lists",
    "knn_mean",
    "neighbours",
    "read_features",
    "score_table",
    "signal_rarity",
    "signal_stats",
    "signal_stats_of",
    "signal_values",
]

SIGNALS = (
    "speed_mean",
    "speed_min",
    "max_decel_mps2",
    "max_lat_accel_mps2",
    "max_steering_rate_dps",
    "brake_presses",
    "stop_count",
)
_FEATURES = ["clip_id", "date", "start_time", "events", *SIGNALS]


def signal_values(features: pa.Table) -> np.ndarray:
    """(rows, len(SIGNALS)) float64, NaN for nulls."""
    cols = [pc.cast(features.column(n), pa.float64()).to_numpy(zero_copy_only=False) for n in SIGNALS]
    return np.vstack([np.asarray(c, np.float64) for c in cols]).T


def signal_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each signal feature's median and robust scale (1.4826 MAD; its standard deviation
    where the MAD is 0; 0 and 1 for a feature no row has)."""
    return signal_stats_of(values[:, j] for j in range(values.shape[1]))


def signal_stats_of(columns: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`signal_stats` of the features given one column at a time (a full run reads
    each from disk in turn: one column of the corpus held, not all of them)."""
    med: list[float] = []
    scale: list[float] = []
    for v in columns:
        if np.isnan(v).all():
            med.append(0.0)
            scale.append(1.0)
            continue
        med.append(float(np.nanmedian(v)))
        mad = np.nanmedian(np.abs(v - med[-1]))
        scale.append(float(1.4826 * mad) if mad > 0 else float(np.nanstd(v) or 1.0))
    return np.asarray(med, np.float64), np.asarray(scale, np.float64)


def signal_rarity(values: np.ndarray, events: np.ndarray, med: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = np.nan_to_num(np.abs(values - med) / scale)
    # Each trigger event outranks any amount of plain oddness (tanh caps it below 1).
    return np.asarray(np.tanh(z.max(axis=1) / 6.0) + events, np.float64)


class Nearest(Protocol):
    """What mining searches: a :class:`~mining.search.serving.LiveIndex` in this process,
    or a :class:`~mining.search.holders.HeldIndex` whose shards Ray actors hold."""

    def __len__(self) -> int: ...

    def search(
        self, queries: np.ndarray, k: int, allowed: Ids | None = None, raw: RawVectors | None = None
    ) -> tuple[np.ndarray, list[list[str]]]: ...


@dataclass
class Neighbours:
    knn: np.ndarray  # (rows, k) float32, NaN past the neighbours found
    dup_a: list[str]  # near-duplicate pairs (a, b), distance < dup_eps
    dup_b: list[str]


def neighbours(
    live: Nearest,
    lake: Lake,
    spec: ModelSpec,
    ids: list[str],
    vectors: np.ndarray,
    reference: pa.Array | None,
    cfg: MineConfig,
    reached: Reached | None = None,
) -> Neighbours:
    """The batch's knn distances and near-duplicate pairs; with ``reached``, also the
    clips within each one's ``reach * k`` nearest that it could enter the knn of (only
    clips of the reference set enter reference neighbour lists)."""
    k = max(1, min(cfg.k, len(live) - 1))

    def raw(c: list[str]) -> np.ndarray:
        return read_vectors(lake, spec, c)

    wide = k + 1 if reached is None else max(k + 1, cfg.reach * k + 1)
    dist, names = live.search(vectors, k + 1 if reference is not None else wide, reference, raw=raw)
    knn = np.full((len(ids), cfg.k), np.nan, np.float32)
    for i, c in enumerate(ids):
        row = [float(d) for d, m in zip(dist[i], names[i], strict=False) if m != c][:k]
        knn[i, : len(row)] = row
    if reference is not None:  # duplicates are among all clips, not the reference only
        dist, names = live.search(vectors, wide, raw=raw)
    dup_a: list[str] = []
    dup_b: list[str] = []
    for i, c in enumerate(ids):
        for d, m in zip(dist[i][: k + 1], names[i][: k + 1], strict=False):  # as in a full run
            if m != c and d < cfg.dup_eps:
                dup_a.append(c)
                dup_b.append(m)
    if reached is not None:
        enters = np.ones(len(ids), bool)
        if reference is not None:
            mask = pc.is_in(pa.array(ids, pa.string()), value_set=reference)
            enters = np.asarray(mask.to_numpy(zero_copy_only=False), bool)
        near: list[str] = []
        near_d: list[float] = []
        for i in np.flatnonzero(enters).tolist():
            for d, m in zip(dist[i], names[i], strict=False):
                if m != ids[i]:
                    near.append(m)
                    near_d.append(float(d))
        reached.add(near, near_d)  # once per batch: it looks the clips up among all held
    return Neighbours(knn, dup_a, dup_b)


_TAIL = 1.0 / SKETCH  # the smallest upper-tail share a percentile rank resolves (mining_model)


def evidence(
    cfg: MineConfig, scores: tuple[np.ndarray, np.ndarray, np.ndarray], refs: tuple[np.ndarray, ...]
) -> np.ndarray:
    """How strongly a clip's knn, rarity and signal scores together say it is novel: the
    weighted mean of each score's surprisal in the upper tail of ``refs`` (each sorted:
    the corpus's values, or the fit's sketch of them), ``log(1 / tail share)`` scaled
    into [0, 1] by the smallest share a rank resolves.

    Averaging the percentile ranks themselves would let a clip ordinary in one kind of
    evidence lose what it is extreme in: a hard brake whose look the fleet has seen a
    dozen times (its knn low) ranked below any stop at a light (knn middling, signals
    somewhat odd), since the top 4 % and the top 12 % of signals are 0.08 apart as ranks.
    As surprisal, like Fisher's combination of p-values, the top 4 % is worth half again
    the top 12 %, and being unremarkable costs little: on five 765-clip synthetic fleets
    the planted events' recall@k went from 0.91 to 0.95 with the same weights."""
    weights = (cfg.w_knn, cfg.w_rarity, cfg.w_signal)
    scale = math.log((1.0 + _TAIL) / _TAIL)
    out = np.zeros(len(scores[0]), np.float64)
    for w, x, ref in zip(weights, scores, refs, strict=True):
        tail = 1.0 - percentile(x, ref)
        out += w * np.log((1.0 + _TAIL) / (tail + _TAIL)) / scale
    return out


def knn_mean(knn: np.ndarray) -> np.ndarray:
    found = ~np.isnan(knn)
    total = np.where(found, knn, 0.0).sum(axis=1)
    return np.asarray(total / np.maximum(found.sum(axis=1), 1), np.float64)


def knn_lists(knn: np.ndarray) -> pa.Array:
    found = ~np.isnan(knn)
    offsets = np.concatenate([[0], np.cumsum(found.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(knn[found], pa.float32()))


def read_features(lake: Lake, ids: pa.Array) -> pa.Table:
    """The ``clips`` rows of ``ids`` in that order, read by id within the dates the ids name."""
    return features_of(lake, ids, lake.read("clips", columns=_FEATURES, where="false"))


def day_features(lake: Lake, day: str) -> pa.Table:
    """The feature columns of one day's ``clips`` rows (what :func:`features_of` looks a
    batch of that day up in)."""
    return lake.read("clips", columns=_FEATURES, where=f"date = {literal(day)}")


def features_of(lake: Lake, ids: pa.Array, rows: pa.Table) -> pa.Table:
    """The ``clips`` feature rows of ``ids`` in that order, from ``rows`` where they are
    there (a day's, :func:`day_features`), else read by id; an id with no ``clips`` row is
    an error: its scores would lack their signals."""
    # by the date each id names, then (a clips row filed under another date) by id alone
    for lookup in (read_by_ids, _read_by_ids_anywhere):
        pos = pc.index_in(ids, value_set=rows.column("clip_id"))
        if not pos.null_count:
            return rows.take(pos)
        missing = ids.filter(pc.is_null(pos)).to_pylist()
        rows = pa.concat_tables([rows, *lookup(lake, "clips", _FEATURES, missing)])
    pos = pc.index_in(ids, value_set=rows.column("clip_id"))
    if pos.null_count:
        raise TableNotFoundError(
            f"clips rows missing for embedded clips, e.g. {ids.filter(pc.is_null(pos)).to_pylist()[:5]}"
        )
    return rows.take(pos)


def _read_by_ids_anywhere(lake: Lake, table: str, columns: list[str], ids: list[str]) -> Iterator[pa.Table]:
    """Rows of ``ids`` in any date partition (every file read: for the few a day's read
    and their ids' own dates did not find)."""
    for start in range(0, len(ids), 5000):
        yield lake.read(table, columns=columns, where=f"clip_id IN ({in_list(ids[start : start + 5000])})")


def score_table(
    w: MineWork,
    base_run: str,
    ids: pa.Array,
    date: pa.Array | pa.ChunkedArray,
    novelty: np.ndarray,
    knn: np.ndarray,
    cluster: np.ndarray,
    rarity: np.ndarray,
    signal: np.ndarray,
    duplicate_of: pa.Array,
) -> pa.Table:
    n = len(ids)

    def repeat(value: Any, type_: pa.DataType) -> pa.Array:  # one value, no list of n
        return pa.array([value], type_).take(pa.array(np.zeros(n, np.int32)))

    return mining_scores.SPEC.conform(
        pa.table(
            {
                "clip_id": ids,
                "date": date,
                "model_version": repeat(w.spec.ref, pa.string()),
                "run_id": repeat(w.run_id, pa.string()),
                "novelty": pa.array(novelty, pa.float64()),
                "knn_distances": knn_lists(knn),
                "cluster_id": pa.array(cluster.astype(np.int32), pa.int32()),
                "rarity": pa.array(rarity, pa.float64()),
                "signal_rarity": pa.array(signal, pa.float64()),
                "duplicate_of": duplicate_of,
                "computed_at": repeat(dt.datetime.now(dt.UTC), UTC_TS),
                "base_run": repeat(base_run, pa.string()),
            }
        )
    )
