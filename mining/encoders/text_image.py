"""``text-image``: a CLIP- or SigLIP-style model a team brings, as ``optimum-cli export onnx``
writes it, with an image side that embeds clips and a text side that embeds words.

The folder (local or ``s3://``) holds ``model.onnx`` (inputs ``input_ids``,
``attention_mask``, ``pixel_values``; outputs ``text_embeds``, ``image_embeds``) or the
split export's ``text_model.onnx`` and ``vision_model.onnx``, beside ``tokenizer.json``
(read by Hugging Face's ``tokenizers``) and ``preprocessor_config.json`` (image size,
mean, std). :func:`prepare` checks all of it at registration and refuses the folder
naming what is missing; it then stores the two sides as their own graphs in the lake
(``model_files/<sha256>/``; a joint graph is cut into the part each output needs, so a
text query never runs the vision tower), and the registry row records every setting
it read, so a version means the same bytes wherever it runs.

A clip's vector is the unit mean of its keyframes' unit ``image_embeds``: the whole
vector is what was in view (the appearance block of :func:`mining.encoders.frame_span`),
so query by example works on it too, and a text's unit ``text_embeds`` is compared with
it by cosine similarity, the score CLIP and SigLIP were trained on.
"""

from __future__ import annotations

import hashlib
import io
import threading
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from mining.encoders.kinds import EncoderKind, Layout
from mining.encoders.onnx import device_resources
from mining.encoders.params import Params
from mining.interfaces import ClipInput, ModelSpec
from storage.bounds import MAX_QUERY_TEXT
from storage.errors import ConfigError

__all__ = [
    "KIND",
    "MAX_TEXT_CHARS",
    "ImageSteps",
    "TextImageEncoder",
    "TextImageParams",
    "fitted",
    "has_text_side",
]

MAX_TEXT_CHARS = MAX_QUERY_TEXT  # a query or a prompt; a tokenizer truncates at max_length tokens anyway
_FRAMES_PER_RUN = 16  # bounds the activations held at once
TEXT_FILE, VISION_FILE, TOKENIZER_FILE = "text.onnx", "vision.onnx", "tokenizer.json"


Side = Annotated[int, Field(ge=8, le=1024)]
"""An image side in pixels: the models fleetmine runs take 224-448; 1024 bounds one frame's
pixels (and 16 of them at once) to a few hundred MB whatever a config says."""
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6)]


class ImageSteps(Params):
    """What ``preprocessor_config.json`` says to do to an image (CLIPImageProcessor's and
    SiglipImageProcessor's steps, in their order): resize (the short side to
    ``shortest_edge``, or to ``height`` x ``width``), centre crop, rescale, normalise."""

    shortest_edge: Side | None = None
    resize_to: tuple[Side, Side] | None = Field(default=None, description="[H, W]")
    resample: int = Field(default=3, ge=0, le=5, description="PIL's filter (3: bicubic)")
    crop: tuple[Side, Side] | None = Field(default=None, description="[H, W] of the centre crop")
    rescale: Finite = 1 / 255
    mean: tuple[Finite, Finite, Finite] = (0.0, 0.0, 0.0)
    std: tuple[Finite, Finite, Finite] = (1.0, 1.0, 1.0)

    @model_validator(mode="after")
    def _fixed_size(self) -> ImageSteps:
        """A graph gets one shape: a resize that keeps the aspect ratio needs a crop after it
        (398 x 224 keyframes would otherwise reach a 224 x 224 graph as 398 x 224)."""
        if self.crop is None and self.resize_to is None:
            raise ValueError("the image steps give no fixed size: a crop_size or a size of height and width")
        if not all(s > 0 for s in self.std):
            raise ValueError("image_std must be positive")
        return self

    def pixels(self, jpeg: bytes) -> np.ndarray:
        """``(3, H, W)`` float32 of one image."""
        from PIL import Image

        img = Image.open(io.BytesIO(jpeg)).convert("RGB")
        if self.shortest_edge is not None:
            w, h = img.size
            s = self.shortest_edge
            size = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
            img = img.resize(size, Image.Resampling(self.resample))
        elif self.resize_to is not None:
            img = img.resize((self.resize_to[1], self.resize_to[0]), Image.Resampling(self.resample))
        x = np.asarray(img, np.float32)
        if self.crop is not None:
            ch, cw = self.crop
            if x.shape[0] < ch or x.shape[1] < cw:  # as the processors do: pad with zeros
                padded = np.zeros((max(ch, x.shape[0]), max(cw, x.shape[1]), 3), np.float32)
                top, left = (padded.shape[0] - x.shape[0]) // 2, (padded.shape[1] - x.shape[1]) // 2
                padded[top : top + x.shape[0], left : left + x.shape[1]] = x
                x = padded
            top, left = (x.shape[0] - ch) // 2, (x.shape[1] - cw) // 2
            x = x[top : top + ch, left : left + cw]
        x = x * np.float32(self.rescale)
        mean, std = np.array(self.mean, np.float32), np.array(self.std, np.float32)
        out: np.ndarray = np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))
        return out

    def shape(self) -> tuple[int, int]:
        """The (H, W) the model gets."""
        if self.crop is not None:
            return self.crop
        if self.resize_to is not None:
            return self.resize_to
        s = self.shortest_edge or 224
        return s, s


