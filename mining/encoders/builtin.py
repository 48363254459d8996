"""``builtin``: the encoder that ships with fleetmine; no weights, deterministic.

256 dimensions, each block L2-normalised and weighted, then the whole vector:

- appearance (192): the mean colour of a 4 x 16 grid over the lower 60 % of each
  keyframe (the road scene), per channel standardised per frame so exposure and
  sensor gain do not move it, averaged over the clip's keyframes;
- motion (32): mean absolute grey-level change per 4 x 8 cell between consecutive
  keyframes;
- signals (32): the clip's signal features on fixed scales (speed, deceleration,
  lateral acceleration, steering rate, brake presses, stops) and its trigger events.

The features and events it reads are a frozen copy of the ``clips`` vocabularies
(:data:`storage.tables.clips.FEATURES` / ``EVENTS``), one per layout (model param
``layout``, default 1, the layout of ``builtin-motion@1``): ingest may add an event
and the vectors of a registered model stay the same. Reading a new event takes a
new layout, registered as a new model version.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image

from mining.interfaces import ClipInput, ModelSpec
from storage.errors import ConfigError

__all__ = ["DIM", "BuiltinEncoder"]

DIM = 256
_WEIGHTS = {"appearance": 1.0, "motion": 0.6, "signals": 1.0}


@dataclass(frozen=True)
class _Layout:
    """What the signals block reads: feature columns on fixed scales, then events one-hot."""

    scales: tuple[tuple[str, float], ...]
    events: tuple[str, ...]


# Never edit a layout: registered vectors depend on it. A new one gets the next number.
_LAYOUTS = {
    1: _Layout(
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


def _layout(spec: ModelSpec) -> _Layout:
    number = spec.params.get("layout", 1)
    if number not in _LAYOUTS:
        raise ConfigError(f"model {spec.ref}: no builtin layout {number!r}; layouts: {sorted(_LAYOUTS)}")
    return _LAYOUTS[number]


def _unit(x: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(x))
    return x / n if n > 0 else x


def _scene(jpeg: bytes) -> np.ndarray:
    """The lower 60 % of a keyframe (the road scene), box-filtered to 64 x 32."""
    img = Image.open(io.BytesIO(jpeg))
    img.draft("RGB", (img.width // 2, img.height // 2))  # let libjpeg decode at half size
    rgb = img.convert("RGB")
    w, h = rgb.size
    crop = rgb.crop((0, int(h * 0.4), w, h)).resize((64, 32), Image.Resampling.BOX)
    return np.asarray(crop, dtype=np.float32)


class BuiltinEncoder:
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self._layout = _layout(spec)

    def setup(self) -> None:
        """Nothing to load: the builtin encoder is arithmetic."""

    def process_batch(self, clips: list[ClipInput]) -> np.ndarray:
        return (
            np.stack([self.encode(c) for c in clips]).astype(np.float32)
            if clips
            else np.zeros((0, DIM), np.float32)
        )

    def encode(self, clip: ClipInput) -> np.ndarray:
        app = np.zeros(192)
        mot = np.zeros(32)
        if clip.jpegs:
            cells = []
            greys = []
            for jpeg in clip.jpegs:
                scene = _scene(jpeg)  # (32, 64, 3): the lower 60 % of the frame, box-filtered
                flat = scene.reshape(-1, 3)
                norm = (scene - flat.mean(axis=0)) / (flat.std(axis=0) + 1e-3)
                cells.append(norm.reshape(4, 8, 16, 4, 3).mean(axis=(1, 3)).ravel())
                greys.append(scene.mean(axis=2).reshape(4, 8, 8, 8).mean(axis=(1, 3)).ravel())
            app = np.mean(cells, axis=0)
            if len(greys) > 1:
                mot = np.mean(np.abs(np.diff(np.array(greys), axis=0)), axis=0) / 32.0
        sig = np.zeros(32)
        scales, names = self._layout.scales, self._layout.events
        for k, (name, scale) in enumerate(scales):
            v = clip.features.get(name)
            sig[k] = float(v) / scale if v is not None and np.isfinite(v) else 0.0
        events = clip.features.get("events") or []
        for k, e in enumerate(names):
            sig[len(scales) + k] = 1.0 if e in events else 0.0
        parts = [
            _unit(app) * _WEIGHTS["appearance"],
            _unit(mot) * _WEIGHTS["motion"],
            sig * _WEIGHTS["signals"],
        ]
        return _unit(np.concatenate(parts)).astype(np.float32)
