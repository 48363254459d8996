"""Hostile input: property-based mutations (hypothesis) of the real recorded files.

Every CAN reader (candump, ASC, BLF, TRC, MF4) gets its real logs with bytes flipped,
inserted and cut: it answers within a bounded time with frames of the frame schema
or a readable error (which the drive stage records for that log only). Text logs with
a few lines garbled keep every other line's frame. The DBC decoder gets frames with
hostile ids, lengths and payloads. The whole drive stage gets the real dashcam video
mutated: the drive comes back ``ok`` (what was good) or ``failed`` with a reason,
never an exception. Runs are derandomised and bounded (``max_examples``, ``deadline``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ingest.can import read_can_log
from ingest.interfaces import FRAME_SCHEMA
from tests.conftest import SHARED_DATA
from tests.reliability.conftest import Figures

BUDGET_S = 10.0  # per file: far above any real read of these (< 0.5 s), far below a hang
FUZZ = settings(
    max_examples=30,
    deadline=None,  # the budget below is the bound; hypothesis' deadline flakes on 2 busy cores
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found, at once
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _need_data() -> None:
    if not (SHARED_DATA / "can" / "rav4_drive_seg40_part1.log").exists():
        pytest.skip(f"recorded data not found at {SHARED_DATA} (it lives in ../shared/data)")


def _mf4(candump: bytes, tmp: Path) -> bytes:
    import can

    (tmp / "src.log").write_bytes(candump)
    writer = can.MF4Writer(str(tmp / "log.mf4"))
    for m in can.LogReader(str(tmp / "src.log")):
        writer.on_message_received(m)
    writer.stop()
    return (tmp / "log.mf4").read_bytes()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The real logs, by reader suffix (the RAV4 log cut to 300 lines to keep examples fast)."""
    _need_data()
    can_dir = SHARED_DATA / "can"
    candump = b"".join((can_dir / "rav4_drive_seg40_part1.log").read_bytes().splitlines(keepends=True)[:300])
    out = {"rav4.log": candump, "rav4.mf4": _mf4(candump, tmp_path_factory.mktemp("mf4"))}
    for p in sorted(can_dir.iterdir()):
        if p.suffix in (".asc", ".blf", ".trc"):
            out[p.name] = p.read_bytes()
    return out


