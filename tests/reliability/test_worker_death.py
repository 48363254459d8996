"""Worker death on a real two-node loopback cluster (token auth, S3 lake on moto).

An ingest is submitted through the Job Submission API while the worker node's tasks
are held at ``FLEETMINE_FAULT=ingest.drive@...`` (set on that node only), so the
moment a drive task is running there is known; the worker node's raylet is then
SIGKILLed by its PID. Ray retries the lost tasks on the head: the run completes (or,
if it fails, a re-run resumes it), every drive is there once and every table holds
exactly what a local run of the same input writes. Then an embedding job runs on the
surviving head, held at ``embed.batch``; the worker process running its stage is
found through the state API and SIGKILLed: the retried task embeds every clip once,
with the vectors a local run computes.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.synth.fleet import SynthConfig
from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from storage.objectstore import Location
from tests.conftest import LOCAL, synthesized
from tests.jobs.cluster import Cluster, children, cli, rows, state, two_node_cluster
from tests.reliability.conftest import Figures

pytestmark = pytest.mark.long  # minutes of a core: run first (tests/conftest.py)
DATA = ("drives", "clips", "signals", "can_frames", "clip_frames")


def _wait_for(what: str, probe: Callable[[], Any], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _running_batches(nodes: Cluster, env: dict[str, str], node_id: str | None = None) -> list[dict[str, Any]]:
    return [
        t
        for t in state(nodes.address, env, "tasks")
        if str(t.get("name", "")).endswith("_remote_batch")
        and t.get("state") == "RUNNING"
        and (node_id is None or t.get("node_id") == node_id)
    ]


def _finish(run_id: str, where: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    cli("jobs", "status", run_id, "--wait", *where, env=env, timeout=600, check=False)
    return dict(json.loads(cli("jobs", "status", run_id, *where, env=env).stdout))


def _vectors(lake: Lake) -> list[tuple[str, list[float]]]:
    t = lake.read("embeddings", columns=["clip_id", "vector"])
    return sorted((r["clip_id"], [round(v, 5) for v in r["vector"]]) for r in t.to_pylist())


@pytest.mark.s3
def test_worker_node_and_worker_process_killed_mid_job(
    tmp_path: Path, s3_options: dict[str, str], s3_bucket: str, figures: Figures
) -> None:
    raw_local = tmp_path / "raw"
    synthesized(raw_local, SynthConfig(vehicles=2, drives=2, minutes=0.4, seed=11, rare_rate=0.2, workers=1))
    raw = Location(f"s3://{s3_bucket}/raw", s3_options)
    raw.fs.put(str(raw_local) + "/", raw.path, recursive=True)
    lake_uri = f"s3://{s3_bucket}/lake/fleet"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FLEETMINE_"))}
    env.update(s3_options)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)})
    env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    # Nodes: the head holds each embedding work item 8 s; the worker holds each drive 300 s,
    # so a drive task is surely running there when its raylet is killed.
    head_env = {**env, "FLEETMINE_FAULT": "embed.batch@8"}

    with two_node_cluster(head_env, tmp_path, worker_env={"FLEETMINE_FAULT": "ingest.drive@300"}) as nodes:
        where = ("--lake", lake_uri, "--address", nodes.address)
        (worker_node,) = [
            n["node_id"] for n in state(nodes.address, env, "nodes") if not n.get("is_head_node")
        ]
        t0 = time.monotonic()
        run_id = cli("ingest", raw.uri, *where, env=env).stdout.strip().splitlines()[-1]
        held = _wait_for("a drive task on the worker node", lambda: _running_batches(nodes, env, worker_node))
        (raylet,) = [pid for pid, cmd in children(nodes.worker.pid) if "/raylet" in cmd.split(" ")[0]]
        os.kill(raylet, signal.SIGKILL)
        killed_at = time.monotonic() - t0
        ingest = _finish(run_id, where, env)
        reruns = 0
        while ingest["status"] != "succeeded" and reruns < 1:  # failed cleanly: a re-run resumes it
            reruns += 1
            rerun = cli("ingest", raw.uri, *where, env=env).stdout.strip().splitlines()[-1]
            ingest = _finish(rerun, where, env)
        ingest_s = time.monotonic() - t0

        t1 = time.monotonic()
        embed_id = cli("embed", *where, env=env).stdout.strip().splitlines()[-1]
        (task,) = _wait_for("the embedding task", lambda: _running_batches(nodes, env))[:1]
        os.kill(int(task["worker_pid"]), signal.SIGKILL)
        embed = _finish(embed_id, where, env)
        embed_s = time.monotonic() - t1
        tries = {
            t["task_id"]: max(
                int(a.get("attempt_number", 0))
                for a in state(nodes.address, env, "tasks")
                if a.get("task_id") == t["task_id"]
            )
            + 1
            for t in (held[0], task)
        }

    cluster = Lake(lake_uri, s3_options)
    local = Lake(str(tmp_path / "local-lake"))
    assert run_ingest(str(raw_local), Settings(lake=local.uri), runner=LOCAL).exit_code == 0
    assert not run_embed(Settings(lake=local.uri), runner=LOCAL).failed
    want = {t: rows(local, t) for t in DATA}
    got = {t: rows(cluster, t) for t in DATA}
    drive_ids = cluster.read("drives", columns=["drive_id"]).column(0).to_pylist()
    figures(
        group="worker death",
        fault="ingest on a two-node cluster: the worker node's raylet SIGKILLed while a drive task "
        "ran there (held at ingest.drive)",
        cases=1,
        rows_lost=sum(max(0, len(want[t]) - len(got[t])) for t in DATA),
        rows_duplicated=sum(max(0, len(got[t]) - len(want[t])) for t in DATA),
        outcome=f"run {ingest['status']}" + (f" after {reruns} re-run" if reruns else " (tasks retried)"),
        task_tries=tries[held[0]["task_id"]],
        killed_after_s=round(killed_at, 1),
        seconds=round(ingest_s, 1),
        rows={t: len(got[t]) for t in DATA},
    )
    local_vectors, cluster_vectors = _vectors(local), _vectors(cluster)
    figures(
        group="worker death",
        fault="embedding job on the cluster: the worker process running its stage SIGKILLed "
        "(found through the state API, held at embed.batch)",
        cases=1,
        rows_lost=max(0, len(local_vectors) - len(cluster_vectors)),
        rows_duplicated=max(0, len(cluster_vectors) - len(local_vectors)),
        outcome=f"run {embed['status']}, {embed['counts'].get('embedded')} clips embedded",
        task_tries=tries[task["task_id"]],
        seconds=round(embed_s, 1),
    )
    assert all(n >= 2 for n in tries.values()), f"the killed tasks were not retried: {tries}"
    assert ingest["status"] == "succeeded", ingest
    assert len(drive_ids) == len(set(drive_ids)) == 4
    for t in DATA:
        assert got[t] == want[t], t
    assert embed["status"] == "succeeded", embed
    assert len({c for c, _ in cluster_vectors}) == len(cluster_vectors) == len(got["clips"])
    assert cluster_vectors == local_vectors
