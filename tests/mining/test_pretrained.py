"""``fleetmine model import efficientnet-lite0``: the shipped checkpoint, converted without
PyTorch, is a faithful EfficientNet-Lite0 and embeds the recorded dashcam video."""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw

from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from mining.encoders import make_encoder
from mining.encoders.embed import load_inputs, load_vectors
from mining.encoders.onnx import OnnxEncoder
from mining.encoders.pretrained import IMAGENET_MEAN, IMAGENET_STD, build, checkpoint_bytes, import_pretrained
from mining.encoders.pretrained.torch_checkpoint import load_state_dict
from mining.encoders.registry import list_models, resolve
from mining.interfaces import ClipInput
from storage import Lake, Settings
from storage.errors import ConfigError
from tests.conftest import LOCAL, SHARED_DATA
from tests.ingest.conftest import make_drive
from tests.mining.efficientnet_reference import forward

VIDEO = SHARED_DATA / "video" / "solidWhiteRight.mp4"
TRAFFIC_LIGHT, CROSSWORD = 920, 918  # ImageNet class indices
INTERMEDIATE = ["stem", "block0", "block1", "block3", "block7", "block12", "block15", "head"]


@functools.cache
def _state() -> dict[str, np.ndarray]:
    return load_state_dict(checkpoint_bytes("efficientnet-lite0"))


@functools.cache
def _session(with_intermediate: bool = False) -> ort.InferenceSession:
    model = onnx.load_from_string(build("efficientnet-lite0"))
    if with_intermediate:
        for name in INTERMEDIATE:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _pixels(img: Image.Image, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    x = np.asarray(img.convert("RGB").resize(size[::-1], Image.Resampling.BILINEAR), np.float32) / 255.0
    return ((x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32).transpose(2, 0, 1)


def _dashcam_frame(index: int) -> Image.Image:
    import av

    if not VIDEO.exists():
        pytest.skip(
            f"recorded data not found at {SHARED_DATA} (it lives in ../shared/data beside the checkout)"
        )
    with av.open(str(VIDEO)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == index:
                return frame.to_image()
    raise AssertionError(f"the video has no frame {index}")


def _probabilities(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


# -- the checkpoint reader ------------------------------------------------------------


def test_the_shipped_checkpoint_is_a_lite0_state_dict() -> None:
    sd = _state()
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_fc.weight"].shape == (1000, 1280)
    assert (
        sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1) and "_blocks.16._bn0.bias" not in sd
    )
    params = sum(
        v.size
        for k, v in sd.items()
        if not k.endswith(("num_batches_tracked", "running_mean", "running_var"))
    )
    assert params == 4_652_008  # EfficientNet-Lite0: 4.65 M trainable parameters
    assert all(v.dtype == np.float32 for k, v in sd.items() if not k.endswith("num_batches_tracked"))


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /tmp/fleetmine-pwned",))


def test_the_reader_refuses_a_pickle_that_calls_anything_else(tmp_path: Path) -> None:
    for payload in (
        pickle.dumps({"w": _Evil()}, protocol=2),
        b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {}))
        + pickle.dumps(_Evil()),
    ):
        with pytest.raises(ConfigError, match=r"(posix|os)\.system"):
            load_state_dict(payload)
    assert not Path("/tmp/fleetmine-pwned").exists()


# Stand-ins pickled under this module's name, then renamed to torch's in the bytes: what
# torch.save's zip layout writes (protocol 2 names globals as "module\nname\n" text).
class FloatStorage:
    pass


def _rebuild_tensor_v2(*args: Any) -> None:
    pass


class _ZipStorage:
    def __init__(self, key: str, numel: int):
        self.key, self.numel = key, numel


class _ZipTensor:
    def __init__(self, key: str, shape: tuple[int, ...]):
        self.storage, self.shape = _ZipStorage(key, int(np.prod(shape))), shape

    def __reduce__(self) -> tuple[Any, ...]:
        stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
        return (_rebuild_tensor_v2, (self.storage, 0, self.shape, stride, False, None))


def test_the_zip_layout_of_torch_save_reads_the_same_tensors() -> None:
    sd = _state()
    names = ["_conv_stem.weight", "_bn0.running_var", "_blocks.3._depthwise_conv.weight"]
    buf = io.BytesIO()

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if isinstance(obj, _ZipStorage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
            return None

    _Pickler(buf, protocol=2).dump({n: _ZipTensor(str(i), sd[n].shape) for i, n in enumerate(names)})
    here = __name__.encode()
    data = buf.getvalue()
    data = data.replace(here + b"\nFloatStorage", b"torch\nFloatStorage")
    data = data.replace(here + b"\n_rebuild_tensor_v2", b"torch._utils\n_rebuild_tensor_v2")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", data)
        for i, n in enumerate(names):
            z.writestr(f"archive/data/{i}", sd[n].astype("<f4").tobytes())
    back = load_state_dict(out.getvalue())
    assert list(back) == names
    for n in names:
        np.testing.assert_array_equal(back[n], sd[n])


# -- the converted model --------------------------------------------------------------


@pytest.mark.parametrize("size", [(224, 224), (150, 250)])  # odd sizes: SAME padding's extra row/column
def test_every_layer_matches_a_numpy_reference_of_the_architecture(size: tuple[int, int]) -> None:
    x = _pixels(_dashcam_frame(100), size)
    ref = forward(_state(), x)
    sess = _session(True)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"pixels": x[None]}), strict=True))
    for name in [*INTERMEDIATE, "features", "logits"]:
        a, r = got[name][0], ref[name]
        assert a.shape == r.shape, name
        assert float(np.abs(a - r).max()) <= 1e-4 * float(np.abs(r).max()), name
    assert got["features"].shape == (1, 1280) and float(got["features"].std()) > 0.05


