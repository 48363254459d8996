"""What the clip page's signal plot draws: lanes of signals, the spans where triggers fire,
the spans of scenarios (``scenario_hits``) and the actions policy versions predicted
(``policy_errors``) over the clip's window, all on one time axis: seconds from the clip's
first signal sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ingest.features import derived_accel
from storage.config import Triggers
from storage.schema import us_since_epoch
from storage.tables.signals import SIGNAL_COLUMNS, UNITS

__all__ = [
    "POLICY_COLORS",
    "SCENARIO_COLORS",
    "plot_data",
    "policy_lanes",
    "policy_overlays",
    "scenario_palette",
    "scenario_times",
]

SCENARIO_COLORS = ("#4af", "#5dc", "#ee5", "#b9f", "#fb6", "#9e6", "#f8c", "#7bd")
"""One per scenario name of a clip, in name order (none of the triggers' reds and oranges first)."""
POLICY_COLORS = ("#e7f", "#5f9", "#fff", "#59f", "#0dd", "#cc8")
"""One per policy version drawn, in name and version order (none of the lanes' own colors)."""
_ACTIONS = {"accel": "accel_mps2", "steer": "steering_angle_deg"}
_MAX_POINTS = 20_000  # of one predicted curve: far past a clip's steps, bounded whatever a row holds

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
    lo, hi = us_since_epoch(clip["start_time"]), us_since_epoch(clip["end_time"])
    origin = lo if origin_us is None else origin_us
    out = []
    for s in spans:
        a = us_since_epoch(s["start"])
        b = hi if s.get("end") is None else us_since_epoch(s["end"])
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


def _value(x: Any) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def _curve(row: dict[str, Any], times: str, prefix: str, shift: float, length: float) -> dict[str, Any]:
    """One predicted curve of a ``policy_errors`` row: times (``times``, s from the clip's
    start) moved by ``shift`` onto the plot's axis, each action's values (``prefix`` +
    short name; empty when the policy does not output it, or its length is not the
    times'), the points outside the clip's window left out."""
    t = row.get(times) or []
    keep = [i for i, x in enumerate(t) if x is not None and math.isfinite(x) and -1e-6 <= x <= length + 1e-6]
    del keep[_MAX_POINTS:]
    out: dict[str, Any] = {"t": [round(t[i] + shift, 4) for i in keep]}
    for short in _ACTIONS:
        v = row.get(prefix + short)
        out[short] = [_value(v[i]) for i in keep] if v is not None and len(v) == len(t) else []
    return out


def policy_overlays(
    rows: Sequence[dict[str, Any]], clip: dict[str, Any], origin_us: int | None = None
) -> list[dict[str, Any]]:
    """The clip's ``policy_errors`` rows (:func:`mining.policies.views.clip_rows`) as the plot
    draws them over the logged accel and steering: the predicted actions and the whole
    horizon predicted at the worst step, and that step, on the plot's axis (s from
    ``origin_us``, its first sample; the table's times are s from the clip's start), each
    version in a color of :data:`POLICY_COLORS`."""
    start, end = us_since_epoch(clip["start_time"]), us_since_epoch(clip["end_time"])
    shift = (start - (start if origin_us is None else origin_us)) / 1e6
    length = (end - start) / 1e6
    out = []
    for i, r in enumerate(rows):
        name, version = str(r["policy"]), int(r["policy_version"])
        at = _value(r.get("worst_step_s"))
        worst = None
        if r.get("steps") and at is not None:
            worst = {
                "t": round(at + shift, 4),
                "at": at,
                "accel_err": _value(r.get("worst_accel_err")),
                "steer_err": _value(r.get("worst_steer_err")),
            }
        out.append(
            {
                "name": name,
                "version": version,
                "ref": f"{name}@{version}",
                "color": POLICY_COLORS[i % len(POLICY_COLORS)],
                "disagreement": _value(r.get("disagreement")),
                "note": str(r.get("note") or ""),
                **_curve(r, "pred_t_s", "pred_", shift, length),
                "horizon": _curve(r, "worst_pred_t_s", "worst_pred_", shift, length),
                "worst": worst,
            }
        )
    return out


def policy_lanes(
    plot: dict[str, Any], sig: np.ndarray, overlays: Sequence[dict[str, Any]], rate_hz: float
) -> None:
    """A lane in ``plot`` for each action a drawn policy predicts that the car did not log,
    so its prediction has an axis: acceleration from the speed's change (what a shadow
    run compares with, :func:`ingest.features.derived_accel`), else an empty lane."""
    if not plot["t"]:
        return
    have = {lane["key"] for lane in plot["lanes"]}
    for short, col in _ACTIONS.items():
        if col in have or not any(any(v is not None for v in p[short]) for p in overlays):
            continue
        values: list[float | None] = [None] * len(plot["t"])
        label = dict(LANES)[col] + " (not logged)"
        speed = _col(sig, "speed_mps")
        if col == "accel_mps2" and not np.isnan(speed).all():
            d = derived_accel(None, speed, rate_hz)
            if d is not None:
                values, label = _round(d), "acceleration (from speed)"
        lane = {"key": col, "label": label, "unit": UNITS[col].split(" ")[0], "values": values}
        order = [c for c, _ in LANES]
        at = next((i for i, x in enumerate(plot["lanes"]) if order.index(x["key"]) > order.index(col)), None)
        plot["lanes"].insert(len(plot["lanes"]) if at is None else at, lane)
