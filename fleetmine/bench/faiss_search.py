"""FAISS at 1M x 256-d vectors shaped like real embeddings, with the index fleetmine picks.

Generator: a mixture of 1,000 Gaussian clusters in a random 32-dimensional
subspace of R^256, plus isotropic noise (sigma 0.05 per dimension), rows
L2-normalised, the way clip embeddings concentrate on a low-dimensional manifold.
On uniformly random 256-d vectors no approximate index works. Baseline: exact
search (IndexFlatL2) of the same queries. Encoder throughput: ``fleetmine/bench/encoders.py``.
"""

from __future__ import annotations

import time

import faiss
import numpy as np

from fleetmine.bench import BenchContext, BenchResult, benchmark
from mining.search.index import ClipIndex, IndexConfig


def embeddings_like(n: int, dim: int = 256, clusters: int = 1000, sub: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, sub)))[0].astype(np.float32)  # (dim, sub)
    centres = rng.standard_normal((clusters, sub)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    x = (centres[which] + 0.35 * rng.standard_normal((n, sub)).astype(np.float32)) @ basis.T
    x += 0.05 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@benchmark("faiss_search")
def faiss_search(ctx: BenchContext) -> list[BenchResult]:
    faiss.omp_set_num_threads(1)
    n = 200_000 if ctx.quick else 1_000_000
    nq = 500 if ctx.quick else 2000
    data = embeddings_like(n + nq)
    base, queries = data[:n], data[n:]
    ids = [str(i) for i in range(n)]
    t0 = time.perf_counter()
    index = ClipIndex.build(base, ids, IndexConfig())
    build_s = time.perf_counter() - t0
    exact = faiss.IndexFlatL2(base.shape[1])
    exact.add(base)
    t0 = time.perf_counter()
    _, truth = exact.search(queries, 10)
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, got = index.index.search(queries, 10)
    ours_s = time.perf_counter() - t0
    recall = float(np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, truth, strict=True)]))
    size = len(faiss.serialize_index(index.index))
    label = f"FAISS {index.factory} nprobe {index.cfg.nprobe}, {n:,} x 256-d, 1 thread"
    return [
        BenchResult(f"{label}: recall@10", recall, 1.0, "recall", "exact search", ">= 0.95"),
        BenchResult(  # IVF's edge over exact search grows with n: the goal is set at 1M vectors
            f"{label}: queries/s" + (" (goal at 1M: full run)" if ctx.quick else ""),
            nq / ours_s,
            nq / exact_s,
            "q/s",
            "exact search (IndexFlatL2)",
            "" if ctx.quick else ">= 10",
        ),
        BenchResult(
            f"{label}: build (train + add)",
            build_s,
            build_s,
            "s",
            "itself (no baseline)",
            ">= 0",
            goal_on_measured=True,
        ),
        BenchResult(f"{label}: bytes per vector", size / n, 256 * 4, "B", "raw float32 vector", "<= 1.2"),
    ]
