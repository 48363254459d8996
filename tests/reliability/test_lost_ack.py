"""Lost acknowledgement on S3: a commit lands, the client sees the connection drop.

An ingest into an ``s3://`` lake (moto) runs through :mod:`tests.reliability.proxy`,
which lets the first commit PUT of one table's ``_delta_log`` reach moto and then
closes the connection without the answer. The commit must be recognised as landed
(by its ``txn``), never re-applied: the job succeeds with exactly a clean run's rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage import Lake
from tests.reliability.conftest import REPO, TABLES, Figures, driver, report_of, row_counts
from tests.reliability.proxy import first_commit_of, lost_ack_proxy


@pytest.mark.s3
@pytest.mark.parametrize("table", ["can_frames", "clips", "drives", "runs"])
def test_a_commit_whose_answer_is_lost_lands_once_and_the_job_succeeds(
    raw: Path,
    s3_options: dict[str, str],
    s3_bucket: str,
    clean_counts: dict[str, int],
    table: str,
    figures: Figures,
) -> None:
    uri = f"s3://{s3_bucket}/lake"
    with lost_ack_proxy(s3_options["AWS_ENDPOINT_URL"], first_commit_of(table)) as (endpoint, proxy):
        out = driver(raw, uri, env={**s3_options, "AWS_ENDPOINT_URL": endpoint})
        rep = report_of(out)
    assert len(proxy.dropped) == 1, f"no commit of {table} seen in {proxy.forwarded} requests"
    assert len(rep["ok"]) == 2 and not rep["failed"], rep

    lake = Lake(uri, s3_options)
    counts = row_counts(lake)
    assert counts == clean_counts
    assert counts["distinct_drives"] == counts["drives"] and counts["distinct_clips"] == counts["clips"]
    (run,) = lake.read("runs", where="app_id = 'ingest'").to_pylist()
    assert run["status"] == "succeeded"
    if table in TABLES:
        commits = [h for h in lake.delta(table).history() if h.get("fleetmine.app_id") == rep["run_id"]]
        assert len(commits) == 1, commits
    figures(
        group="lost acknowledgement (S3)",
        fault=f"first commit PUT of {table}/_delta_log lands, its response dropped",
        cases=1,
        requests=proxy.forwarded,
        rows_lost=sum(max(0, clean_counts[t] - counts[t]) for t in TABLES),
        rows_duplicated=sum(max(0, counts[t] - clean_counts[t]) for t in TABLES),
        outcome="job succeeded; the commit counted once"
        + ("; recognised as landed by its txn" if "landed despite" in out.stderr else ""),
    )


APPEND = """
from storage import Lake
from tests.storage.helpers import clip_rows
lake = Lake("s3://%s/lake")
lake.create_tables(["clips"])
print(lake.append("clips", clip_rows(100)))
"""


@pytest.mark.s3
def test_an_append_without_txn_whose_answer_is_lost_is_not_applied_twice(
    s3_options: dict[str, str], s3_bucket: str, figures: Figures
) -> None:
    """No ``txn`` to recognise it (a lease grant, a dataset's members): the retried commit
    re-adds the same file paths, which a Delta snapshot counts once."""
    with lost_ack_proxy(s3_options["AWS_ENDPOINT_URL"], first_commit_of("clips")) as (endpoint, proxy):
        out = subprocess.run(
            [sys.executable, "-c", APPEND % s3_bucket],
            cwd=REPO,
            env={**os.environ, **s3_options, "AWS_ENDPOINT_URL": endpoint},
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(proxy.dropped) == 1
    clips = Lake(f"s3://{s3_bucket}/lake", s3_options).read("clips", columns=["clip_id"])
    figures(
        group="lost acknowledgement (S3)",
        fault="first commit PUT of a plain append (no txn) lands, its response dropped",
        cases=1,
        rows_lost=max(0, 100 - clips.num_rows),
        rows_duplicated=max(0, clips.num_rows - 100),
        outcome="append succeeded; rows counted once",
    )
    assert clips.num_rows == 100 == len(set(clips.column(0).to_pylist()))
