"""``runs``: one row per job run, with counts and per-item errors (JSON)."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="runs",
    keys=("run_id",),
    schema=pa.schema(
        [
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("kind", pa.string()),
            pa.field("app_id", pa.string()),
            pa.field("run_number", pa.int64()),
            pa.field("params", pa.string()),
            pa.field("status", pa.string()),
            pa.field("started_at", UTC_TS),
            pa.field("finished_at", UTC_TS),
            pa.field("counts", pa.string()),
            pa.field("errors", pa.string()),
            pa.field("cluster_job_id", pa.string()),  # Ray submission id, or pid@host of a local job
            pa.field("log_uri", pa.string()),
        ]
    ),
    description="job runs: kind, params, status, counts, per-item errors",
)
