"""Fixtures of the reliability suite: a raw tree of recorded drives, a clean run's
figures to compare against, a driver in a subprocess, a mined lake served on uvicorn,
and the figures each test records.

Each test records what it injected and what it measured with ``figures(...)``; with
``FLEETMINE_RELIABILITY_OUT=F.jsonl`` the records are appended to ``F.jsonl``, which
``python -m tests.reliability.report`` turns into ``docs/reliability.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from api.auth import create_token
from ingest.drive import DATA_TABLES
from ingest.synth.fleet import SynthConfig
from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from jobs.mine_job import run_mine
from storage import Lake, Settings
from tests.api.conftest import serve
from tests.conftest import LOCAL, SHARED_DATA, synthesized
from tests.ingest.conftest import DASHCAM, RAV4, make_drive

REPO = Path(__file__).resolve().parents[2]
TABLES = ("drives", *DATA_TABLES)
Figures = Callable[..., None]


def write_raw(raw: Path, tag: str = "") -> Path:
    """The dashcam video as one drive, the RAV4 CAN log as another (tests/ingest's real_raw);
    ``tag`` is added to both vehicle ids, so each tag's drives are new to a lake."""
    if not (SHARED_DATA / "can" / "rav4_drive_seg40_part1.log").exists():
        pytest.skip(f"recorded data not found at {SHARED_DATA} (it lives in ../shared/data)")
    make_drive(
        raw,
        DASHCAM[0] + tag,
        DASHCAM[1],
        {"cameras/front.mp4": SHARED_DATA / "video" / "solidWhiteRight.mp4"},
        {"start_time": "2016-08-28T21:16:08Z"},
    )
    make_drive(
        raw,
        RAV4[0] + tag,
        RAV4[1],
        {"can/pt.log": SHARED_DATA / "can" / "rav4_drive_seg40_part1.log"},
        {"platform": "toyota_rav4_2017"},
    )
    return raw


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return write_raw(tmp_path / "raw")


def mined_lake(root: Path, **overrides: Any) -> tuple[Settings, Lake, dict[str, str]]:
    """A synthetic fleet (one vehicle, two one-minute drives) ingested, embedded and mined
    into ``root/lake``, and a token of each role."""
    synthesized(root / "raw", SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2))
    settings = Settings(lake=str(root / "lake"), **overrides)
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    run_embed(settings, runner=LOCAL)
    run_mine(settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    tokens = {role: create_token(lake, f"{role}-1", role) for role in ("reader", "curator", "operator")}
    return settings, lake, tokens


@dataclass(frozen=True)
class Served:
    base: str
    settings: Settings
    lake: Lake
    tokens: dict[str, str]


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A mined lake served by uvicorn on a loopback port (tests/api's ``serve``)."""
    settings, lake, tokens = mined_lake(tmp_path_factory.mktemp("served"))
    with serve(settings) as base:
        yield Served(base, settings, lake, tokens)


def row_counts(lake: Lake) -> dict[str, int]:
    """Rows of the ingest tables, and how many distinct keys (a duplicate shows as a gap)."""
    out: dict[str, int] = {}
    for t in TABLES:
        data = lake.read(t)
        out[t] = data.num_rows
    out["distinct_drives"] = len(set(lake.read("drives", columns=["drive_id"]).column(0).to_pylist()))
    out["distinct_clips"] = len(set(lake.read("clips", columns=["clip_id"]).column(0).to_pylist()))
    return out


@pytest.fixture(scope="session")
def clean_counts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """Row counts of one uninterrupted ingest of the same raw tree."""
    base = tmp_path_factory.mktemp("clean")
    raw = write_raw(base / "raw")
    out = driver(raw, str(base / "lake"))
    assert out.returncode == 0, out.stderr[-3000:]
    return row_counts(Lake(str(base / "lake")))


def _driver_env(fault: str | None, env: dict[str, str] | None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "FLEETMINE_FAULT"}
    e.update(env or {})
    if fault:
        e["FLEETMINE_FAULT"] = fault
    return e


def start_driver(
    raw: Path | str, lake: str, *, fault: str | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``tests/reliability/driver.py`` (an ingest job's driver) started in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.driver", str(raw), lake],
        cwd=REPO,
        env=_driver_env(fault, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def driver(
    raw: Path | str,
    lake: str,
    *,
    fault: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """The driver, run to its end."""
    return finish(start_driver(raw, lake, fault=fault, env=env), timeout)


def report_of(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """``figures(fault=..., cases=..., lost=..., duplicated=..., **more)`` for the report."""
    records: list[dict[str, Any]] = []
    # Read now: a test may clear FLEETMINE_* from its environment (jobs it submits inherit them).
    out = os.environ.get("FLEETMINE_RELIABILITY_OUT")

    def record(**fields: Any) -> None:
        records.append({"test": request.node.nodeid, **fields})

    yield record
    if out and records:
        with open(out, "a") as f:
            for r in records:
                f.write(json.dumps(r, default=str) + "\n")
