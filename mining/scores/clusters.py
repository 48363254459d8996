"""The cluster model behind rarity, at two levels once one level stops resolving scenarios.

Rarity is how small a share of the fleet a clip's k-means cluster holds
(:meth:`~mining.scores.mining_model.MiningModel.rarity_of`). One level of ``sqrt(n)``
clusters, at most 256, resolves a scenario while clusters are a few hundred clips:
past ~65k clips the 256 clusters grow with the corpus (~3,900 clips each at 10^6,
~390k at 10^8), and a scenario of 50 look-alike clips is a sliver of whichever cluster
it falls in, as common as its neighbours. So past that point the model has two levels,
the way FAISS trains a large coarse quantizer (``faiss.contrib.clustering.two_level_clustering``):
256 top clusters fitted on a sample, then each top cluster split into sub-clusters in
proportion to the clips it holds, so that every *fine* cluster holds about
:data:`FINE_SIZE` clips (at most :data:`MAX_FINE` fine clusters in all). Rarity is then
the share of the clip's fine cluster. Below that point nothing changes: one level, the
fine clusters are the top ones, and cluster ids and scores are what they were.

The sub-clusters of one top cluster are independent of every other's, so they are fitted
as tasks (:class:`SubFitStage`: in this process locally, as Ray tasks on a cluster, which
the jobs layer runs: :data:`FanOut`), each on a hashed sample of its top clusters'
members that it reads itself (at most ``cluster_sample`` vectors a task), so no process
holds more than one task's vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders.vectors import VectorSource, id_hashes, lowest, sample_ids
from mining.search.index_build import gather

__all__ = [
    "FINE_SIZE",
    "MAX_FINE",
    "MAX_TOP",
    "SUB_SAMPLE",
    "FanOut",
    "SubFitStage",
    "SubFitWork",
    "cluster_counts",
    "fine_of",
    "fit_sub_levels",
    "fit_top",
    "in_process",
    "kmeans",
    "sample_members",
    "sub_counts",
]

MAX_TOP = 256
"""Top-level clusters at most (a corpus of up to ``MAX_TOP ** 2`` clips has one level)."""

FINE_SIZE = 256
"""Clips per fine cluster past one level: ``MAX_TOP`` clusters of this size is where one level ends."""

MAX_FINE = 65_536
"""Fine clusters at most (so a fine cluster grows past ``FINE_SIZE`` only past ~1.7e7 clips)."""

SUB_SAMPLE = 64
"""Sampled members per sub-cluster a top cluster is split into (FAISS warns below 39)."""

_NITER = 25


def _pow2(x: float) -> int:
    return int(2 ** round(math.log2(max(x, 1.0))))


def cluster_counts(
    n: int, clusters: int | None = None, max_top: int = MAX_TOP, fine_size: int = FINE_SIZE
) -> tuple[int, int]:
    """``(top, fine)`` cluster counts for a corpus of ``n`` clips: ``sqrt(n)`` to a power
    of two (a corpus grown by a few % keeps its count) while that is at most ``max_top``,
    one level (``fine == top``); past it ``max_top`` top clusters and ``n / fine_size``
    fine ones, to a power of two, at most :data:`MAX_FINE`. ``clusters`` given: that
    many, one level."""
    if clusters:
        top = max(1, min(n, clusters))
        return top, top
    flat = _pow2(math.sqrt(max(n, 1)))
    if flat <= max_top:
        top = max(1, min(n, max(2, flat)))
        return top, top
    return max_top, max(max_top, min(MAX_FINE, _pow2(n / fine_size)))


def sub_counts(sizes: np.ndarray, fine: int) -> np.ndarray:
    """Sub-clusters per top cluster: ``fine`` shared in proportion to the clips each holds
    (as FAISS's ``two_level_clustering`` rebalances), at least one each, none more than
    its clips."""
    sizes = np.asarray(sizes, np.int64)
    total = int(sizes.sum())
    if total == 0 or fine <= len(sizes):
        return np.ones(len(sizes), np.int64)
    cum = np.cumsum(sizes) * fine // total
    share = np.diff(np.concatenate([[0], cum]))
    return np.asarray(np.clip(share, 1, np.maximum(sizes, 1)), np.int64)


@dataclass(frozen=True)
class SubFitWork:
    """One task: split each of ``tops`` into its ``k`` sub-clusters, fitted on ``members``
    (each top's sampled clip ids)."""

    tops: tuple[int, ...]
    k: tuple[int, ...]
    members: tuple[pa.Array, ...]
    seed: int


class SubFitStage:
    """Stage: fits the sub-clusters of a few top clusters on their sampled members' vectors,
    which it reads from ``source`` (the model version's embeddings) itself."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, source: VectorSource):
        self.source = source

    def setup(self) -> None:
        pass

    def process_batch(self, items: list[SubFitWork]) -> list[list[np.ndarray]]:
        return [self.process(w) for w in items]

    def process(self, w: SubFitWork) -> list[np.ndarray]:
        every = pa.concat_arrays(list(w.members))
        vectors = gather(self.source, every)  # in clip id order
        in_order = pc.take(every, pc.sort_indices(every))
        out = []
        for top, k, members in zip(w.tops, w.k, w.members, strict=True):
            rows = np.asarray(pc.index_in(members, value_set=in_order).to_numpy(zero_copy_only=False))
            x = np.ascontiguousarray(vectors[np.sort(rows.astype(np.int64))], np.float32)
            out.append(_kmeans(x, k, w.seed + top))
        return out


def kmeans(x: np.ndarray, k: int, seed: int, init: np.ndarray | None = None) -> np.ndarray:
    """``k`` centroids of ``x`` (float32): FAISS's k-means, 25 iterations, from ``init``
    (none: FAISS's own start)."""
    km = faiss.Kmeans(x.shape[1], k, niter=_NITER, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x, init_centroids=init)
    return np.array(km.centroids, np.float32)


def fit_top(
    source: VectorSource,
    ids: pa.Array | Iterable[pa.Array],
    k: int,
    seed: int,
    sample: int,
    warm: np.ndarray | None = None,
) -> np.ndarray:
    """The top level: ``k`` centroids fitted on a hashed sample of ``sample`` of ``ids``
    (or of chunks of them), started from ``warm`` (the last fit's centroids) where given."""
    return kmeans(gather(source, sample_ids(ids, sample, seed)), k, seed, warm)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    k = max(1, min(k, len(x)))
    if k == 1:
        return np.asarray(x.mean(axis=0, keepdims=True), np.float32)
    return kmeans(x, k, seed, plus_plus(x, k, seed))


def plus_plus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ seeding (Arthur and Vassilvitskii, 2007; scikit-learn's default start,
    which FAISS lacks): each next centre drawn with probability proportional to its
    squared distance from the nearest centre already drawn.

    FAISS starts from ``k`` points drawn uniformly. Within a top cluster that is fatal to
    the very thing the fine level is for: a scene of 50 clips among 4,000 gets no start
    of its own (with 16 starts, 4 times in 5), and Lloyd's iterations never give it one:
    its clips join a neighbouring scene's cluster, as common as that scene. Drawn by
    squared distance, a scene that far from the rest draws a start almost surely."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    norms = (x * x).sum(axis=1)
    centres = np.empty((k, x.shape[1]), np.float32)
    centres[0] = x[rng.integers(len(x))]
    d2 = np.maximum(norms - 2.0 * (x @ centres[0]) + float(centres[0] @ centres[0]), 0.0)
    for i in range(1, k):
        total = float(d2.sum())
        pick = int(rng.integers(len(x))) if total <= 0 else int(rng.choice(len(x), p=d2 / total))
        centres[i] = x[pick]
        d = np.maximum(norms - 2.0 * (x @ centres[i]) + float(centres[i] @ centres[i]), 0.0)
        np.minimum(d2, d, out=d2)
    return centres


FanOut = Callable[[VectorSource, list[SubFitWork]], list[list[np.ndarray]]]
"""Runs :class:`SubFitStage` over the work items somewhere (the jobs layer: as Ray tasks) and
answers each item's centroids in order, or raises; none: one after another in this process."""


def in_process(source: VectorSource, work: list[SubFitWork]) -> list[list[np.ndarray]]:
    stage = SubFitStage(source)
    return [stage.process(w) for w in work]


def fit_sub_levels(
    source: VectorSource,
    ids: pa.Array | Iterable[pa.Array],
    tops: np.ndarray,
    centroids: np.ndarray,
    fine: int,
    seed: int,
    per_task: int,
    fan_out: FanOut | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The fine level under ``centroids``: ``(offsets, fine_centroids)``, top cluster ``t``'s
    fine clusters being rows ``offsets[t]:offsets[t + 1]`` of ``fine_centroids`` (a top
    cluster not split is one row, its own centroid). ``ids`` are the corpus's clips (or
    chunks of them, in order) and ``tops`` the top cluster each fell in; tasks of at most
    ``per_task`` sampled vectors go to ``fan_out``."""
    ntop = len(centroids)
    sizes = np.bincount(tops, minlength=ntop)
    k = sub_counts(sizes, fine)
    sampled = sample_members(ids, tops, np.where(k > 1, np.minimum(per_task, SUB_SAMPLE * k), 0), seed)
    parts: list[np.ndarray] = [np.asarray(centroids[t : t + 1], np.float32) for t in range(ntop)]
    work: list[SubFitWork] = []
    batch: tuple[list[int], list[int], list[pa.Array]] = ([], [], [])
    held = 0

    def flush() -> None:
        nonlocal batch, held
        if batch[0]:
            work.append(SubFitWork(tuple(batch[0]), tuple(batch[1]), tuple(batch[2]), seed))
        batch, held = ([], [], []), 0

    for t in np.flatnonzero(k > 1).tolist():
        chosen = sampled[t]
        if held + len(chosen) > per_task:
            flush()
        batch[0].append(t)
        batch[1].append(int(k[t]))
        batch[2].append(chosen)
        held += len(chosen)
    flush()
    for item, found in zip(work, (fan_out or in_process)(source, work), strict=True):
        for t, c in zip(item.tops, found, strict=True):
            parts[t] = c
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
    return offsets, np.vstack(parts).astype(np.float32)


def sample_members(
    ids: pa.Array | Iterable[pa.Array], tops: np.ndarray, want: np.ndarray, seed: int
) -> dict[int, pa.Array]:
    """Per top cluster ``t`` with ``want[t] > 0``: the ``want[t]`` of its members with the
    lowest hash seeded ``seed + t`` (:func:`~mining.encoders.vectors.sample_ids` of its
    members), drawn a chunk of ``ids`` at a time: the lowest so far are kept per cluster,
    so no list of every cluster's members (the corpus's ids, regrouped) is ever held."""
    chunks = [ids] if isinstance(ids, pa.Array) else ids
    keys: dict[int, np.ndarray] = {}
    kept: dict[int, pa.Array] = {}
    at = 0
    for chunk in chunks:
        of = np.asarray(tops[at : at + len(chunk)], np.int64)
        if len(of) != len(chunk):
            raise ValueError(f"{at + len(chunk)} ids for {len(tops)} clusters")
        at += len(chunk)
        rows = np.flatnonzero(want[of] > 0)
        if not len(rows):
            continue
        names = chunk.take(pa.array(rows)).cast(pa.string())
        ts = of[rows]
        hashed = id_hashes(names, seed + ts)
        order = np.argsort(ts, kind="stable")
        cuts = np.flatnonzero(np.diff(ts[order])) + 1
        for group in np.split(order, cuts):
            t = int(ts[group[0]])
            k_all = np.concatenate([keys.get(t, np.zeros(0, np.uint32)), hashed[group]])
            i_all = pa.concat_arrays([kept.get(t, pa.array([], pa.string())), names.take(pa.array(group))])
            m = int(want[t])
            if len(k_all) > m:
                low = lowest(k_all, i_all, m)
                k_all, i_all = k_all[low], i_all.take(pa.array(low))
            keys[t], kept[t] = k_all, i_all
    if at != len(tops):
        raise ValueError(f"{at} ids for {len(tops)} clusters")
    return {t: kept.get(t, pa.array([], pa.string())) for t in np.flatnonzero(want > 0).tolist()}


def fine_of(tops: np.ndarray, vectors: np.ndarray, offsets: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Each vector's fine cluster: the nearest of its top cluster's sub-centroids."""
    out = offsets[tops].astype(np.int64)
    split = (offsets[1:] - offsets[:-1]) > 1
    x = np.asarray(vectors, np.float32)
    for t in np.unique(tops[split[tops]]).tolist():
        rows = np.flatnonzero(tops == t)
        c = fine[offsets[t] : offsets[t + 1]]
        d = (c * c).sum(axis=1)[None, :] - 2.0 * (x[rows] @ c.T)
        out[rows] = offsets[t] + np.argmin(d, axis=1)
    return out
