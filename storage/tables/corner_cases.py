"""``corner_cases``: the top-k answers of ``GET /v1/mining/corner-cases``, kept ready.

``mine`` writes, per model version and run, the ``k`` most novel clips that are not
near-duplicates: over all clips (``event`` = :data:`ANY_EVENT`) and over the clips of
each trigger event, each list in its own data file, ranked from 1. A request reads the
file of the latest run for its model and event (pruned by the files' statistics),
``rank <= k``: k rows, whatever the lake's size.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

__all__ = ["ANY_EVENT", "SPEC"]

ANY_EVENT = "*"
"""The ``event`` of the list over every clip."""

SPEC = TableSpec(
    name="corner_cases",
    keys=("model_version", "run_id", "event", "rank"),
    partition_by=("model_version",),
    schema=pa.schema(
        [
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("run_id", pa.string(), nullable=False),
            pa.field("event", pa.string(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("date", pa.date32()),
            pa.field("novelty", pa.float64()),
            pa.field("rarity", pa.float64()),
            pa.field("signal_rarity", pa.float64()),
            pa.field("cluster_id", pa.int32()),
            pa.field("knn_distances", pa.list_(pa.float32())),
            pa.field("computed_at", UTC_TS),
        ]
    ),
    description="top-k corner cases per model version, run and event (rank 1 = most novel)",
)
