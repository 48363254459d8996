"""Shared reads on a local and an s3:// lake: a clip's signals window."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from storage import Lake
from storage.reads import read_clip_signals
from storage.tables import signals
from storage.tables.signals import SIGNAL_COLUMNS

T0 = dt.datetime(2018, 8, 1, 23, 59, 50, tzinfo=dt.UTC)


def _signals(n: int = 400) -> pa.Table:
    t = [T0 + dt.timedelta(milliseconds=50 * i) for i in range(n)]
    return signals.SPEC.conform(
        pa.table(
            {
                "drive_id": ["20180801-d1"] * n,
                "date": pa.array([T0.date()] * n, pa.date32()),
                "t": pa.array(t, signals.SPEC.schema.field("t").type),
                "speed_mps": [float(i) for i in range(n)],
                "brake_pressed": [None if i % 2 else i % 4 == 0 for i in range(n)],
                "gear": ["D"] * n,
            }
        )
    )


def test_read_clip_signals_is_the_window_as_float_rows(lake: Lake) -> None:
    lake.append("signals", _signals())
    other = _signals(5).set_column(0, "drive_id", pa.array(["20180801-d2"] * 5))
    lake.append("signals", other)
    clip = {
        "drive_id": "20180801-d1",
        "date": T0.date(),
        "start_time": T0 + dt.timedelta(seconds=2),
        "end_time": T0 + dt.timedelta(seconds=12),
    }
    sig = read_clip_signals(lake, clip)
    assert sig.dtype == np.float64 and sig.shape == (200, len(SIGNAL_COLUMNS))
    assert "gear" not in SIGNAL_COLUMNS and SIGNAL_COLUMNS[0] == "t_us"
    assert sig[0, 0] == (T0 + dt.timedelta(seconds=2)).timestamp() * 1e6
    assert np.all(np.diff(sig[:, 0]) == 50_000)
    speed = sig[:, SIGNAL_COLUMNS.index("speed_mps")]
    np.testing.assert_array_equal(speed, np.arange(40, 240, dtype=float))
    brake = sig[:, SIGNAL_COLUMNS.index("brake_pressed")]
    assert np.isnan(brake[1::2]).all() and set(brake[::2]) == {0.0, 1.0}
    assert np.isnan(sig[:, SIGNAL_COLUMNS.index("yaw_rate_dps")]).all()  # the car lacks it
    pinned = read_clip_signals(lake, clip, version=0)  # before the first append
    assert pinned.shape == (0, len(SIGNAL_COLUMNS))
