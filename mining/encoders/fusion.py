"""How every encoder makes one clip vector: frames pooled over time, fused with signals.

An encoder describes each of a clip's keyframes twice, with its own frame model:
an appearance feature (what is in view) and a motion feature (what a change
between frames is measured on; often the same vector). :func:`fuse` then builds

- appearance: the mean over the clip's frames, L2-normalised;
- motion: the mean absolute change between consecutive frames, L2-normalised
  (zero for a clip of one frame: nothing changed that we saw);
- signals (:data:`SIGNAL_DIM`): the clip's signal features on fixed scales and its
  trigger events one-hot, in a frozen :class:`SignalLayout`;

- dense motion (:data:`DENSE_DIM`, only in versions with a ``dense`` weight): what
  moved between the consecutive dense frames ingest decoded where a signal trigger
  fired (:func:`dense_motion`); zero for a clip it did not fire on;

each block times its weight (:class:`~mining.encoders.params.FusionWeights`, a
parameter of the model version, recorded in the registry), concatenated and
L2-normalised. A clip with nothing to see is its signals block alone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from storage.errors import ConfigError

__all__ = [
    "DENSE_DIM",
    "SIGNAL_DIM",
    "SIGNAL_LAYOUTS",
    "SignalLayout",
    "dense_motion",
    "fuse",
    "signal_block",
    "signal_layout",
    "unit",
]

SIGNAL_DIM = 32
DENSE_DIM = 32
_DENSE_GRID = (4, 7)  # cells over the frame below the top quarter (the sky rarely moves)
_DENSE_NOISE = 10.0  # grey levels a JPEG round trip moves a still pixel by, at most


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


def _grey(jpeg: bytes) -> np.ndarray:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(jpeg)).convert("L")
    return np.asarray(img, dtype=np.float32)


def dense_motion(jpegs: list[bytes]) -> np.ndarray:
    """``(DENSE_DIM,)``: what moved between consecutive dense frames, L2-normalised.

    Per cell of a 4 x 7 grid (the frame below its top quarter), the largest pixel change
    between two consecutive frames beyond JPEG noise, averaged over the pairs: a small
    thing moving (an arm waving) lights its cell as much as a big one, and a still scene
    (the car waiting, nothing moving) is dark. Then: that the clip was looked at (1), the
    mean and largest cell, and the share of pairs in which anything moved. Zero for
    fewer than two frames (nothing looked at)."""
    out = np.zeros(DENSE_DIM)
    if len(jpegs) < 2:
        return out
    greys = [_grey(j) for j in jpegs]
    h = greys[0].shape[0]
    rows, cols = _DENSE_GRID
    top = h // 4
    cells = np.zeros((len(greys) - 1, rows * cols))
    for k, (a, b) in enumerate(itertools.pairwise(greys)):
        if a.shape != b.shape:
            continue
        d = np.maximum(np.abs(b - a)[top:] - _DENSE_NOISE, 0.0) / 255.0
        hh, ww = (d.shape[0] // rows) * rows, (d.shape[1] // cols) * cols
        cells[k] = d[:hh, :ww].reshape(rows, hh // rows, cols, ww // cols).max(axis=(1, 3)).ravel()
    m = cells.mean(axis=0)
    n = rows * cols
    out[:n] = m
    out[n] = 1.0
    out[n + 1] = float(m.mean())
    out[n + 2] = float(m.max())
    out[n + 3] = float((cells.max(axis=1) > 0).mean())
    return unit(out)


def fuse(
    appearance: np.ndarray,
    motion: np.ndarray,
    signals: np.ndarray,
    weights: Any,
    dense: np.ndarray | None = None,
) -> np.ndarray:
    """One clip's vector from its frames' features: ``appearance`` (T, A), ``motion``
    (T, M), ``signals`` (SIGNAL_DIM,), ``weights`` with appearance/motion/signals, and,
    when ``weights.dense`` is set, the ``dense`` block (DENSE_DIM,; None: zeros)."""
    app = appearance.mean(axis=0) if len(appearance) else np.zeros(appearance.shape[1])
    mot = np.mean(np.abs(np.diff(motion, axis=0)), axis=0) if len(motion) > 1 else np.zeros(motion.shape[1])
    parts = [unit(app) * weights.appearance, unit(mot) * weights.motion, signals * weights.signals]
    if getattr(weights, "dense", None) is not None:
        parts.append((dense if dense is not None else np.zeros(DENSE_DIM)) * weights.dense)
    return unit(np.concatenate(parts)).astype(np.float32)


def fused_dim(frame_dims: tuple[int, int], weights: Any) -> int:
    """The length of :func:`fuse`'s vector for frame features of ``frame_dims``."""
    return sum(frame_dims) + SIGNAL_DIM + (DENSE_DIM if getattr(weights, "dense", None) is not None else 0)
