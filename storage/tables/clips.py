"""``clips``: fixed-length, keyframe-aligned clips with per-clip signal features.

:data:`FEATURES` and :data:`EVENTS` are the vocabularies of the feature columns and
of the ``events`` column: ingest computes them, the API and curation filter on them.
They may grow; an encoder that reads them keeps its own frozen copy, so a new
event never changes the vectors of a registered model version.
"""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

__all__ = ["EVENTS", "FEATURES", "SPEC"]

FEATURES = (
    "speed_mean",
    "speed_min",
    "speed_max",
    "max_decel_mps2",
    "max_lat_accel_mps2",
    "max_steering_rate_dps",
    "brake_presses",
    "stop_count",
)
"""The per-clip signal feature columns, in table order."""

EVENTS = (
    "hard_brake",
    "sharp_turn",
    "evasive_steer",
    "stop_and_go",
    "creep",
    "driver_override",
    "sudden_stop",
)
"""The trigger names a clip's ``events`` list may hold."""

SPEC = TableSpec(
    name="clips",
    keys=("clip_id",),
    partition_by=("date",),
    schema=pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("date", pa.date32(), nullable=False),
            pa.field("drive_id", pa.string()),
            pa.field("vehicle_id", pa.string()),
            pa.field("camera", pa.string()),
            pa.field("group_id", pa.string()),
            pa.field("start_time", UTC_TS),
            pa.field("end_time", UTC_TS),
            pa.field("duration_s", pa.float64()),
            pa.field("video_uri", pa.string()),
            # an H.264 copy for browsers of a clip whose codec they do not play (HEVC); null
            # when the original plays (ingest/preview.py)
            pa.field("preview_uri", pa.string()),
            pa.field("width", pa.int32()),
            pa.field("height", pa.int32()),
            pa.field("fps", pa.float64()),
            pa.field("codec", pa.string()),
            pa.field("rotation_deg", pa.int16()),
            pa.field("thumbnail_uri", pa.string()),
            pa.field("speed_mean", pa.float64()),
            pa.field("speed_min", pa.float64()),
            pa.field("speed_max", pa.float64()),
            pa.field("max_decel_mps2", pa.float64()),
            pa.field("max_lat_accel_mps2", pa.float64()),
            pa.field("max_steering_rate_dps", pa.float64()),
            pa.field("brake_presses", pa.int32()),
            pa.field("stop_count", pa.int32()),
            pa.field("events", pa.list_(pa.string())),
            # seconds into the clip of the moment its first trigger fired (sudden_stop,
            # hard_brake, creep): where ingest looked closer; null when none fired
            pa.field("trigger_at_s", pa.float64()),
            pa.field("ingest_run_id", pa.string()),
            # JSON: the camera's ``intrinsics`` / ``extrinsics`` from drive.json, null without them
            pa.field("calibration", pa.string()),
        ]
    ),
    description="clips with signal features and trigger events",
    # Sorted by id within each day (`lake maintain`): a clip by id, a first page and a
    # keyset page after a cursor each decode about one row group.
    cluster_by=("clip_id",),
    cluster_row_group=1024,
)
