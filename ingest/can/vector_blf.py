"""Vector BLF logs through python-can; a truncated file keeps the frames before the cut."""

from __future__ import annotations

import io
import struct
import zlib

from ingest._reasons import reason
from ingest.can._pycan import FrameBuilder, python_can
from ingest.interfaces import CanReadResult

__all__ = ["BlfReader"]


class BlfReader:
    suffixes: tuple[str, ...] = (".blf",)

    def read(self, data: bytes, name: str) -> CanReadResult:
        can = python_can()  # when read, and without asammdf (ingest/can/_pycan.py)

        builder = FrameBuilder()
        result = CanReadResult(builder.table())
        try:
            reader = can.BLFReader(io.BytesIO(data))
            for msg in reader:
                builder.add(msg)
        except (struct.error, zlib.error, ValueError, EOFError, can.io.blf.BLFParseError) as exc:
            result.note(f"{name}: unreadable after {len(builder)} frames ({reason(exc)})")
        else:
            # python-can stops quietly at a cut: the header knows the real size.
            if reader.file_size and len(data) < reader.file_size:
                result.note(
                    f"{name}: truncated ({len(data)} of {reader.file_size} bytes), "
                    f"{len(builder)} frames read before the cut"
                )
        result.frames = builder.table()
        return result
