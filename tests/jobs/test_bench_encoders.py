"""``fleetmine bench`` reports each encoder's clips/s on one core next to JPEG decode."""

from __future__ import annotations

import re
from pathlib import Path

from fleetmine.bench import BenchContext, run_all
from fleetmine.bench.sizing import PATTERNS


def test_the_learned_encoder_is_reported_per_core_next_to_jpeg_decode(tmp_path: Path) -> None:
    rows = {r.name: r for r in run_all(BenchContext(quick=True, workdir=tmp_path), only=["encoders"])}
    (builtin,) = [r for n, r in rows.items() if re.search(PATTERNS["builtin"], n)]
    (learned,) = [r for n, r in rows.items() if n.startswith("efficientnet-lite0 encoder")]
    assert "2592-d clip vectors" in learned.name and "1 core" in learned.name
    ms = float(re.search(r"\(([\d.]+) ms/keyframe\)", learned.name).group(1))  # type: ignore[union-attr]
    assert abs(ms - 1000 / (4 * learned.measured)) < 0.1
    for r in (builtin, learned):
        assert r.unit == "clips/s" and r.baseline_name == "JPEG decode alone" and r.measured > 0
    assert learned.baseline == builtin.baseline  # the same keyframes decoded once
    # A CNN over each keyframe costs more than decoding it, and more than the builtin's arithmetic.
    assert learned.measured < builtin.measured < builtin.baseline
