"""Vector ASC logs through python-can, with absolute time from the header date.

python-can's ``ASCReader`` silently skips some malformed lines and aborts the
whole file with a ``ValueError`` on others (a non-hex id). Here each line's fate
is tracked: a frame-like line that yields no message is counted as skipped, and
after an abort the reader resumes on the next line with the same header, so the
frames after a bad line are kept.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

from ingest._reasons import reason
from ingest.can._pycan import FrameBuilder, python_can
from ingest.interfaces import CanReadResult

__all__ = ["AscReader"]

_FRAME_LIKE = re.compile(
    r"^\s*\d+\.\d+\s+(?:CANFD\s+)?\d+\s+(?!Statistic|ErrorFrame|J1939|Status)\S+\s+(?:Rx|Tx)"
)
_BEGIN = re.compile(r"^\s*Begin\s+Triggerblock", re.IGNORECASE)


class _Feed(io.StringIO):
    """Lines for ``ASCReader``, remembering which body line it read last."""

    def __init__(self, header: list[str], body: list[str], start: int):
        super().__init__()
        self.header, self.body, self.start = header, body, start
        self.pos = start - 1

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        yield from self.header
        for i in range(self.start, len(self.body)):
            self.pos = i
            yield self.body[i]


class AscReader:
    suffixes: tuple[str, ...] = (".asc",)

    def read(self, data: bytes, name: str) -> CanReadResult:
        can = python_can()  # when read, and without asammdf (ingest/can/_pycan.py)

        lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
        split = next((i + 1 for i, ln in enumerate(lines) if _BEGIN.match(ln)), 0)
        header = lines[:split] if split else [ln for ln in lines[:4] if not _FRAME_LIKE.match(ln)]
        body = lines[split:] if split else lines[len(header) :]
        result = CanReadResult(FrameBuilder().table())
        builder = FrameBuilder()
        produced: set[int] = set()
        start = 0
        while start < len(body):
            feed = _Feed(header, body, start)
            reader = can.ASCReader(feed, relative_timestamp=False)
            try:
                for msg in reader:
                    builder.add(msg)
                    produced.add(feed.pos)
                break
            except (ValueError, IndexError, KeyError) as exc:
                if feed.pos < start and header:
                    # The header itself (a garbled date): restarting with it would fail the same
                    # way forever. Read on without it; the times become relative to the log.
                    result.note(f"{name}: header unreadable ({reason(exc)}); frame times relative to the log")
                    header = []
                    continue
                result.note(f"{name} line {split + feed.pos + 1}: unreadable ({reason(exc)})")
                produced.add(feed.pos)  # counted already
                start = max(feed.pos, start) + 1  # always forward
        for i, line in enumerate(body):
            if i not in produced and _FRAME_LIKE.match(line):
                result.note(f"{name} line {split + i + 1}: unreadable frame")
        result.frames = builder.table()
        return result
