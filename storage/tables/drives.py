"""``drives``: one row per ``<vehicle_id>/<drive>`` folder of the raw fleet upload."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="drives",
    keys=("drive_id",),
    schema=pa.schema(
        [
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("date", pa.date32()),
            pa.field("vehicle_id", pa.string()),
            pa.field("drive", pa.string()),
            pa.field("platform", pa.string()),
            pa.field("start_time", UTC_TS),
            pa.field("time_source", pa.string()),
            pa.field("duration_s", pa.float64()),
            pa.field("source_uri", pa.string()),
            pa.field("fingerprint", pa.string()),
            pa.field("status", pa.string()),
            pa.field("error", pa.string()),
            pa.field("warnings", pa.list_(pa.string())),
            pa.field("retryable", pa.bool_()),
            pa.field("skipped_lines", pa.int64()),
            pa.field("n_clips", pa.int64()),
            pa.field("n_can_frames", pa.int64()),
            pa.field("ingest_run_id", pa.string()),
            pa.field("ingested_at", UTC_TS),
        ]
    ),
    description="drive folders: platform, start and its source, duration, status ok/failed with reason, "
    "warnings on what was dropped",
)
