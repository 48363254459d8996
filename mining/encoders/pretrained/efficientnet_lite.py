"""EfficientNet-Lite0 from its PyTorch state dict to an ONNX graph, without PyTorch.

The architecture is the one of ``efficientnet-lite-pytorch`` (lukemelas'
EfficientNet-PyTorch with the Lite changes of the TensorFlow reference): a 3x3/2
stem of 32 channels, 16 MBConv blocks (1x1 expansion, depthwise kxk, 1x1
projection, identity skip where shapes allow; no squeeze-excitation), a 1x1 head
to 1280 channels, ReLU6 everywhere, BatchNorm (eps 1e-3) after every
convolution, TensorFlow "SAME" padding (the extra row and column at the end, which
is ONNX's ``SAME_UPPER``), global average pooling, a 1000-class linear layer.

Each BatchNorm is folded into the convolution before it (``w * g/sqrt(v+eps)``,
``b - m * g/sqrt(v+eps)``). The graph has two outputs: ``features`` (N, 1280), the
pooled features an encoder reads, and ``logits`` (N, 1000), the ImageNet head, kept
so anyone can check what the features see. Intermediate tensors are named
``stem``, ``block0`` .. ``block15`` and ``head`` (before pooling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from storage.errors import ConfigError

__all__ = ["BLOCKS", "FEATURE_DIM", "build_onnx"]

FEATURE_DIM = 1280
BN_EPS = 1e-3


@dataclass(frozen=True)
class BlockStage:
    """One row of the architecture: ``repeats`` MBConv blocks; the first has the stride."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# efficientnet_lite() in efficientnet_lite_pytorch/utils.py: 'r1_k3_s11_e1_i32_o16', ...
BLOCKS = (
    BlockStage(1, 3, 1, 1, 32, 16),
    BlockStage(2, 3, 2, 6, 16, 24),
    BlockStage(2, 5, 2, 6, 24, 40),
    BlockStage(3, 3, 2, 6, 40, 80),
    BlockStage(3, 5, 1, 6, 80, 112),
    BlockStage(4, 5, 2, 6, 112, 192),
    BlockStage(1, 3, 1, 6, 192, 320),
)


def _blocks() -> list[BlockStage]:
    """The 16 blocks one by one (the repeats of a stage take its output and stride 1)."""
    out = []
    for s in BLOCKS:
        out.append(BlockStage(1, s.kernel, s.stride, s.expand, s.in_ch, s.out_ch))
        out += [BlockStage(1, s.kernel, 1, s.expand, s.out_ch, s.out_ch)] * (s.repeats - 1)
    return out


def _fold(state: dict[str, np.ndarray], conv: str, bn: str) -> tuple[np.ndarray, np.ndarray]:
    w = state[f"{conv}.weight"].astype(np.float64)
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"].astype(np.float64) + BN_EPS)
    bias = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
    return (w * scale[:, None, None, None]).astype(np.float32), bias.astype(np.float32)


class _Graph:
    def __init__(self, state: dict[str, np.ndarray]):
        from onnx import numpy_helper

        self._np = numpy_helper
        self.state = state
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def _name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: np.ndarray, stem: str) -> str:
        name = self._name(stem)
        self.inits.append(self._np.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = out or self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self._name(f"n_{op}"), **attrs))
        return out

    def conv_bn(
        self, x: str, conv: str, bn: str, stride: int = 1, groups: int = 1, out: str | None = None
    ) -> str:
        w, b = _fold(self.state, conv, bn)
        k = w.shape[-1]
        attrs: dict[str, Any] = {"strides": [stride, stride], "group": groups, "kernel_shape": [k, k]}
        if k > 1 or stride > 1:
            attrs["auto_pad"] = "SAME_UPPER"  # TensorFlow "SAME": the odd pixel of padding at the end
        return self.node("Conv", [x, self.const(w, f"{conv}.w"), self.const(b, f"{conv}.b")], out, **attrs)

    def relu6(self, x: str, out: str | None = None) -> str:
        lo = self.const(np.array(0.0, np.float32), "zero")
        hi = self.const(np.array(6.0, np.float32), "six")
        return self.node("Clip", [x, lo, hi], out)


def build_onnx(state: dict[str, np.ndarray]) -> Any:
    """The ONNX model (opset 17) of EfficientNet-Lite0 with these weights; input
    ``pixels`` (N, 3, H, W) float32, normalised with the ImageNet mean and std."""
    import onnx
    from onnx import TensorProto, helper

    blocks = _blocks()
    expected = {
        "_conv_stem.weight",
        "_conv_head.weight",
        "_fc.weight",
        f"_blocks.{len(blocks) - 1}._bn2.bias",
    }
    if missing := sorted(expected - set(state)):
        raise ConfigError(f"not an EfficientNet-Lite0 state dict: lacks {missing}")
    if f"_blocks.{len(blocks)}._project_conv.weight" in state:
        raise ConfigError("state dict has more blocks than EfficientNet-Lite0 (another width/depth?)")
    g = _Graph(state)
    x = g.relu6(g.conv_bn("pixels", "_conv_stem", "_bn0", stride=2), out="stem")
    for i, b in enumerate(blocks):
        p = f"_blocks.{i}"
        h = x
        hidden = b.in_ch * b.expand
        if b.expand != 1:
            h = g.relu6(g.conv_bn(h, f"{p}._expand_conv", f"{p}._bn0"))
        if state[f"{p}._depthwise_conv.weight"].shape != (hidden, 1, b.kernel, b.kernel):
            raise ConfigError(f"block {i}: depthwise weights {state[f'{p}._depthwise_conv.weight'].shape}")
        h = g.relu6(g.conv_bn(h, f"{p}._depthwise_conv", f"{p}._bn1", stride=b.stride, groups=hidden))
        skip = b.stride == 1 and b.in_ch == b.out_ch
        h = g.conv_bn(h, f"{p}._project_conv", f"{p}._bn2", out=None if skip else f"block{i}")
        x = g.node("Add", [h, x], f"block{i}") if skip else h
    x = g.relu6(g.conv_bn(x, "_conv_head", "_bn1"), out="head")
    pooled = g.node("Flatten", [g.node("GlobalAveragePool", [x])], "features")
    fc_w = g.const(state["_fc.weight"].astype(np.float32), "fc.w")
    fc_b = g.const(state["_fc.bias"].astype(np.float32), "fc.b")
    g.node("Gemm", [pooled, fc_w, fc_b], "logits", transB=1)
    graph = helper.make_graph(
        g.nodes,
        "efficientnet_lite0",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURE_DIM]),
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["N", int(state["_fc.bias"].shape[0])]
            ),
        ],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fleetmine")
    model.ir_version = 8  # readable by every onnxruntime fleetmine supports (>= 1.18)
    onnx.checker.check_model(model, full_check=True)
    return model
