"""Scenario runs against reading the signals they run over (issue 30's goal: >= 10,000x
realtime per core, one hour of 20 Hz signals in <= 0.36 s).

Input: one drive of 20 Hz signals (an hour full, ten minutes quick) written to a Delta
``signals`` table (speed a random walk with stops, brake and acceleration following it).
Ours: the shipped definitions and a three-phase creep, each evaluated over the drive's
arrays (:func:`fleetmine_scenarios.evaluate`), CPU seconds. Baseline: reading those
signals from the lake into arrays, what every run pays first.
"""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pyarrow as pa

from fleetmine.bench import BenchContext, BenchResult, benchmark

CREEP = (
    "speed_mps < 0.3 for >= 2s then 0.3 <= speed_mps < 2.5 for >= 1s within 8s"
    " then speed_mps >= 2.5 within 8s"
)


def _signals(seconds: int) -> pa.Table:
    from storage.tables import signals

    n = seconds * 20
    ts = signals.SPEC.schema.field("t").type
    rng = np.random.default_rng(30)
    speed = np.clip(np.cumsum(rng.normal(0, 0.25, n)), 0, 30)
    accel = np.gradient(speed, 0.05)
    t0 = dt.datetime(2024, 6, 1, 8, tzinfo=dt.UTC)
    return pa.table(
        {
            "drive_id": pa.array(["bench-drive"] * n),
            "date": pa.array([t0.date()] * n, pa.date32()),
            "t": pa.array(t0.timestamp() * 1e6 + np.arange(n) * 50_000, pa.int64()).cast(ts),
            "speed_mps": speed,
            "accel_mps2": accel,
            "steering_angle_deg": rng.normal(0, 10, n),
            "brake_pressed": accel < -0.5,
        }
    )


@benchmark("scenarios")
def scenarios(ctx: BenchContext) -> list[BenchResult]:
    from fleetmine_scenarios import COLUMNS, evaluate, parse
    from jobs.scenario_job import _floats
    from mining.scenarios import shipped
    from storage.lake import Lake

    seconds = 600 if ctx.quick else 3600
    lake = Lake(str(ctx.workdir / "scenario_lake"))
    lake.create_tables(["signals"])
    lake.append("signals", _signals(seconds))
    t0 = time.process_time()
    sig = lake.read("signals", columns=["t", *COLUMNS], where="drive_id = 'bench-drive'").sort_by("t")
    cols = {c: _floats(sig.column(c)) for c in COLUMNS}
    read_s = time.process_time() - t0
    defs = [parse(t) for t in (*shipped().values(), CREEP)]
    t0 = time.process_time()
    spans = sum(len(evaluate(d, cols, 20.0)) for d in defs)
    eval_s = (time.process_time() - t0) / len(defs)
    return [
        BenchResult(
            f"scenario run over {seconds // 60} min of 20 Hz signals ({len(defs)} definitions, "
            f"{spans} spans): x realtime per core, one definition",
            seconds / eval_s,
            seconds / read_s,
            "x realtime",
            "reading those signals from the lake",
            ">= 10000",
            goal_on_measured=True,
        )
    ]
