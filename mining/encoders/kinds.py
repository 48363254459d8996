"""What an encoder kind registers: one :class:`EncoderKind`, its module's ``KIND``, listed
once in :data:`mining.encoders.KINDS`. The model registry (which kinds exist, their
params, whether a version needs a model file), the embed job (a worker's resources)
and the searches (where a vector keeps its appearance block) all read it from there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mining.interfaces import Encoder, ModelSpec

if TYPE_CHECKING:
    from mining.encoders.params import FusionWeights, Params

__all__ = ["EncoderKind", "Layout", "no_layout", "one_cpu"]

Layout = tuple[int, "FusionWeights | None"] | None
"""(the appearance block's length, the version's fusion weights) of a clip vector;
weights None: the whole vector is the frames' mean; None: not known."""


def one_cpu(spec: ModelSpec) -> dict[str, float]:
    return {"num_cpus": 1.0}


def no_layout(spec: ModelSpec) -> Layout:
    return None


@dataclass(frozen=True)
class EncoderKind:
    """One encoder kind. ``make`` builds the encoder (the kind's module is already
    loaded, but a heavy runtime such as onnxruntime loads in ``setup()``)."""

    name: str
    make: Callable[[ModelSpec, dict[str, str] | None], Encoder]
    params: type[Params] | None = None
    """The params model (a :class:`~mining.encoders.params.Params`) a version's params are
    validated and filled in with at registration; None: kept as given."""
    weights: bool = True
    """Whether a version names its model file (``--uri``)."""
    dim: Callable[[Any], int] | None = None
    """The output dimension from the validated params; None: the version's ``--dim``."""
    resources: Callable[[ModelSpec], dict[str, float]] = one_cpu
    """What one worker needs (:func:`mining.encoders.encoder_resources`)."""
    layout: Callable[[ModelSpec], Layout] = no_layout
    """Where a version's vectors keep their blocks (:func:`mining.encoders.frame_span`)."""
    prepare: (
        Callable[[Any, str, dict[str, Any] | None, dict[str, str] | None], tuple[str, int, dict[str, Any]]]
        | None
    ) = None
    """For a kind whose ``--uri`` is a folder to read and check (``text-image``): given the
    lake's root Location, the uri, the params given and the storage options, it stores
    what the version needs in the lake and returns (its uri there, the dim, the params
    to record). None: the uri is recorded as given."""
