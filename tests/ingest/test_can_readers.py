"""Every CAN reader against the recorded logs, plus garbled input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import can
import cantools
import numpy as np
import pytest

from ingest.can import read_can_log
from ingest.can.dbc import VectorDecoder
from ingest.platform import load_platform

RECORDED = [
    "rav4_drive_seg40_part1.log",
    "logfile.asc",
    "logfile_errorframes.asc",
    "test_CanFdMessage.asc",
    "test_CanMessage.blf",
    "test_CanFdMessage.blf",
    "test_CanMessage.trc",
]


@pytest.mark.parametrize("name", RECORDED)
def test_reader_gives_what_python_can_gives(shared_data: Path, name: str) -> None:
    """Same frames as python-can's own reader, with absolute times (ASC header date used)."""
    path = shared_data / "can" / name
    result = read_can_log(path.read_bytes(), name)
    kwargs = {"relative_timestamp": False} if name.endswith(".asc") else {}
    expected = list(can.LogReader(str(path), **kwargs))
    assert result.skipped == 0, result.problems
    got = result.frames.to_pylist()
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected, strict=True):
        assert g["t_us"] == round(e.timestamp * 1e6)
        assert g["arbitration_id"] == e.arbitration_id
        assert g["data"] == bytes(e.data)
        assert g["is_fd"] == e.is_fd and g["is_error"] == e.is_error_frame
        assert g["is_extended"] == e.is_extended_id


def test_formats_cover_fd_and_error_frames(shared_data: Path) -> None:
    fd = read_can_log((shared_data / "can" / "test_CanFdMessage.asc").read_bytes(), "fd.asc").frames
    assert all(fd.column("is_fd").to_pylist())
    errs = read_can_log((shared_data / "can" / "logfile_errorframes.asc").read_bytes(), "e.asc").frames
    assert sum(errs.column("is_error").to_pylist()) == 3
    blf = read_can_log((shared_data / "can" / "test_CanFdMessage.blf").read_bytes(), "x.blf").frames
    assert 64 in blf.column("dlc").to_pylist()
    # ASC time is absolute: the header says Sep 30 2017.
    asc = read_can_log((shared_data / "can" / "logfile.asc").read_bytes(), "l.asc").frames
    assert asc.column("t_us")[0].as_py() // 1_000_000 > 1_500_000_000


def test_garbled_candump_keeps_every_good_frame(shared_data: Path) -> None:
    lines = (shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes().splitlines(keepends=True)
    garbage = [
        b"\x00\xff garbage\n",
        b"(1533226487.5) can0 XYZ#00\n",
        b"(15332x) can0 123#0011\n",
        b"half line",
    ]
    mixed = lines[:100] + garbage[:2] + lines[100:5000] + garbage[2:3] + lines[5000:] + garbage[3:]
    result = read_can_log(b"".join(mixed), "garbled.log")
    assert result.frames.num_rows == len(lines)
    assert result.skipped == 4
    # Which frame, never its bytes: a problem is shown to readers of the drive's warnings.
    assert any("frame 101" in p for p in result.problems)
    assert not any("XYZ" in p or "garbage" in p for p in result.problems)


def test_asc_reader_resumes_after_a_line_python_can_dies_on(shared_data: Path) -> None:
    text = (shared_data / "can" / "logfile.asc").read_text().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(text) if "6F9" in ln)
    # A non-hex id: python-can's ASCReader raises ValueError and stops the file there.
    text.insert(at, "  17.800000 1  6GZ             Rx   d 8 05 0C 00 00 00 00 00 00\n")
    result = read_can_log("".join(text).encode(), "bad.asc")
    clean = read_can_log((shared_data / "can" / "logfile.asc").read_bytes(), "logfile.asc")
    assert result.frames.num_rows == clean.frames.num_rows
    assert result.skipped == 1
    assert result.problems == ["bad.asc line 25: unreadable (ValueError)"]


def test_truncated_blf_keeps_frames_before_the_cut(shared_data: Path) -> None:
    data = (shared_data / "can" / "test_CanMessage.blf").read_bytes()
    for cut in (100, 220):
        result = read_can_log(data[: len(data) - cut], "cut.blf")
        assert result.skipped == 1
        assert "truncated" in result.problems[0]
    assert read_can_log(data[:-100], "cut.blf").frames.num_rows == 2


