"""``dataset_clips``: membership of clips in a dataset version, with split and shard."""

import pyarrow as pa

from storage.schema import TableSpec

SPEC = TableSpec(
    name="dataset_clips",
    keys=("name", "version", "clip_id"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("split", pa.string()),
            pa.field("shard_index", pa.int32()),
        ]
    ),
    description="which clips a dataset version holds",
)
