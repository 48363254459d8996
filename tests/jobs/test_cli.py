"""The CLI as a user runs it: the installed ``fleetmine`` console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from storage import Lake
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


def test_demo_runs_every_stage_and_prints_the_urls(tmp_path: Path) -> None:
    args = (
        "demo",
        "--lake",
        str(tmp_path / "lake"),
        "--vehicles",
        "1",
        "--drives",
        "1",
        "--minutes",
        "0.5",
        "--no-serve",
    )
    out = run(*args)
    assert out.returncode == 0, out.stderr
    assert "Token authentication" not in out.stdout + out.stderr  # Ray's warning, on a private Ray
    assert (tmp_path / "fleet-raw" / "labels.json").exists()
    assert "1 ok, 0 failed" in out.stdout and "manifest:  http://127.0.0.1:8000/v1/datasets/" in out.stdout
    assert "web UI:    http://127.0.0.1:8000/ui/login (sign in" in out.stdout
    assert "token:     fm_" in out.stdout
    assert "clips embedded" in out.stdout and "clips scored" in out.stdout and "recall@k" in out.stdout
    assert "spans in the new drives" in out.stdout and "/v1/clips?scenario=sudden_stop" in out.stdout
    assert "registered baseline@1" in out.stdout and "baseline@1 against the driver" in out.stdout
    assert "words:     search in words" in out.stdout and "Asking in words" in out.stdout
    clips = Lake(str(tmp_path / "lake")).read("clips", columns=["clip_id"])
    assert clips.num_rows == 3
    again = run(*args)
    assert again.returncode == 0 and "reusing the fleet" in again.stdout and "nothing new" in again.stdout
