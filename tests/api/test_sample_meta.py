"""What a training job finds in each sample's ``.json``: signal columns, units and rate, every
frame's time, the camera calibration from drive.json, the model version and scores that chose it."""

from __future__ import annotations

import datetime as dt
import io
import json

import av
import numpy as np
import webdataset as wds

from jobs.export_job import export_version
from mining.datasets.curation import DatasetQuery, create_version
from mining.datasets.shards import shard_location
from storage import Lake
from storage.tables.signals import SIGNAL_COLUMNS, UNITS
from tests.api.conftest import CALIBRATION
from tests.conftest import LOCAL


def _samples(lake: Lake, name: str, q: DatasetQuery) -> tuple[dict, list[dict]]:  # type: ignore[type-arg]
    row = create_version(lake, name, q)
    doc = export_version(lake, name, row["version"], shard_bytes=2_000_000, runner=LOCAL)
    urls = [shard_location(lake, name, row["version"], s["path"]).path for s in doc["shardlist"]]
    return row, list(wds.WebDataset(urls, shardshuffle=False))


def test_each_clip_sample_says_what_a_trainer_needs(server: tuple[str, Lake, dict[str, str]]) -> None:
    _, lake, _ = server
    row, samples = _samples(lake, "meta-clips", DatasetQuery(limit=20))
    assert len(samples) == row["clip_count"] > 0
    scores = {
        r["clip_id"]: r
        for r in sorted(
            lake.read("mining_scores", where=f"model_version = '{row['model']}'").to_pylist(),
            key=lambda r: r["run_id"],
        )
    }
    drives = {r["drive_id"]: r for r in lake.read("drives").to_pylist()}
    calibrated = min(drives.values(), key=lambda d: d["drive"])["drive_id"]
    seen_calibrated = seen_plain = 0
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["signals_columns"] == list(SIGNAL_COLUMNS) and meta["signal_rate_hz"] == 20.0
        assert meta["signals_units"] == {c: UNITS[c] for c in SIGNAL_COLUMNS}
        assert np.load(io.BytesIO(s["signals.npy"])).shape[1] == len(meta["signals_columns"])
        with av.open(io.BytesIO(s["mp4"])) as c:
            v = c.streams.video[0]
            decoded = sorted(float(f.pts * v.time_base) for f in c.decode(v))
        times = meta["frame_times_s"]
        assert len(times) == len(decoded) and np.allclose(times, np.asarray(decoded) - decoded[0], atol=1e-6)
        span = dt.datetime.fromisoformat(meta["end_time"]) - dt.datetime.fromisoformat(meta["start_time"])
        assert 0 == times[0] < times[-1] < span.total_seconds()
        assert meta["model"] == row["model"]
        assert meta["selection"]["novelty"] == scores[meta["clip_id"]]["novelty"] is not None
        assert meta["selection"]["run_id"] == scores[meta["clip_id"]]["run_id"]
        if meta["drive_id"] == calibrated:
            assert meta["calibration"] == CALIBRATION
            seen_calibrated += 1
        else:
            assert "calibration" not in meta
            seen_plain += 1
    assert seen_calibrated and seen_plain


def test_a_group_sample_gives_each_camera_its_own_times_and_calibration(
    server: tuple[str, Lake, dict[str, str]],
) -> None:
    _, lake, _ = server
    _, samples = _samples(lake, "meta-groups", DatasetQuery(limit=4, samples="group"))
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["signals_units"]["accel_mps2"].startswith("m/s^2") and "selection" in meta
        for cam in meta["cameras"]:
            with av.open(io.BytesIO(s[f"{cam['camera']}.mp4"])) as c:
                assert len(cam["frame_times_s"]) == sum(1 for _ in c.decode(video=0))
