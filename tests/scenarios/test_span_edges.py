"""Span datasets at their edges: a drive whose second camera covers only part of it (its
stream with B-frames, a first pts that is not zero and a skipped frame every 2.5 s), a
drive with one clip deleted (a hole in its video), spans at a drive's very start and end;
the same bytes on every export whatever the CPUs; the clip page's spans of the latest
version run; a scenario never run; and 50,000 spans on one long drive."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pytest
import webdataset as wds

from ingest.synth.fleet import SynthConfig
from jobs.export_job import export_version
from jobs.ingest_job import run_ingest
from jobs.scenario_job import run_scenarios
from mining.datasets.curation import DatasetQuery, create_version
from mining.datasets.media import frame_times
from mining.datasets.shards import shard_location
from mining.datasets.spans import span_id
from mining.scenarios import add_scenario, clip_spans, shipped
from storage import Lake, Settings
from storage.errors import ConfigError
from storage.tables import clips as clips_table
from storage.tables import scenario_hits, scenario_scans
from tests.conftest import LOCAL, synthesized

REAR_FROM_S = -5.0  # the rear camera starts 5 s before the front one ...
REAR_FRAMES = 500  # ... and records 25.5 s (a slot skipped every 50 frames)


def _rear_camera(drive: Path) -> None:
    """A second camera: the front one's first frames at a quarter of the size, encoded with
    B-frames, its first pts 7 frames in and a frame slot skipped every 50 frames."""
    src, dst = drive / "cameras" / "front.mp4", drive / "cameras" / "rear.mp4"
    with av.open(str(src)) as i, av.open(str(dst), "w", format="mp4") as o:
        s = o.add_stream(
            "libx264", rate=20, options={"bf": "2", "g": "40", "preset": "ultrafast", "threads": "1"}
        )
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        s.codec_context.time_base = Fraction(1, 20)
        for k, f in enumerate(i.decode(video=0)):
            if k >= REAR_FRAMES:
                break
            g = f.reformat(width=320, height=180, format="yuv420p")
            g.pts, g.time_base = 7 + k + k // 50, Fraction(1, 20)
            for p in s.encode(g):
                o.mux(p)
        for p in s.encode():
            o.mux(p)
    doc = json.loads((drive / "drive.json").read_text())
    doc["cameras"]["rear"] = {"fps": 20, "width": 320, "height": 180, "offset_s": REAR_FROM_S}
    (drive / "drive.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("span_edges")
    synthesized(root / "raw", SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2))
    two_cameras = sorted((root / "raw").glob("*/*/drive.json"))[0].parent
    _rear_camera(two_cameras)
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    clips = lake.read("clips", columns=["clip_id", "drive_id", "camera", "start_time"]).to_pylist()
    rear_drive = next(c["drive_id"] for c in clips if c["camera"] == "rear")
    starts = {
        d: min(c["start_time"] for c in clips if c["drive_id"] == d) for d in {c["drive_id"] for c in clips}
    }
    # the other one-minute drive loses its clip from 20 s to 30 s: a hole in its video
    holed = max((d for d in starts if d != rear_drive), key=lambda d: sum(c["drive_id"] == d for c in clips))
    (gone,) = [
        c["clip_id"]
        for c in clips
        if c["drive_id"] == holed and c["start_time"] == starts[holed] + dt.timedelta(seconds=20)
    ]
    lake.delete("clips", f"clip_id = '{gone}'")
    for name, text in shipped().items():
        add_scenario(lake, name, text)
    add_scenario(lake, "slow", "speed_mps < 3 for >= 2s")
    add_scenario(lake, "moving", "speed_mps >= 3 for >= 1s")  # from a drive's first sample to its last
    add_scenario(lake, "fast", "speed_mps > 20.5 for >= 1s")
    add_scenario(lake, "halt", "speed_mps < 3 for >= 2s")
    assert not run_scenarios(settings, runner=LOCAL).failed
    add_scenario(lake, "halt", "speed_mps < 3 for >= 30s")  # halt@2: no span anywhere
    assert not run_scenarios(settings, runner=LOCAL).failed
    add_scenario(lake, "never", "speed_mps > 100")  # added, never run
    yield {"lake": lake, "rear_drive": rear_drive, "holed": holed, "gone": gone, "starts": starts}


def _export(lake: Lake, name: str, version: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = export_version(lake, name, version, shard_bytes=3_000_000, runner=LOCAL)
    urls = [shard_location(lake, name, version, s["path"]).path for s in doc["shardlist"]]
    return doc, list(wds.WebDataset(urls, shardshuffle=False))


def _source_times(lake: Lake, drive_id: str, camera: str, lo: dt.datetime, hi: dt.datetime) -> list[float]:
    """Every frame the camera's clips show in ``[lo, hi)``, seconds from ``lo``: read from
    the clips' own mp4s."""
    rows = lake.read("clips", where=f"drive_id = '{drive_id}' AND camera = '{camera}'").to_pylist()
    out = []
    for c in rows:
        loc = lake.locate(c["video_uri"])
        assert loc is not None
        mp4 = loc.fs.cat_file(loc.path)
        offset = (c["start_time"] - lo).total_seconds()
        out += [offset + t for t in frame_times(mp4)]
    length = (hi - lo).total_seconds()
    return sorted(t for t in out if -1e-6 <= t < length - 1e-6)


