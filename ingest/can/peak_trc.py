"""PEAK TRC logs through python-can; bad lines are skipped and counted."""

from __future__ import annotations

import io

from ingest._reasons import reason
from ingest.can._pycan import FrameBuilder, python_can
from ingest.interfaces import CanReadResult

__all__ = ["TrcReader"]


class TrcReader:
    suffixes: tuple[str, ...] = (".trc",)

    def read(self, data: bytes, name: str) -> CanReadResult:
        can = python_can()  # when read, and without asammdf (ingest/can/_pycan.py)

        text = data.decode("utf-8", errors="replace")
        lines = text.splitlines(keepends=True)
        header = [ln for ln in lines if ln.startswith(";")]
        body = [ln for ln in lines if not ln.startswith(";") and ln.strip()]
        builder = FrameBuilder()
        result = CanReadResult(builder.table())
        if not any(ln.startswith(";$FILEVERSION") for ln in header) and any(
            ln.startswith(";$COLUMNS") for ln in header
        ):
            # Only 2.x files name their columns: without its version line, python-can would
            # read the file as 1.0 and find no frame at all.
            result.note(f"{name}: no $FILEVERSION line; read as 2.1 (the file names its $COLUMNS)")
            header.insert(0, ";$FILEVERSION=2.1\n")
            text = ";$FILEVERSION=2.1\n" + text
        try:
            builder.extend(can.TRCReader(io.StringIO(text)))
        except (ValueError, IndexError, KeyError):
            # One bad line aborts python-can's reader: read line by line instead.
            builder = FrameBuilder()
            for i, line in enumerate(body):
                try:
                    builder.extend(can.TRCReader(io.StringIO("".join(header) + line)))
                except (ValueError, IndexError, KeyError) as exc:
                    result.note(f"{name}: data line {i + 1}: unreadable ({reason(exc)})")
        result.frames = builder.table()
        return result
