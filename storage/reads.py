"""Reads that the API and mining share, so neither imports the other to get them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from storage.sql import literal
from storage.tables.signals import SIGNAL_COLUMNS

if TYPE_CHECKING:
    from storage.lake import Lake

__all__ = ["read_clip_signals"]


def read_clip_signals(lake: Lake, clip: dict[str, Any], version: int | None = None) -> np.ndarray:
    """The canonical signals over ``clip``'s time window at 20 Hz, one float64 row per sample
    (columns: :data:`~storage.tables.signals.SIGNAL_COLUMNS`; nulls are NaN).

    ``clip`` needs ``drive_id``, ``date``, ``start_time`` and ``end_time`` (a ``clips``
    row, or a window over several); ``version`` pins the ``signals`` table version.
    """
    where = (
        f"drive_id = {literal(clip['drive_id'])} AND date = {literal(clip['date'])} "
        f"AND t >= {literal(clip['start_time'])} AND t < {literal(clip['end_time'])}"
    )
    t = lake.read("signals", where=where, version=version).sort_by("t")
    out = np.full((t.num_rows, len(SIGNAL_COLUMNS)), np.nan)
    if t.num_rows:
        out[:, 0] = t.column("t").cast(pa.int64()).to_numpy()
        for j, c in enumerate(SIGNAL_COLUMNS[1:], start=1):
            out[:, j] = t.column(c).cast(pa.float64()).to_numpy()
    return out
