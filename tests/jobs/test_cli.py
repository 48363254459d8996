"""The CLI as a user runs it: the installed ``fleetmine`` console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from storage import Lake
from tests.conftest import free_port, stop_process
from tests.jobs.cluster import children
from tests.storage.helpers import clip_rows

# The console script installed beside this interpreter (a venv need not be on PATH).
FLEETMINE = str(Path(sys.executable).parent / "fleetmine")


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # as a user's shell has it: no RAY_AUTH_MODE that a Ray started by an earlier test set
    base = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    return subprocess.run(
        [FLEETMINE, *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=cwd,
        timeout=600,
    )


def test_help_lists_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("lake", "bench", "demo"):
        assert cmd in out.stdout


def test_lake_info_on_empty_and_filled_lake(tmp_path: Path) -> None:
    uri = str(tmp_path / "lake")
    out = run("lake", "info", "--lake", uri)
    assert out.returncode == 0 and "no tables yet" in out.stdout
    lake = Lake(uri)
    lake.create_tables()
    lake.append("clips", clip_rows(7))
    out = run("lake", "info", "--lake", uri)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if " clips " in ln)
    assert "│       1 │    7 │" in line


def test_lake_defaults_to_env_then_cwd(tmp_path: Path) -> None:
    Lake(str(tmp_path / "fleet-lake")).create_tables(["clips"])
    env = {k: v for k, v in os.environ.items() if k != "FLEETMINE_LAKE"}
    out = subprocess.run([FLEETMINE, "lake", "info"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "fleet-lake") in out.stdout
    out = run("lake", "info", env={"FLEETMINE_LAKE": str(tmp_path / "other")})
    assert "no tables yet" in out.stdout and str(tmp_path / "other") in out.stdout


def test_maintain_refuses_while_lease_held(tmp_path: Path) -> None:
    uri = str(tmp_path / "lake")
    lake = Lake(uri)
    lake.create_tables()
    for i in range(3):
        lake.append("clips", clip_rows(2, start=2 * i, days=1))
    with lake.lease("maintenance", "someone-else", ttl_s=120):
        out = run("lake", "maintain", "--lake", uri)
        assert out.returncode == 2
        assert "held by someone-else" in out.stderr
    out = run("lake", "maintain", "--lake", uri)
    assert out.returncode == 0, out.stderr
    assert len(lake.delta("clips").file_uris()) == 1


def test_bench_quick_prints_delta_vs_parquet(tmp_path: Path) -> None:
    out = run("bench", "--quick", "--only", "delta_write", "--json", str(tmp_path / "b.json"))
    assert out.returncode == 0, out.stderr
    assert "delta_write" in out.stdout and "pyarrow.parquet" in out.stdout
    (row,) = json.loads((tmp_path / "b.json").read_text())
    assert row["baseline"] > 0 and row["measured"] > 0
    assert abs(row["ratio"] - row["measured"] / row["baseline"]) < 1e-9


def test_demo_runs_every_stage_prints_the_urls_and_serves_without_the_stages_ray(tmp_path: Path) -> None:
    """The demo as a newcomer runs it: every stage, then the server, which runs without the
    private Ray the stages started (left up, it held ~500 MB idle and made a SIGTERM take
    11 s); stopped by its PID."""
    args = ["demo", "--lake", str(tmp_path / "lake"), "--vehicles", "1", "--drives", "1", "--minutes", "0.5"]
    port = free_port()
    log = tmp_path / "demo.out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [FLEETMINE, *args, "--port", str(port)], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 600
        while "Ctrl-C stops it" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=30).status_code == 200
        programs = [cmd.split(" ")[0].rsplit("/", 1)[-1] for _, cmd in children(proc.pid)]
        kept = [name for name in programs if name in ("gcs_server", "raylet")]
        assert not kept, f"the stages' Ray still runs beside the server: {kept}"
    finally:
        stop_process(proc, grace_s=60)
    out = log.read_text()
    assert "Token authentication" not in out  # Ray's warning, on a private Ray
    assert (tmp_path / "fleet-raw" / "labels.json").exists()
    base = f"http://127.0.0.1:{port}"
    assert "1 ok, 0 failed" in out and f"manifest:  {base}/v1/datasets/" in out
    assert f"web UI:    {base}/ui/login (sign in" in out
    assert "token:     fm_" in out
    assert "clips embedded" in out and "clips scored" in out and "recall@k" in out
    assert "spans in the new drives" in out and "/v1/clips?scenario=sudden_stop" in out
    assert "registered baseline@1" in out and "baseline@1 against the driver" in out
    assert "words:     search in words" in out and "Asking in words" in out
    clips = Lake(str(tmp_path / "lake")).read("clips", columns=["clip_id"])
    assert clips.num_rows == 3
    again = run(*args, "--no-serve")
    assert again.returncode == 0 and "reusing the fleet" in again.stdout and "nothing new" in again.stdout
