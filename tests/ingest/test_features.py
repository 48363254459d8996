"""Clip features speak the ``clips`` table's vocabularies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ingest.features import clip_features
from storage.config import Triggers
from storage.tables import clips


def test_features_and_events_are_the_clips_vocabularies() -> None:
    t = np.arange(200) / 20.0
    speed = np.clip(15.0 - 5.0 * np.maximum(t - 4.0, 0.0), 0.0, None)  # a hard stop at 5 m/s^2
    sig = pa.table(
        {
            "speed_mps": speed,
            "yaw_rate_dps": np.where(t < 2.0, 25.0, 0.0),
            "steering_angle_deg": np.where(t < 1.0, 0.0, 90.0),
            "brake_pressed": t > 4.0,
            "driver_override": t > 9.0,
        }
    )
    f = clip_features(sig, 20.0, Triggers())
    assert list(f) == [*clips.FEATURES, "events", "trigger_at_s"]
    events = f["events"]
    assert isinstance(events, list) and events
    assert set(events) <= set(clips.EVENTS)
    assert events == sorted(events, key=clips.EVENTS.index)


def _stop(decel: float, v0: float = 12.0, brake_from_s: float = 1.0) -> dict[str, object]:
    """A clip braking at ``decel`` from ``v0`` to a standstill, then waiting."""
    t = np.arange(200) / 20.0
    speed = np.clip(v0 - decel * np.maximum(t - brake_from_s, 0.0), 0.0, None)
    sig = pa.table({"speed_mps": speed, "brake_pressed": (t > brake_from_s) & (speed > 0)})
    return clip_features(sig, 20.0, Triggers())


def test_a_stop_braked_for_on_short_notice_is_a_sudden_stop_and_says_when() -> None:
    short = _stop(decel=4.0)  # 3 s from 12 m/s to a standstill
    assert "sudden_stop" in short["events"]  # type: ignore[operator]
    assert short["trigger_at_s"] == pytest.approx(4.0, abs=0.1)
    planned = _stop(decel=1.5)  # 8 s of braking: seen from afar (a light, a queue)
    assert planned["stop_count"] == 1 and "sudden_stop" not in planned["events"]  # type: ignore[operator]
    assert planned["trigger_at_s"] is None
