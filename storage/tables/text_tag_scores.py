"""``text_tag_scores``: how well each clip matches each zero-shot tag version.

One row per (tag version, clip), written by ``fleetmine tags run`` in one commit per run.
``score`` is the largest over the tag's prompts of the cosine similarity between the
prompt's text embedding and the clip's stored vector of the tag's model version;
``passed`` is ``score >= threshold`` (the version's, fixed with it). A clip whose vector is
all zeros or not finite (no keyframe to see) has a null score and does not pass: it was
visited, so the next run does not visit it again. Partitioned by the clip's ``date``, as
the other per-clip tables are.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="text_tag_scores",
    keys=("tag_name", "tag_version", "clip_id"),
    partition_by=("date",),
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("tag_name", pa.string(), nullable=False),
            pa.field("tag_version", pa.int32(), nullable=False),
            pa.field("score", pa.float64()),
            pa.field("passed", pa.bool_()),
            pa.field("run_id", pa.string()),
            pa.field("scored_at", UTC_TS),
        ]
    ),
    description="zero-shot tag scores per clip: max cosine over the prompts, and whether it passes",
)
