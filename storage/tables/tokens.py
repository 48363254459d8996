"""``tokens``: API bearer tokens, stored as hashes only."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="tokens",
    keys=("name",),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("token_hash", pa.string()),
            pa.field("role", pa.string()),
            pa.field("created_at", UTC_TS),
            pa.field("revoked_at", UTC_TS),
        ]
    ),
    description="API tokens (sha256 of the secret), role, revocation",
)
