"""``schedules``: recurring jobs (a chain of job requests) by interval or cron."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="schedules",
    keys=("name",),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("jobs", pa.string()),  # JSON list of job requests, run in order
            pa.field("every_s", pa.float64()),
            pa.field("cron", pa.string()),
            pa.field("paused", pa.bool_()),
            pa.field("created_at", UTC_TS),
            pa.field("last_tick", UTC_TS),  # the tick the last run was for
            pa.field("last_run_at", UTC_TS),
            pa.field("last_status", pa.string()),
            pa.field("last_run_ids", pa.list_(pa.string())),
        ]
    ),
    description="recurring job chains: interval or cron, paused, last run",
)
