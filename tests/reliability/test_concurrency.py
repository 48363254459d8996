"""Two writers at once: overlapping ingests, two maintenance runs, two dataset creates.

Each pair runs as two real processes started together on one lake; what must hold
is what a user would check afterwards: every drive once, no row twice, maintenance
one at a time, dataset versions distinct.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from storage.errors import LeaseHeldError
from tests.conftest import LOCAL, SHARED_DATA, synthesized
from tests.ingest.conftest import RAV4, make_drive
from tests.reliability.conftest import REPO, TABLES, Figures, finish, report_of, row_counts, start_driver

VAN = ("van", "2019-03-01--10-00-00")


def overlapping_trees(base: Path, raw: Path) -> tuple[Path, Path]:
    """A: the dashcam and RAV4 drives; B: the same RAV4 drive (a second upload) and a van's ASC log."""
    b = base / "raw-b"
    shutil.copytree(raw / RAV4[0], b / RAV4[0])
    make_drive(b, *VAN, {"can/bus.asc": SHARED_DATA / "can" / "logfile.asc"})
    return raw, b


@pytest.mark.parametrize(
    "window",
    [
        None,
        "claim.checked:runs@3",
        "commit.before:can_frames@2",
    ],
    ids=["together", "both-plan-then-claim", "both-delete-then-commit"],
)
def test_two_ingests_of_overlapping_trees_at_once_land_each_drive_once(
    raw: Path, tmp_path: Path, window: str | None, figures: Figures
) -> None:
    """``window`` holds both drivers at one step, so they are sure to overlap there: at
    ``claim.checked`` both have seen the first number free before either claims it."""
    a, b = overlapping_trees(tmp_path, raw)
    ref = Lake(str(tmp_path / "ref"))  # one after the other, in this process
    for tree in (a, b):
        assert run_ingest(str(tree), Settings(lake=ref.uri), runner=LOCAL).exit_code == 0
    want = row_counts(ref)
    assert want["drives"] == 3

    lake = Lake(str(tmp_path / "lake"))
    procs = [start_driver(tree, lake.uri, fault=window) for tree in (a, b)]
    outs = [finish(p) for p in procs]
    reports = [report_of(o) for o in outs]
    counts = row_counts(lake)
    runs = lake.read("runs", where="app_id = 'ingest'").to_pylist()
    figures(
        group="concurrency",
        fault="two ingests of overlapping raw trees (one drive in both) started together"
        + (f", both paused {window.split('@')[1]} s at {window.split('@')[0]}" if window else ""),
        cases=1,
        rows_lost=sum(max(0, want[t] - counts[t]) for t in TABLES),
        rows_duplicated=sum(max(0, counts[t] - want[t]) for t in TABLES),
        run_numbers=sorted(r["run_number"] for r in reports),
        outcome="each drive once",
    )
    assert len({r["run_number"] for r in reports}) == 2, f"both runs took one number: {reports}"
    if window and window.startswith("claim.checked"):  # the second claim of number 1 was refused
        refused = "claim of Txn(app_id='ingest-run', version=1) in runs not made"
        assert sum(refused in o.stderr for o in outs) == 1, [o.stderr[-2000:] for o in outs]
    assert counts == want
    assert sorted(r["status"] for r in runs) == ["succeeded", "succeeded"], runs


