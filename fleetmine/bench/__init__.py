"""``fleetmine bench``: each figure next to a baseline measured in the same run.

A benchmark is a function registered with :func:`benchmark`; it gets a
:class:`BenchContext` (quick or full, a scratch directory) and returns
:class:`BenchResult` rows. Ratios are ``measured / baseline`` in the benchmark's
own "higher is better" or "lower is better" sense, stated per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["BENCHMARKS", "BenchContext", "BenchResult", "benchmark", "run_all"]


@dataclass(frozen=True)
class BenchContext:
    quick: bool
    workdir: Path
    catalog: int | None = None  # clips in the catalog benchmark's lake (default by quick/full)
    text_image: tuple[str, ...] = ()  # export folders the text-image benchmark measures (none: not measured)


@dataclass(frozen=True)
class BenchResult:
    name: str
    measured: float
    baseline: float
    unit: str
    baseline_name: str
    goal: str
    higher_is_better: bool = True
    goal_on_measured: bool = False  # the goal bounds the figure itself, not the ratio

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline if self.baseline else float("nan")

    @property
    def met(self) -> bool | None:
        if not self.goal:
            return None  # a figure reported for context, with no goal of its own
        op, _, value = self.goal.partition(" ")
        target = float(value.rstrip("x"))
        x = self.measured if self.goal_on_measured else self.ratio
        return x >= target if op == ">=" else x <= target

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


BenchFn = Callable[[BenchContext], list[BenchResult]]
BENCHMARKS: dict[str, BenchFn] = {}


def benchmark(name: str) -> Callable[[BenchFn], BenchFn]:
    def register(fn: BenchFn) -> BenchFn:
        BENCHMARKS[name] = fn
        return fn

    return register


def run_all(ctx: BenchContext, only: list[str] | None = None) -> list[BenchResult]:
    from fleetmine.bench import (  # noqa: F401  (they register themselves)
        api_serving,
        can_decode,
        catalog,
        catalog_datasets,
        catalog_mining,
        catalog_routes,
        cluster_scale,
        delta_write,
        encoders,
        faiss_search,
        filtered_search,
        pq_refine,
        previews,
        rarity,
        reader_feed,
        scenarios,
        shadow,
        sharded_search,
        synth_speed,
        text_image,
        video_ingest,
    )

    unknown = sorted(set(only or []) - set(BENCHMARKS))
    if unknown:
        from storage.errors import ConfigError

        raise ConfigError(f"unknown benchmarks {unknown}; known: {sorted(BENCHMARKS)}")
    results: list[BenchResult] = []
    for name, fn in BENCHMARKS.items():
        if only and name not in only:
            continue
        results.extend(fn(ctx))
    return results