@pytest.mark.parametrize("dbc", ["shared", "opendbc"])
def test_vectorised_decode_equals_cantools_on_every_frame(shared_data: Path, dbc: str) -> None:
    if dbc == "shared":
        db = cantools.database.load_file(str(shared_data / "dbc" / "toyota_rav4_2017_pt.dbc"), strict=False)
    else:
        db = load_platform("toyota_rav4_2017").database
    log = shared_data / "can" / "rav4_drive_seg40_part1.log"
    frames = read_can_log(log.read_bytes(), log.name).frames
    decoded, stats = VectorDecoder(db).decode(frames)
    expected: dict[str, tuple[list[int], list[float]]] = {}
    checked = 0
    for msg in can.LogReader(str(log)):
        try:
            m = db.get_message_by_frame_id(msg.arbitration_id)
            values = m.decode(bytes(msg.data), decode_choices=False)
        except KeyError:
            continue  # an id the DBC does not know: kept raw, not decoded
        except cantools.database.DecodeError:
            continue  # cantools cannot unpack this message at all (overlapping signals)
        checked += 1
        for sig, v in values.items():  # type: ignore[union-attr]
            ts, vs = expected.setdefault(f"{m.name}.{sig}", ([], []))
            ts.append(round(msg.timestamp * 1e6))
            vs.append(float(v))  # type: ignore[arg-type]
    assert checked > 28_000 and len(expected) > 250
    for key, (ts, vs) in expected.items():
        got = decoded[key]
        np.testing.assert_array_equal(got.t_us, np.array(ts), err_msg=key)
        np.testing.assert_array_equal(got.values, np.array(vs), err_msg=key)  # bit-exact
    assert stats.unknown_ids > 0


@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # asammdf's __del__ on a cut file
def test_mf4_round_trip_through_asammdf(shared_data: Path, tmp_path: Path) -> None:
    messages = list(can.LogReader(str(shared_data / "can" / "rav4_drive_seg40_part1.log")))[:2000]
    writer = can.MF4Writer(str(tmp_path / "log.mf4"))
    for m in messages:
        writer.on_message_received(m)
    writer.stop()
    data = (tmp_path / "log.mf4").read_bytes()
    result = read_can_log(data, "log.mf4")
    assert result.skipped == 0 and result.frames.num_rows == 2000
    got = result.frames.to_pylist()
    assert [g["t_us"] for g in got] == [round(m.timestamp * 1e6) for m in messages]
    assert [g["data"] for g in got] == [bytes(m.data) for m in messages]
    cut = read_can_log(data[: len(data) // 2], "cut.mf4")
    assert cut.skipped == 1 and "unreadable MF4" in cut.problems[0]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_process_reads_asc_blf_and_trc_without_asammdf_and_mf4_after_them(
    shared_data: Path, tmp_path: Path
) -> None:
    """A fresh process (a decoder child) reads ASC, BLF and TRC without importing asammdf
    (0.8 s of a core), then an MF4 log exactly as a process whose python-can has asammdf
    from the start (this one), with python-can's names bound to the MF4 classes that run."""
    messages = list(can.LogReader(str(shared_data / "can" / "rav4_drive_seg40_part1.log")))[:500]
    writer = can.MF4Writer(str(tmp_path / "log.mf4"))
    for m in messages:
        writer.on_message_received(m)
    writer.stop()
    logs = [shared_data / "can" / n for n in ("logfile.asc", "test_CanMessage.blf", "test_CanMessage.trc")]
    logs.append(tmp_path / "log.mf4")
    code = f"""
import hashlib, json, sys
from pathlib import Path
from ingest.can import read_can_log
out = {{}}
for path in {[str(p) for p in logs]!r}:
    r = read_can_log(Path(path).read_bytes(), Path(path).name)
    out[Path(path).name] = [r.frames.num_rows, hashlib.sha256(str(r.frames.to_pylist()).encode()).hexdigest()]
    if not path.endswith(".mf4"):
        out[Path(path).name].append("asammdf" in sys.modules)
import can
out["bound"] = can.MF4Reader is can.io.mf4.MF4Reader is can.io.player.MESSAGE_READERS[".mf4"]
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got.pop("bound") is True
    for path in logs:
        here = read_can_log(path.read_bytes(), path.name)
        digest = hashlib.sha256(str(here.frames.to_pylist()).encode()).hexdigest()
        assert got[path.name][:2] == [here.frames.num_rows, digest], path.name
        assert here.frames.num_rows > 0, path.name
    assert [got[p.name][2] for p in logs[:3]] == [False, False, False]  # asammdf never imported
