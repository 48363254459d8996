"""``torchscript``: registered like any model file, refused when built: TorchScript needs
PyTorch, which fleetmine does not install. Its message says how to get an ONNX encoder."""

from __future__ import annotations

from typing import NoReturn

from mining.encoders.kinds import EncoderKind
from mining.interfaces import ModelSpec
from storage.errors import ConfigError

__all__ = ["KIND"]


def _refuse(spec: ModelSpec, storage_options: dict[str, str] | None = None) -> NoReturn:
    raise ConfigError(
        f"model {spec.ref}: TorchScript encoders need PyTorch, which fleetmine does not install; "
        "export the model to ONNX (torch.onnx.export) and register it with kind onnx"
    )


KIND = EncoderKind("torchscript", _refuse)
