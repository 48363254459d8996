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
import json
import threading
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from mining.encoders.kinds import EncoderKind, Layout
from mining.encoders.params import Params
from mining.interfaces import ClipInput, ModelSpec
from storage.errors import ConfigError

__all__ = [
    "KIND",
    "MAX_TEXT_CHARS",
    "ImageSteps",
    "TextImageEncoder",
    "TextImageParams",
    "has_text_side",
    "prepare",
]

MAX_TEXT_CHARS = 1000  # a query or a prompt; a tokenizer truncates at max_length tokens anyway
MAX_GRAPH_BYTES = 2 << 30  # protobuf's own limit: a bigger export keeps weights in external files
MAX_JSON_BYTES = 64 << 20  # tokenizer.json of a large vocabulary is a few MB
_FRAMES_PER_RUN = 16  # bounds the activations held at once
TEXT_FILE, VISION_FILE, TOKENIZER_FILE = "text.onnx", "vision.onnx", "tokenizer.json"
_TEXT_INPUTS = ("input_ids", "attention_mask")


class ImageSteps(Params):
    """What ``preprocessor_config.json`` says to do to an image (CLIPImageProcessor's and
    SiglipImageProcessor's steps, in their order): resize (the short side to
    ``shortest_edge``, or to ``height`` x ``width``), centre crop, rescale, normalise."""

    shortest_edge: int | None = Field(default=None, ge=8, le=1024)
    resize_to: tuple[int, int] | None = Field(default=None, description="[H, W]")
    resample: int = Field(default=3, ge=0, le=5, description="PIL's filter (3: bicubic)")
    crop: tuple[int, int] | None = Field(default=None, description="[H, W] of the centre crop")
    rescale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

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
    image: ImageSteps = ImageSteps()
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
        return max(1, int(_resources(self.spec)["num_cpus"]))

    def setup(self) -> None:
        if self._vision is None:
            self._vision = _session(self._file(VISION_FILE), self._threads())

    def _setup_text(self) -> None:
        with self._lock:
            if self._text is None:
                from tokenizers import Tokenizer

                self._tokenizer = Tokenizer.from_str(self._file(TOKENIZER_FILE).decode())
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
            parts.append(np.asarray(self._vision.run(None, {"pixel_values": pixels})[0], np.float32))
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
        encoded = [self._tokenizer.encode(t).ids[: p.max_length] for t in texts]
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
        if self._text is None:
            self._setup_text()
        out = np.asarray(self._text.run(None, self.tokens(texts))[0], np.float32).reshape(len(texts), -1)
        return _unit(out)


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


def _resources(spec: ModelSpec) -> dict[str, float]:
    resources = {"num_cpus": 1.0}
    if spec.params.get("device") == "cuda":
        resources["num_gpus"] = 1.0
    return resources


def _layout(spec: ModelSpec) -> Layout:
    return spec.dim, None  # the whole vector is the frames' mean: what was in view


# ---------------------------------------------------------------- registration


def prepare(
    lake_root: Any, uri: str, given: dict[str, Any] | None, storage_options: dict[str, str] | None = None
) -> tuple[str, int, dict[str, Any]]:
    """Check the export folder at ``uri`` and store its two sides in the lake under
    ``lake_root`` (a :class:`storage.objectstore.Location`): (the stored folder's uri, the
    embedding dim, the params the version records). ConfigError names what is missing
    or differs; nothing is written to the lake before every check has passed."""
    from storage.objectstore import Location

    folder = Location(uri.rstrip("/"), storage_options or {})
    names = _listing(folder, uri)
    for needed, what in (
        (TOKENIZER_FILE, "the tokenizer"),
        ("preprocessor_config.json", "the image size, mean and std"),
    ):
        if needed not in names:
            raise ConfigError(f"the folder {uri} has no {needed} ({what}); an optimum-cli export writes it")
    if "model.onnx" in names:
        joint = _graph(folder, "model.onnx")
        text, text_inputs = _side(joint, "model.onnx", "text_embeds")
        vision, _ = _side(joint, "model.onnx", "image_embeds")
    elif "text_model.onnx" in names and "vision_model.onnx" in names:
        text, text_inputs = _side(_graph(folder, "text_model.onnx"), "text_model.onnx", "text_embeds")
        vision, _ = _side(_graph(folder, "vision_model.onnx"), "vision_model.onnx", "image_embeds")
    else:
        have = ", ".join(sorted(n for n in names if n.endswith(".onnx"))) or "none"
        raise ConfigError(
            f"the folder {uri} has no model.onnx (nor text_model.onnx and vision_model.onnx); "
            f".onnx files: {have}"
        )
    tokenizer_text = _text(folder, TOKENIZER_FILE)
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(tokenizer_text)
    except Exception:  # the Rust side raises its own Exception type for any malformed file
        raise ConfigError(f"{TOKENIZER_FILE} does not parse as a Hugging Face tokenizer") from None
    extra = {n: _json(folder, n) for n in ("tokenizer_config.json", "config.json") if n in names}
    settings: dict[str, Any] = {
        "source": uri[:1000],
        "text_inputs": list(text_inputs),
        "id_type": _id_type(text, "input_ids"),
        "image": _image_steps(_json(folder, "preprocessor_config.json")),
        **_text_settings(tokenizer, extra.get("tokenizer_config.json", {}), extra.get("config.json", {})),
        **(given or {}),
    }
    try:
        params = TextImageParams.model_validate(settings)
    except Exception as exc:
        raise ConfigError(f"bad text-image params: {exc}") from None
    dim = _check_runs(text, vision, params, tokenizer)
    files = {TEXT_FILE: text, VISION_FILE: vision, TOKENIZER_FILE: tokenizer_text.encode()}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    folder_digest = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    stored = lake_root.join("model_files", folder_digest)
    for name, data in files.items():
        loc = stored.join(name)
        if not loc.fs.exists(loc.path):
            loc.fs.makedirs(stored.path, exist_ok=True)
            with loc.fs.open(loc.path, "wb") as f:
                f.write(data)
    record = params.model_copy(update={"files": digests}).model_dump(mode="json")
    return stored.uri, dim, record


