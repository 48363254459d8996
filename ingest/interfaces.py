"""The contracts of ``ingest``; implementations sit beside this module, one per file.

- A :class:`CanReader` turns one CAN log into a :data:`FRAME_SCHEMA` table and
  says what it could not read (:class:`CanReadResult`); it never raises on a bad
  line, only on a file it cannot open at all.
- A :class:`Stage` is a unit of pipeline work that owns its resources: it declares
  what it needs, loads heavy things in :meth:`Stage.setup` (inside the Ray actor or
  task, never in the driver), and processes a batch of items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pyarrow as pa

from storage.tables.can_frames import FRAME

__all__ = ["FRAME_SCHEMA", "CanReadResult", "CanReader", "Stage"]

FRAME_SCHEMA = pa.schema([pa.field("t_us", pa.int64()), pa.field("bus", pa.string()), *FRAME])
"""Frames as readers return them: absolute time in integer microseconds since the epoch, the
bus, then the ``can_frames`` table's frame columns (:data:`storage.tables.can_frames.FRAME`)."""


@dataclass
class CanReadResult:
    frames: pa.Table
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    """Readable reasons, at most a few per file (``line 17: not a candump frame``)."""
    warnings: list[str] = field(default_factory=list)
    """What the drive's warnings should say about frames that were read (times that are
    not on the wall clock, say): nothing was skipped for these."""

    MAX_PROBLEMS: ClassVar[int] = 20

    def note(self, problem: str) -> None:
        self.skipped += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(problem)


class CanReader(Protocol):
    suffixes: tuple[str, ...]

    def read(self, data: bytes, name: str) -> CanReadResult: ...


class Stage(Protocol):
    """A pipeline step: resources declared, model/decoder loaded in ``setup``."""

    resources: ClassVar[dict[str, float]]

    def setup(self) -> None: ...

    def process_batch(self, items: list[Any]) -> list[Any]: ...
