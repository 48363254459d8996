"""python-can for the readers of its formats: imported as they need it, and frames from its
``Message`` iterators, with the failure kept as data."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ingest.interfaces import FRAME_SCHEMA

if TYPE_CHECKING:
    import can

__all__ = ["FrameBuilder", "mf4_reader", "python_can"]


def python_can() -> ModuleType:
    """python-can, imported without asammdf until an MF4 log is read.

    python-can's package imports its MF4 module, which imports asammdf, and asammdf sympy
    and pandas: 0.8 of the 0.9 s of a core that ``import can`` takes, in every decoder
    process that reads an ASC, BLF or TRC log, for the one format :func:`mf4_reader`
    reads. python-can takes an asammdf that will not import as "no MF4 support", so the
    first import here hides it (the import system raises ImportError for a module whose
    ``sys.modules`` entry is None) and shows it again after."""
    if "can" in sys.modules:
        return sys.modules["can"]
    hide = "asammdf" not in sys.modules
    if hide:
        sys.modules["asammdf"] = None  # type: ignore[assignment]
    try:
        import can
    finally:
        if hide and "asammdf" in sys.modules and sys.modules["asammdf"] is None:
            del sys.modules["asammdf"]
    return can


def mf4_reader() -> Any:
    """python-can's ``MF4Reader``, with asammdf: where :func:`python_can` imported python-can
    without it, its MF4 module runs again with asammdf, and the names python-can gives its
    MF4 classes (the package, ``can.io``, the reader and writer tables) are bound again to
    the classes that run."""
    pycan = python_can()
    mf4 = pycan.io.mf4
    if mf4.asammdf is None:
        importlib.import_module("asammdf")  # the real one (ImportError here if not installed)
        importlib.reload(mf4)
        for module in (pycan, pycan.io, pycan.io.player, pycan.io.logger):
            for name in ("MF4Reader", "MF4Writer"):
                if hasattr(module, name):
                    setattr(module, name, getattr(mf4, name))
        pycan.io.player.MESSAGE_READERS[".mf4"] = mf4.MF4Reader
        pycan.io.logger.MESSAGE_WRITERS[".mf4"] = mf4.MF4Writer
    return mf4.MF4Reader


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
