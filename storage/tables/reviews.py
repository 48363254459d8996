"""``reviews``: what a reviewer decided about a clip; append-only, the latest row of a clip wins.

A verdict is never updated in place: changing one's mind is a new row, so the table is
also the audit trail of who decided what, when (DESIGN.md: key ``clip_id, reviewer, at``).
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

__all__ = ["SPEC", "VERDICTS"]

VERDICTS = ("confirmed", "not_interesting", "mislabelled")
"""What a reviewer can say of a clip: a real corner case, not one, or its events are wrong."""

SPEC = TableSpec(
    name="reviews",
    keys=("clip_id", "reviewer", "at"),
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("reviewer", pa.string(), nullable=False),
            pa.field("at", UTC_TS, nullable=False),
            pa.field("verdict", pa.string(), nullable=False),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("note", pa.string()),
        ]
    ),
    description="verdicts on clips (append-only; per clip the latest row wins)",
)
