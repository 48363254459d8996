"""The old clips an incremental ``mine`` run re-scores: those whose ``k`` nearest the new
clips enter.

A clip's knn score is the mean distance to its ``k`` nearest clips, so new clips move
the scores of the old clips they come near. Which ones is a reverse-neighbour question,
answered from the new clips' side: each new clip's ``reach`` nearest (found by the
search that scores it) are the old clips it may enter; it does enter one when it is
nearer than the ``k``-th distance that clip holds in ``mining_scores``. Such a clip's new
neighbour list is its stored one merged with the new distances, no search of its own,
and only its knn score and novelty change (clusters, rarity and signal rarity are the
fit's, unchanged until a full run). The rows written for it repeat its stored row under
the new run, so the newest row of a clip is its current score
(:func:`mining.scores.lineage.latest_scores`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from storage.lake import Lake
from storage.schema import UTC_TS
from storage.tables import mining_scores

__all__ = ["Reached", "kth_distance", "newest_per_clip", "rescore"]


class Reached:
    """(old clip, distance) pairs where a new clip is nearer to an old one (of ``held``)
    than the ``kth`` distance that clip holds: the new clip enters its knn."""

    def __init__(self, held: pa.Array, kth: np.ndarray) -> None:
        self.held = held
        self.kth = kth
        self._parts: list[pa.Table] = []

    def add(self, ids: list[str], dist: Iterable[float]) -> None:
        d = np.fromiter(dist, np.float32)
        pos = pc.index_in(pa.array(ids, pa.string()), value_set=self.held)
        at = pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        keep = (at >= 0) & (d < self.kth[np.maximum(at, 0)])
        if keep.any():
            self._parts.append(
                pa.table({"clip_id": self.held.take(pa.array(at[keep])), "d": pa.array(d[keep])})
            )

    def table(self) -> pa.Table:
        if not self._parts:
            return pa.table({"clip_id": pa.array([], pa.string()), "d": pa.array([], pa.float32())})
        return pa.concat_tables(self._parts)


def kth_distance(stored: pa.ChunkedArray | pa.Array, k: int) -> np.ndarray:
    """Each stored knn list's ``k``-th distance (inf where it holds fewer)."""
    lists = _merged(stored, np.zeros(0, np.int64), np.zeros(0, np.float32), k)
    return np.asarray(np.nan_to_num(lists[:, k - 1], nan=np.inf), np.float32)


def newest_per_clip(rows: pa.Table) -> pa.Table:
    """One row per clip: the one of the newest run (run ids sort in run order)."""
    if rows.num_rows == 0:
        return rows
    rows = rows.take(pc.sort_indices(rows, [("clip_id", "ascending"), ("run_id", "descending")]))
    ids = rows.column("clip_id").to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), bool)
    first[1:] = ids[1:] != ids[:-1]
    return rows.filter(pa.array(first))


def _merged(stored: pa.ChunkedArray | pa.Array, row: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    """(clips, k) float32: each clip's ``k`` smallest of its stored distances and the
    pairs' (``row``: the clip's position), NaN past the neighbours found."""
    lists = stored.combine_chunks() if isinstance(stored, pa.ChunkedArray) else stored
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    old_row = np.repeat(np.arange(len(lists)), lengths)
    old_d = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.float32)
    rows = np.concatenate([old_row, row])
    dist = np.concatenate([old_d, d])
    order = np.lexsort((dist, rows))
    rows, dist = rows[order], dist[order]
    starts = np.searchsorted(rows, rows, "left")
    rank = np.arange(len(rows)) - starts
    keep = rank < k
    out = np.full((len(lists), k), np.nan, np.float32)
    out[rows[keep], rank[keep]] = dist[keep]
    return out


def rescore(
    lake: Lake,
    lineage: str,
    reached: pa.Table,
    k: int,
    novelty: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    run_id: str,
    batch_rows: int,
) -> pa.Table:
    """The new ``mining_scores`` rows of the old clips (of ``lineage``) that ``reached``
    pairs enter the ``k`` nearest of; ``novelty(knn_mean, rarity, signal_rarity)`` as
    the run scores new clips. One pass over the lineage, a batch at a time."""
    empty = mining_scores.SPEC.schema.empty_table()
    if reached.num_rows == 0:
        return empty
    wanted = pc.unique(reached.column("clip_id").combine_chunks())
    parts = [
        t.filter(pc.is_in(t.column("clip_id"), value_set=wanted))
        for t in lake.scan("mining_scores", None, lineage, batch_rows)
    ]
    stored = newest_per_clip(pa.concat_tables([mining_scores.SPEC.conform(t) for t in parts] or [empty]))
    if stored.num_rows == 0:
        return empty
    row = pc.index_in(reached.column("clip_id"), value_set=stored.column("clip_id"))
    found = pc.is_valid(row)
    row_np = row.filter(found).to_numpy(zero_copy_only=False).astype(np.int64)
    d_np = reached.column("d").filter(found).to_numpy(zero_copy_only=False).astype(np.float32)
    before = _merged(stored.column("knn_distances"), np.zeros(0, np.int64), np.zeros(0, np.float32), k)
    kth = np.nan_to_num(before[:, k - 1], nan=np.inf)
    enters = d_np < kth[row_np]  # nearer than the k-th it holds: most pairs are not
    row_np, d_np = row_np[enters], d_np[enters]
    changed = np.zeros(stored.num_rows, bool)
    changed[row_np] = True
    if not changed.any():
        return empty
    stored = stored.filter(pa.array(changed))
    renumber = np.cumsum(changed) - 1
    knn = _merged(stored.column("knn_distances"), renumber[row_np], d_np, k)
    have = ~np.isnan(knn)
    knn_mean = np.where(have, knn, 0.0).sum(axis=1) / np.maximum(have.sum(axis=1), 1)
    scores = novelty(
        knn_mean.astype(np.float64),
        stored.column("rarity").to_numpy(zero_copy_only=False).astype(np.float64),
        stored.column("signal_rarity").to_numpy(zero_copy_only=False).astype(np.float64),
    )
    offsets = np.concatenate([[0], np.cumsum(have.sum(axis=1))]).astype(np.int32)
    n = stored.num_rows
    now = dt.datetime.now(dt.UTC)
    for name, col in (
        ("run_id", pa.array([run_id] * n, pa.string())),
        ("novelty", pa.array(scores, pa.float64())),
        ("knn_distances", pa.ListArray.from_arrays(pa.array(offsets), pa.array(knn[have], pa.float32()))),
        ("computed_at", pa.array([now] * n, UTC_TS)),
    ):
        stored = stored.set_column(stored.schema.get_field_index(name), name, col)
    return mining_scores.SPEC.conform(stored)
