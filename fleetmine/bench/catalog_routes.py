"""The catalog's request routes at N synthetic clips and at N/10: does a request's cost
grow with the lake?

Lake: :mod:`fleetmine.bench.catalog_lake` (clips through the project's writers, one data
file per day of 2,000 clips, events on 1 % and 0.1 %), a ``mine`` run's scores and its
ready corner-case lists; no vectors (no route here reads them). ``fleetmine serve``'s
app runs in its own process, auth on. Each route is asked ``REQUESTS`` times with
varied arguments (random cursors, vehicles, ids); p50 and p99 are reported, the p99 at
N against the p99 at N/10 (the growth ratio: 1.0 = the cost does not grow with the
lake), once as written and once after ``lake maintain`` (clips sorted by id). A second
server with ``FLEETMINE_SCAN_AUDIT`` reports the rows the engine scanned per request.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from fleetmine.bench import BenchContext, BenchResult, benchmark
from fleetmine.bench.api_serving import _start
from fleetmine.bench.catalog_lake import add_clips, add_scores

REQUESTS = 40
P99_GOAL_MS = 150.0

Request = tuple[str, dict[str, Any]]


def _cursor(clip_id: str) -> str:
    return base64.urlsafe_b64encode(clip_id.encode()).decode()


def _requests(ids: list[str], rng: np.random.Generator) -> dict[str, Callable[[], Request]]:
    """Per route, a maker of one request with fresh arguments."""

    def pick() -> str:
        return ids[int(rng.integers(len(ids)))]

    return {
        "first page (limit 100)": lambda: ("/v1/clips", {"limit": 100}),
        "next page by cursor": lambda: ("/v1/clips", {"limit": 100, "cursor": _cursor(pick())}),
        "hard_brake page (1 %)": lambda: (
            "/v1/clips",
            {"limit": 100, "event": "hard_brake", "cursor": _cursor(pick())},
        ),
        "vehicle page": lambda: (
            "/v1/clips",
            {"limit": 100, "vehicle_id": f"veh-{int(rng.integers(50)):03d}"},
        ),
        "clip by id": lambda: (f"/v1/clips/{pick()}", {}),
        "corner cases (k 50)": lambda: (
            "/v1/mining/corner-cases",
            {"k": 50, **({"event": "hard_brake"} if rng.random() < 0.5 else {})},
        ),
    }


def _measure(
    base: str, headers: dict[str, str], makers: dict[str, Callable[[], Request]]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for route, make in makers.items():
            for _ in range(3):  # warm: the first reads of a table open it
                path, params = make()
                client.get(path, params=params).raise_for_status()
            lat = []
            for _ in range(REQUESTS):
                path, params = make()
                t0 = time.perf_counter()
                client.get(path, params=params).raise_for_status()
                lat.append(time.perf_counter() - t0)
            out[route] = np.array(lat) * 1000
    return out


def _scanned(base: str, headers: dict[str, str], makers: dict[str, Callable[[], Request]]) -> dict[str, int]:
    out: dict[str, int] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        for route, make in makers.items():
            most = 0
            for _ in range(5):
                path, params = make()
                r = client.get(path, params=params)
                r.raise_for_status()
                most = max(most, int(r.headers["x-fleetmine-rows-scanned"]))
            out[route] = most
    return out


def _serve(lake_uri: str, audit: bool) -> tuple[Any, str]:
    # No kept answers or file columns (storage.results): a route's figure is what the engine
    # and the files' reads cost it, as on a replica whose caches hold other days.
    cold = {"FLEETMINE_QUERY_CACHE_MIB": "0", "FLEETMINE_FILE_CACHE_MIB": "0"}
    return _start("ours", lake_uri, 0, {"FLEETMINE_SCAN_AUDIT": "1" if audit else "0", **cold})


def _at(ctx: BenchContext, n: int) -> dict[str, tuple[dict[str, np.ndarray], dict[str, int]]]:
    """Latencies and rows scanned per route, as written and after ``lake maintain``."""
    from api.auth import create_token
    from mining.encoders.registry import resolve
    from storage.lake import Lake

    lake = Lake(str(ctx.workdir / f"routes-{n}"))
    lake.create_tables()
    spec = resolve(lake)
    batch = add_clips(lake, spec, 0, n, vectors=False)
    add_scores(lake, spec, batch)
    token = create_token(lake, "bench", "reader")
    headers = {"Authorization": f"Bearer {token}"}
    results = {}
    for layout in ("as written", "maintained"):
        if layout == "maintained":
            lake.maintain("bench", tables=["clips"], retention_hours=0, enforce_retention=False)
        makers = _requests(batch.clip_ids, np.random.default_rng(n))
        proc, url = _serve(lake.uri, audit=False)
        try:
            lat = _measure(url, headers, makers)
        finally:
            proc.terminate()
            proc.wait(30)
        proc, url = _serve(lake.uri, audit=True)
        try:
            rows = _scanned(url, headers, makers)
        finally:
            proc.terminate()
            proc.wait(30)
        results[layout] = (lat, rows)
    return results


@benchmark("catalog-routes")
def catalog_routes(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.catalog or (20_000 if ctx.quick else 200_000)
    small, large = max(1000, n // 10), n
    at_small, at_large = _at(ctx, small), _at(ctx, large)
    rows: list[BenchResult] = []
    for layout in ("as written", "maintained"):
        lat_s, scan_s = at_small[layout]
        lat_l, scan_l = at_large[layout]
        for route in lat_l:
            p50_s, p99_s = np.percentile(lat_s[route], [50, 99])
            p50_l, p99_l = np.percentile(lat_l[route], [50, 99])
            label = f"route {route}, {layout}"
            rows.append(
                BenchResult(
                    f"{label}: p99 at {large:,} clips (p50 {p50_l:.1f} ms; scanned <= {scan_l[route]:,})",
                    float(p99_l),
                    P99_GOAL_MS,
                    "ms",
                    "the 150 ms budget",
                    f"<= {P99_GOAL_MS:g}",
                    higher_is_better=False,
                    goal_on_measured=True,
                )
            )
            rows.append(
                BenchResult(
                    f"{label}: growth, p99 at {large:,} / at {small:,} "
                    f"(p50 {p50_s:.1f} ms, rows scanned <= {scan_s[route]:,} at {small:,})",
                    float(p99_l),
                    float(p99_s),
                    "ms",
                    f"p99 at {small:,}",
                    "<= 1.5",
                    higher_is_better=False,
                )
            )
    return rows
