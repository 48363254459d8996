"""EfficientNet-Lite0 in plain numpy (float64), straight from the unfolded state dict.

Written from ``efficientnet_lite_pytorch`` (model.py, utils.py) independently of the
ONNX converter: BatchNorm applied as BatchNorm (not folded), TensorFlow "SAME"
padding computed the way ``Conv2dStaticSamePadding`` does, the block list parsed
from the package's own block strings. The converter is right when both agree.
"""

from __future__ import annotations

import math
import re

import numpy as np

# efficientnet_lite() in efficientnet_lite_pytorch/utils.py, verbatim
BLOCK_STRINGS = [
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
]
EPS = 1e-3  # GlobalParams.batch_norm_epsilon


def _blocks() -> list[dict[str, int]]:
    out = []
    for s in BLOCK_STRINGS:
        o = {k: int(v[0]) if k == "s" else int(v) for k, v in re.findall(r"([a-z]+)(\d+)", s)}
        for r in range(o["r"]):
            out.append({**o, "s": o["s"] if r == 0 else 1, "i": o["i"] if r == 0 else o["o"]})
    return out


def _same_pad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    ih, iw = x.shape[-2:]
    oh, ow = math.ceil(ih / s), math.ceil(iw / s)
    ph = max((oh - 1) * s + k - ih, 0)
    pw = max((ow - 1) * s + k - iw, 0)
    return np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))


def _conv(x: np.ndarray, w: np.ndarray, s: int, depthwise: bool) -> np.ndarray:
    """x (C, H, W), w (O, C or 1, k, k): a direct sum over the kernel's taps."""
    k = w.shape[-1]
    x = _same_pad(x, k, s)
    oh, ow = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
    out = np.zeros((w.shape[0], oh, ow))
    for dy in range(k):
        for dx in range(k):
            patch = x[:, dy : dy + s * (oh - 1) + 1 : s, dx : dx + s * (ow - 1) + 1 : s]
            if depthwise:
                out += w[:, 0, dy, dx][:, None, None] * patch
            else:
                out += np.einsum("oc,chw->ohw", w[:, :, dy, dx], patch)
    return out


def _bn(x: np.ndarray, sd: dict[str, np.ndarray], p: str) -> np.ndarray:
    g, b, m, v = (
        sd[f"{p}.{n}"].astype(np.float64) for n in ("weight", "bias", "running_mean", "running_var")
    )
    return (x - m[:, None, None]) / np.sqrt(v[:, None, None] + EPS) * g[:, None, None] + b[:, None, None]


def _relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def forward(sd: dict[str, np.ndarray], pixels: np.ndarray) -> dict[str, np.ndarray]:
    """One image (3, H, W): the named intermediate tensors, the features and the logits."""
    w = {k: v.astype(np.float64) for k, v in sd.items()}
    out: dict[str, np.ndarray] = {}
    x = _relu6(_bn(_conv(pixels.astype(np.float64), w["_conv_stem.weight"], 2, False), w, "_bn0"))
    out["stem"] = x
    for i, b in enumerate(_blocks()):
        p = f"_blocks.{i}"
        h = x
        if b["e"] != 1:
            h = _relu6(_bn(_conv(h, w[f"{p}._expand_conv.weight"], 1, False), w, f"{p}._bn0"))
        h = _relu6(_bn(_conv(h, w[f"{p}._depthwise_conv.weight"], b["s"], True), w, f"{p}._bn1"))
        h = _bn(_conv(h, w[f"{p}._project_conv.weight"], 1, False), w, f"{p}._bn2")
        if b["s"] == 1 and b["i"] == b["o"]:
            h = h + x
        x = out[f"block{i}"] = h
    x = out["head"] = _relu6(_bn(_conv(x, w["_conv_head.weight"], 1, False), w, "_bn1"))
    out["features"] = x.mean(axis=(1, 2))
    out["logits"] = w["_fc.weight"] @ out["features"] + w["_fc.bias"]
    return out
