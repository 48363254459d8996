"""Per-clip signal features and the triggers that name a clip's ``events``.

``trigger_at_s`` says when (seconds into the clip) the first of the triggers that ask
for a closer look fired: a ``sudden_stop`` (a standstill reached after braking for
less than ``sudden_stop_notice_s``: nothing seen from afar asked for it), a
``hard_brake`` (the hardest deceleration), a ``creep`` (moving on at walking pace
just after a stop, as a car creeping at a red light does).

The names are the ``clips`` table's vocabularies (:data:`storage.tables.clips.FEATURES`
and :data:`~storage.tables.clips.EVENTS`); a new trigger is added there first.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from storage.config import Triggers

__all__ = ["clip_features"]


def _col(sig: pa.Table, name: str) -> np.ndarray | None:
    if name not in sig.column_names:
        return None
    col = sig.column(name)
    if col.null_count == len(col):
        return None
    if pa.types.is_boolean(col.type):
        return np.asarray(col.to_pylist(), dtype=object).astype(float)  # None -> nan
    return col.to_numpy(zero_copy_only=False).astype(float)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where ``mask`` is true."""
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def _nanmax(x: np.ndarray | None) -> float | None:
    if x is None or np.isnan(x).all():
        return None
    return float(np.nanmax(x))


def clip_features(sig: pa.Table, rate_hz: float, cfg: Triggers) -> dict[str, object]:
    """Features of one clip's slice of the ``signals`` grid, and its trigger events."""
    dt = 1.0 / rate_hz
    speed = _col(sig, "speed_mps")
    accel = _col(sig, "accel_mps2")
    yaw = _col(sig, "yaw_rate_dps")
    steer = _col(sig, "steering_angle_deg")
    steer_rate = _col(sig, "steering_rate_dps")
    brake = _col(sig, "brake_pressed")
    override = _col(sig, "driver_override")
    if accel is None and speed is not None and len(speed) > 2:
        accel = np.gradient(speed, dt)
    if steer_rate is None and steer is not None and len(steer) > 2:
        steer_rate = np.gradient(steer, dt)
    lat = np.abs(np.deg2rad(yaw) * speed) if yaw is not None and speed is not None else None
    f: dict[str, object] = {
        "speed_mean": float(np.nanmean(speed)) if speed is not None and not np.isnan(speed).all() else None,
        "speed_min": float(np.nanmin(speed)) if speed is not None and not np.isnan(speed).all() else None,
        "speed_max": _nanmax(speed),
        "max_decel_mps2": _nanmax(-accel) if accel is not None else None,
        "max_lat_accel_mps2": _nanmax(lat),
        "max_steering_rate_dps": _nanmax(np.abs(steer_rate)) if steer_rate is not None else None,
        "brake_presses": None,
        "stop_count": None,
    }
    events: list[str] = []
    if brake is not None:
        b = np.nan_to_num(brake) > 0
        f["brake_presses"] = int(b[0]) + int(np.sum(b[1:] & ~b[:-1]))
    moments: dict[str, float] = {}
    stops: list[tuple[int, int]] = []
    if speed is not None:
        stopped = np.nan_to_num(speed, nan=np.inf) < cfg.stop_speed_mps
        stops = [(a, b) for a, b in _runs(stopped) if (b - a) * dt >= cfg.stop_min_s]
        f["stop_count"] = len(stops)
        if brake is not None:
            braking = np.nan_to_num(brake) > 0
            for a, _ in stops:
                onset = a
                while onset > 0 and braking[onset - 1]:
                    onset -= 1
                # braked from before the clip began: its notice is unknown, not short
                if a > 0 and onset > 0 and a != onset and (a - onset) * dt < cfg.sudden_stop_notice_s:
                    moments["sudden_stop"] = a * dt
                    break
    decel = f["max_decel_mps2"]
    if isinstance(decel, float) and decel >= cfg.hard_brake_mps2:
        events.append("hard_brake")
        if accel is not None:
            moments["hard_brake"] = float(np.nanargmax(-accel)) * dt
    lat_max = f["max_lat_accel_mps2"]
    if isinstance(lat_max, float) and lat_max >= cfg.sharp_turn_lat_mps2:
        events.append("sharp_turn")
    if steer_rate is not None and speed is not None:
        fast = (np.abs(np.nan_to_num(steer_rate)) >= cfg.evasive_steer_rate_dps) & (
            np.nan_to_num(speed) >= cfg.evasive_min_speed_mps
        )
        if fast.any():
            events.append("evasive_steer")
    if len(stops) >= cfg.stop_and_go_stops:
        events.append("stop_and_go")
    if speed is not None and stops:
        v = np.nan_to_num(speed)
        slow = (v >= cfg.stop_speed_mps) & (v < cfg.creep_max_speed_mps)
        for a, b in _runs(slow):
            after_stop = any(0 <= a - se <= cfg.creep_within_s * rate_hz for _, se in stops)
            steady = accel is None or float(np.nanmedian(np.abs(accel[a:b]))) < cfg.creep_max_accel_mps2
            if after_stop and steady and (b - a) * dt >= cfg.creep_min_s:
                events.append("creep")
                moments["creep"] = a * dt
                break
    if override is not None and (np.nan_to_num(override) > 0).any():
        events.append("driver_override")
    if "sudden_stop" in moments:
        events.append("sudden_stop")
    f["events"] = events
    first = next((moments[e] for e in ("sudden_stop", "hard_brake", "creep") if e in moments), None)
    f["trigger_at_s"] = first
    return f
