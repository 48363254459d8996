"""``scenario_hits``: where a scenario version happened in a drive, one row per span.

``start``/``end`` bound the span (``end`` exclusive: the last matching sample plus one
sample); ``clip_ids`` are the clips of the drive it overlaps (a span may cross clips)."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="scenario_hits",
    keys=("name", "version", "drive_id", "start"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("start", UTC_TS, nullable=False),
            pa.field("end", UTC_TS),
            pa.field("clip_ids", pa.list_(pa.string())),
            pa.field("run_id", pa.string()),
        ]
    ),
    description="scenario matches: drive, start and end of each span, the clips it overlaps",
)
