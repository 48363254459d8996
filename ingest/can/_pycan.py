"""Frames from python-can ``Message`` iterators, with the failure kept as data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa

from ingest.interfaces import FRAME_SCHEMA

if TYPE_CHECKING:
    import can

__all__ = ["FrameBuilder"]


class FrameBuilder:
    """Accumulates python-can messages into :data:`FRAME_SCHEMA` columns."""

    def __init__(self) -> None:
        self.cols: dict[str, list[object]] = {f.name: [] for f in FRAME_SCHEMA}

    def add(self, msg: can.Message) -> None:
        c = self.cols
        c["t_us"].append(round(msg.timestamp * 1_000_000))
        c["bus"].append(str(msg.channel) if msg.channel is not None else "0")
        c["arbitration_id"].append(int(msg.arbitration_id))
        c["is_extended"].append(bool(msg.is_extended_id))
        c["is_fd"].append(bool(msg.is_fd))
        c["is_error"].append(bool(msg.is_error_frame))
        data = bytes(msg.data or b"")
        c["dlc"].append(len(data))
        c["data"].append(data)

    def extend(self, msgs: Iterable[can.Message]) -> None:
        for m in msgs:
            self.add(m)

    def __len__(self) -> int:
        return len(self.cols["t_us"])

    def table(self) -> pa.Table:
        return pa.table(self.cols, schema=FRAME_SCHEMA)
