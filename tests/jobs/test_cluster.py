"""A real two-node Ray cluster on loopback, token-authenticated, over an S3 lake on moto.

Head (``ray start --head --block``, 1 CPU, dashboard on 127.0.0.1) and one worker node
(``ray start --block --address``, 1 CPU), both with ``RAY_AUTH_MODE=token`` as Ray 2.60
clusters run by default. ``fleetmine ingest --address http://127.0.0.1:DASHBOARD``
submits through the Job Submission API and returns a run id at once; ``fleetmine jobs``
follows it from the lake's ``runs`` table; its tasks ran on both nodes and the tables
hold exactly what a local run of the same input writes. Both nodes are stopped by PID.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import httpx
import pytest

from api.auth import create_token
from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.mine_job import run_mine
from storage import Lake, Settings
from storage.objectstore import Location
from tests.api.test_held_serving import assert_same_answer, bodies_for, search_similar
from tests.conftest import LOCAL, serve_process, synthesized
from tests.jobs.cluster import cli, rows, state, two_node_cluster
from tests.mining.test_held import assert_mined_alike

pytestmark = pytest.mark.long  # minutes of a core: run first (tests/conftest.py)


def alive_holders(address: str, env: dict[str, str]) -> list[dict[str, object]]:
    """The cluster's live ``ShardHolder`` actors (Ray's state API)."""
    actors = state(address, env, "actors")
    return [a for a in actors if a.get("class_name") == "ShardHolder" and a.get("state") == "ALIVE"]


@pytest.mark.s3
def test_ingest_submitted_to_a_two_node_cluster_writes_what_a_local_run_writes(
    tmp_path: Path, s3_options: dict[str, str], s3_bucket: str
) -> None:
    raw_local = tmp_path / "raw"
    synthesized(raw_local, SynthConfig(vehicles=2, drives=2, minutes=0.4, seed=11, rare_rate=0.2, workers=1))
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

    with two_node_cluster(env, tmp_path) as running:
        address, gcs = running.address, running.gcs
        # Without the cluster's token the Job Submission API refuses: the token is what we pass on.
        assert httpx.get(f"{address}/api/jobs/", timeout=30).status_code == 401
        t0 = time.monotonic()
        sub = cli("ingest", raw.uri, "--lake", lake_uri, "--address", address, env=env)
        returned_in = time.monotonic() - t0
        run_id = sub.stdout.strip().splitlines()[-1]
        assert run_id.startswith("ingest-"), sub.stdout
        where = ("--lake", lake_uri, "--address", address)
        cli("jobs", "status", run_id, "--wait", *where, env=env, timeout=600)
        status = json.loads(cli("jobs", "status", run_id, *where, env=env).stdout)
        listed = cli("jobs", "list", *where, env=env).stdout
        tasks = [t for t in state(address, env, "tasks") if str(t.get("name", "")).endswith("_remote_batch")]
        nodes = {t["node_id"] for t in tasks if t.get("node_id")}
        ray_job = httpx.get(
            f"{address}/api/jobs/{run_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ).json()
        # The index as shards by day, each a task spread over the nodes (fleetmine index --shard-size).
        cli("embed", *where, "--wait", env=env, timeout=600)
        cli("index", "--shard-size", "1", *where, "--wait", env=env, timeout=600)
        # Mine on the cluster: actors hold the shards, the k-NN fans out over them; the same
        # lake and shards copied here are mined in one process to compare.
        copy = tmp_path / "mined-here"
        Location(lake_uri, s3_options).fs.get(
            Location(lake_uri, s3_options).path + "/", str(copy), recursive=True
        )
        cli("mine", *where, "--wait", env=env, timeout=600)
        cluster_nodes = {n["node_id"] for n in state(address, env, "nodes")}
        # Serve on the cluster: the server joins it and actors there hold the shards; it answers
        # what a server without a cluster answers over the same lake.
        token_r = create_token(Lake(lake_uri, s3_options), "reader-1", "reader")
        # A second replica finds the holders the first placed (named by the build): one copy
        # of the index on the cluster; the first ending takes them with it, and the second
        # answers 503 (never a short top-k) until it has placed them again.
        with (
            serve_process(lake_uri, tmp_path / "plain.log", env=env) as (plain, _),
            serve_process(lake_uri, tmp_path / "held.log", env=env, args=("--address", gcs)) as (
                held,
                first,
            ),
            serve_process(lake_uri, tmp_path / "held2.log", env=env, args=("--address", gcs)) as (
                held2,
                _,
            ),
        ):
            bodies = bodies_for(Lake(lake_uri, s3_options))
            for body in bodies:
                whole = search_similar(plain, token_r, body)
                for base in (held, held2):
                    assert_same_answer(whole, search_similar(base, token_r, body))
            actors = alive_holders(address, env)
            holder_nodes = {a["node_id"] for a in actors}
            first.terminate()
            first.wait(30)
            gone_by = time.monotonic() + 60  # Ray ends an owner's actors a moment after it exits
            while {a["actor_id"] for a in alive_holders(address, env)} & {a["actor_id"] for a in actors}:
                assert time.monotonic() < gone_by, "the first replica's holders outlived it"
                time.sleep(1)
            seen = [search_similar(held2, token_r, bodies[0]).status_code]
            deadline = time.monotonic() + 180
            while seen[-1] == 503 and time.monotonic() < deadline:
                time.sleep(1)
                seen.append(search_similar(held2, token_r, bodies[0]).status_code)
            for body in bodies:
                assert_same_answer(search_similar(plain, token_r, body), search_similar(held2, token_r, body))
            settle_by = time.monotonic() + 30  # the state API reports an actor a moment after it lives
            while (
                len(replaced := alive_holders(address, env)) != len(actors) and time.monotonic() < settle_by
            ):
                time.sleep(1)

    assert status["status"] == "succeeded", status
    assert status["counts"]["ok"] == 4 and status["counts"]["clips"] > 0, status["counts"]
    assert status["cluster_job_id"] == run_id and ray_job["status"] == "SUCCEEDED", ray_job
    assert run_id in listed and "succeeded" in listed
    assert len(nodes) == 2, f"ingest tasks ran on {len(nodes)} node(s): {tasks}"
    assert returned_in < 60, f"submission took {returned_in:.0f} s: it must return the run id at once"

    cluster = Lake(lake_uri, s3_options)
    (indexed,) = [
        r
        for r in cluster.read("runs").to_pylist()
        if r["kind"] == "index" and r["run_id"].startswith("index-builtin")
    ]
    shards = json.loads(indexed["counts"])["shards"]
    assert indexed["status"] == "succeeded" and len(shards) >= 2, indexed
    assert {s["node"] for s in shards} == cluster_nodes and len(cluster_nodes) == 2, (shards, cluster_nodes)
    assert sum(s["n"] for s in shards) == status["counts"]["clips"]
    (mined,) = [r for r in cluster.read("runs").to_pylist() if r["run_id"].startswith("mine-builtin")]
    holders = json.loads(mined["counts"])["holders"]
    assert mined["status"] == "succeeded" and {h["node"] for h in holders} == cluster_nodes, mined
    assert sorted(s for h in holders for s in h["shards"]) == list(range(len(shards)))
    assert holder_nodes == cluster_nodes, actors  # the server holds none of the shards itself
    assert len(actors) == min(len(shards), 2), actors  # one set for both replicas, not one each
    assert set(seen) <= {200, 503} and seen[-1] == 200, seen  # 503 while re-placed, never a short answer
    assert len(replaced) == len(actors) and {a["node_id"] for a in replaced} == cluster_nodes, replaced
    assert not {a["actor_id"] for a in replaced} & {a["actor_id"] for a in actors}  # placed anew
    run_mine(Settings(lake=str(copy)), runner=LOCAL)
    assert_mined_alike(Lake(str(copy)), cluster)
    local = Lake(str(tmp_path / "local-lake"))
    report = run_ingest(str(raw_local), Settings(lake=local.uri), runner=LOCAL)
    assert report.exit_code == 0 and len(report.ok) == 4
    for table in ("drives", "clips", "signals", "can_frames", "clip_frames"):
        assert rows(cluster, table) == rows(local, table), table
