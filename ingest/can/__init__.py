"""CAN log readers by file suffix, and the DBC decoder."""

from __future__ import annotations

from ingest.can.asam_mdf4 import Mf4Reader
from ingest.can.candump import CandumpReader
from ingest.can.mcap_can import McapCanReader
from ingest.can.peak_trc import TrcReader
from ingest.can.vector_asc import AscReader
from ingest.can.vector_blf import BlfReader
from ingest.interfaces import CanReader, CanReadResult

__all__ = ["READERS", "read_can_log", "reader_for"]

READERS: tuple[CanReader, ...] = (
    CandumpReader(),
    AscReader(),
    BlfReader(),
    TrcReader(),
    Mf4Reader(),
    McapCanReader(),
)


def reader_for(name: str) -> CanReader:
    from storage.errors import ConfigError

    lower = name.lower()
    for r in READERS:
        if lower.endswith(r.suffixes):
            return r
    known = sorted(s for r in READERS for s in r.suffixes)
    raise ConfigError(f"no CAN reader for {name!r}; known suffixes: {known}")


def read_can_log(data: bytes, name: str) -> CanReadResult:
    """Frames of one log; unreadable lines counted in the result, never raised.

    A non-empty file that gives no frame and no reason (a reader that found nothing
    it recognised) is reported as such, so no log is ever dropped without a word.
    """
    result = reader_for(name).read(data, name)
    if data.strip() and result.frames.num_rows == 0 and not result.skipped:
        result.note(f"{name}: no CAN frames recognised in {len(data)} bytes")
    return result
