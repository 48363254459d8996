"""``scenarios``: scenario definitions (:mod:`fleetmine_scenarios`), versioned like models.

A row never changes: a new text under a name is its next version; adding a text a name
already has gives that version back."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="scenarios",
    keys=("name", "version"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("text", pa.string()),
            pa.field("created_at", UTC_TS),
        ]
    ),
    description="scenario definitions: the canonical text of each version",
)