def _traffic_light() -> Image.Image:
    img = Image.new("RGB", (224, 224), (120, 170, 230))
    d = ImageDraw.Draw(img)
    d.rectangle((100, 150, 124, 224), fill=(60, 60, 60))
    d.rounded_rectangle((80, 20, 144, 170), radius=10, fill=(25, 25, 25))
    for k, colour in enumerate([(230, 30, 30), (90, 70, 10), (20, 60, 20)]):
        d.ellipse((92, 30 + k * 46, 132, 70 + k * 46), fill=colour)
    return img


def _checkerboard() -> Image.Image:
    y, x = np.mgrid[0:224, 0:224]
    a = (((x // 28) + (y // 28)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([a] * 3, axis=-1))


def test_the_imagenet_head_names_what_a_drawn_image_shows() -> None:
    sess = _session()
    pixels = np.stack([_pixels(_traffic_light()), _pixels(_checkerboard())])
    _, logits = sess.run(None, {"pixels": pixels})
    light, board = _probabilities(logits[0]), _probabilities(logits[1])
    assert int(light.argmax()) == TRAFFIC_LIGHT and light[TRAFFIC_LIGHT] > 0.5
    assert int(board.argmax()) == CROSSWORD


def test_the_build_is_deterministic() -> None:
    assert build("efficientnet-lite0") == build("efficientnet-lite0")


# -- import into a lake, embed the recorded video ---------------------------------------


def _cli(*args: str) -> str:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "fleetmine", *args], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_import_into_a_lake_then_embed_the_recorded_dashcam_video(tmp_path: Path) -> None:
    if not VIDEO.exists():
        pytest.skip(
            f"recorded data not found at {SHARED_DATA} (it lives in ../shared/data beside the checkout)"
        )
    settings = Settings(lake=str(tmp_path / "lake"), clip_seconds=2.0, keyframes_per_clip=4)
    raw = tmp_path / "raw"
    make_drive(
        raw,
        "dashcam",
        "2016-08-28--21-16-08",
        {"cameras/front.mp4": VIDEO},
        {"start_time": "2016-08-28T21:16:08Z"},
    )
    run_ingest(str(raw), settings, runner=LOCAL)

    first = _cli("model", "import", "efficientnet-lite0", "--current", "--lake", settings.lake)
    again = _cli("model", "import", "efficientnet-lite0", "--lake", settings.lake)
    assert "registered efficientnet-lite0@1 (onnx, 2592-d)" in first and "already registered" in again
    lake = Lake.from_settings(settings)
    (spec,) = list_models(lake)
    assert resolve(lake).ref == "efficientnet-lite0@1" and spec.uri and spec.uri.startswith(lake.uri)
    assert lake.root.fs.exists(spec.uri)
    # The dense-frames block is off unless a version asks for it (builtin-look does).
    assert spec.params["clip"]["weights"] == {"appearance": 1.0, "motion": 0.6, "signals": 1.0, "dense": None}

    report = run_embed(settings, runner=LOCAL)
    n_clips = lake.read("clips", columns=["clip_id"]).num_rows
    assert report.model == "efficientnet-lite0@1" and report.embedded == n_clips >= 4 and not report.failed
    ids, vectors = load_vectors(lake, spec)
    assert vectors.shape == (n_clips, 2 * 1280 + 32) and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    unit_clips = vectors @ vectors.T
    assert float(unit_clips[~np.eye(n_clips, dtype=bool)].max()) < 0.99  # different clips differ

    inputs = load_inputs(lake, ids)
    rows = {r["clip_id"]: r for r in inputs.to_pylist()}
    clips = [ClipInput(c, rows[c]["jpegs"], json.loads(rows[c]["features"])) for c in ids]
    enc = make_encoder(spec)
    enc.setup()
    np.testing.assert_allclose(enc.process_batch(clips), vectors, atol=1e-6)  # the stored vectors, again

    frames = [j for c in clips for j in c.jpegs]
    assert isinstance(enc, OnnxEncoder)
    feats = enc.encode_frames(frames)  # the frame features, before pooling over time
    assert feats.shape == (len(frames), 1280) and np.isfinite(feats).all() and (feats >= 0).all()
    np.testing.assert_array_equal(feats, enc.encode_frames(frames))
    sess = ort.InferenceSession(lake.root.fs.cat_file(spec.uri), providers=["CPUExecutionProvider"])
    direct = sess.run(
        ["features"], {"pixels": np.stack([_pixels(Image.open(io.BytesIO(j))) for j in frames])}
    )
    np.testing.assert_allclose(feats, direct[0], rtol=1e-4, atol=1e-5)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert float(cos[~np.eye(len(frames), dtype=bool)].max()) < 0.99  # no two frames alike
    # Frames of one highway drive are one kind of scene, and a drawn traffic light is not it.
    light = sess.run(["features"], {"pixels": _pixels(_traffic_light())[None]})[0][0]
    assert float((unit @ (light / np.linalg.norm(light))).max()) < float(cos.min())


def test_import_stores_the_model_in_the_lake_local_or_s3(lake: Lake) -> None:
    spec, new = import_pretrained(lake, "efficientnet-lite0")
    again, new_again = import_pretrained(lake, "efficientnet-lite0", current=True)
    assert new and not new_again and again.version == spec.version and again.is_current
    assert spec.uri is not None and spec.uri.startswith(lake.uri + "/model_files/efficientnet-lite0/")
    enc = make_encoder(spec, lake.root.storage_options)
    enc.setup()  # reads the model through the lake's own storage options
    (vec,) = enc.process_batch([ClipInput("c", [_jpeg(_traffic_light())], {"speed_mean": 3.0})])
    assert vec.shape == (2592,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
