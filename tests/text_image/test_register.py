"""Registering a text-image export folder: both export layouts give the same embeddings, equal
to numpy's; a folder missing a piece, or whose pieces do not fit, is refused naming it, and
nothing reaches the lake; the stored sides are checked against their digests when loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mining.encoders import make_encoder
from mining.encoders.registry import list_models, register
from mining.encoders.text_image import TextImageEncoder
from mining.interfaces import ClipInput
from storage import Lake
from storage.errors import ConfigError
from storage.objectstore import Location
from tests.text_image import tiny_model
from tests.text_image.tiny_model import DIM, build_folder

TEXTS = ["a red car", "Blue ROAD!", "dark scene at the clip", "green bright unknownword"]


def _jpegs() -> list[bytes]:
    import io

    from PIL import Image

    out = []
    for colour in [(200, 40, 40), (30, 60, 220), (90, 200, 90), (20, 20, 20), (250, 250, 250)]:
        img = Image.new("RGB", (48, 40), colour)
        img.paste((colour[2], colour[0], colour[1]), (0, 0, 12, 40))  # not one flat colour
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        out.append(buf.getvalue())
    return out


def _lake(uri: str, opts: dict[str, str]) -> Lake:
    lake = Lake(uri, opts)
    lake.create_tables(["models"])
    return lake


def _upload(folder: Path, uri: str, opts: dict[str, str]) -> str:
    """``folder``'s files under ``uri`` (an s3:// prefix), as a team keeps an export there."""
    dest = Location(uri, opts)
    for f in folder.iterdir():
        with dest.join(f.name).fs.open(dest.join(f.name).path, "wb") as out:
            out.write(f.read_bytes())
    return uri


@pytest.mark.parametrize("layout", ["joint", "split"])
def test_an_export_folder_registers_and_embeds_as_numpy_says(
    layout: str, lake_uri: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    uri, opts = lake_uri
    lake = _lake(uri, opts)
    folder = build_folder(tmp_path / "export", layout=layout)  # type: ignore[arg-type]
    source = str(folder) if uri.startswith("/") else _upload(folder, uri.replace("/lake", "/export"), opts)
    spec = register(lake, "tiny", "text-image", source)
    assert (spec.ref, spec.kind, spec.dim) == ("tiny@1", "text-image", DIM)
    p = spec.params
    assert p["image"] == {
        "shortest_edge": 32, "resize_to": None, "resample": 3, "crop": [32, 32],
        "rescale": pytest.approx(1 / 255), "mean": [0.5] * 3, "std": [0.5] * 3,
    }  # fmt: skip
    assert (p["max_length"], p["padding"], p["pad_id"]) == (16, "longest", 0)  # tokenizer_config.json
    assert p["text_inputs"] == ["input_ids", "attention_mask"] and p["source"] == source
    assert sorted(p["files"]) == ["text.onnx", "tokenizer.json", "vision.onnx"]
    stored = Location(spec.uri or "", opts)
    assert spec.uri and spec.uri.startswith(lake.root.join("model_files").uri)
    assert sorted(f.rsplit("/", 1)[-1] for f in stored.fs.ls(stored.path)) == sorted(p["files"])

    enc = make_encoder(spec, opts)
    assert isinstance(enc, TextImageEncoder)
    enc.setup()
    np.testing.assert_allclose(enc.embed_text(TEXTS), tiny_model.text_embeds(TEXTS), atol=1e-6)
    jpegs = _jpegs()
    np.testing.assert_allclose(enc.encode_frames(jpegs), tiny_model.image_embeds(jpegs), atol=1e-5)
    clips = [ClipInput("a", jpegs[:2], {}), ClipInput("b", jpegs[2:], {}), ClipInput("c", [], {})]
    v = enc.process_batch(clips)
    np.testing.assert_allclose(v[0], tiny_model.clip_vector(jpegs[:2]), atol=1e-5)
    np.testing.assert_allclose(v[1], tiny_model.clip_vector(jpegs[2:]), atol=1e-5)
    assert not v[2].any()  # nothing to see: a zero row, as every encoder gives


def test_a_text_side_cut_from_the_joint_graph_never_runs_the_vision_tower(tmp_path: Path) -> None:
    import onnx

    lake = _lake(str(tmp_path / "lake"), {})
    spec = register(lake, "tiny", "text-image", str(build_folder(tmp_path / "export")))
    text = onnx.load(str(Path(spec.uri or "") / "text.onnx"))
    vision = onnx.load(str(Path(spec.uri or "") / "vision.onnx"))
    assert [i.name for i in text.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in text.graph.output] == ["text_embeds"]
    assert [i.name for i in vision.graph.input] == ["pixel_values"]
    assert {n.op_type for n in text.graph.node}.isdisjoint({"ReduceMean", "MatMul"})


def _without(name: str):  # type: ignore[no-untyped-def]
    def edit(folder: Path) -> None:
        (folder / name).unlink()

    return edit


def _write(name: str, content: str | bytes):  # type: ignore[no-untyped-def]
    def edit(folder: Path) -> None:
        data = content.encode() if isinstance(content, str) else content
        (folder / name).write_bytes(data)

    return edit


def _external_weights(folder: Path) -> None:
    import onnx

    model = onnx.load(str(folder / "model.onnx"))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                    location="model.onnx_data", size_threshold=0)  # fmt: skip


