"""Encoders by registry kind: each kind is one module here with its ``KIND``
(:class:`~mining.encoders.kinds.EncoderKind`), listed once in :data:`KINDS`; everything
else (the registry's checks, the CLI's help, a worker's resources, the vector
layout) is read from that record. A bad kind fails with the list of valid ones.

Also in this room: the model registry (:mod:`mining.encoders.registry`), the embed
stage (:mod:`mining.encoders.embed`), reading what it wrote
(:mod:`mining.encoders.vectors`) and the pretrained encoders
(:mod:`mining.encoders.pretrained`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from mining.encoders import builtin, onnx, text_image, torchscript
from mining.encoders.kinds import EncoderKind, Layout
from mining.encoders.params import Params
from mining.interfaces import Encoder, ModelSpec
from storage.errors import ConfigError

__all__ = [
    "KINDS",
    "EncoderKind",
    "behaviour_span",
    "encoder_kind",
    "encoder_resources",
    "frame_span",
    "make_encoder",
    "params_for",
]

KINDS: dict[str, EncoderKind] = {
    k.name: k for k in (builtin.KIND, onnx.KIND, text_image.KIND, torchscript.KIND)
}
"""Every encoder kind, by name: a new kind is a module beside this one and its ``KIND`` here."""


def encoder_kind(kind: str) -> EncoderKind:
    found = KINDS.get(kind)
    if found is None:
        raise ConfigError(f"unknown encoder kind {kind!r}; valid kinds: {list(KINDS)}")
    return found


def make_encoder(spec: ModelSpec, storage_options: dict[str, str] | None = None) -> Encoder:
    return encoder_kind(spec.kind).make(spec, storage_options)


def encoder_resources(spec: ModelSpec) -> dict[str, float]:
    """What one worker of this encoder needs, as its kind says (an ``onnx`` version asks
    for a GPU only with ``params.device = "cuda"``); one CPU for a kind not known here."""
    kind = KINDS.get(spec.kind)
    return kind.resources(spec) if kind is not None else {"num_cpus": 1.0}


def params_for(kind: str, params: dict[str, Any] | None) -> Params:
    """The typed params of an encoder of ``kind``; ConfigError names what is wrong."""
    found = KINDS.get(kind)
    cls = found.params if found is not None else None
    if cls is None:
        known = sorted(k for k, v in KINDS.items() if v.params is not None)
        raise ConfigError(f"no parameters known for encoder kind {kind!r}; kinds: {known}")
    try:
        return cls.model_validate(params or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or kind}: {e['msg']}" for e in exc.errors())
        fields = ", ".join(cls.model_fields)
        raise ConfigError(f"bad {kind} encoder params: {problems} (fields: {fields})") from None


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


def _layout(spec: ModelSpec) -> Layout:
    kind = KINDS.get(spec.kind)
    return kind.layout(spec) if kind is not None else None
