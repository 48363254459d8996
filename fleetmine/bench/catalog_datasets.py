"""Dataset versions at N synthetic clips (and N/10): ``create_version`` of a lake-wide
query and its export plan, time and peak memory, and how both grow with the lake.

Lake: :mod:`fleetmine.bench.catalog_lake` (clips only: the routes and these jobs never read
vectors), 2,000 clips a day. Each job runs in a process of its own (``python -m
fleetmine.bench.catalog_datasets JOB LAKE``) that imports and opens everything first, then
resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), so its peak is what the
job itself held. Figures: each job's peak RSS above idle and its time at N, each against
the same at N/10. Streaming keeps ``create`` flat (one span of days in memory); the export
plan keeps every clip's id and split (about 150 B a clip), so it grows with the version.
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
    from mining.datasets.curation import DatasetQuery, create_version, get_version
    from mining.datasets.shards import plan_export
    from mining.encoders.registry import resolve
    from storage.lake import Lake

    lake = Lake(lake_uri)
    resolve(lake)
    lake.create_tables(["datasets", "dataset_clips"])
    if job == "plan":
        get_version(lake, "everything", 1)
    with contextlib.suppress(OSError):  # no reset: the peak includes the imports
        Path("/proc/self/clear_refs").write_text("5")
    idle = vm("VmRSS")
    t0 = time.perf_counter()
    if job == "create":
        out: dict[str, Any] = {"clips": create_version(lake, "everything", DatasetQuery())["clip_count"]}
    else:
        plan = plan_export(lake, "everything", 1, shard_bytes=1000 * 24 * 1024)
        out = {"clips": plan.num_samples, "shards": len(plan.shards)}
    return {"idle": idle, "peak": vm("VmHWM"), "seconds": time.perf_counter() - t0, "result": out}


def _run(job: str, lake_uri: str) -> dict[str, Any]:
    return run_child("fleetmine.bench.catalog_datasets", job, lake_uri)


def _at(ctx: BenchContext, n: int) -> dict[str, dict[str, Any]]:
    from fleetmine.bench.catalog_lake import add_clips
    from mining.encoders.registry import resolve
    from storage.lake import Lake

    lake = Lake(str(ctx.workdir / f"datasets-{n}"))
    lake.create_tables()
    add_clips(lake, resolve(lake), 0, n, vectors=False)
    runs = {job: _run(job, lake.uri) for job in ("create", "plan")}
    for job, r in runs.items():
        if r["result"]["clips"] != n:
            raise RuntimeError(f"{job} at {n:,} clips saw {r['result']['clips']:,}")
    return runs


@benchmark("catalog-datasets")
def catalog_datasets(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.catalog or (20_000 if ctx.quick else 200_000)
    small, big = _at(ctx, max(1000, n // 10)), _at(ctx, n)
    mb = 1e6
    out = []
    for job, what, memory_goal in (
        ("create", "create_version of every clip (streamed spans, one commit)", "<= 2"),
        ("plan", "plan_export of that version (ids + splits kept)", ""),
    ):
        b, s = big[job], small[job]
        out += [
            BenchResult(
                f"datasets {n:,} clips: {what}: peak RSS above idle ({b['peak'] / mb:,.0f} MB whole process)",
                max(b["peak"] - b["idle"], 1) / mb,
                max(s["peak"] - s["idle"], 1) / mb,
                "MB",
                f"the same at {n // 10:,} clips",
                memory_goal,
                higher_is_better=False,
            ),
            BenchResult(
                f"datasets {n:,} clips: {what}: time",
                b["seconds"],
                s["seconds"],
                "s",
                f"the same at {n // 10:,} clips",
                "<= 12",
                higher_is_better=False,
            ),
        ]
    return out


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2]), default=str))
