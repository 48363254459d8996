"""Every job the API starts goes through ``jobs.submit.submit``: a dataset's export too
(a run id, the local job limit, a log, its ``runs`` row), and a run followed inside a
request's read view is seen as it changes."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from jobs.runs import RunRecord, run_row
from jobs.submit import get_run, wait_run
from storage import Lake, Settings
from storage.views import read_view


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Lake]:
    settings = Settings(lake=str(tmp_path_factory.mktemp("entry") / "lake"))
    return TestClient(create_app(settings, auth=False)), Lake.from_settings(settings)


def _runs(lake: Lake, kind: str) -> list[dict[str, object]]:
    return [r for r in lake.read("runs").to_pylist() if r["kind"] == kind]


def test_a_dataset_export_in_the_request_is_a_submitted_job(site: tuple[TestClient, Lake]) -> None:
    client, lake = site
    r = client.post("/v1/datasets", json={"name": "inline", "shard_mb": 1})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "exported" and r.json()["manifest_url"]
    (run,) = _runs(lake, "export")
    assert run["status"] == "succeeded" and str(run["cluster_job_id"]).startswith("pid:")
    assert run["log_uri"] and json.loads(str(run["params"]))["name"] == "inline"


def test_an_export_past_the_wait_answers_202_with_its_job(
    site: tuple[TestClient, Lake], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, lake = site
    monkeypatch.setattr("api.routes.datasets.INLINE_WAIT_S", 0.0)
    r = client.post("/v1/datasets", json={"name": "slow", "shard_mb": 1})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["name"] == "slow" and job["status"] in ("submitted", "running")
    assert r.headers["location"] == job["job_url"] and job["job_url"].endswith(f"/v1/jobs/{job['job_id']}")
    assert wait_run(lake, job["job_id"], timeout_s=120)["status"] == "succeeded"
    assert client.get("/v1/datasets/slow/versions/1").json()["state"] == "exported"


def test_a_run_is_followed_as_it_changes_inside_a_read_view(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["runs"])
    rec = RunRecord("export-20260101000000-abcdef", "export", {"name": "n", "version": 1})
    lake.upsert("runs", run_row(rec, "running"))
    with read_view():
        assert get_run(lake, rec.run_id)["status"] == "running"
        # The job records its end from elsewhere (a thread starts outside this view).
        job = threading.Thread(target=lambda: Lake(lake.uri).upsert("runs", run_row(rec, "succeeded")))
        job.start()
        job.join()
        assert get_run(lake, rec.run_id)["status"] == "succeeded"


def test_a_job_that_ends_before_its_submitter_records_it_keeps_its_own_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submitter records ``submitted`` after starting the job; a job that fails at once
    (an export of a lake with no datasets) has by then recorded ``running`` and ``failed``.
    Seen in the suite under load: ``submitted`` overwrote ``failed``, and the run then
    read "ended before recording a result". Here the job is let finish before the
    submitter goes on, every time."""
    import subprocess

    from jobs import submit as submit_mod
    from jobs.requests import parse_job

    real = subprocess.Popen

    def finished_first(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc = real(*args, **kwargs)  # type: ignore[call-overload]
        proc.wait(120)
        return proc  # type: ignore[no-any-return]

    monkeypatch.setattr(submit_mod.subprocess, "Popen", finished_first)
    settings = Settings(lake=str(tmp_path / "lake"))
    run_id = submit_mod.submit(parse_job("export", {"name": "none", "version": 1}), settings)
    run = get_run(Lake.from_settings(settings), run_id)
    assert run["status"] == "failed", run
    assert "TableNotFoundError" in str(run["errors"]) and "ended before" not in str(run["errors"])
    assert (
        str(run["cluster_job_id"]).startswith("pid:")
        and run["log_uri"]
        and Path(str(run["log_uri"])).exists()
    )