class TextImageParams(Params):
    """What a ``text-image`` version was registered with: read from its folder by
    :func:`prepare` (a key given with ``--params`` overrides what the folder says)."""

    source: str = Field(default="", description="the folder it was registered from")
    files: dict[str, str] = Field(default_factory=dict, description="file in the lake -> sha256")
    text_inputs: tuple[str, ...] = Field(default=("input_ids", "attention_mask"))
    id_type: Literal["int64", "int32"] = "int64"
    max_length: int = Field(default=77, ge=1, le=4096, description="tokens a text is cut to")
    padding: Literal["longest", "max_length"] = Field(
        default="longest", description="max_length: every text padded to max_length (SigLIP)"
    )
    pad_id: int = Field(default=0, ge=0)
    image: ImageSteps = Field(description="what is done to each keyframe before the vision side")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="cuda: its workers ask Ray for a GPU")


def has_text_side(spec: ModelSpec) -> bool:
    return spec.kind == KIND.name


class TextImageEncoder:
    """An encoder (:class:`mining.interfaces.Encoder`) with :meth:`embed_text` beside it."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, spec: ModelSpec, storage_options: dict[str, str] | None = None):
        self.spec = spec
        self.storage_options = storage_options or {}
        self.params = TextImageParams.model_validate(spec.params)
        self._vision: Any = None
        self._text: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()  # the API embeds texts from several threads

    @classmethod
    def of_graphs(cls, spec: ModelSpec, text: bytes, vision: bytes, tokenizer: Any) -> TextImageEncoder:
        """An encoder over graphs and a tokenizer in memory (a folder being registered)."""
        enc = cls(spec)
        enc._tokenizer = fitted(tokenizer, enc.params)
        enc._text = _session(text, 1)
        enc._vision = _session(vision, 1)
        return enc

    def run_text(self, texts: list[str]) -> np.ndarray:
        """The text side's raw ``text_embeds`` (not normalised, shape as the graph gives)."""
        if self._text is None:
            self._setup_text()
        return np.asarray(self._text.run(None, self.tokens(texts))[0])

    def run_vision(self, pixels: np.ndarray) -> np.ndarray:
        """The vision side's raw ``image_embeds`` of ``(N, 3, H, W)`` pixels."""
        if self._vision is None:
            self.setup()
        return np.asarray(self._vision.run(None, {"pixel_values": pixels})[0])

    def _file(self, name: str) -> bytes:
        from storage.objectstore import Location

        if not self.spec.uri:
            raise ConfigError(f"model {self.spec.ref} has no uri")
        loc = Location(self.spec.uri, self.storage_options).join(name)
        data: bytes = loc.fs.cat_file(loc.path)
        if hashlib.sha256(data).hexdigest() != self.params.files.get(name):
            raise ConfigError(f"model {self.spec.ref}: {name} in the lake is not the one registered")
        return data

    def _threads(self) -> int:
        return max(1, int(device_resources(self.spec)["num_cpus"]))

    def setup(self) -> None:
        if self._vision is None:
            self._vision = _session(self._file(VISION_FILE), self._threads())

    def _setup_text(self) -> None:
        with self._lock:
            if self._text is None:
                from tokenizers import Tokenizer

                self._tokenizer = fitted(Tokenizer.from_str(self._file(TOKENIZER_FILE).decode()), self.params)
                self._text = _session(self._file(TEXT_FILE), self._threads())

    def encode_frames(self, jpegs: list[bytes]) -> np.ndarray:
        """``(len(jpegs), dim)`` float32: each image's unit ``image_embeds``."""
        if self._vision is None:
            self.setup()
        if not jpegs:
            return np.zeros((0, self.spec.dim), np.float32)
        parts = []
        for i in range(0, len(jpegs), _FRAMES_PER_RUN):
            pixels = np.stack([self.params.image.pixels(j) for j in jpegs[i : i + _FRAMES_PER_RUN]])
            parts.append(self.run_vision(pixels).astype(np.float32))
        return _unit(np.concatenate(parts).reshape(len(jpegs), -1))

    def process_batch(self, clips: list[ClipInput]) -> np.ndarray:
        frames = self.encode_frames([j for c in clips for j in c.jpegs])
        out = np.zeros((len(clips), self.spec.dim), np.float32)
        start = 0
        for i, c in enumerate(clips):
            own = frames[start : start + len(c.jpegs)]
            start += len(c.jpegs)
            if len(own):
                out[i] = own.mean(axis=0)
        return _unit(out)

    def tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The text side's feeds: ids cut to ``max_length``, padded as the version says."""
        if self._tokenizer is None:
            self._setup_text()
        p = self.params
        encoded = [self._tokenizer.encode(t).ids for t in texts]  # cut by fitted(): special tokens kept
        length = p.max_length if p.padding == "max_length" else max(1, max(map(len, encoded)))
        dtype = np.int64 if p.id_type == "int64" else np.int32
        ids = np.full((len(texts), length), p.pad_id, dtype)
        mask = np.zeros((len(texts), length), dtype)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = e
            mask[i, : len(e)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        return {k: feeds[k] for k in p.text_inputs}

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32: each text's unit ``text_embeds``."""
        for t in texts:
            if not t.strip():
                raise ConfigError("a text query is empty")
            if len(t) > MAX_TEXT_CHARS:
                raise ConfigError(f"a text query is {len(t)} characters; at most {MAX_TEXT_CHARS}")
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError("a text query is not valid Unicode (a lone surrogate)") from None
        if self._text is None:
            self._setup_text()
        out = self.run_text(texts).astype(np.float32).reshape(len(texts), -1)
        return _unit(out)


def fitted(tokenizer: Any, params: TextImageParams) -> Any:
    """``tokenizer`` cutting at the version's ``max_length`` (its own truncation, which keeps
    the special tokens its post-processor adds: CLIP reads a text's embedding at its end
    token) and padding nothing (:meth:`TextImageEncoder.tokens` pads and masks; a padding
    block in tokenizer.json, ``{"Fixed": 5000000}`` say, is not obeyed)."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(params.max_length)
    return tokenizer


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 0, x / np.maximum(norms, 1e-12), x).astype(np.float32)


def _session(model: bytes, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = [
        p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
    ]
    return ort.InferenceSession(model, options, providers=providers)


def _layout(spec: ModelSpec) -> Layout:
    return spec.dim, None  # the whole vector is the frames' mean: what was in view


def _prepare(
    lake_root: Any, uri: str, given: dict[str, Any] | None, storage_options: dict[str, str] | None = None
) -> tuple[str, int, dict[str, Any]]:
    """:func:`mining.encoders.text_image_folder.prepare` (loaded when a folder is registered)."""
    from mining.encoders.text_image_folder import prepare

    return prepare(lake_root, uri, given, storage_options)


KIND = EncoderKind(
    "text-image",
    TextImageEncoder,
    params=TextImageParams,
    resources=device_resources,
    layout=_layout,
    prepare=_prepare,
)
