"""The dense-motion block: what moved between a triggered clip's dense frames."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from mining.encoders.builtin import BuiltinEncoder
from mining.encoders.fusion import DENSE_DIM, dense_motion
from mining.encoders.registry import register
from mining.interfaces import ClipInput, ModelSpec
from storage import Lake


def _jpeg(arm_up: bool | None) -> bytes:
    rng = np.random.default_rng(0)
    img = np.full((224, 398, 3), 90, np.uint8)
    img[150:] = rng.integers(60, 120, (74, 398, 3), dtype=np.uint8)  # textured, still road
    if arm_up is not None:
        img[100:130, 300:306] = 220  # a person on the right
        y = 92 if arm_up else 104
        img[y : y + 6, 294:300] = 220  # their arm, up or down
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def test_a_still_scene_is_dark_and_a_waving_arm_lights_its_cell() -> None:
    still = dense_motion([_jpeg(False)] * 6)
    waving = dense_motion([_jpeg(k % 2 == 0) for k in range(6)])
    assert still.shape == waving.shape == (DENSE_DIM,)
    assert np.count_nonzero(still[:28]) == 0 and still[28] == 1.0  # looked at, nothing moved
    lit = np.flatnonzero(waving[:28])
    assert len(lit) and set(lit % 7) == {5}  # the cells on the right, where the arm is
    assert not dense_motion([_jpeg(True)]).any()  # one frame: nothing looked at


def test_a_version_with_a_dense_weight_has_the_block_and_others_do_not(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    plain = register(lake, "b", "builtin")
    look = register(lake, "b", "builtin", params={"weights": {"dense": 1.0}})
    assert (plain.dim, look.dim) == (256, 256 + DENSE_DIM) and look.params["weights"]["dense"] == 1.0
    waving = [_jpeg(k % 2 == 0) for k in range(6)]
    clip = ClipInput("c", [_jpeg(None)] * 3, {"events": ["sudden_stop"]}, waving)
    quiet = ClipInput("c", clip.jpegs, clip.features)
    v_plain = BuiltinEncoder(plain).process_batch([clip, quiet])
    v_look = BuiltinEncoder(look).process_batch([clip, quiet])
    assert v_plain.shape == (2, 256) and np.allclose(v_plain[0], v_plain[1])  # @1 never reads them
    assert v_look.shape == (2, 256 + DENSE_DIM) and np.allclose(np.linalg.norm(v_look, axis=1), 1.0)
    assert not np.allclose(v_look[0], v_look[1]) and not v_look[1, 256:].any()
    assert isinstance(look, ModelSpec)
