"""What the clip page's signal plot draws: lanes of signals, the spans where triggers fire
and the spans of scenarios (``scenario_hits``) over the clip's window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np

from storage.config import Triggers
from storage.tables.signals import SIGNAL_COLUMNS, UNITS

__all__ = ["SCENARIO_COLORS", "plot_data", "scenario_palette", "scenario_times"]

SCENARIO_COLORS = ("#4af", "#5dc", "#ee5", "#b9f", "#fb6", "#9e6", "#f8c", "#7bd")
"""One per scenario name of a clip, in name order (none of the triggers' reds and oranges first)."""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)

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


def _us(t: dt.datetime) -> int:
    """Microseconds since 1970, exactly (the signals' ``t``, cast to int64)."""
    return ((t if t.tzinfo else t.replace(tzinfo=dt.UTC)) - _EPOCH) // _US


def scenario_palette(spans: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A color per scenario name of ``spans`` (the plot's shading and the legend's swatches)."""
    names = sorted({str(s["name"]) for s in spans})
    return {n: SCENARIO_COLORS[i % len(SCENARIO_COLORS)] for i, n in enumerate(names)}


def scenario_times(
    spans: Sequence[dict[str, Any]], clip: dict[str, Any], origin_us: int | None = None
) -> list[dict[str, Any]]:
    """Scenario spans (``name``, ``version``, ``start``, ``end``: :func:`mining.scenarios.clip_spans`)
    cut to the clip's window, in seconds from ``origin_us`` (the plot's first sample; by
    default the clip's start); ``before``/``after``: the span goes on outside the clip."""
    lo, hi = _us(clip["start_time"]), _us(clip["end_time"])
    origin = lo if origin_us is None else origin_us
    out = []
    for s in spans:
        a = _us(s["start"])
        b = hi if s.get("end") is None else _us(s["end"])
        a0, b0 = max(a, lo), min(b, hi)
        if b0 <= a0:
            continue
        out.append(
            {
                "name": str(s["name"]),
                "version": int(s["version"]),
                "t0": round((a0 - origin) / 1e6, 3),
                "t1": round((b0 - origin) / 1e6, 3),
                "before": a < lo,
                "after": b > hi,
            }
        )
    return out


def plot_data(
    sig: np.ndarray,
    triggers: Triggers,
    clip: dict[str, Any] | None = None,
    scenarios: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Times (s from the clip's first sample), one series per lane (null where the car lacks
    the signal), the trigger spans and, given the ``clip`` row, the ``scenarios``' spans on
    the same time axis (:func:`scenario_times`) with a color per name, from a clip's 20 Hz
    signals."""
    origin = int(sig[0, 0]) if len(sig) else None
    shaded = scenario_times(scenarios, clip, origin) if clip is not None else []
    colors = scenario_palette(scenarios)
    if len(sig) == 0:
        return {"t": [], "lanes": [], "spans": [], "scenarios": shaded, "colors": colors}
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
    return {"t": _round(t), "lanes": lanes, "spans": spans, "scenarios": shaded, "colors": colors}
