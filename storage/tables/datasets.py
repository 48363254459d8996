"""``datasets``: curated, immutable dataset versions pinned to lake versions."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="datasets",
    keys=("name", "version"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("query", pa.string()),
            pa.field("created_at", UTC_TS),
            pa.field("clip_count", pa.int64()),
            pa.field("manifest_uri", pa.string()),
            pa.field("state", pa.string()),
            pa.field("lake_version", pa.string()),
            pa.field("model", pa.string()),
        ]
    ),
    description="dataset versions (immutable)",
)
