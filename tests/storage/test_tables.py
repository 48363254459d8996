"""Table modules hold the vocabularies and shared column sets the other packages use."""

from __future__ import annotations

from ingest.interfaces import FRAME_SCHEMA
from storage.tables import can_frames, clips


def test_readers_frames_are_the_tables_frame_columns() -> None:
    assert FRAME_SCHEMA.names[:2] == ["t_us", "bus"]
    assert FRAME_SCHEMA.remove(0).remove(0).equals(can_frames.FRAME)
    table = can_frames.SPEC.schema
    assert all(table.field(f.name).equals(f) for f in can_frames.FRAME)


def test_clip_vocabularies_are_clip_columns() -> None:
    table = clips.SPEC.schema
    assert [n for n in table.names if n in clips.FEATURES] == list(clips.FEATURES)
    assert table.field("events").type.value_type == "string"
    assert len(set(clips.EVENTS)) == len(clips.EVENTS)
