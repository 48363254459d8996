"""``builtin``: the encoder that ships with fleetmine; no weights, deterministic.

256 dimensions, fused by :func:`mining.encoders.fusion.fuse` like every encoder's:

- appearance (192): per keyframe, the mean colour of a 4 x 16 grid over the lower
  60 % (the road scene), per channel standardised per frame so exposure and sensor
  gain do not move it; averaged over the clip's keyframes;
- motion (32): per keyframe, the grey level of 4 x 8 cells; the mean absolute change
  between consecutive keyframes;
- signals (32): the clip's signal features and trigger events in signal layout
  ``layout`` (model param, default 1, the layout of ``builtin-motion@1``).

- dense motion (32, only with a ``weights.dense``): what moved in the dense frames
  ingest decoded where a signal trigger fired (:func:`~mining.encoders.fusion.dense_motion`).

The block weights are the version's ``weights`` param (default appearance 1.0,
motion 0.6, signals 1.0, no dense block: those of ``builtin-motion@1``).
"""

from __future__ import annotations

import io
from typing import ClassVar

import numpy as np
from PIL import Image

from mining.encoders.fusion import DENSE_DIM, SIGNAL_LAYOUTS, dense_motion, fuse, signal_block, signal_layout
from mining.encoders.kinds import EncoderKind, Layout
from mining.encoders.params import BuiltinParams
from mining.interfaces import ClipInput, ModelSpec
from storage.errors import ConfigError

__all__ = ["APPEARANCE_DIM", "DIM", "KIND", "BuiltinEncoder", "builtin_dim"]

DIM = 256
APPEARANCE_DIM = 192  # the first block of every builtin vector
_LAYOUTS = SIGNAL_LAYOUTS  # the builtin's layout numbers are signal layouts


def _scene(jpeg: bytes) -> np.ndarray:
    """The lower 60 % of a keyframe (the road scene), box-filtered to 64 x 32."""
    img = Image.open(io.BytesIO(jpeg))
    img.draft("RGB", (img.width // 2, img.height // 2))  # let libjpeg decode at half size
    rgb = img.convert("RGB")
    w, h = rgb.size
    crop = rgb.crop((0, int(h * 0.4), w, h)).resize((64, 32), Image.Resampling.BOX)
    return np.asarray(crop, dtype=np.float32)


def builtin_dim(params: BuiltinParams) -> int:
    """256, plus the dense block's 32 in a version that weighs one."""
    return DIM + (DENSE_DIM if params.weights.dense is not None else 0)


class BuiltinEncoder:
    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, spec: ModelSpec):
        self.spec = spec
        try:
            self._layout = signal_layout(spec.params.get("layout", 1))
        except ConfigError as exc:
            raise ConfigError(f"model {spec.ref}: builtin {exc}") from None
        self.params = BuiltinParams.model_validate(spec.params)

    def setup(self) -> None:
        """Nothing to load: the builtin encoder is arithmetic."""

    def process_batch(self, clips: list[ClipInput]) -> np.ndarray:
        return (
            np.stack([self.encode(c) for c in clips]).astype(np.float32)
            if clips
            else np.zeros((0, builtin_dim(self.params)), np.float32)
        )

    def frames(self, jpegs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """Per keyframe: appearance ``(T, 192)`` and motion ``(T, 32)`` features."""
        cells = np.zeros((len(jpegs), APPEARANCE_DIM), np.float32)
        greys = np.zeros((len(jpegs), 32), np.float32)
        for t, jpeg in enumerate(jpegs):
            scene = _scene(jpeg)  # (32, 64, 3): the lower 60 % of the frame, box-filtered
            flat = scene.reshape(-1, 3)
            norm = (scene - flat.mean(axis=0)) / (flat.std(axis=0) + 1e-3)
            cells[t] = norm.reshape(4, 8, 16, 4, 3).mean(axis=(1, 3)).ravel()
            greys[t] = scene.mean(axis=2).reshape(4, 8, 8, 8).mean(axis=(1, 3)).ravel()
        return cells, greys

    def encode(self, clip: ClipInput) -> np.ndarray:
        appearance, motion = self.frames(clip.jpegs)
        dense = dense_motion(clip.dense) if self.params.weights.dense is not None else None
        sig = signal_block(clip.features, self._layout)
        return fuse(appearance, motion, sig, self.params.weights, dense)


def _make(spec: ModelSpec, storage_options: dict[str, str] | None = None) -> BuiltinEncoder:
    return BuiltinEncoder(spec)


def _layout(spec: ModelSpec) -> Layout:
    return APPEARANCE_DIM, BuiltinParams.model_validate(spec.params).weights


KIND = EncoderKind("builtin", _make, params=BuiltinParams, weights=False, dim=builtin_dim, layout=_layout)
