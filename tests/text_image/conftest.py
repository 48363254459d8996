"""A lake whose drives look different in a way the tiny text-image model sees: the recorded
dashcam video tinted red, green or blue, on two vehicles, embedded by the tiny model
(:mod:`tests.text_image.tiny_model`) and indexed. Built once per run and copied per module."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from mining.encoders.registry import register
from mining.interfaces import ModelSpec
from mining.search.queries import build_index
from storage import Lake, Settings
from tests.api.conftest import browser  # noqa: F401  (headless Chromium, for the pages here too)
from tests.conftest import LOCAL, SHARED_DATA, locked, run_shared
from tests.ingest.conftest import make_drive
from tests.text_image.tiny_model import build_folder

VIDEO = SHARED_DATA / "video" / "solidWhiteRight.mp4"
TINTS = {"red": (1.0, 0.35, 0.35), "green": (0.35, 1.0, 0.35), "blue": (0.35, 0.35, 1.0)}
DRIVES = [  # vehicle, drive, tint
    ("va", "2024-03-01--08-00-00", "red"),
    ("va", "2024-03-01--09-00-00", "blue"),
    ("vb", "2024-03-02--08-00-00", "green"),
    ("vb", "2024-03-02--09-00-00", "red"),
]
MODEL = "tiny-clip"


def tinted(tint: tuple[float, float, float], seconds: float = 6.0, fps: int = 10) -> bytes:
    """The first ``seconds`` of the recorded video at ``fps``, 320 x 180, each channel scaled."""
    out_buf = io.BytesIO()
    scale = np.array(tint, np.float32)
    with av.open(str(VIDEO)) as src, av.open(out_buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast"}
        tb = Fraction(1, fps)
        step = round(float(src.streams.video[0].average_rate) / fps)
        n = 0
        for i, frame in enumerate(src.decode(video=0)):
            if i % step:
                continue
            if n >= seconds * fps:
                break
            rgb = frame.to_ndarray(format="rgb24", width=320, height=180).astype(np.float32)
            f = av.VideoFrame.from_ndarray(np.clip(rgb * scale, 0, 255).astype(np.uint8), format="rgb24")
            f.pts, f.time_base = n, tb
            out.mux(stream.encode(f))
            n += 1
        out.mux(stream.encode())
    return out_buf.getvalue()


@dataclass
class TextLake:
    root: Path
    settings: Settings
    lake: Lake
    spec: ModelSpec
    folder: Path  # the export folder it was registered from
    clips: list[dict[str, Any]]  # clip_id, drive_id, vehicle_id, tint

    def tint_of(self, clip_id: str) -> str:
        return next(c["tint"] for c in self.clips if c["clip_id"] == clip_id)


def _build(root: Path) -> None:
    raw = root / "raw"
    for vehicle, drive, tint in DRIVES:
        hour = drive.split("--")[1].replace("-", ":")
        make_drive(
            raw, vehicle, drive, {"cameras/front.mp4": tinted(TINTS[tint])},
            {"start_time": f"{drive.split('--')[0]}T{hour}Z"},
        )  # fmt: skip
    settings = Settings(lake=str(root / "lake"), clip_seconds=2.0)
    assert run_ingest(str(raw), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    folder = build_folder(root / "export")
    spec = register(lake, MODEL, "text-image", str(folder), current=True)
    run_embed(settings, model=spec.ref, runner=LOCAL)
    build_index(settings, spec.ref)
    (root / ".done").touch()


def text_lake_at(dest: Path) -> TextLake:
    """A copy of the run's one tinted lake at ``dest`` (its model files stay in the shared one)."""
    if not VIDEO.exists():
        pytest.skip(
            f"recorded data not found at {SHARED_DATA} (it lives in ../shared/data beside the checkout)"
        )
    built = run_shared("text-lake")
    with locked(built):
        if not (built / ".done").exists():
            shutil.rmtree(built, ignore_errors=True)
            built.mkdir(parents=True)
            _build(built)
    shutil.copytree(built / "lake", dest / "lake")
    settings = Settings(lake=str(dest / "lake"), clip_seconds=2.0)
    lake = Lake.from_settings(settings)
    from mining.encoders.registry import resolve

    spec = resolve(lake, MODEL)
    tint = {(v, drive.split("--")[0], int(drive.split("--")[1][:2])): t for v, drive, t in DRIVES}
    columns = ["clip_id", "drive_id", "vehicle_id", "start_time"]
    clips = [
        {**c, "tint": tint[(c["vehicle_id"], c["start_time"].date().isoformat(), c["start_time"].hour)]}
        for c in lake.read("clips", columns=columns).to_pylist()
    ]
    return TextLake(dest, settings, lake, spec, built / "export", clips)


@pytest.fixture(scope="module")
def text_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TextLake]:
    yield text_lake_at(tmp_path_factory.mktemp("text-lake"))


def keyframes(lake: Lake) -> dict[str, list[bytes]]:
    """Each clip's keyframes as embed reads them: the non-dense ``clip_frames`` rows in order."""
    rows = lake.read("clip_frames", columns=["clip_id", "frame_index", "jpeg", "dense"]).to_pylist()
    out: dict[str, list[bytes]] = {}
    for r in sorted(rows, key=lambda r: (r["clip_id"], r["frame_index"])):
        if not r["dense"]:
            out.setdefault(r["clip_id"], []).append(r["jpeg"])
    return out


def expected_scores(lake: Lake, text: str) -> list[tuple[str, float]]:
    """Every clip with its score for ``text``, computed with numpy alone (the tiny model's
    word vectors and colour projection over the clip's decoded keyframes), best first."""
    from tests.text_image.tiny_model import clip_vector, text_embeds

    q = text_embeds([text])[0]
    scores = {cid: float(clip_vector(jpegs) @ q) for cid, jpegs in keyframes(lake).items()}
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
