"""Encoder parameters: one frozen model per kind, validated when a version is registered.

A registry row keeps its params as JSON; :func:`mining.encoders.params_for` turns them into the
kind's typed model, so a typo (``"men"`` for ``"mean"``) or a wrong shape fails at
``fleetmine model register`` with the valid fields named, not deep inside a job.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["BuiltinParams", "ClipFusion", "FusionWeights", "OnnxParams", "Params"]


class Params(BaseModel):
    """The base of every kind's params: frozen, and an unknown field is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FusionWeights(Params):
    """The weight of each block of a clip vector (:func:`mining.encoders.fusion.fuse`)."""

    appearance: float = Field(default=1.0, ge=0, description="the frames' mean feature")
    motion: float = Field(default=0.6, ge=0, description="the mean change between consecutive frames")
    signals: float = Field(default=1.0, ge=0, description="signal features and trigger events")
    dense: float | None = Field(
        default=None,
        ge=0,
        description="what moved in the dense frames of triggered clips (adds 32 dims); "
        "none: no such block (the versions before it)",
    )


class ClipFusion(Params):
    """A frame model's features made into clip vectors: pooled over time, fused with signals."""

    weights: FusionWeights = FusionWeights()
    signal_layout: int = Field(default=1, description="the frozen signals block (fusion.SIGNAL_LAYOUTS)")

    @field_validator("signal_layout")
    @classmethod
    def _known_layout(cls, v: int) -> int:
        from mining.encoders.fusion import SIGNAL_LAYOUTS

        if v not in SIGNAL_LAYOUTS:
            raise ValueError(f"no signal layout {v}; layouts: {sorted(SIGNAL_LAYOUTS)}")
        return v


class BuiltinParams(Params):
    layout: Literal[1] = Field(default=1, description="the frozen feature layout of builtin-motion@1")
    weights: FusionWeights = FusionWeights()


class OnnxParams(Params):
    input_size: tuple[int, int] = Field(default=(224, 224), description="[H, W] the model expects")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="cuda: its workers ask Ray for a GPU")
    output: str | None = Field(
        default=None, description="the frame-feature output to read (default: the first)"
    )
    clip: ClipFusion | None = Field(
        default=None,
        description="pool frames over time and fuse signals (dim = 2 x frame dim + 32); "
        "none: the mean of the frames' features (dim = frame dim)",
    )
