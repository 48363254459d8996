"""Search across shards beside one index of the same vectors (issue #27: recall and p99).

The goal: a version saved as shards (``fleetmine index --shard-size``) answers what one index
of every vector answers (recall@10 against exact >= 0.98, unfiltered and under the 1 % and
0.1 % filters, exactly ``min(k, allowed)`` clips), its p99 within 1.3x of the one index's.
Three indexes of the lake of :mod:`fleetmine.bench.catalog_lake` (``clips_per_day`` N / 8:
eight days, so shards of N / 4 hold two days each) answer the same queries as
:mod:`fleetmine.bench.filtered_search` asks, through :func:`mining.search.queries.nearest`
(the API's path: the filter from the resident ``clips`` columns, then the index):

- **one index**: what ``fleetmine index`` builds for N vectors (mapped, as a server maps it);
- **shards, this process**: ``fleetmine index --shard-size N/4`` (four shards sharing one
  coarse quantizer, :class:`~mining.search.shards.ShardSet`), mapped here: the embedded
  default and every server without ``--address``;
- **shards, held**: the same set in :class:`~mining.search.holders.HeldIndex` actors on a
  local Ray of this machine's CPUs, as ``fleetmine serve --address`` holds them (one actor
  per CPU, none asked of the scheduler, each answering for its shards; the query and the
  allowed ids go to every holder, their top-k are merged here).

Calls are interleaved (one, shards, held, one, ...) after an untimed pass of each, in one
process; p50 and p99 per call in ms; a held search pays Ray's round trip per query on
loopback, not a network.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from fleetmine.bench import BenchContext, BenchResult, benchmark
from fleetmine.bench.filtered_search import NOISE, QUERIES, K, Run, batch_rows, cases, exact_top

SHARDS = 4
SYSTEMS = ("one index", "shards, this process", "shards, held")


def _indexes(lake: Any, spec: Any, n: int, out: dict[str, Any]) -> dict[str, str]:
    """The three indexes loaded into ``out`` by :data:`SYSTEMS` name (as each opens: the
    caller stops the holders of what opened); what each is (factory, shards)."""
    from jobs.index_job import run_index
    from jobs.runner import SequentialRunner
    from jobs.runtime import init_ray
    from mining.search import serving
    from mining.search.index import IndexConfig
    from storage.config import Settings

    settings = Settings(lake=lake.uri)
    what: dict[str, str] = {}
    built = run_index(settings, runner=SequentialRunner())
    out["one index"] = serving.live(lake, spec)
    what["one index"] = str(built["factory"])
    # The one build's files stay: a build's clean-up keeps the build before it.
    size = math.ceil(n / SHARDS)
    split = run_index(settings, cfg=IndexConfig(shard_size=size), runner=SequentialRunner())
    serving.forget(lake, spec)
    out["shards, this process"] = sharded = serving.live(lake, spec)
    shards = len(getattr(sharded.main, "shards", [sharded.main]))
    what["shards, this process"] = f"{shards} x {split['factory']}"
    init_ray(None, num_cpus=2)  # only now: an idle Ray's agents would share the builds' cores
    serving.hold_shards(True)
    try:
        serving.forget(lake, spec)
        out["shards, held"] = held = serving.live(lake, spec)
    finally:
        serving.hold_shards(False)
        serving.forget(lake, spec)
    holders = [len(i["shards"]) for i in getattr(held.main, "infos", [])]
    what["shards, held"] = f"{shards} shards in {len(holders)} holder(s)"
    return what


@benchmark("sharded-search")
def sharded_search(ctx: BenchContext) -> list[BenchResult]:
    import ray

    from fleetmine.bench.catalog_lake import CatalogConfig, add_clips
    from mining.encoders.registry import resolve
    from mining.search.queries import nearest
    from storage.lake import Lake

    n = ctx.catalog or (20_000 if ctx.quick else 200_000)
    lake = Lake(str(ctx.workdir / f"sharded-{n}"))
    lake.create_tables()
    spec = resolve(lake)
    batch = add_clips(lake, spec, 0, n, CatalogConfig(clips_per_day=math.ceil(n / (2 * SHARDS))))
    started = not ray.is_initialized()  # a Ray this process was already on stays up
    indexes: dict[str, Any] = {}
    try:
        what = _indexes(lake, spec, n, indexes)
        return _measure(lake, spec, n, batch, indexes, what, nearest)
    finally:
        held = indexes.get("shards, held")
        if held is not None:
            held.main.stop()
        if started and ray.is_initialized():
            ray.shutdown()


def _measure(
    lake: Any, spec: Any, n: int, batch: Any, indexes: dict[str, Any], what: dict[str, str], nearest: Any
) -> list[BenchResult]:
    rows, base, norms, names = batch_rows(lake, batch)
    rng = np.random.default_rng(n + 1)
    queries = base[rng.choice(n, QUERIES, replace=False)]
    queries = queries + NOISE * rng.standard_normal(queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    def ask(system: str, q: np.ndarray, where: str | None) -> list[str]:
        return [h.clip_id for h in nearest(lake, spec, q[None, :], K, where, index=indexes[system])]

    label = f"search across shards {n:,} clips"
    out: list[BenchResult] = []
    for case in cases(rows):
        truth = exact_top(base, norms, names, queries, case.allowed)
        want = min(K, int(case.allowed.sum()))
        for system in SYSTEMS:  # untimed: every index mapped in and warm
            for q in queries[:20]:
                ask(system, q, case.where)
        runs = {s: Run([], []) for s in SYSTEMS}
        for q in queries:  # timed, interleaved
            for system in SYSTEMS:
                t0 = time.perf_counter()
                runs[system].ids.append(ask(system, q, case.where))
                runs[system].ms.append((time.perf_counter() - t0) * 1000)
        one = runs["one index"]
        for system, run in runs.items():
            out.append(
                BenchResult(
                    f"{label}, {case.name}: {system} ({what[system]}) recall@{K} (p50 {run.p(50):.1f} ms, "
                    f"p99 {run.p(99):.1f} ms; {run.wrong_counts(want)} of {QUERIES} counts != "
                    f"min(k, allowed) = {want})",
                    run.recall(truth),
                    1.0,
                    "recall",
                    "exact search on the allowed rows",
                    ">= 0.98",
                )
            )
            if system != "one index":
                out.append(
                    BenchResult(
                        f"{label}, {case.name}: p99, {system} / one index (<= 1.3 meets the goal)",
                        run.p(99),
                        one.p(99),
                        "ms",
                        f"one index ({what['one index']}) p99",
                        "<= 1.3",
                        higher_is_better=False,
                    )
                )
    return out
