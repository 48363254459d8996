"""Per-clip signal features and the triggers that name a clip's ``events``.

``trigger_at_s`` says when (seconds into the clip) the first of the triggers that ask
for a closer look fired: a ``sudden_stop`` (a standstill reached after braking for
less than ``sudden_stop_notice_s``: nothing seen from afar asked for it), a
``hard_brake`` (the hardest deceleration), a ``creep`` (moving on at walking pace
just after a stop, as a car creeping at a red light does).

Those three are the shipped scenario definitions (:data:`mining.scenarios.registry.SHIPPED`,
rendered from the same thresholds) computed here in NumPy, span for span:
:func:`trigger_spans` finds each as ``[start, end)`` sample spans the way
:mod:`fleetmine_scenarios` evaluates its text, and a clip is named for a trigger when
one of its spans overlaps the clip. Where a drive has no acceleration signal (a
platform whose map lacks ``accel_mps2``, e.g. the RAV4), acceleration is the speed's
change per second from the sample before (a backward difference: the scenarios'
``accel_mps2`` falls back to it too, sample by sample, so a recorder can compute it live).

Spans are found over the signals :func:`clip_features` is given; a caller that has the
whole drive passes :func:`drive_trigger_spans` of the drive's grid and the clip's offset
in it, so a pattern crossing a clip boundary (a stop at the end of one clip, the creep in
the next) names every clip it overlaps, as the lake's scenario run does.

The names are the ``clips`` table's vocabularies (:data:`storage.tables.clips.FEATURES`
and :data:`~storage.tables.clips.EVENTS`); a new trigger is added there first.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from storage.config import Triggers
from storage.reads import derived_accel

__all__ = ["TRIGGERS", "clip_features", "derived_accel", "drive_trigger_spans", "trigger_spans"]

TRIGGERS = ("hard_brake", "sudden_stop", "creep")
"""The triggers that are also shipped scenario definitions, found as spans."""

Span = tuple[int, int, int]  # [start, end) in samples, and the trigger's moment in it
_EPS = 1e-9


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


def _samples(seconds: float, rate_hz: float) -> int:
    """The fewest samples that last ``seconds`` (at least one)."""
    return max(1, math.ceil(seconds * rate_hz - _EPS))


def trigger_spans(
    speed: np.ndarray | None,
    accel: np.ndarray | None,
    brake: np.ndarray | None,
    rate_hz: float,
    cfg: Triggers,
) -> dict[str, list[Span]]:
    """Where each of :data:`TRIGGERS` held in contiguous 20 Hz samples (a drive's, or a
    clip's): ``(start, end, moment)`` per span, ``[start, end)``. ``accel`` is
    :func:`derived_accel`'s; a missing value (NaN) holds no predicate.

    - ``hard_brake``: a run of ``accel <= -hard_brake_mps2``; its moment is its hardest sample.
    - ``sudden_stop``: a run of braking while moving (``speed >= stop_speed_mps``) shorter
      than ``sudden_stop_notice_s``, that ends where a stop (``speed < stop_speed_mps``) of
      at least ``stop_min_s`` begins; the span runs to the stop's end, its moment is the stop's start.
    - ``creep``: a stop of at least ``stop_min_s``, then the first run of walking pace
      (``stop_speed_mps <= speed < creep_max_speed_mps``) held steady (``|accel| <
      creep_max_accel_mps2``) for ``creep_min_s`` that begins at most ``creep_within_s``
      after the stop ended; from the stop's start to the creep's end, its moment the creep's start.
    """
    out: dict[str, list[Span]] = {name: [] for name in TRIGGERS}
    with np.errstate(invalid="ignore"):
        if accel is not None:
            for a, b in _runs(accel <= -cfg.hard_brake_mps2):
                out["hard_brake"].append((a, b, a + int(np.argmin(accel[a:b]))))
        if speed is None:
            return out
        stop_min = _samples(cfg.stop_min_s, rate_hz)
        stops = [(a, b) for a, b in _runs(speed < cfg.stop_speed_mps) if b - a >= stop_min]
        if brake is not None:
            stop_at = dict(stops)
            moving_brake = (np.nan_to_num(brake) != 0) & (speed >= cfg.stop_speed_mps)
            notice = cfg.sudden_stop_notice_s * rate_hz - _EPS
            for a, b in _runs(moving_brake):
                if b - a < notice and b in stop_at:
                    out["sudden_stop"].append((a, stop_at[b], b))
        if accel is not None and stops:
            slow = (speed >= cfg.stop_speed_mps) & (speed < cfg.creep_max_speed_mps)
            creeps = _runs(slow & (np.abs(accel) < cfg.creep_max_accel_mps2))
            long_enough = _samples(cfg.creep_min_s, rate_hz)
            within = cfg.creep_within_s * rate_hz + _EPS
            for sa, se in stops:
                for a, b in creeps:
                    if a < se:
                        continue
                    if a - se > within:
                        break
                    if b - a >= long_enough:
                        out["creep"].append((sa, b, a))
                        break
    return out


def drive_trigger_spans(sig: pa.Table, rate_hz: float, cfg: Triggers) -> dict[str, list[Span]]:
    """:func:`trigger_spans` over a drive's ``signals`` grid (sorted by ``t``), for
    :func:`clip_features`' ``spans``."""
    speed = _col(sig, "speed_mps")
    accel = derived_accel(_col(sig, "accel_mps2"), speed, rate_hz)
    return trigger_spans(speed, accel, _col(sig, "brake_pressed"), rate_hz, cfg)


def clip_features(
    sig: pa.Table,
    rate_hz: float,
    cfg: Triggers,
    spans: dict[str, list[Span]] | None = None,
    offset: int = 0,
) -> dict[str, object]:
    """Features of one clip's slice of the ``signals`` grid, and its trigger events.

    ``spans``: the drive's :func:`drive_trigger_spans`, with ``offset`` the index of the clip's
    first sample in the drive's grid. Without them the triggers are found over the clip's
    own samples, and a sudden stop braked for from the clip's first sample is left out
    (its notice began before the clip: unknown, not short)."""
    dt = 1.0 / rate_hz
    n = sig.num_rows
    speed = _col(sig, "speed_mps")
    accel = derived_accel(_col(sig, "accel_mps2"), speed, rate_hz)
    yaw = _col(sig, "yaw_rate_dps")
    steer = _col(sig, "steering_angle_deg")
    steer_rate = _col(sig, "steering_rate_dps")
    brake = _col(sig, "brake_pressed")
    override = _col(sig, "driver_override")
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
    if brake is not None:
        b = np.nan_to_num(brake) > 0
        f["brake_presses"] = int(b[0]) + int(np.sum(b[1:] & ~b[:-1]))
    if spans is None:
        spans = trigger_spans(speed, accel, brake, rate_hz, cfg)
        spans["sudden_stop"] = [s for s in spans["sudden_stop"] if s[0] > 0]
        offset = 0
    moments: dict[str, float] = {}
    for name in TRIGGERS:
        here = [s for s in spans.get(name, []) if s[0] < offset + n and s[1] > offset]
        if here and n:
            at = min(max(here[0][2] - offset, 0), n - 1)
            if name == "hard_brake" and accel is not None and not np.isnan(accel).all():
                at = int(np.nanargmax(-accel))  # the hardest deceleration in the clip
            moments[name] = at * dt
    events: list[str] = []
    if speed is not None:
        stopped = np.nan_to_num(speed, nan=np.inf) < cfg.stop_speed_mps
        stop_min = _samples(cfg.stop_min_s, rate_hz)
        f["stop_count"] = sum(1 for a, b in _runs(stopped) if b - a >= stop_min)
    if "hard_brake" in moments:
        events.append("hard_brake")
    lat_max = f["max_lat_accel_mps2"]
    if isinstance(lat_max, float) and lat_max >= cfg.sharp_turn_lat_mps2:
        events.append("sharp_turn")
    if steer_rate is not None and speed is not None:
        fast = (np.abs(np.nan_to_num(steer_rate)) >= cfg.evasive_steer_rate_dps) & (
            np.nan_to_num(speed) >= cfg.evasive_min_speed_mps
        )
        if fast.any():
            events.append("evasive_steer")
    if isinstance(f["stop_count"], int) and f["stop_count"] >= cfg.stop_and_go_stops:
        events.append("stop_and_go")
    if "creep" in moments:
        events.append("creep")
    if override is not None and (np.nan_to_num(override) > 0).any():
        events.append("driver_override")
    if "sudden_stop" in moments:
        events.append("sudden_stop")
    f["events"] = events
    first = next((moments[e] for e in ("sudden_stop", "hard_brake", "creep") if e in moments), None)
    f["trigger_at_s"] = first
    return f
