"""``mining_scores``: novelty, rarity and dedup per clip, model version and run."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="mining_scores",
    keys=("clip_id", "model_version", "run_id"),
    partition_by=("date",),
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("novelty", pa.float64()),
            pa.field("knn_distances", pa.list_(pa.float32())),
            pa.field("cluster_id", pa.int32()),
            pa.field("rarity", pa.float64()),
            pa.field("signal_rarity", pa.float64()),
            pa.field("duplicate_of", pa.string()),
            pa.field("computed_at", UTC_TS),
            # the full run whose fit (index, clusters, rank sketches) scored the row: that run
            # and the incremental runs after it hold each clip of the model exactly once
            pa.field("base_run", pa.string()),
        ]
    ),
    description="higher novelty = more novel; duplicate_of names the kept clip",
)
