"""``embeddings``: one vector per clip and model version.

Delta has no fixed-size list type, so the column is stored as ``list<float32>``;
readers cast it back to ``fixed_size_list<float32>[dim]`` with the model's dim.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="embeddings",
    keys=("clip_id", "model_name", "model_version"),
    partition_by=("date",),
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("model_name", pa.string(), nullable=False),
            pa.field("model_version", pa.int32(), nullable=False),
            pa.field("vector", pa.list_(pa.float32())),
            pa.field("run_id", pa.string()),
            pa.field("created_at", UTC_TS),
        ]
    ),
    description="clip embeddings per model version",
    no_dictionary=("vector",),
)
