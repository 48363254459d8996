from __future__ import annotations

import json
import shutil
from pathlib import Path

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
