"""The contracts of ``mining``: encoders and indexes. Implementations sit beside it.

An :class:`Encoder` is a stage: it is configured by an immutable registry entry
(:class:`ModelSpec`), loads its weights in :meth:`Encoder.setup` (inside the Ray
actor, never in the driver), and turns a batch of :class:`ClipInput` into one
L2-normalised float32 vector per clip.

A clip vector is a clip's, not a frame's: the encoder's frame model describes each
keyframe, the frames are pooled over time (their mean, and their mean change from
one to the next) and fused with the clip's signal features and trigger events by
:func:`mining.encoders.fusion.fuse`, with block weights that are parameters of the
model version (recorded in the registry with every default filled in). A version
with a ``dense`` weight adds a block of what moved in the dense frames ingest kept
where a signal trigger fired (zero for the other clips). Each
encoder kind passes the one suite in ``tests/mining/test_encoder_contract.py``, and
registers itself once: an :class:`~mining.encoders.kinds.EncoderKind` (how to build
it, its params, whether a version needs a model file, its resources, its vector
layout) in ``mining.encoders.KINDS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

__all__ = ["ClipInput", "Encoder", "ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """One row of the ``models`` table: immutable; a new version is a new row."""

    name: str
    version: int
    kind: str  # a key of mining.encoders.KINDS
    uri: str | None
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    is_current: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ModelSpec:
        return cls(
            name=row["name"],
            version=int(row["version"]),
            kind=row["kind"],
            uri=row.get("uri"),
            dim=int(row["dim"]),
            params=json.loads(row.get("params") or "{}"),
            is_current=bool(row.get("is_current")),
        )


@dataclass
class ClipInput:
    """What an encoder sees of a clip: its sampled keyframes (JPEG) and signal features,
    and, where a signal trigger fired, ``dense`` frames around its moment (JPEG,
    consecutive; :mod:`ingest.look_closer`)."""

    clip_id: str
    jpegs: list[bytes]
    features: dict[str, Any]
    dense: list[bytes] = field(default_factory=list)


class Encoder(Protocol):
    resources: ClassVar[dict[str, float]]
    spec: ModelSpec

    def setup(self) -> None: ...

    def process_batch(self, clips: list[ClipInput]) -> np.ndarray:
        """``(len(clips), spec.dim)`` float32, rows L2-normalised."""
        ...
