"""One suite every encoder kind passes: shape, dtype, unit rows, batch order, no frames."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mining.encoders import KINDS, make_encoder
from mining.encoders.fusion import SIGNAL_DIM
from mining.encoders.pretrained import import_pretrained
from mining.encoders.registry import list_models, register
from mining.interfaces import ClipInput, Encoder, ModelSpec
from storage import Lake
from tests.ingest.videos import frame_image

BUILDABLE = [k for k in KINDS if k != "torchscript"]  # torchscript refuses with a message (no torch)


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame_image(i * 2654435761 % 65536, 224, 160)).save(buf, format="JPEG")
    return buf.getvalue()


def _clip(i: int, frames: int = 3) -> ClipInput:
    features = {
        "speed_mean": 5.0 + i,
        "speed_min": 1.0,
        "speed_max": 9.0 + i,
        "max_decel_mps2": float(i % 4),
        "max_lat_accel_mps2": 1.5,
        "max_steering_rate_dps": 30.0 * i,
        "brake_presses": i % 3,
        "stop_count": 0,
        "events": ["hard_brake"] if i % 2 else [],
    }
    return ClipInput(f"20240101-c{i}", [_jpeg(10 * i + k) for k in range(frames)], features)


# Every way to build an encoder: the builtin, an ONNX frame model averaged (versions from
# before clip fusion), the same fused with signals, the pretrained EfficientNet-Lite0, and a
# text-image export folder (its image side: the frames' mean, no signals).
VARIANTS = ["builtin", "onnx-mean", "onnx-clip", "efficientnet-lite0", "text-image"]
FUSING = [v for v in VARIANTS if v not in ("onnx-mean", "text-image")]
assert set(BUILDABLE) <= set(VARIANTS) | {"onnx"}


def _spec(lake: Lake, variant: str, tmp_path: Path, weights: dict[str, float] | None = None) -> ModelSpec:
    from tests.mining.test_mining import small_onnx

    w = {"weights": weights} if weights else {}
    match variant:
        case "builtin":
            return register(lake, "contract-builtin", "builtin", params=w)
        case "onnx-mean" | "onnx-clip":
            model = str(small_onnx(tmp_path / "m.onnx"))
            clip = {"clip": w} if variant == "onnx-clip" else {}
            dim = 2 * 8 + SIGNAL_DIM if clip else 8
            return register(lake, f"contract-{variant}", "onnx", model, dim, {"input_size": [32, 32], **clip})
        case "text-image":
            from tests.text_image.tiny_model import build_folder

            return register(lake, "contract-text-image", "text-image", str(build_folder(tmp_path / "export")))
        case _:
            spec, _new = import_pretrained(lake, "efficientnet-lite0")
            if not weights:
                return spec
            params = {**spec.params, "clip": {**spec.params["clip"], "weights": weights}}
            return register(lake, spec.name, "onnx", spec.uri, spec.dim, params)


def _encoder(spec: ModelSpec) -> Encoder:
    enc = make_encoder(spec)
    enc.setup()
    return enc


@pytest.fixture(params=VARIANTS)
def encoder(request: pytest.FixtureRequest, tmp_path: Path) -> Encoder:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["models"])
    return _encoder(_spec(lake, request.param, tmp_path))


@pytest.fixture(params=FUSING)
def fusing(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Lake, str, Path]:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["models"])
    return lake, request.param, tmp_path


def test_shape_dtype_and_unit_rows(encoder: Encoder) -> None:
    out = encoder.process_batch([_clip(i) for i in range(5)])
    assert out.shape == (5, encoder.spec.dim) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_rows_follow_the_batch_order_and_do_not_depend_on_neighbours(encoder: Encoder) -> None:
    clips = [_clip(i) for i in range(6)]
    together = encoder.process_batch(clips)
    reversed_ = encoder.process_batch(clips[::-1])[::-1]
    alone = np.stack([encoder.process_batch([c])[0] for c in clips])
    assert np.allclose(together, reversed_, atol=1e-6) and np.allclose(together, alone, atol=1e-6)
    assert len({tuple(np.round(r, 5)) for r in together}) == 6  # distinct clips, distinct vectors


def test_a_clip_without_keyframes_gets_a_finite_row(encoder: Encoder) -> None:
    out = encoder.process_batch([_clip(1, frames=0), _clip(2)])
    assert out.shape == (2, encoder.spec.dim) and np.isfinite(out).all()
    norm = float(np.linalg.norm(out[0]))
    assert norm == pytest.approx(1.0, abs=1e-5) or norm == 0.0  # zero only when nothing to see


def test_deterministic(encoder: Encoder) -> None:
    clips = [_clip(i) for i in range(3)]
    assert np.array_equal(encoder.process_batch(clips), encoder.process_batch(clips))


def test_params_are_validated_by_kind_at_registration(tmp_path: Path) -> None:
    from storage.errors import ConfigError

    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["models"])
    with pytest.raises(ConfigError, match=r"men.*fields: input_size, mean, std, layout, device"):
        register(lake, "typo", "onnx", "m.onnx", 8, params={"men": [0.5, 0.5, 0.5]})
    with pytest.raises(ConfigError, match="input_size"):
        register(lake, "shape", "onnx", "m.onnx", 8, params={"input_size": [224]})
    with pytest.raises(ConfigError, match="layout"):
        register(lake, "b", "builtin", params={"layout": 2})
    ok = register(lake, "gpu", "onnx", "m.onnx", 8, params={"device": "cuda", "input_size": [32, 32]})
    from mining.encoders import encoder_resources

    assert encoder_resources(ok) == {"num_cpus": 1.0, "num_gpus": 1.0}


# -- clip vectors: frames pooled over time, fused with signals (mining/encoders/fusion.py) --


def test_a_clip_vector_reads_its_signals_and_its_frames(fusing: tuple[Lake, str, Path]) -> None:
    enc = _encoder(_spec(*fusing))
    base = _clip(3)
    other_signals = ClipInput(base.clip_id, base.jpegs, {**base.features, "max_decel_mps2": 7.5})
    other_frames = ClipInput(base.clip_id, _clip(4).jpegs, base.features)
    v = enc.process_batch([base, other_signals, other_frames])
    assert not np.allclose(v[0], v[1], atol=1e-4) and not np.allclose(v[0], v[2], atol=1e-4)


def test_frames_pool_over_time_by_their_mean_and_their_change(fusing: tuple[Lake, str, Path]) -> None:
    """The mean and the mean absolute change do not see a clip played backwards; the change
    does see the frames' order otherwise, and a still scene has no change at all."""
    enc = _encoder(_spec(*fusing))
    a, b, c = _clip(5).jpegs
    f = _clip(5).features
    forward, backward, shuffled = (ClipInput("x", js, f) for js in ([a, b, c], [c, b, a], [a, c, b]))
    v = enc.process_batch([forward, backward, shuffled])
    np.testing.assert_allclose(v[0], v[1], atol=1e-6)
    assert not np.allclose(v[0], v[2], atol=1e-4)
    still, moving = enc.process_batch([ClipInput("s", [a, a, a], f), ClipInput("m", [a, a, b], f)])
    lake, variant, tmp = fusing
    no_motion = _encoder(_spec(lake, variant, tmp, {"appearance": 1.0, "motion": 0.0, "signals": 1.0}))
    np.testing.assert_allclose(still, no_motion.process_batch([ClipInput("s", [a, a, a], f)])[0], atol=1e-6)
    assert not np.allclose(moving, no_motion.process_batch([ClipInput("m", [a, a, b], f)])[0], atol=1e-4)


