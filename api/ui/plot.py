"""What the clip page's signal plot draws: lanes of signals and the spans where triggers fire."""

from __future__ import annotations

from typing import Any

import numpy as np

from storage.config import Triggers
from storage.tables.signals import SIGNAL_COLUMNS, UNITS

__all__ = ["plot_data"]

LANES = (
    ("speed_mps", "speed"),
    ("accel_mps2", "acceleration"),
    ("steering_angle_deg", "steering"),
    ("brake_pressed", "brake"),
)


def _col(sig: np.ndarray, name: str) -> np.ndarray:
    return np.asarray(sig[:, SIGNAL_COLUMNS.index(name)], dtype=float)


def _runs(mask: np.ndarray, t: np.ndarray, step: float) -> list[tuple[float, float]]:
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(float(t[a]), float(t[b - 1] + step)) for a, b in zip(starts, ends, strict=True)]


def _round(v: np.ndarray) -> list[float | None]:
    return [None if x != x else round(float(x), 3) for x in v]


def plot_data(sig: np.ndarray, triggers: Triggers) -> dict[str, Any]:
    """Times (s from the clip's start), one series per lane (null where the car lacks the
    signal) and the trigger spans, from a clip's 20 Hz signals."""
    if len(sig) == 0:
        return {"t": [], "lanes": [], "spans": []}
    t = (sig[:, 0] - sig[0, 0]) / 1e6
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.05
    lanes = []
    for col, label in LANES:
        v = _col(sig, col)
        if np.isnan(v).all():
            continue
        lanes.append({"key": col, "label": label, "unit": UNITS[col].split(" ")[0], "values": _round(v)})
    speed, accel = _col(sig, "speed_mps"), _col(sig, "accel_mps2")
    if np.isnan(accel).all() and len(speed) > 2:
        accel = np.gradient(speed, step)
    steer_rate = _col(sig, "steering_rate_dps")
    lat = np.abs(np.deg2rad(_col(sig, "yaw_rate_dps")) * speed)
    marks = {
        "hard_brake": np.nan_to_num(-accel) >= triggers.hard_brake_mps2,
        "sharp_turn": np.nan_to_num(lat) >= triggers.sharp_turn_lat_mps2,
        "evasive_steer": (np.abs(np.nan_to_num(steer_rate)) >= triggers.evasive_steer_rate_dps)
        & (np.nan_to_num(speed) >= triggers.evasive_min_speed_mps),
        "brake": np.nan_to_num(_col(sig, "brake_pressed")) > 0,
        "driver_override": np.nan_to_num(_col(sig, "driver_override")) > 0,
    }
    spans = [
        {"kind": kind, "t0": round(a, 3), "t1": round(b, 3)}
        for kind, mask in marks.items()
        for a, b in _runs(mask, t, step)
    ]
    return {"t": _round(t), "lanes": lanes, "spans": spans}
