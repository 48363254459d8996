"""Reading a text-image export folder at registration (:func:`prepare`): what
``optimum-cli export onnx`` writes for a CLIP or SigLIP checkpoint, checked piece by piece
and stored in the lake as the two graphs :mod:`mining.encoders.text_image` runs.

Its own module because it is the hostile-input half of the kind: every file of the folder
is read with a size bound, every JSON key type-checked, the graphs walked and cut, and both
sides run once on probes, before one byte is written to the lake; the encoder itself only
ever loads what passed here, checked against the digests recorded then.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from pydantic import ValidationError

from mining.encoders.text_image import (
    KIND,
    TEXT_FILE,
    TOKENIZER_FILE,
    VISION_FILE,
    ImageSteps,
    TextImageEncoder,
    TextImageParams,
)
from mining.interfaces import ModelSpec
from storage.errors import ConfigError

__all__ = ["MAX_GRAPH_BYTES", "MAX_JSON_BYTES", "prepare"]

MAX_GRAPH_BYTES = 2 << 30  # protobuf's own limit: a bigger export keeps weights in external files
MAX_JSON_BYTES = 64 << 20  # tokenizer.json of a large vocabulary is a few MB
_TEXT_INPUTS = ("input_ids", "attention_mask")


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
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"bad text-image params: {problems} (fields: {', '.join(TextImageParams.model_fields)})"
        ) from None
    dim = _check_runs(text, vision, params, tokenizer)
    files = {TEXT_FILE: text, VISION_FILE: vision, TOKENIZER_FILE: tokenizer_text.encode()}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    folder_digest = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    stored = lake_root.join("model_files", folder_digest)
    for name, data in files.items():
        _store(stored.join(name), data, digests[name])
    record = params.model_copy(update={"files": digests}).model_dump(mode="json")
    return stored.uri, dim, record


def _store(loc: Any, data: bytes, digest: str) -> None:
    """``data`` at ``loc`` unless the same bytes are there: written under a temporary name
    and moved in, so a registration killed mid-write leaves no truncated file under the
    content-addressed name (one found there, by a version before this, is written anew)."""
    import uuid

    if loc.fs.exists(loc.path) and hashlib.sha256(loc.fs.cat_file(loc.path)).hexdigest() == digest:
        return
    loc.fs.makedirs(loc.path.rsplit("/", 1)[0], exist_ok=True)
    part = f"{loc.path}.part-{uuid.uuid4().hex}"
    with loc.fs.open(part, "wb") as f:
        f.write(data)
    loc.fs.mv(part, loc.path)


def _listing(folder: Any, uri: str) -> set[str]:
    try:
        if not folder.fs.exists(folder.path):
            raise ConfigError(f"no folder at {uri}")
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
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'steps'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"preprocessor_config.json: {problems[:300]}") from None
    except (TypeError, ValueError, OverflowError):  # int("x"), int(inf), float([])
        raise ConfigError("preprocessor_config.json: a size, mean, std or factor is not a number") from None
    return steps.model_dump(mode="json")


def _text_settings(tokenizer: Any, tok_cfg: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """max_length, padding and pad_id from the tokenizer's config files."""
    out: dict[str, Any] = {}
    longest = tok_cfg.get("model_max_length")
    text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    positions = text_cfg.get("max_position_embeddings") if text_cfg else None
    known = [
        n for n in (longest, positions) if isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 4096
    ]
    if known:  # the tokenizer's limit, never past the positions the text model has
        out["max_length"] = min(known)
    siglip = str(cfg.get("model_type", "")).lower().startswith("siglip")
    out["padding"] = "max_length" if siglip else "longest"  # SigLIP was trained on texts padded to 64
    pad = tok_cfg.get("pad_token")
    if isinstance(pad, dict):
        pad = pad.get("content")
    pad_id = tokenizer.token_to_id(pad) if isinstance(pad, str) else None
    if pad_id is None and tokenizer.padding:
        pad_id = tokenizer.padding.get("pad_id")
    out["pad_id"] = int(pad_id or 0)
    if not 0 <= out["pad_id"] < max(1, tokenizer.get_vocab_size()):
        raise ConfigError(f"the pad token's id {out['pad_id']} is outside the tokenizer's vocabulary")
    return out


def _probes(max_length: int) -> list[str]:
    """A short text and one cut at ``max_length``: the text side must take both lengths."""
    return ["a photo", "a photo of a car on a road at night " * (max_length // 4 + 2)]


def _check_runs(text: bytes, vision: bytes, params: TextImageParams, tokenizer: Any) -> int:
    """Run both sides on two texts and two blank images: their embeddings must be rows
    of one dimension."""
    spec = ModelSpec("probe", 0, KIND.name, None, 0, params.model_dump(mode="json"))
    h, w = params.image.shape()
    try:
        enc = TextImageEncoder.of_graphs(spec, text, vision, tokenizer)
    except Exception as exc:  # onnxruntime's own types (only the type: its text quotes the graph)
        raise ConfigError(f"onnxruntime cannot load the graph ({type(exc).__name__})") from None
    try:
        t = enc.run_text(_probes(params.max_length))
        v = enc.run_vision(np.full((2, 3, h, w), 0.5, np.float32))
    except Exception as exc:  # a shape or type the graph refuses
        raise ConfigError(
            f"the model does not run on {h} x {w} images or on texts of up to {params.max_length} "
            f"tokens ({type(exc).__name__}): check max_length and the image size"
        ) from None
    if t.ndim != 2 or t.shape[0] != 2:
        raise ConfigError(f"text_embeds has shape {list(t.shape)} for 2 texts; [2, dim] expected")
    if v.ndim != 2 or v.shape[0] != 2:
        raise ConfigError(f"image_embeds has shape {list(v.shape)} for 2 images; [2, dim] expected")
    if not (np.isfinite(t).all() and np.isfinite(v).all()):
        raise ConfigError("the model gives embeddings that are not finite (NaN or inf) on plain inputs")
    if t.shape[1] != v.shape[1]:
        raise ConfigError(
            f"text_embeds is {t.shape[1]}-d but image_embeds {v.shape[1]}-d: a text cannot be compared "
            "with an image (export the model with its projections: text_embeds and image_embeds)"
        )
    return int(t.shape[1])