def test_two_maintenance_runs_at_once_one_waits_or_refuses_and_no_row_doubles(
    tmp_path: Path, figures: Figures
) -> None:
    from tests.storage.helpers import clip_rows

    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    for i in range(12):  # small files for compaction to merge
        lake.append("clips", clip_rows(50, start=50 * i))
    before = lake.read("clips", columns=["clip_id"]).num_rows

    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def maintain(who: str) -> None:
        barrier.wait()
        try:
            lake.maintain(who, tables=["clips"])
            outcomes.append("ran")
        except LeaseHeldError:
            outcomes.append("refused")

    threads = [threading.Thread(target=maintain, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    after = lake.read("clips", columns=["clip_id"])
    figures(
        group="concurrency",
        fault="two `lake maintain` (compact + vacuum) started together (threads, one barrier)",
        cases=1,
        rows_lost=max(0, before - after.num_rows),
        rows_duplicated=max(0, after.num_rows - before),
        outcome=f"{sorted(outcomes)}",
    )
    assert sorted(outcomes) == ["ran", "refused"]
    assert after.num_rows == before == len(set(after.column(0).to_pylist()))


def test_two_maintenance_processes_at_once(tmp_path: Path, figures: Figures) -> None:
    from tests.storage.helpers import clip_rows

    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    for i in range(12):
        lake.append("clips", clip_rows(50, start=50 * i))
    cmd = [sys.executable, "-m", "fleetmine", "lake", "maintain", "--lake", lake.uri, "--table", "clips"]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [finish(p) for p in procs]
    after = lake.read("clips", columns=["clip_id"])
    refused = [o for o in outs if o.returncode != 0]
    for o in refused:  # a refusal says who holds the lease; it is not a crash
        assert o.returncode == 2 and "is held by" in o.stderr, o.stderr[-2000:]
    figures(
        group="concurrency",
        fault="two `fleetmine lake maintain` processes started together",
        cases=1,
        rows_lost=max(0, 600 - after.num_rows),
        rows_duplicated=max(0, after.num_rows - 600),
        outcome=f"{2 - len(refused)} ran, {len(refused)} refused (lease held)",
    )
    assert after.num_rows == 600 == len(set(after.column(0).to_pylist()))


@pytest.mark.parametrize("n", [2])
def test_dataset_creates_of_one_name_at_once_get_distinct_versions(
    raw: Path, tmp_path: Path, n: int, figures: Figures
) -> None:
    lake = Lake(str(tmp_path / "lake"))
    assert run_ingest(str(raw), Settings(lake=lake.uri), runner=LOCAL).exit_code == 0
    cmd = [sys.executable, "-m", "fleetmine", "dataset", "create", "raced", "--query", "{}"]
    procs = [
        subprocess.Popen([*cmd, "--lake", lake.uri], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(n)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    versions = sorted(lake.read("datasets", where="name = 'raced'").column("version").to_pylist())
    members = lake.read("dataset_clips", where="name = 'raced'")
    figures(
        group="concurrency",
        fault=f"{n} `fleetmine dataset create` of one name started together",
        cases=1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"versions {versions}",
    )
    assert versions == list(range(1, n + 1))
    assert members.num_rows == n * len(lake.read("clips", columns=["clip_id"]))


@pytest.mark.parametrize("job", ["embed", "mine"])
def test_a_second_embed_or_mine_of_one_model_while_one_runs_is_refused(
    tmp_path: Path, job: str, figures: Figures, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both would plan the same clips: one commit and a second run recording counts it never
    landed, or two commits and clips with two vectors. The second is refused, naming the
    first; the first lands every clip once; once it ends, the next run goes ahead."""
    from ingest.synth.fleet import SynthConfig
    from jobs.embed_job import run_embed
    from jobs.mine_job import run_mine
    from mining.encoders.registry import resolve

    synthesized(tmp_path / "raw", SynthConfig(vehicles=1, drives=1, minutes=1, seed=3, workers=1))
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    assert run_ingest(str(tmp_path / "raw"), settings, runner=LOCAL).exit_code == 0
    if job == "mine":
        run_embed(settings, runner=LOCAL)
    spec = resolve(lake)
    run = {"embed": run_embed, "mine": run_mine}[job]
    monkeypatch.setenv("FLEETMINE_FAULT", "embed.batch@3" if job == "embed" else "mine.started@3")
    first: dict[str, object] = {}
    thread = threading.Thread(target=lambda: first.update(report=run(settings, runner=LOCAL)))
    thread.start()
    name = f"job:{job}:{spec.ref}"
    for _ in range(200):  # until the first holds its lease
        if lake.exists("_leases") and lake.read("_leases", where=f"lease = '{name}'").num_rows:
            break
        threading.Event().wait(0.05)
    with pytest.raises(LeaseHeldError, match=f"another {job}:{spec.ref} job is running"):
        run(settings, runner=LOCAL)
    thread.join(120)
    monkeypatch.delenv("FLEETMINE_FAULT")
    assert "report" in first
    table = "embeddings" if job == "embed" else "mining_scores"
    ids = lake.read(table, columns=["clip_id"]).column(0).to_pylist()
    clips = lake.read("clips", columns=["clip_id"]).num_rows
    runs = lake.read("runs", where=f"kind = '{job}'").to_pylist()
    again = run(settings, runner=LOCAL)  # the lease is free again
    figures(
        group="concurrency",
        fault=f"a second `fleetmine {job}` of one model while the first runs (held 3 s inside its stage)",
        cases=1,
        rows_lost=clips - len(set(ids)),
        rows_duplicated=len(ids) - len(set(ids)),
        outcome=f"second refused (LeaseHeldError); {len(set(ids))}/{clips} clips once in {table}; "
        f"{len(runs)} {job} run recorded; the next run after it went ahead",
    )
    assert clips >= 5 and len(ids) == len(set(ids)) == clips
    assert [r["status"] for r in runs] == ["succeeded"]
    assert again is not None
