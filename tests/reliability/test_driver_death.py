"""The driver of an ingest killed (SIGKILL, at a named fault point) around its commits.

Before a commit: the tables are as they were, the next run resumes the same run
number and commits each table exactly once, and the killed run's data files are
orphans that ``fleetmine lake maintain`` vacuums once past retention. After every
commit landed but before the run was recorded: the next run finds its ``txn`` on
every table, decodes nothing again and adds nothing.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pytest

from storage import Lake
from tests.reliability.conftest import REPO, TABLES, Figures, driver, report_of, row_counts

NO_RETENTION = ("--retention-hours", "0", "--force-retention")


def data_files(lake: Lake) -> dict[str, set[str]]:
    """Every data file under each table's folder, referenced or not (the log's checkpoints,
    Parquet too, are not data)."""
    out = {}
    for t in TABLES:
        root = Path(lake.location(t).path)
        files = (p.relative_to(root) for p in root.rglob("*.parquet"))
        out[t] = {str(p) for p in files if p.parts[0] != "_delta_log"}
    return out


def referenced(lake: Lake, table: str) -> set[str]:
    adds = pa.table(lake.delta(table).get_add_actions(flatten=True))
    return {unquote(p) for p in adds.column("path").to_pylist()} if adds.num_rows else set()


def committed_bytes(lake: Lake) -> dict[str, bytes]:
    """Content hash and mtime of every file a table references."""
    out = {}
    for t in TABLES:
        root = Path(lake.location(t).path)
        for rel in referenced(lake, t):
            path = root / rel
            out[f"{t}/{rel}"] = (
                hashlib.sha256(path.read_bytes()).digest() + str(path.stat().st_mtime_ns).encode()
            )
    return out


def orphans(lake: Lake) -> int:
    files = data_files(lake)
    return sum(len(files[t] - referenced(lake, t)) for t in TABLES)


def commits_of_run(lake: Lake, table: str, run_id: str) -> int:
    return sum(1 for h in lake.delta(table).history() if h.get("fleetmine.app_id") == run_id)


@pytest.mark.parametrize("point", ["commit.before:can_frames", "commit.before:clips", "commit.after:signals"])
def test_driver_killed_around_a_commit_then_rerun_commits_exactly_once(
    raw: Path, tmp_path: Path, clean_counts: dict[str, int], point: str, figures: Figures
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    killed = driver(raw, lake.uri, fault=point)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])

    table, when = point.split(":")[1], point.split(".")[1].split(":")[0]
    landed = set(TABLES[1 : TABLES.index(table) + (1 if when == "after" else 0)])
    after_kill = row_counts(lake)
    for t in TABLES:  # only the commits that landed before the kill are visible
        assert (after_kill[t] > 0) == (t in landed), (t, after_kill)
    left = orphans(lake)
    assert left > 0, "the killed run wrote data files before its commit"
    (run,) = lake.read("runs", where="app_id = 'ingest'").to_pylist()
    assert run["status"] == "running"
    before = committed_bytes(lake)

    rerun = report_of(driver(raw, lake.uri))
    assert rerun["resumed"] and rerun["run_number"] == run["run_number"], rerun
    assert len(rerun["ok"]) == 2, rerun
    after = committed_bytes(lake)
    assert {k: after.get(k) for k in before} == before, "the re-run rewrote files already committed"
    counts = row_counts(lake)
    assert counts == clean_counts
    for t in TABLES:
        assert commits_of_run(lake, t, run["run_id"]) == 1, t
    (final,) = lake.read("runs", where="app_id = 'ingest'").to_pylist()
    assert final["status"] == "succeeded"

    orphaned = orphans(lake)
    assert orphaned >= left  # the killed run's files, never referenced
    maintain = subprocess.run(
        [sys.executable, "-m", "fleetmine", "lake", "maintain", "--lake", lake.uri, *NO_RETENTION],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert maintain.returncode == 0, maintain.stderr[-3000:]
    assert orphans(lake) == 0
    assert row_counts(lake) == clean_counts
    figures(
        group="driver death",
        fault=f"SIGKILL of the ingest driver at {point}",
        cases=1,
        rows_lost=sum(max(0, clean_counts[t] - counts[t]) for t in TABLES),
        rows_duplicated=sum(max(0, counts[t] - clean_counts[t]) for t in TABLES),
        orphan_files_after_kill=left,
        orphans_after_maintain=0,
        outcome="re-run resumed the same run, one commit per table",
    )


def test_driver_killed_after_its_commits_rerun_adds_nothing(
    raw: Path, tmp_path: Path, clean_counts: dict[str, int], figures: Figures
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    killed = driver(raw, lake.uri, fault="ingest.before_record")
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    (run,) = lake.read("runs", where="app_id = 'ingest'").to_pylist()
    assert run["status"] == "running"
    assert row_counts(lake) == clean_counts
    versions = {t: lake.version(t) for t in TABLES}
    files = data_files(lake)

    rerun = report_of(driver(raw, lake.uri))
    assert rerun["resumed"] and rerun["run_number"] == run["run_number"], rerun
    assert len(rerun["ok"]) == 2 and rerun["counts"]["clips"] > 0, rerun
    assert {t: lake.version(t) for t in TABLES} == versions  # no commit at all
    assert data_files(lake) == files  # nothing decoded or written again
    assert row_counts(lake) == clean_counts
    (final,) = lake.read("runs", where="app_id = 'ingest'").to_pylist()
    assert final["status"] == "succeeded"
    figures(
        group="driver death",
        fault="SIGKILL of the ingest driver after its last commit, before recording the run",
        cases=1,
        rows_lost=0,
        rows_duplicated=0,
        outcome="re-run found its txn on every table: no commit, no file written",
    )
