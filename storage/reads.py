"""Reads that the API and mining share, so neither imports the other to get them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from storage.sql import literal
from storage.tables.signals import SIGNAL_COLUMNS

if TYPE_CHECKING:
    from storage.lake import Lake

__all__ = ["derived_accel", "read_clip_signals", "read_drive_signals"]


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


def read_drive_signals(lake: Lake, drive_id: str, date: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A whole drive's signals from its one date partition: ``t`` (us since the epoch,
    ascending) and every numeric column as float64 (NaN where null, 0/1 columns as 0.0/1.0)."""
    where = f"drive_id = {literal(drive_id)} AND date = {literal(date)}"
    names = SIGNAL_COLUMNS[1:]
    t = lake.read("signals", columns=["t", *names], where=where).sort_by("t")
    cols = {
        c: t.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64) for c in names
    }
    return t.column("t").cast(pa.int64()).to_numpy(), cols


def derived_accel(accel: np.ndarray | None, speed: np.ndarray | None, rate_hz: float) -> np.ndarray | None:
    """Acceleration per sample: the measured one, else (where it is missing) the speed's
    change since the sample before, per second. None when there is neither. What triggers,
    scenarios and policy shadow runs all mean by the driver's acceleration (a car whose map
    lacks ``accel_mps2`` still has one)."""
    if speed is None:
        return accel
    d = np.full(len(speed), np.nan)
    d[1:] = (speed[1:] - speed[:-1]) * rate_hz
    return d if accel is None else np.where(np.isnan(accel), d, accel)
