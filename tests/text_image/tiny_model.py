"""A tiny text-image model folder in the layout ``optimum-cli export onnx`` writes for a
CLIP or SigLIP checkpoint, built at test time.

The graph sees colour and light: an image's embedding is the direction of its mean colour
with the grey taken out, a small constant axis and its brightness; a text's is the sum of
its words' vectors, where ``red``, ``green`` and ``blue`` point where those tints do,
``bright`` and ``dark`` along the brightness axis, and every other word towards the
constant axis. Both sides end L2-normalised, as CLIP's and SigLIP's do.

:func:`text_embeds` and :func:`image_embeds` compute the same with numpy, from the
tokenizer's ids and from decoded pixels, so a test checks scores without the runtime.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

VOCAB = [
    "[PAD]", "[UNK]", "a", "the", "car", "clip", "of", "on", "road", "scene", "at",
    "red", "green", "blue", "bright", "dark",
]  # fmt: skip
DIM = 5
SIZE = 32  # the crop the preprocessor config asks for
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
_NEUTRAL = 0.3
_TINTS = {"red": (2.0, -1.0, -1.0), "green": (-1.0, 2.0, -1.0), "blue": (-1.0, -1.0, 2.0)}


def word_table(dim: int = DIM) -> np.ndarray:
    table = np.zeros((len(VOCAB), dim), np.float32)
    for i, word in enumerate(VOCAB):
        if word in _TINTS:
            table[i, :3] = _TINTS[word]
        elif word in ("bright", "dark"):
            table[i, 4] = 1.0 if word == "bright" else -1.0
        elif word != "[PAD]":
            table[i, 3] = _NEUTRAL
    return table


def colour_projection(dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """(3 x dim, dim): mean colour minus its grey, a small constant axis, the brightness."""
    proj = np.zeros((3, dim), np.float32)
    proj[:3, :3] = np.eye(3) - 1.0 / 3.0
    proj[:, 4] = 0.1  # (r + g + b) / 3 of pixels normalised to [-1, 1], times 0.3
    bias = np.zeros(dim, np.float32)
    bias[3] = 0.05
    return proj, bias


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _graph(
    side: Literal["joint", "text", "vision"],
    *,
    text_dim: int = DIM,
    image_dim: int = DIM,
    text_output: str = "text_embeds",
    image_output: str = "image_embeds",
    attention_mask: bool = True,
) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inputs, outputs, inits = [], [], [], []
    if side in ("joint", "text"):
        inputs.append(
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["text_batch", "sequence"])
        )
        inits.append(numpy_helper.from_array(word_table(text_dim), "word_table"))
        nodes.append(helper.make_node("Gather", ["word_table", "input_ids"], ["words"], axis=0))
        if attention_mask:
            inputs.append(
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["text_batch", "sequence"])
            )
            inits.append(numpy_helper.from_array(np.array([2], np.int64), "last_axis"))
            nodes += [
                helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
                helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask3"]),
                helper.make_node("Mul", ["words", "mask3"], ["kept"]),
            ]
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "seq_axis"))
        nodes += [
            helper.make_node(
                "ReduceSum", ["kept" if attention_mask else "words", "seq_axis"], ["summed"], keepdims=0
            ),
            helper.make_node("LpNormalization", ["summed"], [text_output], axis=1, p=2),
        ]
        outputs.append(
            helper.make_tensor_value_info(text_output, TensorProto.FLOAT, ["text_batch", text_dim])
        )
    if side in ("joint", "vision"):
        inputs.append(
            helper.make_tensor_value_info(
                "pixel_values", TensorProto.FLOAT, ["image_batch", 3, "height", "width"]
            )
        )
        proj, bias = colour_projection(image_dim)
        inits += [numpy_helper.from_array(proj, "colour_proj"), numpy_helper.from_array(bias, "colour_bias")]
        nodes += [
            helper.make_node("ReduceMean", ["pixel_values"], ["colour"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["colour", "colour_proj"], ["projected"]),
            helper.make_node("Add", ["projected", "colour_bias"], ["shifted"]),
            helper.make_node("LpNormalization", ["shifted"], [image_output], axis=1, p=2),
        ]
        outputs.append(
            helper.make_tensor_value_info(image_output, TensorProto.FLOAT, ["image_batch", image_dim])
        )
    graph = helper.make_graph(nodes, f"tiny-{side}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def tokenizer_json() -> str:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return str(tok.to_str())


PREPROCESSOR = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": SIZE},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": SIZE, "width": SIZE},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": list(MEAN),
    "image_std": list(STD),
    "do_convert_rgb": True,
}


def build_folder(
    dest: Path,
    *,
    layout: Literal["joint", "split"] = "joint",
    text_dim: int = DIM,
    image_dim: int = DIM,
    image_output: str = "image_embeds",
    tokenizer: bool = True,
    preprocessor: bool = True,
    attention_mask: bool = True,
) -> Path:
    """The export folder: ``model.onnx`` (or ``text_model.onnx`` and ``vision_model.onnx``),
    ``tokenizer.json``, ``tokenizer_config.json``, ``preprocessor_config.json``, ``config.json``."""
    dest.mkdir(parents=True, exist_ok=True)
    dims = {"text_dim": text_dim, "image_dim": image_dim, "image_output": image_output}
    if layout == "joint":
        (dest / "model.onnx").write_bytes(_graph("joint", attention_mask=attention_mask, **dims))
    else:
        (dest / "text_model.onnx").write_bytes(_graph("text", attention_mask=attention_mask, **dims))
        (dest / "vision_model.onnx").write_bytes(_graph("vision", **dims))
    if tokenizer:
        (dest / "tokenizer.json").write_text(tokenizer_json())
    (dest / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": MAX_LENGTH, "pad_token": "[PAD]"})
    )
    if preprocessor:
        (dest / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    (dest / "config.json").write_text(json.dumps({"model_type": "clip", "projection_dim": text_dim}))
    return dest


MAX_LENGTH = 16  # tokenizer_config.json's model_max_length: a text is cut there


def token_ids(text: str) -> list[int]:
    """What the word-level tokenizer gives (lower case; runs of word characters and runs of
    other non-space characters, as the ``Whitespace`` pre-tokenizer splits), cut to MAX_LENGTH."""
    import re

    index = {w: i for i, w in enumerate(VOCAB)}
    words = re.findall(r"\w+|[^\w\s]+", text.lower())
    return [index.get(w, index["[UNK]"]) for w in words][:MAX_LENGTH]


def text_embeds(texts: list[str]) -> np.ndarray:
    table = word_table().astype(np.float64)
    return np.stack([_unit(table[token_ids(t)].sum(axis=0)) for t in texts])


def pixels(jpeg: bytes) -> np.ndarray:
    """``(3, SIZE, SIZE)``: CLIPImageProcessor's steps with PREPROCESSOR (short side to SIZE,
    bicubic; centre crop; rescale; normalise)."""
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(SIZE * long / short)
    size = (SIZE, new_long) if w <= h else (new_long, SIZE)
    img = img.resize(size, Image.Resampling.BICUBIC)
    x = np.asarray(img, np.float32)
    top, left = (x.shape[0] - SIZE) // 2, (x.shape[1] - SIZE) // 2
    x = x[top : top + SIZE, left : left + SIZE] * np.float32(1 / 255)
    x = (x - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return x.transpose(2, 0, 1)


def image_embeds(jpegs: list[bytes]) -> np.ndarray:
    proj, bias = colour_projection()
    colours = np.stack([pixels(j).astype(np.float64).mean(axis=(1, 2)) for j in jpegs])
    return _unit(colours @ proj.astype(np.float64) + bias)


def clip_vector(jpegs: list[bytes]) -> np.ndarray:
    """A clip's vector: the unit mean of its keyframes' unit image embeddings."""
    return _unit(image_embeds(jpegs).mean(axis=0))
