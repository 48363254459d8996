"""openpilot logs as CAN: the real RAV4 drive written as an rlog decodes as its candump does."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from ingest.can import read_can_log
from jobs.ingest_job import run_ingest
from storage import Lake, Settings
from tests.conftest import LOCAL
from tests.ingest.conftest import assert_matches_rav4_truth, make_drive
from tests.ingest.openpilot_logs import can_events, candump_frames, event, log_file

BOOT_NS = 7_345_000_000_000  # the device had been up two hours when the segment began


@pytest.fixture(scope="module")
def rav4_log(shared_data: Path) -> bytes:
    return (shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes()


def _head(log: bytes, lines: int) -> bytes:
    return b"".join(log.splitlines(keepends=True)[:lines])


def _signals(lake: Lake, vehicle: str) -> pa.Table:
    (drive,) = lake.read("drives", where=f"vehicle_id = '{vehicle}'").to_pylist()
    assert drive["status"] == "ok", drive["error"]
    return lake.read("signals", where=f"drive_id = '{drive['drive_id']}'").sort_by("t")


def test_the_rav4_as_an_rlog_decodes_to_the_signals_of_its_candump(
    tmp_path: Path, shared_data: Path, rav4_log: bytes
) -> None:
    """The same 30 s of real CAN, once as candump and once as a comma device logs it (can
    events on the boot clock, the wall clock in a ``clocks`` event, zstd and bzip2): the
    same frames, the same signals to the bit, and comma's own processed log within the
    tolerances the candump drive is held to."""
    frames, wall0 = candump_frames(rav4_log, BOOT_NS)
    clock = event(BOOT_NS - 500_000_000, clocks={"wallTimeNanos": wall0 - 500_000_000})
    raw = tmp_path / "raw"
    doc = {"platform": "toyota_rav4_2017"}
    make_drive(raw, "candump", "2018-08-02--08-34-47--40", {"can/pt.log": rav4_log}, doc)
    make_drive(
        raw,
        "comma-zst",
        "2018-08-02--08-34-47--40",
        {"can/rlog.zst": log_file([clock, *can_events(frames)], "zst")},
        doc,
    )
    make_drive(
        raw,
        "comma-bz2",
        "2018-08-02--08-34-47--40",
        {"can/qlog.bz2": log_file([clock, *can_events(frames)], "bz2")},
        doc,
    )
    settings = Settings(lake=str(tmp_path / "lake"))
    report = run_ingest(str(raw), settings, runner=LOCAL)
    assert report.exit_code == 0
    lake = Lake.from_settings(settings)
    want = _signals(lake, "candump")
    for vehicle in ("comma-zst", "comma-bz2"):
        got = _signals(lake, vehicle)
        assert got.num_rows == want.num_rows > 550
        for col in ("t", "speed_mps", "steering_angle_deg", "yaw_rate_dps", "brake_pressed", "gear"):
            assert got.column(col).equals(want.column(col)), (vehicle, col)
    drives = {r["vehicle_id"]: r for r in lake.read("drives").to_pylist()}
    assert drives["comma-zst"]["start_time"] == drives["candump"]["start_time"]
    frames_by = lake.read("can_frames", columns=["drive_id", "t", "arbitration_id", "data"])
    per_drive = {
        d["drive_id"]: frames_by.filter(pa.compute.equal(frames_by.column("drive_id"), d["drive_id"]))
        for d in drives.values()
    }
    assert {v.num_rows for v in per_drive.values()} == {67_741}

    assert_matches_rav4_truth(_signals(lake, "comma-zst"), shared_data)


def test_an_rlog_without_a_wall_clock_says_so_and_the_offset_places_it(
    tmp_path: Path, rav4_log: bytes
) -> None:
    frames, wall0 = candump_frames(_head(rav4_log, 800), BOOT_NS)
    data = log_file(can_events(frames), "zst")
    res = read_can_log(data, "rlog.zst")
    t = res.frames.column("t_us").to_numpy()
    assert res.skipped == 0 and t[0] == BOOT_NS // 1000
    assert any("can_time_offset_s" in w for w in res.warnings)

    raw = tmp_path / "raw"
    offset_s = (wall0 - BOOT_NS) / 1e9
    make_drive(
        raw,
        "boot",
        "d1",
        {"can/rlog.zst": data},
        {"platform": "toyota_rav4_2017", "can_time_offset_s": offset_s},
    )
    settings = Settings(lake=str(tmp_path / "lake"))
    assert run_ingest(str(raw), settings, runner=LOCAL).exit_code == 0
    (drive,) = Lake.from_settings(settings).read("drives").to_pylist()
    assert drive["status"] == "ok" and any("since the device booted" in w for w in drive["warnings"])
    assert abs(drive["start_time"].timestamp() * 1e9 - wall0) < 1e3


@pytest.mark.parametrize("compress", ["zst", "bz2"])
def test_a_log_cut_short_keeps_its_frames_before_the_cut(compress: str, rav4_log: bytes) -> None:
    frames, wall0 = candump_frames(_head(rav4_log, 40_000), BOOT_NS)  # bzip2 blocks are 900 kB
    data = log_file([event(BOOT_NS, initData={"wallTimeNanos": wall0}), *can_events(frames)], compress)
    whole = read_can_log(data, f"rlog.{compress}")
    cut = read_can_log(data[: len(data) * 3 // 4], f"rlog.{compress}")
    assert whole.skipped == 0 and whole.frames.num_rows == len(frames)
    assert 0 < cut.frames.num_rows < whole.frames.num_rows and cut.skipped > 0, cut.problems
    assert cut.frames.equals(whole.frames.slice(0, cut.frames.num_rows))
    assert whole.frames.column("t_us")[0].as_py() == wall0 // 1000


def test_a_decompression_bomb_is_cut_at_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import zstandard

    from ingest.openpilot import logs

    monkeypatch.setattr(logs, "MAX_LOG_BYTES", 1 << 20)
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (8 << 20))
    raw, why = logs.decompress(bomb)
    assert len(raw) == 1 << 20 and why and "past 1 MiB" in why
