"""A real Ray cluster on loopback for tests: head + worker nodes, token auth, stopped by PID.

Shared by ``tests/jobs/test_cluster.py`` (a submitted ingest writes what a local run
writes) and ``tests/reliability/test_worker_death.py`` (a node or a worker process
killed mid-job).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fleetmine.bench.cluster_scale import stop_nodes
from storage import Lake
from tests.conftest import free_port

RAY = str(Path(sys.executable).parent / "ray")
# Where and when the input was read: an S3 etag vs a file mtime, an s3:// vs a local path.
VOLATILE = ("ingest_run_id", "ingested_at", "source_uri", "fingerprint", "uri", "created_at")


def _node_ports() -> list[str]:
    """Ports two nodes on one host would otherwise both take (the agents' defaults)."""
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


@dataclass(frozen=True)
class Cluster:
    address: str  # the dashboard's http:// address (Job Submission and state API)
    gcs: str  # host:port a driver connects to
    head: subprocess.Popen[bytes]  # `ray start --head --block`
    worker: subprocess.Popen[bytes]  # `ray start --block --address`: its raylet is a child


NODE_TRIES = 4
"""Starts of one node before a test fails. Ray gives a node 30 s to register and its raylet
15 s to see the dashboard agent's port file (both hard-coded); on two cores busy with
other tests the agent has taken 17 s to start, and the node exits."""


def start_node(
    name: str,
    args: list[str],
    node_env: dict[str, str],
    log_dir: Path,
    procs: list[subprocess.Popen[bytes]],
    base: str,
    env: dict[str, str],
    nodes: int,
) -> None:
    """``ray start --block ARGS`` in its own process group (appended to ``procs``) and wait
    until ``nodes`` are alive; a node that exits while starting is stopped and started
    again, up to :data:`NODE_TRIES` times."""
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    for attempt in range(NODE_TRIES):
        log = log_dir / (f"{name}.log" if attempt == 0 else f"{name}-again-{attempt}.log")
        with open(log, "wb") as out:  # the child keeps its own copy of the fd
            procs.append(
                subprocess.Popen(
                    [RAY, "start", *args, *common, *_node_ports()],
                    env=node_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        try:
            wait_nodes(base, env, nodes, procs)
            return
        except NodeExited:
            stop([procs.pop()])
            if attempt == NODE_TRIES - 1:
                raise
            time.sleep(5)  # let the load that starved it pass


def head_args(gcs: int, dash: int) -> list[str]:
    return ["--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]


@contextlib.contextmanager
def two_node_cluster(
    env: dict[str, str], log_dir: Path, worker_env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """Yields the running cluster; stops both nodes by their PIDs. ``worker_env``: more
    variables for the worker node only (a fault point only its tasks reach)."""
    gcs, dash = free_port(), free_port()
    base = f"http://127.0.0.1:{dash}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        start_node("head", head_args(gcs, dash), env, log_dir, procs, base, env, 1)
        worker = [f"--address=127.0.0.1:{gcs}"]
        start_node("worker", worker, {**env, **(worker_env or {})}, log_dir, procs, base, env, 2)
        yield Cluster(base, f"127.0.0.1:{gcs}", procs[0], procs[1])
    finally:
        stop(procs)


stop = stop_nodes
"""The nodes we started, by PID (each its own process group)."""


class NodeExited(AssertionError):
    """A Ray node's ``ray start`` exited before the cluster had its nodes."""


def state(base: str, env: dict[str, str], what: str) -> list[dict[str, Any]]:
    """The cluster's state API (``/api/v0/<what>``), with the cluster's token."""
    r = httpx.get(
        f"{base}/api/v0/{what}",
        params={"limit": 10_000, "detail": "true"},
        headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"},
        timeout=30,
    )
    r.raise_for_status()
    return list(r.json()["data"]["result"]["result"])


def wait_nodes(base: str, env: dict[str, str], n: int, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if any(p.poll() is not None for p in procs):
            raise NodeExited("a Ray node exited while starting (see its log)")
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            if sum(nd["state"] == "ALIVE" for nd in state(base, env, "nodes")) >= n:
                return
        time.sleep(1)
    raise AssertionError(f"{n} Ray node(s) did not come up")


def cli(
    *args: str, env: dict[str, str], timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``fleetmine ARGS`` in its own process; with ``check``, it must exit 0."""
    out = subprocess.run(
        [sys.executable, "-m", "fleetmine", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert not check or out.returncode == 0, (args, out.returncode, out.stdout[-3000:], out.stderr[-3000:])
    return out


def rows(lake: Lake, table: str) -> list[tuple[Any, ...]]:
    """Every row, values as JSON, media URIs relative to the lake's root."""
    t = lake.read(table)
    keep = [c for c in t.column_names if c not in VOLATILE]
    root = lake.uri.rstrip("/")
    return sorted(
        tuple(json.dumps(r[c], default=str, sort_keys=True).replace(root, "<lake>") for c in keep)
        for r in t.to_pylist()
    )


def children(pid: int) -> list[tuple[int, str]]:
    """The processes ``pid`` started, with their command lines (``/proc``)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append((int(d.name), cmd))
    return out
