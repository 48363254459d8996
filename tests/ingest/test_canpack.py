"""The synthetic fleet's column packer gives cantools' bytes, and refuses what cantools refuses."""

from __future__ import annotations

import numpy as np
import pytest
from cantools.database.can import Message

from ingest.platform import load_platform
from ingest.synth.canpack import encode_columns


def _columns(message: Message, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cols = {}
    for s in message.signals:
        if s.is_multiplexer:
            cols[s.name] = rng.integers(1, 3, n)
            continue
        step = s.conversion.scale
        v = rng.uniform(s.minimum, s.maximum, n)
        # the edges, zero, and values half a step off the grid (round half to even)
        v[:6] = [s.minimum, s.maximum, 0.0, s.minimum + step / 2, s.maximum - step / 2, step / 2]
        cols[s.name] = v
    return cols


@pytest.mark.parametrize("name", [m.name for m in load_platform("fleetmine_synth").database.messages])
def test_every_row_packs_as_cantools_encodes_it(name: str) -> None:
    message = load_platform("fleetmine_synth").database.get_message_by_name(name)
    cols = _columns(message, np.random.default_rng(len(name)), 2000)
    packed = encode_columns(message, cols)
    rows = [{k: v[i].item() for k, v in cols.items()} for i in range(2000)]
    assert packed == [message.encode(r, strict=False) for r in rows]


def test_a_raw_value_that_does_not_fit_raises_as_cantools_does() -> None:
    message = load_platform("fleetmine_synth").database.get_message_by_name("BRAKE")
    cols = {"BRAKE_PRESSED": np.array([0, 2]), "BRAKE_PRESSURE": np.array([1.0, 1.0])}
    with pytest.raises(OverflowError, match="BRAKE_PRESSED"):
        encode_columns(message, cols)
    with pytest.raises(OverflowError):
        message.encode({"BRAKE_PRESSED": 2, "BRAKE_PRESSURE": 1.0}, strict=False)
