"""``ended_sessions``: web sign-in sessions ended before their time (signed out).

A session is a signed, expiring cookie (``api.sessions``), so a live one needs no row;
signing out adds its hash here, which every API replica reads, so the old cookie
answers 401 on all of them. A row matters only until ``expires_at``."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="ended_sessions",
    keys=("session_hash",),
    schema=pa.schema(
        [
            pa.field("session_hash", pa.string(), nullable=False),
            pa.field("expires_at", UTC_TS),
            pa.field("ended_at", UTC_TS),
        ]
    ),
    description="Signed-out web sessions (sha256 of the cookie) until they would have expired",
)
