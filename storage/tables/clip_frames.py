"""``clip_frames``: a few small JPEG keyframes per clip; embedding never re-decodes video.

Clips a signal trigger fired on also hold ``dense`` frames: consecutive frames around
the trigger's moment (:mod:`ingest.look_closer`), after the keyframes' indices.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="clip_frames",
    keys=("clip_id", "frame_index"),
    partition_by=("date",),
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("frame_index", pa.int32(), nullable=False),
            pa.field("drive_id", pa.string()),
            pa.field("t", UTC_TS),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("jpeg", pa.binary()),
            pa.field("dense", pa.bool_()),  # true: a look-closer frame; null/false: a keyframe
        ]
    ),
    description="sampled keyframes as small JPEGs",
    no_dictionary=("jpeg",),
)
