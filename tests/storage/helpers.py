from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from storage.tables import clips


def clip_rows(n: int, start: int = 0, days: int = 3) -> pa.Table:
    """Clips spread over ``days`` UTC days, ids prefixed with their day like real ids."""
    idx = np.arange(start, start + n)
    dates = [dt.date(2018, 8, 1) + dt.timedelta(days=int(i % days)) for i in idx]
    return clips.SPEC.conform(
        pa.table(
            {
                "clip_id": [f"{d:%Y%m%d}-{i:08x}" for d, i in zip(dates, idx, strict=True)],
                "date": pa.array(dates, pa.date32()),
                "vehicle_id": [f"veh{i % 2}" for i in idx],
                "start_time": [
                    dt.datetime.combine(d, dt.time(8), dt.UTC) + dt.timedelta(seconds=10 * int(i))
                    for d, i in zip(dates, idx, strict=True)
                ],
                "speed_mean": idx.astype(float),
                "events": [["hard_brake"] if i % 5 == 0 else [] for i in idx],
            }
        )
    )
