"""``can_frames``: every raw CAN frame, so a new DBC can re-decode history."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

__all__ = ["FRAME", "SPEC"]

FRAME = pa.schema(
    [
        pa.field("arbitration_id", pa.int64()),
        pa.field("is_extended", pa.bool_()),
        pa.field("is_fd", pa.bool_()),
        pa.field("is_error", pa.bool_()),
        pa.field("dlc", pa.int16()),
        pa.field("data", pa.binary()),
    ]
)
"""One frame as read off the bus; CAN readers return these columns after a time and a bus."""

SPEC = TableSpec(
    name="can_frames",
    keys=("drive_id", "bus", "t"),
    partition_by=("date",),
    schema=pa.schema(
        [
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("bus", pa.string(), nullable=False),
            pa.field("t", UTC_TS, nullable=False),
            *FRAME,
            pa.field("source", pa.string()),
        ]
    ),
    description="raw CAN frames, unknown ids included",
)
