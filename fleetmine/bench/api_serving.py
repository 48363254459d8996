"""The catalog under load: manifest GETs from 50 concurrent clients, shard downloads.

Ours: ``fleetmine serve``'s app (auth on, a reader token) in its own process.
Baseline: the same uvicorn serving a FastAPI route that returns a constant JSON
body of the manifest's size, in its own process, under the same load; and, for
shards, reading the same file from disk.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

from fleetmine.bench import BenchContext, BenchResult, benchmark
from jobs.allocator import server_environ

SERVER = """
import sys, uvicorn
from fastapi import FastAPI, Response
from storage.config import Settings
kind, lake, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if kind == "ours":
    from api.app import create_app, lean_server_process
    lean_server_process()  # as `fleetmine serve` does
    app = create_app(Settings(lake=lake))
else:
    app = FastAPI()
    body = b"{" + b" " * (size - 2) + b"}"
    @app.get("/constant")
    def constant() -> Response:
        return Response(body, media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(
    kind: str, lake: str, size: int, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**server_environ(), **(env_extra or {})}  # as `fleetmine serve` runs
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SERVER), kind, lake, str(port), str(size)], env=env
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} server did not start")


async def _load(url: str, headers: dict[str, str], clients: int, seconds: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(c: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            r = await c.get(url, headers=headers)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    return latencies, time.perf_counter() - t0


@benchmark("api_serving")
def api_serving(ctx: BenchContext) -> list[BenchResult]:
    from api.auth import create_token
    from jobs.export_job import export_version
    from mining.datasets.curation import DatasetQuery, create_version
    from mining.datasets.shards import shard_location
    from storage.lake import Lake

    lake = Lake(str(ctx.workdir / "api_lake"))
    lake.create_tables()
    row = create_version(lake, "bench", DatasetQuery())
    export_version(lake, "bench", row["version"])
    shard = shard_location(lake, "bench", row["version"], "000000.tar")
    mb = 64 if ctx.quick else 256
    Path(shard.path).write_bytes(
        np.random.default_rng(0).integers(0, 256, mb << 20, dtype=np.uint8).tobytes()
    )
    token = create_token(lake, "bench", "reader")
    headers = {"Authorization": f"Bearer {token}"}
    seconds = 4.0 if ctx.quick else 15.0
    ours, base_ours = _start("ours", lake.uri, 0)
    try:
        manifest_url = f"{base_ours}/v1/datasets/bench/versions/{row['version']}/manifest"
        size = len(httpx.get(manifest_url, headers=headers).content)
        lat, wall = asyncio.run(_load(manifest_url, headers, 50, seconds))
        t0 = time.perf_counter()
        with httpx.stream(
            "GET", f"{base_ours}/v1/shards/bench/{row['version']}/000000.tar", headers=headers
        ) as r:
            got = sum(len(b) for b in r.iter_bytes())
        dl = time.perf_counter() - t0
    finally:
        ours.terminate()
    const, base_const = _start("constant", lake.uri, size)
    try:
        lat_c, wall_c = asyncio.run(_load(f"{base_const}/constant", {}, 50, seconds))
    finally:
        const.terminate()
    t0 = time.perf_counter()
    with open(shard.path, "rb") as f:
        while f.read(1 << 20):
            pass
    disk = time.perf_counter() - t0
    os.sync()
    p50, p99 = (float(np.percentile(lat, q)) * 1000 for q in (50, 99))
    c50, c99 = (float(np.percentile(lat_c, q)) * 1000 for q in (50, 99))
    return [
        BenchResult(
            "manifest GET, 50 clients: requests/s",
            len(lat) / wall,
            len(lat_c) / wall_c,
            "req/s",
            f"constant {size}-byte JSON, same server",
            ">= 0.7",
        ),
        BenchResult(
            "manifest GET, 50 clients: p50 latency",
            p50,
            c50,
            "ms",
            "constant JSON",
            "",
            higher_is_better=False,
        ),
        BenchResult(
            "manifest GET, 50 clients: p99 latency",
            p99,
            c99,
            "ms",
            "constant JSON",
            "",
            higher_is_better=False,
        ),
        BenchResult(
            f"shard download {mb} MB over HTTP",
            got / 1e6 / dl,
            got / 1e6 / disk,
            "MB/s",
            "read from disk",
            "",
        ),
    ]