def _needs_token_type_ids(folder: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(folder / "model.onnx"))
    g = model.graph
    g.input.append(
        helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["text_batch", "sequence"])
    )
    for node in g.node:
        if node.op_type == "Gather":
            node.input[1] = "ids_typed"
    g.node.insert(0, helper.make_node("Add", ["input_ids", "token_type_ids"], ["ids_typed"]))
    onnx.save_model(model, str(folder / "model.onnx"))


REFUSED = {
    "no tokenizer": ({"tokenizer": False}, None, r"has no tokenizer\.json \(the tokenizer\)"),
    "no preprocessor": ({"preprocessor": False}, None, r"has no preprocessor_config\.json"),
    "no image_embeds": (
        {"image_output": "image_features"},
        None,
        r"no output 'image_embeds'.*image_features",
    ),
    "dims differ": ({"image_dim": DIM + 1}, None, rf"text_embeds is {DIM}-d but image_embeds {DIM + 1}-d"),
    "no graph": (
        {},
        _without("model.onnx"),
        r"no model\.onnx \(nor text_model\.onnx and vision_model\.onnx\)",
    ),
    "half a split export": (
        {"layout": "split"},
        _without("vision_model.onnx"),
        r"no model\.onnx .*text_model\.onnx",
    ),
    "tokenizer not json": ({}, _write("tokenizer.json", "{not json"), r"tokenizer\.json does not parse"),
    "no image size": (
        {},
        _write("preprocessor_config.json", json.dumps({"do_resize": False})),
        "no fixed size",
    ),
    "bad size": (
        {},
        _write("preprocessor_config.json", json.dumps({"size": "big"})),
        r"size big is not a size",
    ),
    "zero std": (
        {},
        _write(
            "preprocessor_config.json", json.dumps({**tiny_model.PREPROCESSOR, "image_std": [0.5, 0, 0.5]})
        ),
        "image_std must be positive",
    ),
    "graph not onnx": ({}, _write("model.onnx", b"\x00not a model"), r"model\.onnx: not an ONNX model"),
    "external weights": ({}, _external_weights, r"model\.onnx: .*external files"),
    "an input not fed": (
        {},
        _needs_token_type_ids,
        r"needs inputs fleetmine does not feed: \['token_type_ids'\]",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_folder_missing_a_piece_is_refused_naming_it_and_nothing_lands(case: str, tmp_path: Path) -> None:
    built, edit, message = REFUSED[case]
    folder = build_folder(tmp_path / "export", **built)
    if edit is not None:
        edit(folder)
    lake = _lake(str(tmp_path / "lake"), {})
    with pytest.raises(ConfigError, match=message):
        register(lake, "tiny", "text-image", str(folder))
    assert list_models(lake) == [] and not (tmp_path / "lake" / "model_files").exists()


def _preprocessor(**changes: object):  # type: ignore[no-untyped-def]
    return _write("preprocessor_config.json", json.dumps({**tiny_model.PREPROCESSOR, **changes}))


_CROPPED = '{"size": 32, "crop_size": 32, "do_center_crop": true, '
_BOUND = "less than or equal to 1024"
_PRE = "preprocessor_config.json"
HOSTILE_PREPROCESSOR = {
    "a 60000 px resize": (_preprocessor(size={"height": 60000, "width": 60000}), _BOUND),
    "a 90000 px crop": (_preprocessor(crop_size=90000), _BOUND),
    "a NaN rescale": (_write(_PRE, _CROPPED + '"rescale_factor": NaN}'), "finite number"),
    "an infinite mean": (_write("preprocessor_config.json", _CROPPED + '"image_mean": [Infinity, 0, 0]}'),
                         "finite number"),
    "an infinite size": (_write("preprocessor_config.json", '{"size": {"height": Infinity, "width": 3}}'),
                         "not a number"),
    "a resample past PIL's": (_preprocessor(resample=1e400), "not a number"),
    "a resize with no crop": (_preprocessor(do_center_crop=False), "no fixed size"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE_PREPROCESSOR))
def test_a_preprocessor_config_past_its_bounds_is_refused_before_a_pixel_is_made(
    case: str, tmp_path: Path
) -> None:
    edit, message = HOSTILE_PREPROCESSOR[case]
    folder = build_folder(tmp_path / "export")
    edit(folder)
    lake = _lake(str(tmp_path / "lake"), {})
    with pytest.raises(ConfigError, match=message):
        register(lake, "tiny", "text-image", str(folder))
    assert list_models(lake) == []


def test_the_tokenizer_cuts_long_texts_keeping_their_end_token_and_pads_nothing_itself(
    tmp_path: Path,
) -> None:
    """CLIP reads a text's embedding at its end token: a long text is cut by the tokenizer's
    own truncation (the post-processor's tokens kept), and a padding block in tokenizer.json
    (a 5,000,000-token Fixed pad) is not obeyed."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    folder = build_folder(tmp_path / "export")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.post_processor = TemplateProcessing(single="a $A car", special_tokens=[("a", 2), ("car", 4)])
    tok.enable_padding(length=5_000_000, pad_id=0, pad_token="[PAD]")
    (folder / "tokenizer.json").write_text(tok.to_str())
    (folder / "config.json").write_text(
        json.dumps({"model_type": "clip", "text_config": {"max_position_embeddings": 12}})
    )
    lake = _lake(str(tmp_path / "lake"), {})
    spec = register(lake, "tiny", "text-image", str(folder))
    assert spec.params["max_length"] == 12  # min(tokenizer_config's 16, the model's 12 positions)
    enc = make_encoder(spec)
    assert isinstance(enc, TextImageEncoder)
    feeds = enc.tokens(["red " * 40, "blue"])
    assert feeds["input_ids"].shape == (2, 12)
    assert feeds["input_ids"][0].tolist() == [2] + [11] * 10 + [4]
    assert feeds["input_ids"][1].tolist() == [2, 13, 4] + [0] * 9
    assert feeds["attention_mask"].sum(axis=1).tolist() == [12, 3]


def test_a_truncated_file_left_in_the_lake_is_written_anew(tmp_path: Path) -> None:
    lake = _lake(str(tmp_path / "lake"), {})
    folder = build_folder(tmp_path / "export")
    first = register(lake, "tiny", "text-image", str(folder))
    vision = Path(first.uri or "") / "vision.onnx"
    vision.write_bytes(vision.read_bytes()[:40])  # as a registration killed mid-write left it
    again = register(lake, "tiny", "text-image", str(folder))
    assert again.uri == first.uri and again.version == 2
    make_encoder(again).setup()  # loads: the bytes are the registered ones again
    assert not list(vision.parent.glob("*.part-*"))


def test_what_is_not_a_folder_or_a_dim_that_differs_is_refused(tmp_path: Path) -> None:
    lake = _lake(str(tmp_path / "lake"), {})
    folder = build_folder(tmp_path / "export")
    with pytest.raises(ConfigError, match="is not a folder"):
        register(lake, "tiny", "text-image", str(folder / "model.onnx"))
    with pytest.raises(ConfigError, match="no folder at"):
        register(lake, "tiny", "text-image", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="needs --uri"):
        register(lake, "tiny", "text-image")
    with pytest.raises(ConfigError, match=rf"--dim 7: the model's embeddings are {DIM}-d"):
        register(lake, "tiny", "text-image", str(folder), dim=7)
    with pytest.raises(ConfigError, match=r"bad text-image params.*max_length"):
        register(lake, "tiny", "text-image", str(folder), params={"max_length": 0})
    assert list_models(lake) == []


def test_a_siglip_style_export_pads_every_text_to_max_length(tmp_path: Path) -> None:
    """SigLIP was trained on texts padded to 64 tokens: its config says siglip, its image
    processor resizes to a square without a crop, and its text side may take no mask."""
    folder = build_folder(tmp_path / "export", attention_mask=False)
    (folder / "config.json").write_text(json.dumps({"model_type": "siglip", "text_config": {}}))
    pre = {**tiny_model.PREPROCESSOR, "image_processor_type": "SiglipImageProcessor",
           "size": {"height": 32, "width": 32}, "do_center_crop": False}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    lake = _lake(str(tmp_path / "lake"), {})
    spec = register(lake, "sig", "text-image", str(folder), params={"max_length": 12})
    assert spec.params["padding"] == "max_length" and spec.params["text_inputs"] == ["input_ids"]
    assert spec.params["image"]["resize_to"] == [32, 32] and spec.params["image"]["crop"] is None
    enc = make_encoder(spec)
    assert isinstance(enc, TextImageEncoder)
    feeds = enc.tokens(["red", "a blue car on the road"])
    assert list(feeds) == ["input_ids"] and feeds["input_ids"].shape == (2, 12)
    np.testing.assert_allclose(enc.embed_text(["red"]), tiny_model.text_embeds(["red"]), atol=1e-6)


def test_a_side_changed_in_the_lake_is_refused_when_loaded(tmp_path: Path) -> None:
    lake = _lake(str(tmp_path / "lake"), {})
    spec = register(lake, "tiny", "text-image", str(build_folder(tmp_path / "export")))
    other = build_folder(tmp_path / "other", layout="split")
    shutil.copy(other / "vision_model.onnx", Path(spec.uri or "") / "vision.onnx")
    with pytest.raises(ConfigError, match=r"vision\.onnx in the lake is not the one registered"):
        make_encoder(spec).setup()


def test_texts_a_query_cannot_be_are_refused(tmp_path: Path) -> None:
    lake = _lake(str(tmp_path / "lake"), {})
    enc = make_encoder(register(lake, "tiny", "text-image", str(build_folder(tmp_path / "export"))))
    assert isinstance(enc, TextImageEncoder)
    refused = [("", "empty"), ("   ", "empty"), ("x" * 1001, "1001 characters"), ("\ud800 red", "surrogate")]
    for bad, message in refused:
        with pytest.raises(ConfigError, match=message):
            enc.embed_text([bad])
    odd = ["red; rm -rf / $(x) `y`", "../../etc/passwd", "red\x00</script>", "red " * 240]
    out = enc.embed_text(odd)  # words it does not know are words it does not know
    assert out.shape == (4, DIM) and np.isfinite(out).all()
    assert enc.tokens(["red " * 240])["input_ids"].shape == (1, 16)  # cut to max_length
