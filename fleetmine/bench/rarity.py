"""Rarity at scale: does a scenario of 50 look-alike clips stand out among 10^6?

The corpus is shaped like clip embeddings (1,000 scenes, Gaussian in a random
32-dimensional subspace of R^256 plus noise, rows L2-normalised:
:func:`fleetmine.bench.faiss_search.embeddings_like`'s generator), about 1,000 clips a
scene, plus one planted scene of 50 clips drawn the same way: as tight as any other
scene, only rarer. The cluster model is fitted as ``fleetmine mine`` fits it
(:mod:`mining.scores.clusters`, k-means on a hashed sample of 65,536, the fine level
per top cluster), and the planted clips' rarity is ranked in the corpus. Baseline: one
level of 256 clusters, what the model was at every size before two levels.
"""

from __future__ import annotations

import time

import faiss
import numpy as np
import pyarrow as pa

from fleetmine.bench import BenchContext, BenchResult, benchmark
from mining.encoders.vectors import ArraySource
from mining.scores.clusters import MAX_TOP, cluster_counts, fit_sub_levels, fit_top
from mining.scores.mining_model import MiningModel

PLANTED = 50
_SAMPLE = 65_536  # MineConfig.cluster_sample


def scenes(n: int, planted: int = PLANTED, scenes: int = 1000, dim: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` clips of ``scenes`` common scenes, then ``planted`` clips of one more."""
    rng = np.random.default_rng(seed)
    sub = 32
    basis = np.linalg.qr(rng.standard_normal((dim, sub)))[0].astype(np.float32)
    centres = rng.standard_normal((scenes + 1, sub)).astype(np.float32)
    which = np.concatenate([rng.integers(1, scenes + 1, n), np.zeros(planted, np.int64)])
    x = (centres[which] + 0.35 * rng.standard_normal((len(which), sub)).astype(np.float32)) @ basis.T
    x += 0.05 * rng.standard_normal((len(which), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def fitted(
    source: ArraySource, clusters: int | None = None, seed: int = 1234
) -> tuple[MiningModel, np.ndarray]:
    """The cluster model ``mine`` fits on ``source`` (a full run, no prior; ``clusters``:
    that many, one level) and each clip's cluster."""
    ids = source.ids()
    n = len(ids)
    ntop, nfine = cluster_counts(n, clusters)
    none = np.zeros(0)
    model = MiningModel("bench", n, fit_top(source, ids, ntop, seed, _SAMPLE), none, *(none,) * 5)
    order = source.clip_ids
    cluster = np.concatenate([model.assign(v) for _, v in source.batches()])
    if nfine > ntop:
        model.fine_offsets, model.fine_centroids = fit_sub_levels(
            source, order, cluster, model.centroids, nfine, seed, _SAMPLE
        )
        cluster = np.concatenate([model.assign(v) for _, v in source.batches()])
    model.sizes = np.bincount(cluster, minlength=model.clusters).astype(np.int64)
    return model, cluster


def planted_rank(model: MiningModel, cluster: np.ndarray, planted: int = PLANTED) -> float:
    """The share of the corpus at least as rare as the planted clips' median: 0.001 means
    they are in the rarest 0.1 %."""
    rarity = model.rarity_of(cluster)
    mine = float(np.median(rarity[-planted:]))
    return float(np.mean(rarity >= mine))


@benchmark("rarity")
def rarity(ctx: BenchContext) -> list[BenchResult]:
    faiss.omp_set_num_threads(1)
    n = 200_000 if ctx.quick else 1_000_000
    x = scenes(n)
    source = ArraySource(pa.array([f"c{i:08d}" for i in range(len(x))], pa.string()), x)
    out = {}
    for name, clusters in (("two levels", None), ("one level", MAX_TOP)):
        t0 = time.perf_counter()
        model, cluster = fitted(source, clusters)
        out[name] = (100 * planted_rank(model, cluster), model.clusters, time.perf_counter() - t0)
    label = f"rarity of a {PLANTED}-clip scene among {n:,} clips (1,000 scenes of ~{n // 1000:,})"
    if ctx.quick:  # scenes of ~200 are a fine cluster each: the scene has no cluster to spare
        label += " (goal at 10^6: full run)"
    two, one = out["two levels"], out["one level"]
    return [
        BenchResult(
            f"{label}: % of the corpus as rare, {two[1]:,} clusters (two levels, {two[2]:.0f} s)",
            two[0],
            one[0],
            "%",
            f"{one[1]} clusters (one level, {one[2]:.0f} s)",
            "" if ctx.quick else "<= 1",
            higher_is_better=False,
            goal_on_measured=True,
        )
    ]
