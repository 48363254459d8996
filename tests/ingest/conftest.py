from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "can" / "rav4_drive_seg40_part1.log").exists():
        pytest.skip(
            f"recorded data not found at {SHARED_DATA} (it lives in ../shared/data beside the checkout)"
        )
    return SHARED_DATA


def make_drive(
    raw: Path, vehicle: str, drive: str, files: dict[str, Path | bytes], doc: dict[str, object] | None = None
) -> Path:
    """A drive folder of the raw layout: ``files`` maps 'cameras/front.mp4' to a source file or bytes."""
    d = raw / vehicle / drive
    d.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        target = d / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            target.write_bytes(src)
        else:
            shutil.copy(src, target)
    if doc is not None:
        (d / "drive.json").write_text(json.dumps(doc))
    return d


DASHCAM = ("dashcam", "2016-08-28--21-16-08")
RAV4 = ("rav4", "2018-08-02--08-34-47--40")


@pytest.fixture
def real_raw(tmp_path: Path, shared_data: Path) -> Path:
    """The dashcam video as a camera of one drive; the RAV4 log as another."""
    raw = tmp_path / "raw"
    make_drive(
        raw,
        *DASHCAM,
        {"cameras/front.mp4": shared_data / "video" / "solidWhiteRight.mp4"},
        {"start_time": "2016-08-28T21:16:08Z"},
    )
    make_drive(
        raw,
        *RAV4,
        {"can/pt.log": shared_data / "can" / "rav4_drive_seg40_part1.log"},
        {"platform": "toyota_rav4_2017"},
    )
    return raw


def assert_matches_rav4_truth(sig: pa.Table, shared_data: Path) -> None:
    """The RAV4 drive's signals against comma.ai's processed log (interpolated at our grid
    times): speed within 1e-3 m/s, steering angle within 0.05 deg, over > 550 grid steps."""
    t = sig.column("t").cast(pa.int64()).to_numpy() / 1e6
    with open(shared_data / "can" / "rav4_drive_seg40_part1_truth.csv") as f:
        truth = [
            (float(r["timestamp"]), float(r["speed_mps"]), float(r["steering_angle_deg"]))
            for r in csv.DictReader(f)
        ]
    tt, speed, steer = (np.array(c) for c in zip(*truth, strict=True))
    inside = (t >= tt[0]) & (t <= tt[-1])
    assert inside.sum() > 550
    got_speed = sig.column("speed_mps").to_numpy(zero_copy_only=False)[inside]
    got_steer = sig.column("steering_angle_deg").to_numpy(zero_copy_only=False)[inside]
    assert np.max(np.abs(got_speed - np.interp(t[inside], tt, speed))) < 1e-3
    assert np.max(np.abs(got_steer - np.interp(t[inside], tt, steer))) < 0.05