@st.composite
def mutations(draw: Any, data: bytes) -> bytes:
    """Flipped bytes, an inserted run, a cut: one or more of them."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 12))):
        if buf:
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(buf)))
        buf[at:at] = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        buf = buf[: draw(st.integers(0, len(buf)))]
    return bytes(buf)


def read_bounded(data: bytes, name: str) -> tuple[str, int, float]:
    """Read one log; ``("frames", n, s)`` or ``("error", 0, s)``. Checks the contract."""
    t0 = time.monotonic()
    try:
        res = read_can_log(data, name)
    except Exception as exc:  # a file the reader cannot open at all: the stage records it
        elapsed = time.monotonic() - t0
        assert elapsed < BUDGET_S, f"{name}: {elapsed:.1f} s"
        assert f"{type(exc).__name__}: {exc}".strip(": "), "an error with no words"
        return "error", 0, elapsed
    elapsed = time.monotonic() - t0
    assert elapsed < BUDGET_S, f"{name}: {elapsed:.1f} s"
    f = res.frames
    assert [(x.name, x.type) for x in f.schema] == [(x.name, x.type) for x in FRAME_SCHEMA]
    if f.num_rows:
        dlc = f.column("dlc").to_numpy(zero_copy_only=False)
        lengths = np.array([len(b or b"") for b in f.column("data").to_pylist()])
        assert dlc.min() >= 0 and dlc.max() <= 64 and lengths.max() <= 64, name
    # Every skip is counted and the first few say why: a problem without a skip, or skips
    # with no reason at all, is a frame lost in silence.
    assert len(res.problems) <= min(res.skipped, res.MAX_PROBLEMS), (name, res.skipped, res.problems)
    assert res.skipped == 0 or res.problems, (name, res.skipped)
    return "frames", f.num_rows, elapsed


NAMES = [
    "rav4.log",
    "rav4.mf4",
    "logfile.asc",
    "logfile_errorframes.asc",
    "test_CanFdMessage.asc",
    "test_CanMessage.blf",
    "test_CanFdMessage.blf",
    "test_CanMessage.trc",
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_can_readers_survive_mutated_real_logs(logs: dict[str, bytes], name: str, figures: Figures) -> None:
    seen: dict[str, int] = {"frames": 0, "error": 0}
    slowest = [0.0]

    @FUZZ
    @given(data=mutations(logs[name]))
    def check(data: bytes) -> None:
        kind, _, elapsed = read_bounded(data, name)
        seen[kind] += 1
        slowest[0] = max(slowest[0], elapsed)

    check()
    figures(
        group="hostile input",
        fault=f"CAN log `{name}` with bytes flipped / inserted / cut",
        cases=sum(seen.values()),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{seen['frames']} read (frames kept), {seen['error']} refused with a readable error; "
        f"slowest {slowest[0] * 1000:.0f} ms",
    )


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _data_lines(name: str, lines: list[bytes]) -> list[int]:
    """The lines that carry frames (a header line says how to read all the others: the ASC
    date and TRC version lines have their own tests)."""
    if name.endswith(".asc"):
        begin = next(i for i, ln in enumerate(lines) if ln.lower().startswith(b"begin triggerblock"))
        return list(range(begin + 1, len(lines)))
    if name.endswith(".trc"):
        return [i for i, ln in enumerate(lines) if not ln.startswith(b";") and ln.strip()]
    return list(range(len(lines)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["rav4.log", "logfile.asc", "test_CanMessage.trc"])
def test_garbled_lines_of_a_text_log_cost_only_those_lines(
    logs: dict[str, bytes], name: str, figures: Figures
) -> None:
    clean = read_can_log(logs[name], name)
    lines = _lines(logs[name])
    data_lines = _data_lines(name, lines)
    n = [0]

    @FUZZ
    @given(
        bad=st.dictionaries(
            st.sampled_from(data_lines),
            st.binary(min_size=1, max_size=80).filter(lambda b: b"\n" not in b and b"\r" not in b),
            min_size=1,
            max_size=5,
        )
    )
    def check(bad: dict[int, bytes]) -> None:
        data = b"".join(bad[i] + b"\n" if i in bad else line for i, line in enumerate(lines))
        kind, frames, _ = read_bounded(data, name)
        assert kind == "frames", "a few bad lines must not make the whole log unreadable"
        assert frames >= clean.frames.num_rows - len(bad), (frames, clean.frames.num_rows, bad)
        n[0] += 1

    check()
    figures(
        group="hostile input",
        fault=f"text CAN log `{name}` with 1-5 lines replaced by random bytes",
        cases=n[0],
        rows_lost=0,
        rows_duplicated=0,
        outcome="every other line's frame kept, the bad lines counted as skipped",
    )


@pytest.mark.timeout(300)
def test_dbc_decoder_survives_hostile_frames(figures: Figures) -> None:
    from ingest.can.dbc import VectorDecoder
    from ingest.platform import load_platform

    db = load_platform("toyota_rav4_2017").database
    ids = sorted({m.frame_id for m in db.messages})
    decoder = VectorDecoder(db)
    n = [0]

    frame = st.tuples(
        st.one_of(st.sampled_from(ids), st.integers(0, (1 << 29) - 1)),
        st.booleans(),
        st.booleans(),
        st.integers(0, 64),
        st.binary(max_size=64),
    )

    @FUZZ
    @given(rows=st.lists(frame, max_size=200))
    def check(rows: list[tuple[int, bool, bool, int, bytes]]) -> None:
        t0 = 1_533_196_800_000_000
        table = pa.table(
            {
                "t_us": pa.array([t0 + 10_000 * i for i in range(len(rows))], pa.int64()),
                "bus": pa.array(["can0"] * len(rows), pa.string()),
                "arbitration_id": pa.array([r[0] if r[1] else r[0] & 0x7FF for r in rows], pa.int64()),
                "is_extended": pa.array([r[1] for r in rows], pa.bool_()),
                "is_fd": pa.array([False] * len(rows), pa.bool_()),
                "is_error": pa.array([r[2] for r in rows], pa.bool_()),
                "dlc": pa.array([r[3] for r in rows], pa.int16()),
                "data": pa.array([r[4] for r in rows], pa.binary()),
            },
            schema=FRAME_SCHEMA,
        )
        decoded, stats = decoder.decode(table)
        assert stats.frames == len(rows)
        for sig in decoded.values():
            assert len(sig.t_us) == len(sig.values)
        n[0] += 1

    check()
    figures(
        group="hostile input",
        fault="RAV4 DBC decoder fed frames with random ids, flags, DLCs and payloads (0-200 frames)",
        cases=n[0],
        rows_lost=0,
        rows_duplicated=0,
        outcome="decoded or skipped per frame; no exception",
    )


@pytest.fixture(scope="module")
def video() -> bytes:
    _need_data()
    return (SHARED_DATA / "video" / "solidWhiteRight.mp4").read_bytes()


def _drives(tmp: Path) -> Iterator[Path]:
    i = 0
    while True:
        i += 1
        yield tmp / f"raw{i}"


@pytest.mark.timeout(600)
def test_drive_stage_survives_mutated_real_video(video: bytes, tmp_path: Path, figures: Figures) -> None:
    from ingest.discover import discover
    from ingest.drive import DriveIngest
    from storage import Lake, Settings
    from storage.objectstore import Location
    from tests.ingest.conftest import make_drive

    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    stage = DriveIngest(lake, Settings(lake=lake.uri), "fuzz")
    stage.setup()
    roots = _drives(tmp_path)
    seen = {"ok": 0, "failed": 0}
    slowest = [0.0]

    @settings(FUZZ, max_examples=10)
    @given(data=mutations(video))
    def check(data: bytes) -> None:
        raw = next(roots)
        make_drive(raw, "cam", "2016-08-28--21-16-08", {"cameras/front.mp4": data})
        (src,) = discover(Location(str(raw)))
        t0 = time.monotonic()
        result = stage.process(src)  # an exception here is the bug: a drive's failure is data
        elapsed = time.monotonic() - t0
        assert elapsed < 60, f"{elapsed:.0f} s for one drive"
        slowest[0] = max(slowest[0], elapsed)
        status = result.row.get("status")
        assert status in ("ok", "failed"), result.row
        if status == "failed":
            assert result.row.get("error"), "a failed drive says why"
        seen[str(status)] += 1

    check()
    figures(
        group="hostile input",
        fault="the dashcam mp4 with bytes flipped / inserted / cut, through the whole drive stage",
        cases=sum(seen.values()),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{seen['ok']} drives ok (what was readable landed), {seen['failed']} failed with a reason; "
        f"slowest {slowest[0]:.1f} s",
    )


def test_an_asc_log_with_a_garbled_header_date_is_read_not_looped_on(figures: Figures) -> None:
    """Found by the fuzzing above: the reader restarted on the same header forever."""
    _need_data()
    lines = (SHARED_DATA / "can" / "logfile.asc").read_bytes().splitlines(keepends=True)
    clean = read_can_log(b"".join(lines), "bus.asc").frames.num_rows
    at = next(i for i, line in enumerate(lines) if line.startswith(b"date"))
    lines[at] = b"date Xyz Abc 99 99:99:99 2017\n"
    kind, frames, elapsed = read_bounded(b"".join(lines), "bus.asc")
    assert kind == "frames" and frames == clean
    figures(
        group="hostile input",
        fault="ASC log whose header date is garbled (regression: the reader looped forever)",
        cases=1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"all {frames} frames kept with relative times, a warning; {elapsed * 1000:.0f} ms",
    )


def test_a_trc_log_without_its_version_line_is_read_as_the_version_its_columns_say(
    figures: Figures,
) -> None:
    """Found by the fuzzing above: a garbled first line lost every frame, silently."""
    _need_data()
    lines = (SHARED_DATA / "can" / "test_CanMessage.trc").read_bytes().splitlines(keepends=True)
    clean = read_can_log(b"".join(lines), "bus.trc").frames.num_rows
    lines[0] = b"\x00\n"
    kind, frames, elapsed = read_bounded(b"".join(lines), "bus.trc")
    assert kind == "frames" and frames == clean > 0
    figures(
        group="hostile input",
        fault="TRC log whose $FILEVERSION line is garbled (regression: every frame lost silently)",
        cases=1,
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"all {frames} frames kept, a warning; {elapsed * 1000:.0f} ms",
    )
