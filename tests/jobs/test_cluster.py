"""A real two-node Ray cluster on loopback, token-authenticated, over an S3 lake on moto.

Head (``ray start --head --block``, 1 CPU, dashboard on 127.0.0.1) and one worker node
(``ray start --block --address``, 1 CPU), both with ``RAY_AUTH_MODE=token`` as Ray 2.60
clusters run by default. ``fleetmine ingest --address http://127.0.0.1:DASHBOARD``
submits through the Job Submission API and returns a run id at once; ``fleetmine jobs``
follows it from the lake's ``runs`` table; its tasks ran on both nodes and the tables
hold exactly what a local run of the same input writes. Both nodes are stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.synth.fleet import SynthConfig, synthesize
from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from storage.objectstore import Location
from tests.conftest import LOCAL, free_port

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


@contextlib.contextmanager
def two_node_cluster(env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """Yields the dashboard's ``http://`` address; stops both nodes by their PIDs."""
    gcs, dash = free_port(), free_port()
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, args: list[str]) -> None:
        with open(log_dir / f"{name}.log", "wb") as out:  # the child keeps its own copy of the fd
            cmd = [RAY, "start", *args, *common, *_node_ports()]
            proc = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(proc)

    try:
        start("head", ["--head", f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"])
        base = f"http://127.0.0.1:{dash}"
        _wait_nodes(base, env, 1, procs)
        start("worker", [f"--address=127.0.0.1:{gcs}"])
        _wait_nodes(base, env, 2, procs)
        yield base
    finally:
        for p in procs:  # the nodes we started, by PID (each its own process group)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def _state(base: str, env: dict[str, str], what: str) -> list[dict[str, Any]]:
    """The cluster's state API (``/api/v0/<what>``), with the cluster's token."""
    r = httpx.get(
        f"{base}/api/v0/{what}",
        params={"limit": 10_000, "detail": "true"},
        headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"},
        timeout=30,
    )
    r.raise_for_status()
    return list(r.json()["data"]["result"]["result"])


def _wait_nodes(base: str, env: dict[str, str], n: int, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert all(p.poll() is None for p in procs), "a Ray node exited while starting (see its log)"
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            if sum(nd["state"] == "ALIVE" for nd in _state(base, env, "nodes")) >= n:
                return
        time.sleep(1)
    raise AssertionError(f"{n} Ray node(s) did not come up")


def _cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, (args, out.returncode, out.stdout[-3000:], out.stderr[-3000:])
    return out


def _rows(lake: Lake, table: str) -> list[tuple[Any, ...]]:
    """Every row, values as JSON, media URIs relative to the lake's root."""
    t = lake.read(table)
    keep = [c for c in t.column_names if c not in VOLATILE]
    root = lake.uri.rstrip("/")
    return sorted(
        tuple(json.dumps(r[c], default=str, sort_keys=True).replace(root, "<lake>") for c in keep)
        for r in t.to_pylist()
    )


@pytest.mark.s3
def test_ingest_submitted_to_a_two_node_cluster_writes_what_a_local_run_writes(
    tmp_path: Path, s3_options: dict[str, str], s3_bucket: str
) -> None:
    raw_local = tmp_path / "raw"
    synthesize(raw_local, SynthConfig(vehicles=2, drives=2, minutes=0.4, seed=11, rare_rate=0.2, workers=1))
    raw = Location(f"s3://{s3_bucket}/raw", s3_options)
    raw.fs.put(str(raw_local) + "/", raw.path, recursive=True)
    lake_uri = f"s3://{s3_bucket}/lake/fleet"
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FLEETMINE_"))}
    env.update(s3_options)
    # A node's `python` is the one that has Ray and fleetmine (a job's entrypoint runs it).
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["COLUMNS"] = "250"  # rich tables at full width
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})

    with two_node_cluster(env, tmp_path) as address:
        # Without the cluster's token the Job Submission API refuses: the token is what we pass on.
        assert httpx.get(f"{address}/api/jobs/", timeout=30).status_code == 401
        t0 = time.monotonic()
        sub = _cli("ingest", raw.uri, "--lake", lake_uri, "--address", address, env=env)
        returned_in = time.monotonic() - t0
        run_id = sub.stdout.strip().splitlines()[-1]
        assert run_id.startswith("ingest-"), sub.stdout
        where = ("--lake", lake_uri, "--address", address)
        _cli("jobs", "status", run_id, "--wait", *where, env=env, timeout=600)
        status = json.loads(_cli("jobs", "status", run_id, *where, env=env).stdout)
        listed = _cli("jobs", "list", *where, env=env).stdout
        tasks = [t for t in _state(address, env, "tasks") if str(t.get("name", "")).endswith("_remote_batch")]
        nodes = {t["node_id"] for t in tasks if t.get("node_id")}
        ray_job = httpx.get(
            f"{address}/api/jobs/{run_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json()

    assert status["status"] == "succeeded", status
    assert status["counts"]["ok"] == 4 and status["counts"]["clips"] > 0, status["counts"]
    assert status["cluster_job_id"] == run_id and ray_job["status"] == "SUCCEEDED", ray_job
    assert run_id in listed and "succeeded" in listed
    assert len(nodes) == 2, f"ingest tasks ran on {len(nodes)} node(s): {tasks}"
    assert returned_in < 60, f"submission took {returned_in:.0f} s: it must return the run id at once"

    cluster = Lake(lake_uri, s3_options)
    local = Lake(str(tmp_path / "local-lake"))
    report = run_ingest(str(raw_local), Settings(lake=local.uri), runner=LOCAL)
    assert report.exit_code == 0 and len(report.ok) == 4
    for table in ("drives", "clips", "signals", "can_frames", "clip_frames"):
        assert _rows(cluster, table) == _rows(local, table), table
