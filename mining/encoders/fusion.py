"""How every encoder makes one clip vector: frames pooled over time, fused with signals.

An encoder describes each of a clip's keyframes twice, with its own frame model:
an appearance feature (what is in view) and a motion feature (what a change
between frames is measured on; often the same vector). :func:`fuse` then builds

- appearance: the mean over the clip's frames, L2-normalised;
- motion: the mean absolute change between consecutive frames, L2-normalised
  (zero for a clip of one frame: nothing changed that we saw);
- signals (:data:`SIGNAL_DIM`): the clip's signal features on fixed scales and its
  trigger events one-hot, in a frozen :class:`SignalLayout`;

each block times its weight (:class:`~mining.encoders.params.FusionWeights`, a
parameter of the model version, recorded in the registry), concatenated and
L2-normalised. A clip with nothing to see is its signals block alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from storage.errors import ConfigError

__all__ = ["SIGNAL_DIM", "SIGNAL_LAYOUTS", "SignalLayout", "fuse", "signal_block", "signal_layout", "unit"]

SIGNAL_DIM = 32


@dataclass(frozen=True)
class SignalLayout:
    """What the signals block reads: feature columns on fixed scales, then events one-hot.

    A frozen copy of the ``clips`` vocabularies (:data:`storage.tables.clips.FEATURES`
    / ``EVENTS``) of its day: ingest may add an event and registered vectors stay the
    same. Reading a new event takes a new layout, registered as a new model version.
    """

    scales: tuple[tuple[str, float], ...]
    events: tuple[str, ...]


# Never edit a layout: registered vectors depend on it. A new one gets the next number.
SIGNAL_LAYOUTS = {
    1: SignalLayout(
        scales=(
            ("speed_mean", 30.0),
            ("speed_min", 30.0),
            ("speed_max", 30.0),
            ("max_decel_mps2", 8.0),
            ("max_lat_accel_mps2", 8.0),
            ("max_steering_rate_dps", 600.0),
            ("brake_presses", 4.0),
            ("stop_count", 3.0),
        ),
        events=("hard_brake", "sharp_turn", "evasive_steer", "stop_and_go", "creep", "driver_override"),
    ),
}


def signal_layout(number: Any) -> SignalLayout:
    if number not in SIGNAL_LAYOUTS:
        raise ConfigError(f"no signal layout {number!r}; layouts: {sorted(SIGNAL_LAYOUTS)}")
    return SIGNAL_LAYOUTS[number]


def unit(x: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(x))
    return x / n if n > 0 else x


def signal_block(features: dict[str, Any], layout: SignalLayout) -> np.ndarray:
    """``(SIGNAL_DIM,)``: scaled features (missing or non-finite ones 0), then events one-hot."""
    sig = np.zeros(SIGNAL_DIM)
    for k, (name, scale) in enumerate(layout.scales):
        v = features.get(name)
        sig[k] = float(v) / scale if v is not None and np.isfinite(v) else 0.0
    events = features.get("events") or []
    for k, e in enumerate(layout.events):
        sig[len(layout.scales) + k] = 1.0 if e in events else 0.0
    return sig


def fuse(appearance: np.ndarray, motion: np.ndarray, signals: np.ndarray, weights: Any) -> np.ndarray:
    """One clip's vector from its frames' features: ``appearance`` (T, A), ``motion``
    (T, M), ``signals`` (SIGNAL_DIM,), ``weights`` with appearance/motion/signals."""
    app = appearance.mean(axis=0) if len(appearance) else np.zeros(appearance.shape[1])
    mot = np.mean(np.abs(np.diff(motion, axis=0)), axis=0) if len(motion) > 1 else np.zeros(motion.shape[1])
    parts = [unit(app) * weights.appearance, unit(mot) * weights.motion, signals * weights.signals]
    return unit(np.concatenate(parts)).astype(np.float32)
