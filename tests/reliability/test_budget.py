"""A video that makes the decoder spin or allocate without bound, in a real ingest.

The recorded dashcam video is uploaded a second time as a third drive, whose decode
``FLEETMINE_FAULT=video.decode:<drive>=spin|alloc`` turns hostile; the ingest runs
in its own process with a small per-drive budget. The hostile drive is recorded
failed with the budget it exceeded, the other two land with exactly a clean run's
rows, and the job finishes (exit 3: some drives failed).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from storage import Lake
from tests.conftest import SHARED_DATA
from tests.ingest.conftest import DASHCAM, RAV4, make_drive
from tests.reliability.conftest import TABLES, Figures, driver, report_of, row_counts

HOSTILE = ("hostile", DASHCAM[1])


@pytest.mark.parametrize(
    ("behaviour", "env", "reason"),
    [
        ("spin", {"FLEETMINE_DRIVE_TIME_BUDGET_S": "5"}, "exceeded time budget 5 s"),
        ("alloc", {"FLEETMINE_DRIVE_MEMORY_BUDGET_MIB": "1024"}, "exceeded memory budget 1 GiB"),
    ],
    ids=["spin", "alloc"],
)
def test_a_decoder_that_spins_or_allocates_is_cut_off_and_the_job_goes_on(
    raw: Path,
    tmp_path: Path,
    clean_counts: dict[str, int],
    behaviour: str,
    env: dict[str, str],
    reason: str,
    figures: Figures,
) -> None:
    make_drive(
        raw,
        *HOSTILE,
        {"cameras/front.mp4": SHARED_DATA / "video" / "solidWhiteRight.mp4"},
        {"start_time": "2016-08-28T21:16:08Z"},
    )
    lake = Lake(str(tmp_path / "lake"))
    key = "/".join(HOSTILE)
    t0 = time.monotonic()
    out = driver(raw, lake.uri, fault=f"video.decode:{key}={behaviour}", env=env, timeout=240)
    seconds = time.monotonic() - t0
    assert out.returncode == 3, (out.returncode, out.stderr[-3000:])
    out.returncode = 0  # exit 3 is "some drives failed": the report is there
    report = report_of(out)
    counts = row_counts(lake)
    rows = {r["vehicle_id"]: r for r in lake.read("drives").to_pylist()}
    want = {t: clean_counts[t] for t in TABLES if t != "drives"}
    got = {t: counts[t] for t in TABLES if t != "drives"}
    figures(
        group="hostile input",
        fault=f"a video whose decoder {'spins' if behaviour == 'spin' else 'allocates'} without bound "
        f"({', '.join(f'{k}={v}' for k, v in env.items())}), beside two good drives",
        cases=1,
        rows_lost=sum(max(0, want[t] - got[t]) for t in want),
        rows_duplicated=sum(max(0, got[t] - want[t]) for t in want),
        outcome=f"hostile drive failed: {rows[HOSTILE[0]]['error']}; 2 others ok; job finished",
        seconds=round(seconds, 1),
    )
    assert report["failed"] == [[key, reason]]
    assert rows[HOSTILE[0]]["status"] == "failed" and rows[HOSTILE[0]]["error"] == reason
    assert sorted(report["ok"]) == ["/".join(DASHCAM), "/".join(RAV4)]
    assert got == want, (got, want)
    assert counts["drives"] == 3 == counts["distinct_drives"]
    (run,) = lake.read("runs", where="app_id = 'ingest'").to_pylist()
    assert run["status"] == "partial"
