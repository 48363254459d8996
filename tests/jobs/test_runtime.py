"""Without an address a command gets its own Ray, never a cluster someone started on the host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fleetmine.bench.cluster_scale import stop_nodes
from tests.conftest import free_port

pytestmark = pytest.mark.long  # minutes of a core: run first (tests/conftest.py)
RAY = str(Path(sys.executable).parent / "ray")


def test_no_address_never_joins_another_cluster_on_the_host() -> None:
    port = free_port()
    # Ray's temporary folder is RAY_TMPDIR's `ray/` for the head and the probe alike: the
    # head registers there, not in the /tmp/ray the run's other clusters share (a short
    # path: Ray's sockets live under it, and a socket path has at most 107 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="fm-rt-", dir="/tmp"))
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": str(tmp)}
    env.pop("RAY_ADDRESS")
    head: subprocess.Popen[bytes] | None = None
    try:
        head = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
             "--include-dashboard=false", "--node-ip-address=127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        # It registers itself as the host's latest cluster, where a bare ray.init() looks.
        marker = tmp / "ray" / "ray_current_cluster"
        deadline = time.time() + 60
        while time.time() < deadline and not (marker.exists() and f":{port}" in marker.read_text()):
            time.sleep(0.5)
        assert marker.exists() and f":{port}" in marker.read_text()
        # ray.init() without an address would join that cluster ("the latest cluster on this host").
        probe = (
            "from jobs.runtime import init_ray; r = init_ray(None, num_cpus=1); "
            "print(r.get_runtime_context().gcs_address); r.shutdown()"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env, check=True
        )
        gcs = out.stdout.strip().splitlines()[-1]
        assert gcs and not gcs.endswith(f":{port}"), gcs
        stop_nodes([head])
        assert not _running_in(tmp)  # nothing of the head outlives its stop (its GCS included)
    finally:
        if head is not None:
            stop_nodes([head])  # the head we started, by its PID (its process group)
        shutil.rmtree(tmp, ignore_errors=True)


def _running_in(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` (a Ray session under it)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(folder) in cmd and state != "Z":
            found.append(cmd)
    return found
