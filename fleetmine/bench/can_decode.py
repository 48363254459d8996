"""CAN parse + DBC decode of the recorded RAV4 log vs python-can + cantools per frame.

Input: ``../shared/data/can/rav4_drive_seg40_part1.log`` (67,741 frames of a real
drive) with the platform's DBC. Baseline: ``can.LogReader`` then
``cantools.Database.decode_message`` per frame, as a user would write it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import can
import cantools

from fleetmine.bench import BenchContext, BenchResult, benchmark
from ingest.can import read_can_log
from ingest.can.dbc import VectorDecoder
from ingest.platform import load_platform

LOG = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "can" / "rav4_drive_seg40_part1.log"


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@benchmark("can_decode")
def can_decode(ctx: BenchContext) -> list[BenchResult]:
    if not LOG.exists():
        return []
    data = LOG.read_bytes()
    db = load_platform("toyota_rav4_2017").database
    decoder = VectorDecoder(db)
    frames = read_can_log(data, LOG.name).frames
    n = frames.num_rows
    messages = list(can.LogReader(str(LOG)))

    def baseline_decode() -> None:
        for m in messages:
            try:  # noqa: SIM105  (the per-frame baseline as users write it)
                db.decode_message(m.arbitration_id, cast(bytes, m.data), decode_choices=False)
            except (KeyError, cantools.database.DecodeError):
                pass

    def baseline_parse_decode() -> None:
        for m in can.LogReader(str(LOG)):
            try:  # noqa: SIM105  (the per-frame baseline as users write it)
                db.decode_message(m.arbitration_id, cast(bytes, m.data), decode_choices=False)
            except (KeyError, cantools.database.DecodeError):
                pass

    repeats = 3 if ctx.quick else 7
    ours_pd = _best(lambda: decoder.decode(read_can_log(data, LOG.name).frames), repeats * 3)
    base_pd = _best(baseline_parse_decode, repeats)
    ours_d = _best(lambda: decoder.decode(frames), repeats * 3)
    base_d = _best(baseline_decode, repeats)
    return [
        BenchResult(
            name=f"CAN parse+decode, RAV4 candump ({n:,} frames)",
            measured=n / ours_pd,
            baseline=n / base_pd,
            unit="frames/s",
            baseline_name="can.LogReader + cantools",
            goal=">= 20",
        ),
        BenchResult(
            name="CAN DBC decode alone",
            measured=n / ours_d,
            baseline=n / base_d,
            unit="frames/s",
            baseline_name="cantools.decode_message",
            goal=">= 30",
        ),
    ]
