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
    assert learned.measured < builtin.measured and learned.measured < learned.baseline
    # The builtin decodes the same keyframes and adds a little arithmetic: about decode's rate.
    # Not "below it": timed a few seconds apart on a loaded machine, it came out 1.17x above
    # (CI, 227 vs 194 clips/s); a builtin far above decode would mean it skipped decoding.
    assert builtin.measured < 1.5 * builtin.baseline


def test_a_text_image_folder_given_is_measured_and_none_given_says_not_measured(tmp_path: Path) -> None:
    import math

    from tests.text_image.tiny_model import DIM, build_folder

    (none,) = run_all(BenchContext(quick=True, workdir=tmp_path / "a"), only=["text-image"])
    assert "not measured" in none.name and math.isnan(none.measured) and none.met is None
    folder = str(build_folder(tmp_path / "tiny-export"))
    ctx = BenchContext(quick=True, workdir=tmp_path / "b", text_image=(folder,))
    (row,) = run_all(ctx, only=["text-image"])
    assert row.name.startswith(f"text-image tiny-export ({DIM}-d, 32 x 32 px), 4 keyframes per clip, 1 core")
    ms = float(re.search(r"\(([\d.]+) ms/keyframe; a text query ([\d.]+) ms\)", row.name).group(1))  # type: ignore[union-attr]
    assert abs(ms - 1000 / (4 * row.measured)) < 0.1 and row.baseline > 0 and row.unit == "clips/s"
