"""CAN log readers by file suffix, and the DBC decoder.

:data:`READERS` is the one registration of a CAN log format: each reader's ``suffixes``
say which files it reads, and the code derives the rest from them: which files of a
drive's ``can/`` folder discovery takes as CAN logs (:data:`CAN_SUFFIXES`), which reader
reads one (:func:`reader_for`) and the suffixes a refusal lists. A new format is a module
here and one line in :data:`READERS`; the tests then ask for the rest: a sample log for
the shared reader suite (``tests/ingest/test_can_reader_contract.py``) and the suffix in
``docs/raw-layout.md`` (``tests/deploy/test_docs.py``).
"""

from __future__ import annotations

from ingest.can.asam_mdf4 import Mf4Reader
from ingest.can.candump import CandumpReader
from ingest.can.mcap_can import McapCanReader
from ingest.can.openpilot_rlog import OpenpilotLogReader
from ingest.can.peak_trc import TrcReader
from ingest.can.vector_asc import AscReader
from ingest.can.vector_blf import BlfReader
from ingest.interfaces import CanReader, CanReadResult

__all__ = ["CAN_SUFFIXES", "READERS", "read_can_log", "reader_for"]

READERS: tuple[CanReader, ...] = (
    CandumpReader(),
    AscReader(),
    BlfReader(),
    TrcReader(),
    Mf4Reader(),
    McapCanReader(),
    OpenpilotLogReader(),
)

CAN_SUFFIXES: tuple[str, ...] = tuple(sorted({s for r in READERS for s in r.suffixes}))
"""Every suffix a reader takes, sorted: a file under ``can/`` with one is a CAN log."""


def reader_for(name: str) -> CanReader:
    from storage.errors import ConfigError

    lower = name.lower()
    for r in READERS:
        if lower.endswith(r.suffixes):
            return r
    raise ConfigError(f"no CAN reader for {name!r}; known suffixes: {list(CAN_SUFFIXES)}")


def read_can_log(data: bytes, name: str) -> CanReadResult:
    """Frames of one log; unreadable lines counted in the result, never raised.

    A non-empty file that gives no frame and no reason (a reader that found nothing
    it recognised) is reported as such, so no log is ever dropped without a word.
    """
    result = reader_for(name).read(data, name)
    if data.strip() and result.frames.num_rows == 0 and not result.skipped:
        result.note(f"{name}: no CAN frames recognised in {len(data)} bytes")
    return result
