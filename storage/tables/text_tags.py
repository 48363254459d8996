"""``text_tags``: zero-shot tags, described in words and scored by a text-image model.

A tag version is a few prompts (``"a photo taken at night"``, ``"a dark street"``) and a
threshold, pinned to one model version with a text side (``model_name@model_version``):
its scores are cosine similarities in that version's space, and mean nothing in another.
A row never changes; adding a name again with other prompts, threshold or model is its
next version (:mod:`mining.tags.registry`).
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="text_tags",
    keys=("name", "version"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("model_name", pa.string(), nullable=False),
            pa.field("model_version", pa.int32(), nullable=False),
            pa.field("prompts", pa.list_(pa.string())),
            pa.field("threshold", pa.float64()),
            pa.field("created_at", UTC_TS),
        ]
    ),
    description="zero-shot tags: prompts and a threshold, pinned to a text-image model version",
)
