"""One suite every CAN reader passes (fsspec-style): a new reader is done when it does.

Each registered reader gets a valid log of its format (recorded, or written at test
time by python-can / mcap), and the same hostile inputs. The contract: frames in the
readers' schema with integer microsecond times, and never an exception on bad bytes:
a file that gives nothing says why.
"""

from __future__ import annotations

from pathlib import Path

import can
import numpy as np
import pytest

from ingest.can import READERS, read_can_log
from ingest.interfaces import FRAME_SCHEMA, CanReader

SUFFIXES = sorted({r.suffixes[0] for r in READERS})


def _mf4(log: Path, tmp: Path) -> bytes:
    writer = can.MF4Writer(str(tmp / "log.mf4"))
    for m in list(can.LogReader(str(log)))[:500]:
        writer.on_message_received(m)
    writer.stop()
    return (tmp / "log.mf4").read_bytes()


def _mcap(log: Path) -> bytes:
    from tests.ingest.test_mcap import _ros2_mcap, _ros2_msg

    frames = read_can_log(log.read_bytes(), log.name).frames.slice(0, 500).to_pylist()
    return _ros2_mcap(
        [(f"/{f['bus']}/rx", _ros2_msg(f["t_us"], f["arbitration_id"], f["data"]), 0) for f in frames]
    )


def _rlog(log: Path) -> bytes:
    from tests.ingest.openpilot_logs import can_events, candump_frames, event, log_file

    frames, wall0 = candump_frames(b"".join(log.read_bytes().splitlines(keepends=True)[:500]), 10**9)
    return log_file([event(10**9, initData={"wallTimeNanos": wall0}), *can_events(frames)])


def valid_log(suffix: str, data_dir: Path, tmp: Path) -> bytes:
    can_dir = data_dir / "can"
    match suffix:
        case ".log":
            return (can_dir / "rav4_drive_seg40_part1.log").read_bytes()
        case ".asc":
            return (can_dir / "logfile.asc").read_bytes()
        case ".blf":
            return (can_dir / "test_CanMessage.blf").read_bytes()
        case ".trc":
            return (can_dir / "test_CanMessage.trc").read_bytes()
        case ".mf4":
            return _mf4(can_dir / "rav4_drive_seg40_part1.log", tmp)
        case ".mcap":
            return _mcap(can_dir / "rav4_drive_seg40_part1.log")
        case "rlog":
            return _rlog(can_dir / "rav4_drive_seg40_part1.log")
    raise AssertionError(f"no valid sample for {suffix}: add one here for the new reader")


@pytest.fixture(params=SUFFIXES)
def reader(request: pytest.FixtureRequest) -> CanReader:
    return next(r for r in READERS if r.suffixes[0] == request.param)


def test_every_registered_format_has_a_sample() -> None:
    assert SUFFIXES == [".asc", ".blf", ".log", ".mcap", ".mf4", ".trc", "rlog"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_valid_log_gives_frames_in_the_schema(reader: CanReader, shared_data: Path, tmp_path: Path) -> None:
    suffix = reader.suffixes[0]
    result = read_can_log(valid_log(suffix, shared_data, tmp_path), f"x{suffix}")
    assert result.skipped == 0, result.problems
    f = result.frames
    assert f.schema.equals(FRAME_SCHEMA) and f.num_rows > 0
    t = f.column("t_us").to_numpy()
    assert t.dtype == np.int64 and (t > 10**15).all()  # absolute µs since the epoch
    dlc = f.column("dlc").to_numpy()
    lengths = np.array([len(d) for d in f.column("data").to_pylist()])
    assert (lengths <= np.maximum(dlc, 64)).all()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize(
    "hostile",
    [
        bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)),
        b"\x00" * 100,
        "ünïcödé garbage\n".encode() * 50,
    ],
    ids=["noise", "zeros", "text"],
)
def test_hostile_bytes_never_raise_and_say_why(reader: CanReader, hostile: bytes) -> None:
    suffix = reader.suffixes[0]
    result = read_can_log(hostile, f"x{suffix}")
    assert result.frames.schema.equals(FRAME_SCHEMA) and result.frames.num_rows == 0
    assert result.skipped > 0 and result.problems


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_cut_log_keeps_a_prefix_of_its_frames(reader: CanReader, shared_data: Path, tmp_path: Path) -> None:
    suffix = reader.suffixes[0]
    data = valid_log(suffix, shared_data, tmp_path)
    whole = read_can_log(data, f"x{suffix}").frames
    cut = read_can_log(data[: len(data) * 2 // 3], f"x{suffix}")
    got = cut.frames
    assert got.num_rows <= whole.num_rows
    assert got.equals(whole.slice(0, got.num_rows))  # never a frame that is not in the log
