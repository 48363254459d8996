"""IVF-PQ re-ranking on its own vector file against re-ranking on the ``embeddings`` table.

IVF-PQ (what ``IndexConfig`` builds from ``pq_above`` vectors a shard: the kind of a
10^8-clip fleet's shards) ranks ``refine_factor`` x k candidates by their codes and
re-ranks them on exact vectors. Measured: the same saved build, loaded twice, searched
through :func:`mining.search.queries.nearest` (the API's path) with the calls interleaved
in one process after an untimed pass of both:

- **as saved** (``mining.search.vector_file``): the candidates' rows read from the index's
  ``.vectors.f32`` file;
- **baseline**, as a build saved before that file (its ``vectors`` dropped on load): the
  rows read from the ``embeddings`` table by clip id.

On the lake of :mod:`fleetmine.bench.catalog_lake`, unfiltered and under the 1 %
``hard_brake`` filter; recall@10 of each against exact search on the allowed rows. A filter
allowing at most ``brute_force_below`` clips (2,000 of 2x10^5) is searched exactly over
their vectors (read from the file, or the table): the case is measured so, as a user gets
it, and again probed by codes (``brute_force_below`` 0), as a 1 % filter of a 10^7-vector
shard (100,000 clips) is.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from fleetmine.bench import BenchContext, BenchResult, benchmark
from fleetmine.bench.filtered_search import NOISE, K, Run, batch_rows, cases, exact_top

QUERIES = 100


@benchmark("pq-refine")
def pq_refine(ctx: BenchContext) -> list[BenchResult]:
    from fleetmine.bench.catalog_lake import add_clips
    from mining.encoders.registry import resolve
    from mining.search.index import ClipIndex, IndexConfig
    from mining.search.queries import build_index, nearest
    from mining.search.serving import LiveIndex
    from storage.config import Settings
    from storage.lake import Lake

    n = ctx.catalog or (20_000 if ctx.quick else 200_000)
    lake = Lake(str(ctx.workdir / f"pq-refine-{n}"))
    lake.create_tables()
    spec = resolve(lake)
    batch = add_clips(lake, spec, 0, n)
    t0 = time.perf_counter()
    built = build_index(Settings(lake=lake.uri), cfg=IndexConfig(kind="ivf-pq"))
    build_s = time.perf_counter() - t0
    loc = ClipIndex.location(lake, spec)
    saved, meta = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    before, _ = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    before.vectors = None  # a build saved before its vector file: re-ranked on the table
    sizes = {k: loc.fs.size(loc.join(f).path) for k, f in meta["files"].items()}
    indexes = {"file": LiveIndex(saved), "table": LiveIndex(before)}

    rows, base, norms, names = batch_rows(lake, batch)
    rng = np.random.default_rng(n)
    queries = base[rng.choice(n, QUERIES, replace=False)]
    queries = queries + NOISE * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def ask(system: str, q: np.ndarray, where: str | None) -> list[str]:
        return [h.clip_id for h in nearest(lake, spec, q[None, :], K, where, index=indexes[system])]

    label = f"IVF-PQ search {n:,} clips ({built['factory']}, refine_factor {saved.cfg.refine_factor})"
    out: list[BenchResult] = []
    asked = [c for c in cases(rows) if c.where is None or "hard_brake" in c.where]
    exact_below = saved.cfg.brute_force_below
    for case, probed in [(c, False) for c in asked] + [(asked[-1], True)]:
        for index in (saved, before):
            index.configure(replace(index.cfg, brute_force_below=0 if probed else exact_below))
        allowed = int(case.allowed.sum())
        how = (
            ", probed by codes (brute_force_below 0)"
            if probed
            else f", {allowed:,} allowed (exact over their vectors with the file, probed without)"
            if case.where and allowed <= exact_below
            else ""
        )
        truth = exact_top(base, norms, names, queries, case.allowed)
        for q in queries[:10]:  # untimed: the first read of each
            ask("file", q, case.where), ask("table", q, case.where)
        a, b = Run([], []), Run([], [])
        for q in queries:
            t0 = time.perf_counter()
            a.ids.append(ask("file", q, case.where))
            t1 = time.perf_counter()
            b.ids.append(ask("table", q, case.where))
            a.ms.append((t1 - t0) * 1000)
            b.ms.append((time.perf_counter() - t1) * 1000)
        out.append(
            BenchResult(
                f"{label}, {case.name}{how}: p99, re-ranked on its vector file (p50 {a.p(50):.1f} ms, "
                f"recall@{K} {a.recall(truth):.3f}) / on the embeddings table (p50 {b.p(50):.1f} ms, "
                f"recall@{K} {b.recall(truth):.3f})",
                a.p(99),
                b.p(99),
                "ms",
                "re-ranked on the embeddings table (builds saved before the vector file)",
                "<= 0.1",
                higher_is_better=False,
            )
        )
    out.append(
        BenchResult(
            f"{label}: on disk, codes + ids + exact vectors "
            f"({sizes.get('vectors', 0) / 1e6:,.1f} MB of them), built in {build_s:.1f} s",
            sum(sizes.values()) / 1e6,
            n * spec.dim * 4 / 1e6,
            "MB",
            "float32 vectors",
            "",
            higher_is_better=False,
        )
    )
    return out
