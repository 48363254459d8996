"""``_leases``: an append-only log of lake-wide lease grants and releases.

Each grant is a Delta commit made with no conflict retries on top of the version
it read, so of two processes racing for the lease exactly one commit lands: the
same put-if-absent that protects every Delta commit, on local disk or S3.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="_leases",
    keys=("lease", "token"),
    schema=pa.schema(
        [
            pa.field("lease", pa.string(), nullable=False),
            pa.field("token", pa.string(), nullable=False),
            pa.field("holder", pa.string()),
            pa.field("action", pa.string()),
            pa.field("at", UTC_TS),
            pa.field("expires_at", UTC_TS),
        ]
    ),
    description="lake-wide leases (maintenance)",
)
