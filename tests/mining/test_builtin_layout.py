"""``builtin-motion@1`` vectors do not move when the ``clips`` vocabularies grow."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mining.encoders import make_encoder
from mining.interfaces import ClipInput, ModelSpec
from storage.errors import ConfigError
from storage.tables import clips

V1 = ModelSpec(name="builtin-motion", version=1, kind="builtin", uri=None, dim=256)
FEATURES = {
    "speed_mean": 15.0,
    "speed_min": 3.0,
    "speed_max": 27.0,
    "max_decel_mps2": 4.0,
    "max_lat_accel_mps2": 2.0,
    "max_steering_rate_dps": 300.0,
    "brake_presses": 2,
    "stop_count": None,
    "events": ["hard_brake", "creep", "a_new_event"],
}


def _jpegs() -> list[bytes]:
    out = []
    for k in range(3):
        y, x = np.mgrid[0:96, 0:160]
        rgb = np.stack([(x * 1.5 + 20 * k) % 256, (y * 2.5) % 256, (x + y + 40 * k) % 256], axis=-1)
        buf = io.BytesIO()
        Image.fromarray(rgb.astype(np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def test_signals_block_of_layout_1_is_the_documented_one() -> None:
    """No keyframes: the vector is the signals block alone, written out here by hand."""
    vec = make_encoder(V1).process_batch([ClipInput("c", [], FEATURES)])[0]
    sig = np.zeros(256)
    sig[192 + 32 : 192 + 32 + 8] = [15 / 30, 3 / 30, 27 / 30, 4 / 8, 2 / 8, 300 / 600, 2 / 4, 0.0]
    sig[192 + 32 + 8 + 0] = 1.0  # hard_brake
    sig[192 + 32 + 8 + 4] = 1.0  # creep; the unknown event has no slot
    np.testing.assert_allclose(vec, sig / np.linalg.norm(sig), rtol=1e-6, atol=1e-7)


_ENCODE = """
import base64, json, sys
from storage.tables import clips
clips.EVENTS = (*clips.EVENTS, "a_new_event")  # ingest grew its vocabulary before any import below
clips.FEATURES = (*clips.FEATURES, "a_new_feature")
from mining.encoders import make_encoder
from mining.interfaces import ClipInput, ModelSpec
doc = json.load(sys.stdin)
spec = ModelSpec(name="builtin-motion", version=1, kind="builtin", uri=None, dim=256)
clip = ClipInput("c", [base64.b64decode(j) for j in doc["jpegs"]], doc["features"])
print(json.dumps(make_encoder(spec).process_batch([clip])[0].tolist()))
"""


def test_vector_unchanged_when_the_storage_vocabulary_grows() -> None:
    import base64

    jpegs = _jpegs()
    here = make_encoder(V1).process_batch([ClipInput("c", jpegs, FEATURES)])[0]
    doc = {"jpegs": [base64.b64encode(j).decode() for j in jpegs], "features": FEATURES}
    out = subprocess.run(
        [sys.executable, "-c", _ENCODE], input=json.dumps(doc), capture_output=True, text=True, check=True
    )
    grown = np.array(json.loads(out.stdout), dtype=np.float32)
    assert "a_new_event" not in clips.EVENTS
    np.testing.assert_array_equal(here, grown)
    assert float(np.linalg.norm(here)) == pytest.approx(1.0, abs=1e-5)


def test_layout_1_reads_todays_vocabularies() -> None:
    """Layout 1 froze the vocabularies of its day: they are a prefix of today's."""
    from mining.encoders.builtin import _LAYOUTS

    first = _LAYOUTS[1]
    assert clips.FEATURES[: len(first.scales)] == tuple(name for name, _ in first.scales)
    assert clips.EVENTS[: len(first.events)] == first.events


def test_unknown_layout_lists_the_valid_ones() -> None:
    spec = ModelSpec(name="b", version=1, kind="builtin", uri=None, dim=256, params={"layout": 9})
    with pytest.raises(ConfigError, match=r"layouts: \[1\]"):
        make_encoder(spec)
