"""``scenario_scans``: which drives a scenario version has been run over (with or
without hits), so that a run only visits the drives it has not seen."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="scenario_scans",
    keys=("name", "version", "drive_id"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("drive_id", pa.string(), nullable=False),
            pa.field("hits", pa.int32()),
            pa.field("samples", pa.int64()),
            pa.field("run_id", pa.string()),
            pa.field("scanned_at", UTC_TS),
        ]
    ),
    description="the drives each scenario version was run over, and how many spans each gave",
)
