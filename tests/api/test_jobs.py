"""Submitted jobs outlive the API process that took them; any server reads their state."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from api.auth import create_token
from storage import Lake, Settings
from tests.api.conftest import serve
from tests.ingest.conftest import make_drive
from tests.ingest.videos import Spec, encode


def test_a_job_survives_the_api_that_submitted_it(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for d in ("d1", "d2"):
        make_drive(
            raw,
            "car",
            d,
            {"cameras/front.mp4": encode(Spec(seconds=3))},
            {"start_time": "2024-06-14T17:00:00Z"},
        )
    # A job over the API reads raw trees only under the raw roots (default: the lake alone).
    settings = Settings(lake=str(tmp_path / "lake"), raw_roots=(str(raw),))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    op = {"Authorization": f"Bearer {create_token(lake, 'op', 'operator')}"}
    with serve(settings) as base:
        bad = httpx.post(f"{base}/v1/jobs", json={"kind": "ingest", "params": {"rae": "x"}}, headers=op)
        assert bad.status_code == 422 and "raw" in bad.json()["error"]["message"]
        r = httpx.post(f"{base}/v1/jobs", json={"kind": "ingest", "params": {"raw": str(raw)}}, headers=op)
        assert r.status_code == 202 and r.json()["status"] == "submitted"
        run_id = r.json()["id"]
    # That server is gone; the job goes on. A new one reads its state from the lake.
    with serve(settings) as base:
        for _ in range(900):
            state = httpx.get(f"{base}/v1/jobs/{run_id}", headers=op).json()
            if state["status"] not in ("submitted", "running"):
                break
            time.sleep(0.2)
        listed = httpx.get(f"{base}/v1/jobs", headers=op).json()
    assert state["status"] == "succeeded", state
    assert state["result"]["ok"] == 2 and state["result"]["clips"] == 2
    assert run_id in [j["id"] for j in listed["data"]]
    assert lake.read("drives").num_rows == 2


def test_a_job_killed_before_it_records_its_end_is_settled_failed(tmp_path: Path) -> None:
    """SIGKILL leaves its row 'running'; reading it checks the process and says it died."""
    import os
    import signal

    from jobs.requests import parse_job
    from jobs.submit import get_run, submit

    raw = tmp_path / "raw"
    for d in ("d1", "d2", "d3"):
        make_drive(raw, "car", d, {"cameras/front.mp4": encode(Spec(seconds=3))}, {})
    settings = Settings(lake=str(tmp_path / "lake"), raw_roots=(str(raw),))
    lake = Lake.from_settings(settings)
    run_id = submit(parse_job("ingest", {"raw": str(raw)}), settings)
    row = get_run(lake, run_id)
    pid = int(str(row["cluster_job_id"])[4:].partition("@")[0])
    for _ in range(600):  # until it has started work (its row says running)
        if get_run(lake, run_id)["status"] == "running":
            break
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)  # the job we started, by its PID
    for _ in range(100):
        state = get_run(lake, run_id)
        if state["status"] != "running":
            break
        time.sleep(0.1)
    assert state["status"] == "failed", state
    assert f"process {pid}" in state["errors"] and state["finished_at"] is not None
    assert get_run(lake, run_id)["status"] == "failed"  # settled once, in the lake
