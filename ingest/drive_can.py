"""A drive's CAN: its logs read onto UTC, and decoded by its platform's DBC.

Each log under ``can/`` is read by the reader its suffix names (:mod:`ingest.can`), its
frames moved by drive.json's ``can_time_offset_s`` and kept only within 1970..2200; a
log that cannot be read is a warning, and the other logs still land. Decoders are kept
per :attr:`ingest.platform.Platform.key` (DBC content + signal map), never by a name: a
drive.json picks names.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest._reasons import reason
from ingest.can import read_can_log
from ingest.can.dbc import VectorDecoder
from ingest.drive_files import DriveFiles, LinkedOut, linked_out
from ingest.drive_json import doc_number
from ingest.interfaces import FRAME_SCHEMA
from ingest.notes import Notes
from ingest.platform import Platform
from ingest.start_time import EARLIEST_US, LATEST_US, RANGE

__all__ = ["MAX_CAN_OFFSET_S", "Decoders", "read_can"]

MAX_CAN_OFFSET_S = (LATEST_US - EARLIEST_US) / 1e6
"""``can_time_offset_s`` may move a logger's clock counted from its boot onto UTC, so it may
be as large as the whole time range (1970..2200), no larger; the frames it gives must
still lie in that range."""


def read_can(files: DriveFiles, doc: dict[str, Any], notes: Notes) -> pa.Table:
    """The frames of every CAN log of the drive, by time, each with its ``source`` (the
    log's name); what could not be read is in ``notes``."""
    tables = []
    offset_us = round(doc_number(doc, "can_time_offset_s", notes, MAX_CAN_OFFSET_S) * 1e6)
    for path in files.src.can_logs:
        name = posixpath.basename(path)
        try:
            data = files.read(path)
        except LinkedOut:
            notes.warn(linked_out(f"can/{name}"))
            continue
        except OSError as exc:
            notes.warn(f"{name}: unreadable ({reason(exc)})", transient=True)
            continue
        if not data:
            notes.warn(f"{name}: empty file")
            continue
        try:
            res = read_can_log(data, name)
        except Exception as exc:  # a reader library that raises on a corrupt file: this log only
            notes.warn(f"{name}: unreadable {posixpath.splitext(name)[1]} log: {reason(exc)}")
            continue
        notes.skipped_lines += res.skipped
        if res.skipped:
            notes.warn(
                f"{name}: {res.skipped} unreadable lines skipped, {res.frames.num_rows} frames kept "
                f"({'; '.join(res.problems[:3])})"
            )
        for w in res.warnings:
            notes.warn(w)
        if res.frames.num_rows == 0 and not res.skipped:
            notes.warn(f"{name}: no CAN frames")
        f = _in_range(res.frames, offset_us, name, notes)
        f = f.append_column("source", pa.array([name] * f.num_rows, pa.string()))
        if offset_us:
            f = f.set_column(0, "t_us", pc.add(f.column("t_us"), offset_us))
        tables.append(f)
    if not tables:
        empty = FRAME_SCHEMA.empty_table()
        return empty.append_column("source", pa.array([], pa.string()))
    return pa.concat_tables(tables).sort_by("t_us")


def _in_range(frames: pa.Table, offset_us: int, name: str, notes: Notes) -> pa.Table:
    """The frames whose times (with the offset) lie in 1970..2200; the rest are dropped
    with a warning (a logger clock far off, a garbled timestamp: 999999999999.0 would
    make the signal grid span millennia). Compared before the offset is added, so the
    sum cannot overflow."""
    t = frames.column("t_us")
    keep = pc.and_(
        pc.greater_equal(t, pa.scalar(EARLIEST_US - offset_us, pa.int64())),
        pc.less(t, pa.scalar(LATEST_US - offset_us, pa.int64())),
    )
    kept = frames.filter(keep)
    if kept.num_rows < frames.num_rows:
        dropped = frames.num_rows - kept.num_rows
        notes.warn(f"{name}: {dropped} CAN frames timed outside {RANGE} (can_time_offset_s added) dropped")
    return kept


class Decoders:
    """A stage's DBC decoders, the last ``keep`` platforms' (a worker decodes many drives)."""

    def __init__(self, keep: int = 8):
        self.keep = keep
        self._by_key: OrderedDict[str, VectorDecoder] = OrderedDict()

    def decode(self, platform: Platform, frames: pa.Table, notes: Notes) -> dict[str, Any]:
        """The platform's signals from the frames of its buses (every bus if it names none)."""
        dec = self._by_key.get(platform.key)
        if dec is None:
            dec = self._by_key[platform.key] = VectorDecoder(platform.database)
            while len(self._by_key) > self.keep:
                self._by_key.popitem(last=False)
        if platform.buses:
            frames = frames.filter(pc.is_in(frames.column("bus"), value_set=pa.array(list(platform.buses))))
        out, stats = dec.decode(frames)
        if stats.short_frames:
            notes.warn(f"{stats.short_frames} frames too short for their DBC message, not decoded")
        return out