def test_each_camera_of_a_span_sample_covers_its_window_and_the_others_are_named(
    edges: dict[str, Any],
) -> None:
    lake: Lake = edges["lake"]
    row = create_version(lake, "edges", DatasetQuery(scenarios=["moving", "slow", "fast"], samples="span"))
    _, samples = _export(lake, "edges", row["version"])
    hits = lake.read("scenario_hits", where="name IN ('moving', 'slow', 'fast')").to_pylist()
    assert len(samples) == len(hits) > 0
    cameras = {}
    for c in lake.read("clips", columns=["drive_id", "camera"]).to_pylist():
        cameras.setdefault(c["drive_id"], set()).add(c["camera"])
    both = 0
    for s in samples:
        meta = json.loads(s["json"])
        lo, hi = dt.datetime.fromisoformat(meta["start_time"]), dt.datetime.fromisoformat(meta["end_time"])
        length = (hi - lo).total_seconds()
        kept = {c["camera"] for c in meta["cameras"]}
        for cam in meta["cameras"]:
            times = cam["frame_times_s"]
            # every frame of the window, only those, each at its own time: the source's
            want = _source_times(lake, meta["drive_id"], cam["camera"], lo, hi)
            assert len(times) == len(want) and np.allclose(times, want, atol=1e-4), (cam["camera"], meta)
            assert times[0] < 1 / 20 + 1e-6 and length - times[-1] <= 2 / 20 + 1e-6, (times[:1], times[-1:])
            played = frame_times(s[f"{cam['camera']}.mp4"])
            assert len(played) == len(times) and np.allclose(np.diff(played), np.diff(times), atol=2e-3)
        left = {c["camera"] for c in meta["cameras_left_out"]}
        # every camera of the drive is in the sample or named as left out, never both
        assert kept | left == cameras[meta["drive_id"]] and not kept & left, (kept, left)
        assert {k.split(".")[0] for k in s if k.endswith(".mp4")} == kept
        both += kept == {"front", "rear"}
        sig = np.load(io.BytesIO(s["signals.npy"]))
        assert sig[0, 0] >= lo.timestamp() * 1e6 and sig[-1, 0] < hi.timestamp() * 1e6
        at_start = meta["scenario"] == "moving@1" and meta["drive_id"] == edges["rear_drive"]
        if at_start and dt.datetime.fromisoformat(meta["span_start"]) < lo + dt.timedelta(seconds=1):
            # the drive's first span: its window starts at the front camera's first frame (the
            # rear one started 5 s earlier, but does not record the span), and the rear one,
            # which covers the window's first 20 s only, is named, not handed over in part
            assert lo == edges["starts"][edges["rear_drive"]] - dt.timedelta(seconds=REAR_FROM_S)
            assert kept == {"front"} and left == {"rear"}, meta["cameras_left_out"]
            (rear,) = meta["cameras_left_out"]
            assert rear["covered_s"] == [[0.0, 20.0]], rear
        if (
            meta["drive_id"] == edges["holed"]
            and meta["scenario"] == "moving@1"
            and lo == edges["starts"][edges["holed"]]
        ):
            # the span runs across the deleted clip: no camera has the whole window
            assert kept == set() and meta["cameras_left_out"][0]["covered_s"] == [[0.0, 20.0], [30.0, length]]
    assert both > 0  # the fast span lies where both cameras record


