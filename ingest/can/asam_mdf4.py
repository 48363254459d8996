"""ASAM MDF4 bus logging (.mf4) through python-can's MF4Reader, which uses asammdf."""

from __future__ import annotations

import io
import struct

from ingest._reasons import reason
from ingest.can._pycan import FrameBuilder, mf4_reader
from ingest.interfaces import CanReadResult

__all__ = ["Mf4Reader"]


class Mf4Reader:
    suffixes: tuple[str, ...] = (".mf4",)

    def read(self, data: bytes, name: str) -> CanReadResult:
        reader = mf4_reader()  # when read: python-can's with asammdf (ingest/can/_pycan.py)
        from asammdf.blocks.utils import MdfException

        builder = FrameBuilder()
        result = CanReadResult(builder.table())
        try:
            for msg in reader(io.BytesIO(data)):
                builder.add(msg)
        except (struct.error, ValueError, KeyError, IndexError, OSError, AttributeError, MdfException) as exc:
            result.note(f"{name}: unreadable MF4 after {len(builder)} frames ({reason(exc)})")
        result.frames = builder.table()
        return result
