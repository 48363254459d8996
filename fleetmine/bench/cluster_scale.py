"""Index build and mine on one shard vs two, and on one Ray node vs two (issue #27, 6b/6c).

The lake of :mod:`fleetmine.bench.catalog_lake` (N clips over four days, 256-d vectors of
the builtin encoder's layout), then:

- **In this process** (the embedded default): ``fleetmine index`` as one index and as two
  shards by day (``shard_size`` N/2), each followed by a full ``mine``; ratios two shards /
  one (build and mine time).
- **On a loopback cluster** of one 1-CPU node, then of two (``ray start --block
  --num-cpus=1``, a head and a worker on 127.0.0.1, token-authenticated, stopped by PID):
  ``index --shard-size N/2`` (each shard a task, spread over the nodes) and a full ``mine``
  whose k-NN fans out over the actors holding the shards (one holder per node: its
  shards only); ratios two nodes / one. The job is driven from this process in both.
- **Per-shard memory**: what each holder held (the runs row's ``counts.holders``), next to
  the whole index: the most any one process held of the vectors; and the mine's driving
  process's peak RSS above what it held before the run (per clip of the corpus: the
  scores, ids and features it keeps until the rows are written, none of the index).

Both clusters run on this machine's cores; on two cores a 1-CPU node each is what two
machines of one core would be, with the driver's own work (reading vectors, merging the
holders' answers, features, writing rows) sharing them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleetmine.bench import BenchContext, BenchResult, benchmark

NODE_WAIT_S = 180.0
_STATUS_EVERY_S = 3.0
NODE_TRIES = 3
"""Starts of one node before the bench gives up (Ray gives a node 30 s to register; on two
cores busy with other work, a node has exited while starting: tests/jobs/cluster.py)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def loopback_cluster(nodes: int, log_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """``nodes`` Ray nodes of one CPU on 127.0.0.1 (a head, then workers), each its own
    process group, stopped by PID; yields the GCS address a driver joins and the
    environment it joins with (the cluster's token: Ray reads it when it is imported, so a
    driver is a process started with it, :func:`_on_cluster`)."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    token = secrets.token_hex(16)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    }
    gcs = f"127.0.0.1:{_free_port()}"
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(nodes):
            role = (
                ["--head", f"--port={gcs.rsplit(':', 1)[1]}", "--include-dashboard=false"] if i == 0 else []
            )
            ports = [
                f"--dashboard-agent-listen-port={_free_port()}",
                f"--dashboard-agent-grpc-port={_free_port()}",
                f"--metrics-export-port={_free_port()}",
                f"--runtime-env-agent-port={_free_port()}",
            ]
            join = [] if i == 0 else [f"--address={gcs}"]
            for attempt in range(NODE_TRIES):  # a node starved of CPU exits while starting: again
                with open(log_dir / f"node{i}-{nodes}-{attempt}.log", "wb") as out:
                    procs.append(
                        subprocess.Popen(
                            [ray_bin, "start", *role, *join, *common, *ports],
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
                try:
                    _wait_nodes(gcs, i + 1, env, procs)
                    break
                except RuntimeError:
                    stop_nodes([procs.pop()])
                    if attempt == NODE_TRIES - 1:
                        raise
                    time.sleep(5)
        yield gcs, {**env, "FLEETMINE_SHIP_CODE": "0"}  # the nodes run this very code
    finally:
        stop_nodes(procs)


def stop_nodes(procs: list[subprocess.Popen[bytes]], grace_s: float = 5.0) -> None:
    """Ray nodes this process started, by PID (each its own process group): SIGTERM, then
    after ``grace_s`` SIGKILL to what is left of each group (what ``ray stop --force``
    sends). A head's raylet and workers end within a second of SIGTERM, but its GCS and
    ``ray start --block`` linger ~30 s more: every cluster of the bench and the tests paid
    that wait, for nothing."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # the group: a GCS may outlive its `ray start`
        p.wait(10)


def _wait_nodes(gcs: str, want: int, env: dict[str, str], procs: list[subprocess.Popen[bytes]]) -> None:
    """Until ``want`` nodes are alive (``ray status`` against the GCS, with the token).

    Asked every 3 s, the first time 3 s after the start: a node takes 5-10 s to register,
    and each ``ray status`` is a Python process of ~1 s of a core, which asked every
    second took that core from the node it waited for."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    deadline = time.monotonic() + NODE_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(_STATUS_EVERY_S)
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a Ray node exited while starting (see its log in the bench's folder)")
        out = subprocess.run(
            [ray_bin, "status", f"--address={gcs}"], env=env, capture_output=True, text=True, timeout=60
        ).stdout
        alive = out.split("Active:", 1)[1].split("Pending:", 1)[0] if "Active:" in out else ""
        if alive.count("node_") >= want:
            return
    raise RuntimeError(f"{want} Ray node(s) not alive within {NODE_WAIT_S:.0f} s")


def _peak_rss() -> int:
    """This process's peak resident bytes since the last :func:`_reset_peak` (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> int:
    """Start the peak over from now (``clear_refs`` 5); the resident bytes now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _timed_run(
    settings: Any, shard_size: int | None, rss: dict[str, int] | None = None
) -> tuple[float, float, dict[str, Any]]:
    """Index (sharded when ``shard_size``) then a full mine: their seconds, and the mine's
    runs row counts; ``rss`` gets the mine's peak resident bytes above those before it."""
    from jobs.index_job import run_index
    from jobs.mine_job import run_mine
    from jobs.runner import SequentialRunner
    from mining.scores.mine import MineConfig
    from mining.search.index import IndexConfig
    from storage.lake import Lake

    cfg = IndexConfig(shard_size=shard_size) if shard_size else None
    local = None if settings.ray_address else SequentialRunner()
    t0 = time.perf_counter()
    run_index(settings, cfg=cfg, runner=local)
    idle = _reset_peak() if rss is not None else 0
    t1 = time.perf_counter()
    report = run_mine(settings, cfg=MineConfig(full=True), runner=local)
    t2 = time.perf_counter()
    if rss is not None:
        rss["mine_above_idle"] = _peak_rss() - idle
    (row,) = Lake.from_settings(settings).read("runs", where=f"run_id = '{report.run_id}'").to_pylist()
    return t1 - t0, t2 - t1, json.loads(row["counts"] or "{}")


def _on_cluster(
    lake: str, gcs: str, env: dict[str, str], shard_size: int
) -> tuple[float, float, dict[str, Any]]:
    """:func:`_timed_run` in a driver process of its own, joined to the cluster at ``gcs``."""
    argv = [sys.executable, "-m", "fleetmine.bench.cluster_scale", lake, gcs, str(shard_size)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise RuntimeError(f"the cluster run failed: {done.stderr[-2000:]}")
    build, mine, counts, rss = json.loads(done.stdout.strip().splitlines()[-1])
    return float(build), float(mine), {**counts, "driver_rss": rss["mine_above_idle"]}


SCAN_QUERIES = 4096
"""Queries each process of :func:`host_ceiling` asks of its shard."""


def _scan(lake_uri: str, shard: int, barrier: Path) -> float:
    """Seconds one search of :data:`SCAN_QUERIES` clips' vectors takes on shard ``shard`` of
    the lake's saved set (one thread, as a holder searches), the best of two; started once
    ``barrier`` exists (``<barrier>.<shard>`` says this process is ready for it)."""
    import faiss
    import numpy as np

    from mining.encoders.registry import resolve
    from mining.encoders.vectors import EmbeddingSource
    from mining.search.index import ClipIndex
    from storage.lake import Lake

    faiss.omp_set_num_threads(1)
    lake = Lake(lake_uri)
    spec = resolve(lake)
    loc = ClipIndex.location(lake, spec)
    meta = ClipIndex.read_meta(loc) or {}
    index = ClipIndex.open_files(loc, meta["shards"][shard]["files"], meta, mmap=True)
    _, queries = next(iter(EmbeddingSource(lake, spec, SCAN_QUERIES).batches()))
    queries = np.ascontiguousarray(queries, np.float32)
    Path(f"{barrier}.{shard}").touch()
    while not barrier.exists():
        time.sleep(0.01)
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        index.search_positions(queries, 6)
        best = min(best, time.perf_counter() - t0)
    return best


def host_ceiling(lake_uri: str, workdir: Path, shards: int = 2) -> tuple[float, float]:
    """The k-NN of ``shards`` shards in as many processes at once (what that many holders on
    their own nodes do), and in turn (what one holder of them all does): seconds of each.

    A loopback cluster's nodes share this host's memory bus. A shard's IVF scan reads some
    MB of vectors a query and is bound by memory bandwidth, not by the core: on the 2-core
    machine the project is tested on, two such scans at once took 1.6x as long as one
    alone (8.5 s vs 5.2 s, 2026-12-07). Their ratio is the best two loopback nodes can show
    against one for a mine whose holders are the work; two hosts do not share a bus."""
    alone = []
    for shard in range(shards):
        alone.append(_scans(lake_uri, workdir / f"alone-{shard}", [shard])[0])
    together = _scans(lake_uri, workdir / "together", list(range(shards)))
    return max(together), sum(alone)


def _scans(lake_uri: str, barrier: Path, shards: list[int]) -> list[float]:
    """:func:`_scan` of each of ``shards`` in a process of its own, all released at once."""
    for stale in [barrier, *(Path(f"{barrier}.{s}") for s in shards)]:  # of a run before, in this folder
        stale.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "fleetmine.bench.cluster_scale", "--scan", lake_uri, str(barrier)]
    procs = [
        subprocess.Popen([*argv, str(s)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for s in shards
    ]
    try:
        deadline = time.monotonic() + 600
        while not all(Path(f"{barrier}.{s}").exists() for s in shards):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(
                    "a shard scan did not get ready: "
                    + "; ".join(
                        (p.stderr.read() if p.poll() is not None and p.stderr else "")[-500:] for p in procs
                    )
                )
            time.sleep(0.05)
        barrier.touch()
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"a shard scan failed: {err[-1000:]}")
    return [float(out.strip().splitlines()[-1]) for out, _ in outs]


def _at(ctx: BenchContext, n: int) -> list[BenchResult]:
    from fleetmine.bench.catalog_lake import CatalogConfig, add_clips
    from mining.encoders.registry import resolve
    from mining.search.index import ClipIndex
    from storage.config import Settings
    from storage.lake import Lake

    root = ctx.workdir / f"cluster-scale-{n}"
    root.mkdir(parents=True, exist_ok=True)
    lake = Lake(str(root / "lake"))
    lake.create_tables()
    add_clips(lake, resolve(lake), 0, n, CatalogConfig(clips_per_day=math.ceil(n / 4)))
    here = Settings(lake=lake.uri)
    half = math.ceil(n / 2)
    one_build, one_mine, _ = _timed_run(here, None)
    two_build, two_mine, _ = _timed_run(here, half)
    meta = ClipIndex.read_meta(ClipIndex.location(lake, resolve(lake))) or {}
    index_bytes = sum(int(s.get("bytes", 0)) for s in meta.get("shards", []))
    at_once, in_turn = host_ceiling(lake.uri, root)

    on: dict[int, tuple[float, float, dict[str, Any]]] = {}
    for nodes in (1, 2):
        loc = ClipIndex.location(lake, resolve(lake))
        loc.fs.rm(loc.path, recursive=True)  # built anew on the cluster, not topped up
        with loopback_cluster(nodes, root) as (gcs, env):
            on[nodes] = _on_cluster(lake.uri, gcs, env, half)
    held = on[2][2].get("holders", [])
    most = max((int(h["bytes"]) for h in held), default=0)
    tag = f"{n:,} clips"
    whole = index_bytes / 1e6
    rows = [  # name, measured, baseline, unit, baseline's name, goal; lower is better in all
        (f"index, 2 shards vs 1 index, this process ({tag})", two_build, one_build, "s", "1 index", ""),
        (f"mine, 2 shards vs 1 index, this process ({tag})", two_mine, one_mine, "s", "1 index", ""),
        (
            f"index --shard-size {half:,}, 2 nodes vs 1 (1 CPU each, {tag})",
            on[2][0],
            on[1][0],
            "s",
            "1 node",
            "<= 0.6x",
        ),
        (
            f"mine on the held shards, 2 nodes vs 1 (1 CPU each, {tag}; "
            f"holders {[(h['shards'], h['vectors']) for h in held]})",
            on[2][1],
            on[1][1],
            "s",
            "1 node",
            "<= 0.6x",
        ),
        (
            f"this host's ceiling for that ratio: 2 shards' k-NN ({SCAN_QUERIES:,} queries) in 2 "
            f"processes at once vs in turn in 1 (one memory bus under both loopback nodes)",
            at_once,
            in_turn,
            "s",
            "in turn",
            "",
        ),
        (
            f"mine's driving process peak RSS above idle, 2 nodes ({tag})",
            int(on[2][2].get("driver_rss", 0)) / 1e6,
            whole,
            "MB",
            "the whole index",
            "",
        ),
        (
            f"mine's rows spilled to the driver's local disk, 2 nodes ({tag})",
            int(on[2][2].get("spill_bytes", 0)) / 1e6,
            whole,
            "MB",
            "the whole index",
            "",
        ),
        (
            f"most index bytes one holder held, 2 nodes ({tag})",
            most / 1e6,
            whole,
            "MB",
            "the whole index",
            "",
        ),
    ]
    return [BenchResult(*row, higher_is_better=False) for row in rows]


@benchmark("cluster-scale")
def cluster_scale(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.catalog or (20_000 if ctx.quick else 200_000)
    return _at(ctx, n)


if __name__ == "__main__" and sys.argv[1] == "--scan":  # a process of host_ceiling: LAKE BARRIER SHARD
    print(_scan(sys.argv[2], int(sys.argv[4]), Path(sys.argv[3])))
elif __name__ == "__main__":  # a driver of _on_cluster: LAKE GCS SHARD_SIZE
    from storage.config import Settings

    uri, address, size = sys.argv[1:4]
    peak: dict[str, int] = {}
    print(json.dumps([*_timed_run(Settings(lake=uri, ray_address=address), int(size), peak), peak]))
