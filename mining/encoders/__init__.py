"""Encoders by registry kind. A bad kind fails with the list of valid ones."""

from __future__ import annotations

from mining.interfaces import Encoder, ModelSpec
from storage.errors import ConfigError

__all__ = ["KINDS", "encoder_resources", "make_encoder"]

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
