"""Encoders by registry kind. A bad kind fails with the list of valid ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mining.encoders.fusion import DENSE_DIM, SIGNAL_DIM
from mining.interfaces import Encoder, ModelSpec
from storage.errors import ConfigError

if TYPE_CHECKING:
    from mining.encoders.params import FusionWeights

__all__ = ["KINDS", "behaviour_span", "encoder_resources", "frame_span", "make_encoder"]

KINDS = ("builtin", "onnx", "torchscript")


def make_encoder(spec: ModelSpec, storage_options: dict[str, str] | None = None) -> Encoder:
    match spec.kind:
        case "builtin":
            from mining.encoders.builtin import BuiltinEncoder

            return BuiltinEncoder(spec)
        case "onnx":
            from mining.encoders.onnx import OnnxEncoder

            return OnnxEncoder(spec, storage_options)
        case "torchscript":
            raise ConfigError(
                f"model {spec.ref}: TorchScript encoders need PyTorch, which fleetmine does not install; "
                "export the model to ONNX (torch.onnx.export) and register it with kind onnx"
            )
        case _:
            raise ConfigError(f"unknown encoder kind {spec.kind!r}; valid kinds: {list(KINDS)}")


def encoder_resources(spec: ModelSpec) -> dict[str, float]:
    """What one worker of this encoder needs: a GPU only when its version asks for one
    (``params.device = "cuda"``), so a CPU cluster never waits for a GPU it lacks."""
    resources = {"num_cpus": 1.0}
    if spec.kind == "onnx" and spec.params.get("device") == "cuda":
        resources["num_gpus"] = 1.0
    return resources


def frame_span(spec: ModelSpec) -> slice | None:
    """Where a clip vector of ``spec`` keeps its appearance block: what one image has
    evidence of (None: its vectors have no such block).

    A clip vector (:func:`mining.encoders.fusion.fuse`) concatenates the unit mean of
    its frames' appearance features times a weight, the motion block, the signals
    block, then scales the whole to unit length. The appearance block's direction is
    that unit mean whatever the other blocks hold, so it is read back exactly from the
    stored vector, and comparing an image with a clip on it compares what is in view
    and nothing else. An ONNX version without ``clip`` params stores the frames' mean
    alone: the whole vector is that block.
    """
    layout = _layout(spec)
    if layout is None:
        return None
    frame_dim, weights = layout
    if weights is None:
        return slice(0, spec.dim)
    return slice(0, frame_dim) if weights.appearance > 0 and frame_dim > 0 else None


def behaviour_span(spec: ModelSpec) -> slice | None:
    """Where a clip vector of ``spec`` keeps what the car did and what moved: every block
    after the appearance one (motion, signals, dense motion). None: its vectors have
    no such blocks (an ONNX version without ``clip`` params) or all their weights are 0.

    "More like this" of a clip asks for this: the same behaviour elsewhere (another
    pedestrian crossing, another cut-in), whatever the street looked like. In the whole
    vector the appearance block, the longest, pulls the nearest clips towards the same
    street and light, which is what a duplicate is, not what an ML engineer browsing a
    corner case wants next.
    """
    layout = _layout(spec)
    if layout is None or layout[1] is None:
        return None
    frame_dim, weights = layout[0], layout[1]
    if not (weights.motion > 0 or weights.signals > 0 or (weights.dense or 0) > 0):
        return None
    return slice(frame_dim, spec.dim) if frame_dim < spec.dim else None


def _layout(spec: ModelSpec) -> tuple[int, FusionWeights | None] | None:
    """(the appearance block's length, the version's fusion weights) of a fused clip
    vector; weights None: the whole vector is the frames' mean; None: not known."""
    match spec.kind:
        case "builtin":
            from mining.encoders.builtin import APPEARANCE_DIM
            from mining.encoders.params import BuiltinParams

            return APPEARANCE_DIM, BuiltinParams.model_validate(spec.params).weights
        case "onnx":
            from mining.encoders.params import OnnxParams

            p = OnnxParams.model_validate(spec.params)
            if p.clip is None:
                return spec.dim, None
            dense = DENSE_DIM if p.clip.weights.dense is not None else 0
            return (spec.dim - SIGNAL_DIM - dense) // 2, p.clip.weights
        case _:
            return None