def test_a_re_export_gives_the_same_bytes_whatever_the_cpus(edges: dict[str, Any]) -> None:
    """libx264 picks its thread count from the CPUs it may use, and its output depends on
    it: a shard re-exported on another machine (a Ray worker of another size) was other bytes."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs to export on one and on all")
    lake: Lake = edges["lake"]
    row = create_version(lake, "twice", DatasetQuery(scenarios=["fast", "slow"], samples="span"))
    first, _ = _export(lake, "twice", row["version"])
    try:
        os.sched_setaffinity(0, cpus[:1])
        again, _ = _export(lake, "twice", row["version"])
    finally:
        os.sched_setaffinity(0, cpus)
    assert [s["sha256"] for s in again["shardlist"]] == [s["sha256"] for s in first["shardlist"]]


def test_the_clip_page_shows_the_latest_version_run_over_the_drive(edges: dict[str, Any]) -> None:
    """halt@2 was run over every drive and found nothing: a clip halt@1 had a span in shows
    no halt (it showed halt@1's, as if that were the current definition's)."""
    lake: Lake = edges["lake"]
    old = lake.read("scenario_hits", where="name = 'halt' AND version = 1").to_pylist()
    assert old and not lake.read("scenario_hits", where="name = 'halt' AND version = 2").num_rows
    clip = lake.read("clips", where=f"clip_id = '{sorted(old[0]['clip_ids'])[0]}'").to_pylist()[0]
    assert [s for s in clip_spans(lake, clip) if s["name"] == "halt"] == []
    assert {(s["name"], s["version"]) for s in clip_spans(lake, clip, latest_only=False)} >= {("halt", 1)}
    assert {s["name"] for s in clip_spans(lake, clip)} >= {"slow"}


def test_a_dataset_of_a_scenario_never_run_is_refused(edges: dict[str, Any]) -> None:
    """Not an empty version that reads as 'no such moment in the fleet'."""
    lake: Lake = edges["lake"]
    for samples in ("clip", "span"):
        with pytest.raises(ConfigError, match=r"never@1 has not been run.*fleetmine scenario run never@1"):
            create_version(lake, "unrun", DatasetQuery(scenarios=["slow", "never"], samples=samples))  # type: ignore[arg-type]
    assert create_version(lake, "halted", DatasetQuery(scenarios=["halt"], samples="span"))["clip_count"] == 0


def test_max_window_s_counts_the_spans_the_version_holds(edges: dict[str, Any]) -> None:
    """``limit`` picks spans in span-id order; a long span it leaves out does not fail the create."""
    lake: Lake = edges["lake"]
    hits = lake.read("scenario_hits", where="name IN ('slow', 'fast')").to_pylist()
    order = sorted(hits, key=lambda h: span_id(h["drive_id"], h["name"], h["version"], h["start"]))
    # a window is its span and 3 s of margin: one of a span over 7.5 s is too long
    short = next(i for i, h in enumerate(order) if (h["end"] - h["start"]).total_seconds() > 7.5)
    assert short > 0, "the first span by id is a long one: pick other scenarios"
    q = DatasetQuery(scenarios=["slow", "fast"], samples="span", max_window_s=10.5)
    with pytest.raises(ConfigError, match=r"longer than max_window_s=10\.5 s"):
        create_version(lake, "capped", q)
    row = create_version(lake, "capped", q.model_copy(update={"limit": short}))
    spans = lake.read("dataset_spans", where=f"name = 'capped' AND version = {row['version']}").to_pylist()
    assert sorted(s["span_id"] for s in spans) == sorted(
        span_id(h["drive_id"], h["name"], h["version"], h["start"]) for h in order[:short]
    )


def test_fifty_thousand_spans_on_a_long_drive(tmp_path: Path) -> None:
    """Two hours of four cameras (2,880 clips) and 50,000 spans: each span's window looked
    at every clip of its drive (spans x clips: 29 s here, and twice that for a drive twice
    as long); the windows now come from each camera's clips sorted once."""
    lake = Lake.from_settings(Settings(lake=str(tmp_path / "lake")))
    lake.create_tables()
    t0 = dt.datetime(2024, 6, 1, 8, tzinfo=dt.UTC)
    drive, hours, n = "20240601-dense", 2, 50_000
    cams = ("front", "left", "rear", "right")
    windows = 360 * hours
    rows = [
        {
            "clip_id": f"20240601-{cam}{k:04d}",
            "date": t0.date(),
            "drive_id": drive,
            "camera": cam,
            "start_time": t0 + dt.timedelta(seconds=10 * k),
            "end_time": t0 + dt.timedelta(seconds=10 * k + 10),
            "fps": 20.0,
            "events": [],
        }
        for cam in cams
        for k in range(windows)
    ]
    lake.append("clips", pa.Table.from_pylist(rows, schema=clips_table.SPEC.schema))
    add_scenario(lake, "dense", "speed_mps > 1")
    hits = []
    for i in range(n):
        at = i * 3600 * hours / n
        ks = sorted({int(at // 10), min(int((at + 1) // 10), windows - 1)})
        hits.append(
            {
                "name": "dense",
                "version": 1,
                "drive_id": drive,
                "start": t0 + dt.timedelta(seconds=at),
                "end": t0 + dt.timedelta(seconds=at + 1),
                "clip_ids": [f"20240601-{c}{k:04d}" for c in cams for k in ks],
            }
        )
    lake.append("scenario_hits", pa.Table.from_pylist(hits, schema=scenario_hits.SPEC.schema))
    scan = {"name": "dense", "version": 1, "drive_id": drive, "hits": n}
    lake.append("scenario_scans", pa.Table.from_pylist([scan], schema=scenario_scans.SPEC.schema))
    began = time.monotonic()
    row = create_version(lake, "dense", DatasetQuery(scenarios=["dense"], samples="span"))
    took = time.monotonic() - began
    assert row["clip_count"] == len(rows)
    spans = lake.read("dataset_spans", columns=["window_start", "window_end", "clip_ids"]).to_pylist()
    assert len(spans) == n
    first = min(spans, key=lambda s: (s["window_start"], s["window_end"]))
    assert first["window_start"] == t0 and first["window_end"] == t0 + dt.timedelta(seconds=2)
    assert sorted(first["clip_ids"]) == [f"20240601-{c}0000" for c in cams]
    last = max(spans, key=lambda s: s["window_start"])
    assert last["window_end"] == t0 + dt.timedelta(hours=hours)  # kept within the drive's clips
    assert took < 15, f"{took:.1f} s"
