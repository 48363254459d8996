"""``dataset_spans``: the samples of a span dataset (``samples="span"``), one row per
scenario span with its margin.

``start``/``end`` are the scenario's span (``scenario_hits``); ``window_start`` /
``window_end`` the sample: the span widened by the query's margin and kept within the
unbroken video of every camera that records the whole span (when none does: within the
drive's clips), so each such camera has every instant of it. ``clip_ids`` are the clips
(every camera) the window overlaps (they are the version's ``dataset_clips`` members
too); export leaves out of the sample a camera whose clips hold the window in part."""

import pyarrow as pa

from storage.schema import UTC_TS, TableSpec

SPEC = TableSpec(
    name="dataset_spans",
    keys=("name", "version", "span_id"),
    schema=pa.schema(
        [
            pa.field("name", pa.string(), nullable=False),
            pa.field("version", pa.int32(), nullable=False),
            pa.field("span_id", pa.string(), nullable=False),
            pa.field("drive_id", pa.string()),
            pa.field("date", pa.date32()),
            pa.field("scenario", pa.string()),
            pa.field("start", UTC_TS),
            pa.field("end", UTC_TS),
            pa.field("window_start", UTC_TS),
            pa.field("window_end", UTC_TS),
            pa.field("clip_ids", pa.list_(pa.string())),
            pa.field("split", pa.string()),
        ]
    ),
    description="the samples of a span dataset: a scenario span with its margin, cut from a drive's clips",
)