def test_fusion_weights_are_parameters_of_the_version_in_the_registry(fusing: tuple[Lake, str, Path]) -> None:
    lake, variant, tmp = fusing
    default = _spec(lake, variant, tmp)
    frames_only = _spec(lake, variant, tmp, {"appearance": 1.0, "motion": 0.6, "signals": 0.0})
    signals_only = _spec(lake, variant, tmp, {"appearance": 0.0, "motion": 0.0, "signals": 1.0})
    assert default.name == frames_only.name == signals_only.name
    assert [default.version, frames_only.version, signals_only.version] == [1, 2, 3]
    rows = {m.version: m.params for m in list_models(lake) if m.name == default.name}
    weights = {v: (p.get("clip") or p)["weights"] for v, p in rows.items()}
    assert weights[1] == {"appearance": 1.0, "motion": 0.6, "signals": 1.0, "dense": None}  # defaults too
    assert weights[3] == {"appearance": 0.0, "motion": 0.0, "signals": 1.0, "dense": None}
    base = _clip(2)
    braking = ClipInput(base.clip_id, base.jpegs, {**base.features, "max_decel_mps2": 7.5})
    elsewhere = ClipInput(base.clip_id, _clip(6).jpegs, base.features)
    f = _encoder(frames_only).process_batch([base, braking, elsewhere])
    s = _encoder(signals_only).process_batch([base, braking, elsewhere])
    np.testing.assert_allclose(f[0], f[1], atol=1e-6)  # blind to signals
    np.testing.assert_allclose(s[0], s[2], atol=1e-6)  # blind to frames
    assert not np.allclose(f[0], f[2], atol=1e-4) and not np.allclose(s[0], s[1], atol=1e-4)


def test_a_clip_fusing_dim_that_cannot_be_is_refused(tmp_path: Path) -> None:
    from storage.errors import ConfigError

    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(ConfigError, match=r"2 x its frame features \+ 32"):
        register(lake, "odd", "onnx", "m.onnx", 8 + 32 + 1, params={"clip": {}})
    with pytest.raises(ConfigError, match=r"layouts: \[1\]"):
        register(lake, "lay", "onnx", "m.onnx", 48, params={"clip": {"signal_layout": 7}})


# -- query by example: the appearance block of a clip vector (mining/search/by_example.py) --


def test_the_appearance_block_holds_what_the_frames_show_and_nothing_else(encoder: Encoder) -> None:
    """What an image is compared on: the block reads the frames, not the signals, and an
    image encoded as a still clip gives the block of any clip that shows it held still."""
    from mining.encoders import frame_span
    from mining.encoders.vectors import SubSpace

    span = frame_span(encoder.spec)
    assert span is not None and 0 <= span.start < span.stop <= encoder.spec.dim
    sub = SubSpace("appearance", span.start, span.stop)
    base, other = _clip(3), _clip(4)
    braking = ClipInput(base.clip_id, base.jpegs, {**base.features, "max_decel_mps2": 7.5, "events": []})
    frame = base.jpegs[0]
    held = ClipInput("held", [frame, frame, frame], base.features)
    v = sub.project(encoder.process_batch([base, braking, other, ClipInput("q", [frame], {}), held]))
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(v[0], v[1], atol=1e-5)  # blind to the signals
    assert not np.allclose(v[0], v[2], atol=1e-3)  # other frames, another block
    np.testing.assert_allclose(v[3], v[4], atol=1e-5)


def test_a_version_that_weighs_no_appearance_has_no_frame_block(fusing: tuple[Lake, str, Path]) -> None:
    from mining.encoders import frame_span

    blind = _spec(*fusing, {"appearance": 0.0, "motion": 0.6, "signals": 1.0})
    assert frame_span(blind) is None and frame_span(_spec(*fusing)) is not None
