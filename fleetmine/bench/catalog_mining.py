"""``index`` and ``mine`` at N synthetic clips (and N/10): memory against the raw vectors,
and an incremental ``mine`` of 10 % new clips against a full run.

Lake: :mod:`fleetmine.bench.catalog_lake`, its vectors drawn once from one distribution
(1,000 clusters), so the 10 % added later are more of the same corpus. Each job runs
in a process of its own (``python -m fleetmine.bench.catalog_mining JOB LAKE``) that
imports and opens everything first, then resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), so its peak is what the job itself held. Figures:

- ``fleetmine index`` and ``fleetmine mine`` (full) peak RSS above the process's
  idle RSS, vs the raw vector bytes (N x dim x 4); the whole process's peak beside it;
- ``mine`` after 10 % more clips (incremental, the default) vs ``mine --full`` on
  the same grown lake (the same cluster model): time, and how many of the top 100
  they agree on; and how many both share with ``mine --refit`` (k-means fitted
  again), which moves the top by itself: the margin a re-fit alone accounts for.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from fleetmine.bench import BenchContext, BenchResult, benchmark
from fleetmine.bench._child import run_child, vm


def _child(job: str, lake_uri: str) -> dict[str, Any]:
    from jobs.mine_job import run_mine
    from mining.encoders.registry import resolve
    from mining.scores.mine import MineConfig
    from mining.search.queries import build_index
    from storage.config import Settings
    from storage.lake import Lake

    settings = Settings(lake=lake_uri)
    lake = Lake.from_settings(settings)
    resolve(lake)
    lake.version("embeddings")
    with contextlib.suppress(OSError):  # no reset: the peak includes the imports
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := RSS now
    idle = vm("VmRSS")
    t0 = time.perf_counter()
    if job == "index":
        out: Any = build_index(settings)
    else:
        from jobs.runner import SequentialRunner

        cfg = MineConfig(full=job in ("mine-full", "mine-refit"), refit=job == "mine-refit")
        out = run_mine(settings, None, cfg, runner=SequentialRunner()).__dict__
    seconds = time.perf_counter() - t0
    return {"idle": idle, "peak": vm("VmHWM"), "seconds": seconds, "result": out}


def _run(job: str, lake_uri: str) -> dict[str, Any]:
    return run_child("fleetmine.bench.catalog_mining", job, lake_uri)


def _top(scores: list[dict[str, Any]], k: int = 100) -> set[str]:
    kept = sorted(
        (s for s in scores if s["duplicate_of"] is None), key=lambda s: (-s["novelty"], s["clip_id"])
    )
    return {s["clip_id"] for s in kept[:k]}


def _at(ctx: BenchContext, n: int) -> list[BenchResult]:
    from fleetmine.bench.catalog_lake import add_clips
    from fleetmine.bench.faiss_search import embeddings_like
    from mining.encoders.registry import resolve
    from mining.scores.lineage import latest_scores
    from storage.lake import Lake

    lake = Lake(str(ctx.workdir / f"mining-{n}"))
    lake.create_tables()
    spec = resolve(lake)
    more = n // 10
    corpus = embeddings_like(n + more, spec.dim, seed=0)
    add_clips(lake, spec, 0, n, given=corpus[:n])
    raw = n * spec.dim * 4
    index = _run("index", lake.uri)
    full = _run("mine-full", lake.uri)
    add_clips(lake, spec, n, more, given=corpus[n:])
    raw_grown = (n + more) * spec.dim * 4
    incremental = _run("mine", lake.uri)
    top_incremental = _top(latest_scores(lake, spec))
    recompute = _run("mine-full", lake.uri)
    top_full = _top(latest_scores(lake, spec))
    agreement = len(top_incremental & top_full) / 100
    _run("mine-refit", lake.uri)  # k-means fitted again: how far a re-fit alone moves the top
    top_refit = _top(latest_scores(lake, spec))
    label = f"catalog {n:,} clips, {index['result']['factory']}"
    mb = 1e6

    def memory(what: str, r: dict[str, Any], raw_bytes: int) -> list[BenchResult]:
        return [
            BenchResult(
                f"{label}: {what} peak RSS above the process's idle {r['idle'] / mb:,.0f} MB",
                (r["peak"] - r["idle"]) / mb,
                raw_bytes / mb,
                "MB",
                "raw vector bytes",
                "<= 2",
                higher_is_better=False,
            ),
            BenchResult(
                f"{label}: {what} peak RSS of the whole process ({r['seconds']:.1f} s)",
                r["peak"] / mb,
                raw_bytes / mb,
                "MB",
                "raw vector bytes",
                "",
                higher_is_better=False,
            ),
        ]

    return [
        *memory("fleetmine index (streamed build + save)", index, raw),
        *memory("fleetmine mine --full", full, raw),
        *memory(f"fleetmine mine of {more:,} new clips (incremental)", incremental, raw_grown),
        BenchResult(
            f"{label}: mine of {more:,} new clips (incremental, {incremental['result']['scored']:,} scored) "
            f"vs mine --full of {n + more:,}",
            incremental["seconds"],
            recompute["seconds"],
            "s",
            "full run on the same lake",
            "<= 0.3",
            higher_is_better=False,
        ),
        BenchResult(
            f"{label}: top 100 of the incremental run also in a full recompute's top 100",
            agreement,
            1.0,
            "share",
            "all 100",
            ">= 0.95",
        ),
        BenchResult(
            f"{label}: top 100 of the full recompute also in a re-fitted one's (mine --refit)",
            len(top_full & top_refit) / 100,
            1.0,
            "share",
            "all 100",
            "",
        ),
        BenchResult(
            f"{label}: top 100 of the incremental run also in a re-fitted recompute's",
            len(top_incremental & top_refit) / 100,
            1.0,
            "share",
            "all 100",
            "",
        ),
    ]


@benchmark("catalog-mining")
def catalog_mining(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.catalog or (20_000 if ctx.quick else 200_000)
    return [*_at(ctx, max(1000, n // 10)), *_at(ctx, n)]


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2]), default=str))
