"""``models``: the encoder registry. Rows are immutable; one current version per name."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="models",
    keys=("name", "version"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("kind", pa.string()),
            pa.field("uri", pa.string()),
            pa.field("dim", pa.int32()),
            pa.field("params", pa.string()),
            pa.field("is_current", pa.bool_()),
            pa.field("current_since", UTC_TS),
            pa.field("created_at", UTC_TS),
        ]
    ),
    description="encoders: kind builtin/onnx/torchscript, uri, dim, is_current",
)
