"""HEVC clips (openpilot's road camera records raw HEVC) play in a browser through their
H.264 preview, while the API's video, exports and shards keep the original."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest

from api.auth import create_token
from jobs.embed_job import run_embed
from jobs.export_job import export_version
from jobs.ingest_job import run_ingest
from jobs.previews_job import run_previews
from mining.datasets.curation import DatasetQuery, create_version
from storage import Lake, Settings
from tests.api.cdp import CHROMIUM, Browser
from tests.api.conftest import auth, serve
from tests.conftest import LOCAL
from tests.ingest.conftest import make_drive
from tests.ingest.videos import Spec, encode, read_index

FPS = 20
START = "2024-06-14T17:00:00Z"


def _hevc() -> bytes:
    """A raw HEVC stream as comma devices write fcamera.hevc: 20 fps, B-frames off, 1 s GOP."""
    return encode(
        Spec(
            codec="libx265", container="hevc", fps=FPS, gop=FPS, bframes=0, seconds=12, width=640, height=512
        )
    )


def _frames(mp4: bytes) -> tuple[str, int, int, list[tuple[float, int]]]:
    with av.open(io.BytesIO(mp4)) as c:
        s = c.streams.video[0]
        shown = [
            (round(float(f.pts * s.time_base), 4), read_index(f.to_ndarray(format="rgb24")))
            for f in c.decode(s)
            if f.pts is not None and f.pts >= 0
        ]
        return s.codec_context.name, s.codec_context.width, s.codec_context.height, shown


@pytest.fixture(scope="module")
def hevc_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Lake, dict[str, str]]]:
    root = tmp_path_factory.mktemp("hevc")
    make_drive(
        root / "raw",
        "comma",
        "2024-06-14--17-00-00--0",
        {"cameras/road.hevc": _hevc()},
        {"start_time": START},
    )
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    run_embed(settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    tokens = {role: create_token(lake, f"{role}-1", role) for role in ("reader", "curator")}
    with serve(settings) as base:
        yield base, lake, tokens


def test_ingest_writes_a_preview_showing_every_frame_of_the_hevc_clip(
    hevc_lake: tuple[str, Lake, dict[str, str]],
) -> None:
    _, lake, _ = hevc_lake
    clips = lake.read("clips").sort_by("start_time").to_pylist()
    assert len(clips) == 2 and {c["codec"] for c in clips} == {"hevc"}
    fs = lake.root.fs
    for c in clips:
        assert c["preview_uri"] and c["preview_uri"] != c["video_uri"]
        codec, w, h, original = _frames(fs.cat_file(c["video_uri"]))
        assert (codec, w, h) == ("hevc", 640, 512)
        p_codec, pw, ph, preview = _frames(fs.cat_file(c["preview_uri"]))
        assert p_codec == "h264" and (pw, ph) == (600, 480)  # the short side at 480, never up
        assert preview == original  # the same frames at the same times


def test_the_clip_page_plays_the_preview_and_exports_keep_the_original(
    hevc_lake: tuple[str, Lake, dict[str, str]], tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.skip("Chromium not installed (.ci/run installs Debian's chromium)")
    base, lake, tokens = hevc_lake
    clip = lake.read("clips").sort_by("start_time").to_pylist()[0]
    original = lake.root.fs.cat_file(clip["video_uri"])
    b = Browser(tmp_path / "profile")
    try:
        b.goto(f"{base}/ui/login", "login")
        b.eval(f"document.getElementById('token').value = {json.dumps(tokens['reader'])}")
        b.click("#sign-in")
        b.loaded("grid")
        b.goto(f"{base}/ui/clips/{clip['clip_id']}", "clip")
        assert b.eval("document.getElementById('video').getAttribute('src')").endswith("/preview.mp4")
        b.wait("document.getElementById('video').readyState >= 2", 60)
        assert b.eval("document.getElementById('video').error") is None
        assert b.eval("document.getElementById('video-error').hidden")
        note = b.eval("document.querySelector('.preview-note').textContent")
        assert "H.264 preview" in note and "HEVC" in note, note
    finally:
        b.close()

    reader = auth(tokens["reader"])
    got = httpx.get(f"{base}/v1/clips/{clip['clip_id']}/video.mp4", headers=reader)
    assert got.status_code == 200 and got.content == original  # the API's video is the original
    row = create_version(lake, "hevc", DatasetQuery(val_fraction=0))
    export_version(lake, "hevc", row["version"], runner=LOCAL)
    manifest = httpx.get(f"{base}/v1/datasets/hevc/versions/{row['version']}/manifest", headers=reader)
    assert manifest.status_code == 200, manifest.text
    body = httpx.get(manifest.json()["shardlist"][0]["url"], headers=reader, follow_redirects=True)
    assert body.status_code == 200, body.text
    with tarfile.open(fileobj=io.BytesIO(body.content)) as tar:
        mp4s = {m.name.split(".")[0]: tar.extractfile(m).read() for m in tar if m.name.endswith(".mp4")}  # type: ignore[union-attr]
        meta = [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]  # type: ignore[union-attr]
    assert mp4s[clip["clip_id"]] == original  # the shard holds the HEVC original, bit for bit
    assert all("preview_uri" not in m for m in meta)


def test_previews_back_fills_a_lake_ingested_without_them(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_drive(raw, "comma", "2024-06-14--17-00-00--0", {"cameras/road.hevc": _hevc()}, {"start_time": START})
    settings = Settings(lake=str(tmp_path / "lake"), previews=False)
    assert run_ingest(str(raw), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    assert lake.read("clips", where="preview_uri IS NOT NULL").num_rows == 0
    first = run_previews(settings, runner=LOCAL)
    assert (first.made, first.already, first.failed) == (2, 0, [])
    rows = lake.read("clips").to_pylist()
    assert all(r["preview_uri"] for r in rows) and lake.read("clips").num_rows == 2
    for r in rows:
        assert (
            _frames(lake.root.fs.cat_file(r["preview_uri"]))[3]
            == _frames(lake.root.fs.cat_file(r["video_uri"]))[3]
        )
    again = run_previews(settings, runner=LOCAL)  # nothing left to do: no second write
    assert (again.made, again.already) == (0, 2)
    (run,) = lake.read("runs", where=f"run_id = '{first.run_id}'").to_pylist()
    assert run["status"] == "succeeded" and run["kind"] == "previews"
