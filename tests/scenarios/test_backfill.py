"""A scenario added after ingest, back-filled over the lake on a real two-node Ray cluster
on loopback (token auth, both nodes stopped by PID: :mod:`tests.jobs.cluster`) and
locally: the same ``scenario_hits`` and ``scenario_scans``; a re-run adds nothing.

Slow (a cluster's start and stop take half a minute of two cores), hence ``long``, one
cluster, and its nodes stopped with SIGKILL after a short grace: a head given SIGTERM
alone takes ~30 s more to exit, its GCS waiting out a grace period.
``tests/scenarios/test_lake_run.py`` runs the stage as tasks of a local Ray; this is the
cluster's side: ``fleetmine scenario run --address`` from its own process, its tasks on
the cluster's nodes, reading a lake both can reach.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.scenario_job import run_scenarios
from mining.scenarios import add_scenario
from storage import Lake, Settings
from tests.conftest import LOCAL, synthesized
from tests.jobs.cluster import cli, state, stop_nodes, two_node_cluster

pytestmark = pytest.mark.long  # a cluster start: run first (tests/conftest.py)

LATE = "speed_mps < 14 for >= 1s then speed_mps >= 14 within 2s"


def _table(lake: Lake, name: str, drop: tuple[str, ...]) -> list[tuple[Any, ...]]:
    rows = lake.read(name).to_pylist()
    return sorted(tuple((k, v) for k, v in r.items() if k not in drop) for r in rows)  # type: ignore[misc]


def test_a_scenario_added_after_ingest_back_fills_on_a_cluster_as_locally(tmp_path: Path) -> None:
    raw = synthesized(
        tmp_path / "raw", SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2)
    )
    local = Settings(lake=str(tmp_path / "local"))
    assert run_ingest(str(raw), local, runner=LOCAL).exit_code == 0
    shutil.copytree(tmp_path / "local", tmp_path / "cluster")
    cluster = Settings(lake=str(tmp_path / "cluster"))
    for s in (local, cluster):  # added after ingest, to each lake
        assert add_scenario(Lake.from_settings(s), "late", LATE)["version"] == 1
    here = run_scenarios(local, ["late"], runner=LOCAL)
    assert here.drives == 3 and here.hits > 0 and not here.failed

    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FLEETMINE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["COLUMNS"] = "250"  # rich output at full width, one line
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"})
    with two_node_cluster(env, tmp_path) as nodes:
        where = ("--lake", cluster.lake, "--address", nodes.gcs)
        first = cli("scenario", "run", "late", *where, env=env).stdout
        again = cli("scenario", "run", "late", *where, env=env).stdout
        tasks = [
            t for t in state(nodes.address, env, "tasks") if str(t.get("name", "")).endswith("_remote_batch")
        ]
        stop_nodes([nodes.worker, nodes.head])  # two_node_cluster's own stop then finds them gone

    assert f"3 drives run, {here.hits} spans found, 0 drives already run, 0 failed" in first, first
    assert "0 drives run, 0 spans found, 3 drives already run" in again, again
    assert tasks and all(t["state"] == "FINISHED" for t in tasks), (
        tasks
    )  # the stage ran as the cluster's tasks
    on = Lake.from_settings(cluster)
    at_home = Lake.from_settings(local)
    assert _table(on, "scenario_hits", ("run_id",)) == _table(at_home, "scenario_hits", ("run_id",))
    volatile = ("run_id", "scanned_at")
    assert _table(on, "scenario_scans", volatile) == _table(at_home, "scenario_scans", volatile)
    assert on.read("scenario_hits").num_rows == here.hits
