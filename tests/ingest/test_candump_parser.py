"""The candump parser's whole-buffer fast path against python-can, line shape by line shape."""

from __future__ import annotations

import random
from pathlib import Path

import can
import cantools
import numpy as np
import pyarrow as pa
import pytest

from ingest.can import read_can_log
from ingest.can.candump import CandumpReader, _fixed_layout, _plain_frames
from ingest.can.dbc import VectorDecoder
from ingest.interfaces import FRAME_SCHEMA, CanReadResult
from ingest.platform import load_platform


def _log(
    rng: random.Random, n: int, buses: list[str], frac_digits: int = 6, t0: float = 1_533_226_487.0
) -> str:
    lines = []
    for i in range(n):
        ext = rng.random() < 0.3
        ident = rng.randrange(1 << 29) if ext else rng.randrange(1 << 11)
        if rng.random() < 0.05:
            ident, ext = 0x20000080 | rng.randrange(1 << 7), True  # a bus-error frame, as SocketCAN logs it
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(9))).hex()
        payload = payload.upper() if rng.random() < 0.5 else payload
        head = f"{ident:08X}" if ext else f"{ident:03X}"
        lines.append(f"({t0 + i * 0.000731:.{frac_digits}f}) {rng.choice(buses)} {head}#{payload}\n")
    return "".join(lines)


def _exact(data: bytes) -> pa.Table:
    return CandumpReader()._read_exact(data, "x.log", CanReadResult(FRAME_SCHEMA.empty_table()), first_row=0)


@pytest.mark.parametrize(
    ("buses", "frac_digits", "t0", "fixed"),
    [
        (["can0"], 6, 1_533_226_487.0, True),  # candump -L as written on a car
        (["can0", "can1", "vcan12"], 6, 1_533_226_487.0, False),  # bus names of different widths
        (["can0"], 3, 8.5, False),  # relative time, millisecond digits, integer width grows
    ],
)
def test_fast_path_equals_python_can_and_the_exact_path(
    tmp_path: Path, buses: list[str], frac_digits: int, t0: float, fixed: bool
) -> None:
    text = _log(random.Random(7), 3000, buses, frac_digits, t0)
    path = tmp_path / "varied.log"
    path.write_text(text)
    data = text.encode()
    assert (_fixed_layout(data, np.frombuffer(data, np.uint8)) is not None) == fixed
    fast = _plain_frames(data)
    assert fast is not None  # every line is a plain frame: no fallback
    assert fast.equals(_exact(data))
    expected = list(can.LogReader(str(path)))
    got = read_can_log(data, "varied.log").frames.to_pylist()
    assert len(got) == len(expected) == 3000
    for g, e in zip(got, expected, strict=True):
        assert g["t_us"] == round(e.timestamp * 1e6)
        assert g["is_error"] == e.is_error_frame
        if not e.is_error_frame:  # python-can keeps no id, bus or payload of error frames
            assert g["bus"] == e.channel
            assert (g["arbitration_id"], g["is_extended"]) == (e.arbitration_id, e.is_extended_id)
            assert g["data"] == bytes(e.data) and g["dlc"] == len(e.data)


@pytest.mark.parametrize(
    ("odd_line", "frames", "skipped"),
    [
        ("(1533226487.000100) can0 123##1001122\n", 201, 0),  # CAN FD
        ("(1533226487.000100) can0 123#R\n", 201, 0),  # remote frame
        ("(1533226487.000100) can0 123#00\r\n", 201, 0),  # CRLF
        ("\n", 200, 0),  # empty line
        ("(1533226487.0001) can0 12G#00\n", 200, 1),  # not hex
        ("(1533226487.000100) can0 123#001\n", 200, 1),  # odd payload
        ("(1533226487.000100)  can0 123#00\n", 200, 1),  # two spaces
        ("(1533226487.000100) c n0 123#00\n", 200, 1),  # a space where the bus name is
    ],
)
def test_a_line_the_fast_path_cannot_read_sends_its_chunk_to_the_exact_path(
    odd_line: str, frames: int, skipped: int
) -> None:
    lines = _log(random.Random(3), 200, ["can0"]).splitlines(keepends=True)
    data = "".join([*lines[:100], odd_line, *lines[100:]]).encode()
    assert _plain_frames(data) is None
    result = read_can_log(data, "odd.log")
    assert (result.frames.num_rows, result.skipped, len(result.problems)) == (frames, skipped, skipped)
    plain = read_can_log("".join(lines).encode(), "plain.log").frames
    assert result.frames.slice(0, 100).equals(plain.slice(0, 100))
    assert result.frames.slice(frames - 100).equals(plain.slice(100))


def test_a_crlf_log_reads_like_its_lf_original() -> None:
    text = _log(random.Random(5), 500, ["can0"])
    lf = read_can_log(text.encode(), "lf.log")
    crlf = read_can_log(text.replace("\n", "\r\n").encode(), "crlf.log")
    assert crlf.skipped == 0 and crlf.frames.equals(lf.frames) and lf.frames.num_rows == 500


def test_chunks_give_the_same_frames_as_one_pass(shared_data: Path) -> None:
    data = (shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes()
    whole = read_can_log(data, "rav4.log").frames
    small = CandumpReader()
    small.chunk_bytes = 4096  # ~90 lines a chunk
    lines = data.splitlines(keepends=True)
    garbled = b"".join([*lines[:5000], b"(15332x) can0 123#0011\n", *lines[5000:]])
    result = small.read(garbled, "rav4.log")
    assert result.skipped == 1 and "frame 5001" in result.problems[0] and "15332x" not in result.problems[0]
    assert result.frames.combine_chunks().equals(whole.combine_chunks())


def test_frames_too_short_for_their_message_are_counted_not_decoded(shared_data: Path) -> None:
    db = load_platform("toyota_rav4_2017").database
    frames = read_can_log((shared_data / "can" / "rav4_drive_seg40_part1.log").read_bytes(), "r.log").frames
    frames = frames.slice(0, 20_000).combine_chunks()
    payloads = frames.column("data").to_pylist()
    cut = list(range(0, 20_000, 97))
    for i in cut:
        payloads[i] = payloads[i][:1]
    frames = frames.set_column(frames.schema.get_field_index("data"), "data", pa.array(payloads, pa.binary()))
    decoded, stats = VectorDecoder(db).decode(frames)
    expected: dict[str, list[float]] = {}
    short = 0
    for i, row in enumerate(frames.to_pylist()):
        try:
            msg = db.get_message_by_frame_id(row["arbitration_id"])
        except KeyError:
            continue
        try:
            values = msg.decode(row["data"], decode_choices=False)
        except cantools.database.DecodeError:
            short += i in cut
            continue
        for sig, v in values.items():  # type: ignore[union-attr]
            expected.setdefault(f"{msg.name}.{sig}", []).append(float(v))  # type: ignore[arg-type]
    assert stats.short_frames == short > 0
    assert any("frames shorter than" in p for p in stats.problems)
    for key, values in expected.items():
        np.testing.assert_array_equal(decoded[key].values, np.array(values), err_msg=key)
