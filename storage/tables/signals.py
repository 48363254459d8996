"""``signals``: canonical vehicle signals resampled to a fixed UTC grid (20 Hz)."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

__all__ = ["CANONICAL", "SIGNAL_COLUMNS", "SPEC", "UNITS"]

CANONICAL = (
    "speed_mps",
    "accel_mps2",
    "steering_angle_deg",
    "steering_rate_dps",
    "yaw_rate_dps",
    "brake_pressed",
    "gas_pedal",
    "turn_signal",
    "gear",
    "driver_override",
)

SIGNAL_COLUMNS = ("t_us", *(c for c in CANONICAL if c != "gear"))
"""Columns of a clip's signals as a float64 array (``storage.reads.read_clip_signals``, each
shard sample's ``signals.npy``): time, then every numeric canonical signal (``gear`` is a
label and stays in the sample's ``.json``)."""

UNITS = {
    "t_us": "us since 1970-01-01 UTC",
    "speed_mps": "m/s",
    "accel_mps2": "m/s^2 (longitudinal, + forward)",
    "steering_angle_deg": "deg (steering wheel, + left)",
    "steering_rate_dps": "deg/s",
    "yaw_rate_dps": "deg/s (+ left)",
    "brake_pressed": "0/1",
    "gas_pedal": "0..1 (pedal travel)",
    "turn_signal": "0 none, 1 left, 2 right",
    "gear": "label",
    "driver_override": "0/1",
}
"""The unit of each signal column (what a training job needs beside the numbers)."""

SPEC = TableSpec(
    name="signals",
    keys=("drive_id", "t"),
    partition_by=("date",),
    schema=pa.schema(
        [
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("t", UTC_TS, nullable=False),
            pa.field("speed_mps", pa.float64()),
            pa.field("accel_mps2", pa.float64()),
            pa.field("steering_angle_deg", pa.float64()),
            pa.field("steering_rate_dps", pa.float64()),
            pa.field("yaw_rate_dps", pa.float64()),
            pa.field("brake_pressed", pa.bool_()),
            pa.field("gas_pedal", pa.float64()),
            pa.field("turn_signal", pa.int8()),
            pa.field("gear", pa.string()),
            pa.field("driver_override", pa.bool_()),
        ]
    ),
    description="canonical signals at 20 Hz, null where the car lacks them",
)