def _listing(folder: Any, uri: str) -> set[str]:
    try:
        if not folder.fs.isdir(folder.path):
            raise ConfigError(f"{uri} is not a folder: give the folder the export wrote (--uri OUT/)")
        entries = folder.fs.ls(folder.path, detail=False)
    except (FileNotFoundError, PermissionError):
        raise ConfigError(f"no folder at {uri}") from None
    return {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries[:10_000]}


def _read(folder: Any, name: str, limit: int) -> bytes:
    loc = folder.join(name)
    size = loc.fs.size(loc.path)
    if size is None or size > limit:
        raise ConfigError(f"{name} is {size} bytes; at most {limit}")
    data: bytes = loc.fs.cat_file(loc.path)
    return data[: limit + 1]


def _text(folder: Any, name: str) -> str:
    try:
        return _read(folder, name, MAX_JSON_BYTES).decode()
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not UTF-8 text") from None


def _json(folder: Any, name: str) -> dict[str, Any]:
    try:
        doc = json.loads(_text(folder, name))
    except json.JSONDecodeError:
        raise ConfigError(f"{name} is not JSON") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{name} is not a JSON object")
    return doc


def _graph(folder: Any, name: str) -> Any:
    import onnx

    from mining.policies.contract import check_file

    data = _read(folder, name, MAX_GRAPH_BYTES)
    try:
        check_file(data)
    except ConfigError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return onnx.load_from_string(data)


