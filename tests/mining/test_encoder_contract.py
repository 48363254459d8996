"""One suite every encoder kind passes: shape, dtype, unit rows, batch order, no frames."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mining.encoders import KINDS, make_encoder
from mining.interfaces import ClipInput, Encoder
from mining.registry import register
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


@pytest.fixture(params=BUILDABLE)
def encoder(request: pytest.FixtureRequest, tmp_path: Path) -> Encoder:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["models"])
    if request.param == "builtin":
        spec = register(lake, "contract-builtin", "builtin")
    else:
        from tests.mining.test_mining import small_onnx

        model = str(small_onnx(tmp_path / "m.onnx"))
        spec = register(lake, "contract-onnx", "onnx", model, 8, params={"input_size": [32, 32]})
    enc = make_encoder(spec)
    enc.setup()
    return enc


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
