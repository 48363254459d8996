"""Clip features speak the ``clips`` table's vocabularies."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
    assert list(f) == [*clips.FEATURES, "events"]
    events = f["events"]
    assert isinstance(events, list) and events
    assert set(events) <= set(clips.EVENTS)
    assert events == sorted(events, key=clips.EVENTS.index)