def _depends(graph: Any, output: str) -> set[str]:
    """The graph inputs ``output`` is computed from (initializers are not inputs)."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {i.name for i in graph.input} - {t.name for t in graph.initializer}
    seen: set[str] = set()
    found: set[str] = set()
    stack = [output]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        node = producer.get(name)
        if node is not None:
            stack.extend(n for n in node.input if n)
            for attr in node.attribute:  # a subgraph (If, Loop) may read outer names
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    stack.extend(n for sub in g.node for n in sub.input if n)
    return found


def _side(model: Any, name: str, output: str) -> tuple[bytes, tuple[str, ...]]:
    """The part of ``model`` that computes ``output``, as its own graph, and its inputs."""
    import onnx.utils

    outputs = [o.name for o in model.graph.output]
    if output not in outputs:
        raise ConfigError(f"{name} has no output {output!r}; its outputs: {outputs[:20]}")
    needs = _depends(model.graph, output)
    if output == "text_embeds":
        if "input_ids" not in needs:
            raise ConfigError(f"{name}: text_embeds is not computed from an input named input_ids")
        allowed: tuple[str, ...] = _TEXT_INPUTS
    else:
        if "pixel_values" not in needs:
            raise ConfigError(f"{name}: image_embeds is not computed from an input named pixel_values")
        allowed = ("pixel_values",)
    other = sorted(needs - set(allowed))
    if other:
        raise ConfigError(
            f"{name}: {output} needs inputs fleetmine does not feed: {other} (it feeds {list(allowed)})"
        )
    ordered = tuple(i for i in allowed if i in needs)
    if (
        set(needs) == {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
        and len(outputs) == 1
    ):
        return model.SerializeToString(), ordered
    try:
        part = onnx.utils.Extractor(model).extract_model(list(ordered), [output])
    except Exception as exc:  # onnx raises plain Exceptions for a graph it cannot cut
        raise ConfigError(f"{name}: its {output} part cannot be cut out ({type(exc).__name__})") from None
    return part.SerializeToString(), ordered


def _id_type(text: bytes, name: str) -> str:
    import onnx

    for i in onnx.load_from_string(text).graph.input:
        if i.name == name:
            elem = i.type.tensor_type.elem_type
            if elem == onnx.TensorProto.INT64:
                return "int64"
            if elem == onnx.TensorProto.INT32:
                return "int32"
            raise ConfigError(f"input_ids is {onnx.TensorProto.DataType.Name(elem)}; int64 or int32 expected")
    raise ConfigError("the text graph has no input input_ids")


def _size(v: Any, key: str) -> tuple[int, int] | int | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, dict):
        if "shortest_edge" in v:
            return int(v["shortest_edge"])
        if "height" in v and "width" in v:
            return int(v["height"]), int(v["width"])
    raise ConfigError(f"preprocessor_config.json: {key} {str(v)[:80]} is not a size fleetmine reads")


def _image_steps(doc: dict[str, Any]) -> dict[str, Any]:
    """:class:`ImageSteps` from a CLIP/SigLIP ``preprocessor_config.json``."""
    out: dict[str, Any] = {}
    try:
        if doc.get("do_resize", True):
            size = _size(doc.get("size"), "size")
            if isinstance(size, int):
                # CLIPImageProcessor: an int is the short side; SiglipImageProcessor: a square
                if "siglip" in str(doc.get("image_processor_type", "")).lower():
                    out["resize_to"] = (size, size)
                else:
                    out["shortest_edge"] = size
            elif isinstance(size, tuple):
                out["resize_to"] = size
        if "resample" in doc:
            out["resample"] = int(doc["resample"])
        if doc.get("do_center_crop", False):
            crop = _size(doc.get("crop_size"), "crop_size")
            out["crop"] = (crop, crop) if isinstance(crop, int) else crop
        out["rescale"] = float(doc.get("rescale_factor", 1 / 255)) if doc.get("do_rescale", True) else 1.0
        if doc.get("do_normalize", True):
            out["mean"] = tuple(float(x) for x in doc.get("image_mean", (0.0, 0.0, 0.0)))
            out["std"] = tuple(float(x) for x in doc.get("image_std", (1.0, 1.0, 1.0)))
        steps = ImageSteps.model_validate(out)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"preprocessor_config.json: {str(exc)[:300]}") from None
    if not all(s > 0 for s in steps.std):
        raise ConfigError("preprocessor_config.json: image_std must be positive")
    if steps.shortest_edge is None and steps.resize_to is None and steps.crop is None:
        raise ConfigError("preprocessor_config.json gives no image size (size or crop_size)")
    return steps.model_dump(mode="json")


def _text_settings(tokenizer: Any, tok_cfg: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """max_length, padding and pad_id from the tokenizer's config files."""
    out: dict[str, Any] = {}
    longest = tok_cfg.get("model_max_length")
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    positions = text_cfg.get("max_position_embeddings") if text_cfg else None
    for n in (longest, positions):
        if isinstance(n, int) and 0 < n <= 4096:
            out["max_length"] = n
            break
    siglip = str(cfg.get("model_type", "")).lower().startswith("siglip")
    out["padding"] = "max_length" if siglip else "longest"  # SigLIP was trained on texts padded to 64
    pad = tok_cfg.get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    pad_id = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
    if pad_id is None and tokenizer.padding:
        pad_id = tokenizer.padding.get("pad_id")
    out["pad_id"] = int(pad_id or 0)
    return out


_PROBES = ["a photo", "a photo of a car on a road at night"]


def _check_runs(text: bytes, vision: bytes, params: TextImageParams, tokenizer: Any) -> int:
    """Run both sides on two texts and two blank images: their embeddings must be rows
    of one dimension."""
    spec = ModelSpec("probe", 0, KIND.name, None, 0, params.model_dump(mode="json"))
    enc = TextImageEncoder(spec)
    enc._tokenizer = tokenizer
    try:
        enc._text = _session(text, 1)
        enc._vision = _session(vision, 1)
    except Exception as exc:  # onnxruntime's own types: the graph is no model it can run
        raise ConfigError(
            f"onnxruntime cannot load the graph ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    h, w = params.image.shape()
    try:
        t = np.asarray(enc._text.run(None, enc.tokens(_PROBES))[0])
        v = np.asarray(enc._vision.run(None, {"pixel_values": np.zeros((2, 3, h, w), np.float32)})[0])
    except Exception as exc:  # a shape or type the graph refuses
        raise ConfigError(
            f"the model does not run on {h} x {w} images or on tokenized text: {str(exc)[:300]}"
        ) from None
    if t.ndim != 2 or t.shape[0] != 2:
        raise ConfigError(f"text_embeds has shape {list(t.shape)} for 2 texts; [2, dim] expected")
    if v.ndim != 2 or v.shape[0] != 2:
        raise ConfigError(f"image_embeds has shape {list(v.shape)} for 2 images; [2, dim] expected")
    if t.shape[1] != v.shape[1]:
        raise ConfigError(
            f"text_embeds is {t.shape[1]}-d but image_embeds {v.shape[1]}-d: a text cannot be compared "
            "with an image (export the model with its projections: text_embeds and image_embeds)"
        )
    return int(t.shape[1])


KIND = EncoderKind(
    "text-image",
    TextImageEncoder,
    params=TextImageParams,
    resources=_resources,
    layout=_layout,
    prepare=prepare,
)
