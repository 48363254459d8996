"""The LeRobot export through ``POST /v1/jobs``, on a drive whose recorder is not tidy: two
cameras, B-frames, and a variable frame rate on the camera that gives the frame clock."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import httpx
import numpy as np
import pyarrow.parquet as pq

from api.auth import create_token
from jobs.ingest_job import run_ingest
from mining.datasets.curation import DatasetQuery, create_version
from storage import Lake, Settings
from tests.api.conftest import serve
from tests.conftest import LOCAL
from tests.ingest.conftest import make_drive
from tests.ingest.videos import Spec, encode


def _decoded(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return sorted(float(f.pts * v.time_base) for f in c.decode(v))


def test_a_group_dataset_exports_through_the_jobs_api(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_drive(
        raw,
        "car",
        "2024-06-14--17-00-00",
        {
            "cameras/front.mp4": encode(Spec(seconds=12, vfr=True, bframes=3)),
            "cameras/left.mp4": encode(Spec(seconds=12, bframes=0)),
        },
        {"start_time": "2024-06-14T17:00:00Z"},
    )
    settings = Settings(lake=str(tmp_path / "lake"))
    assert run_ingest(str(raw), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    row = create_version(lake, "windows", DatasetQuery(samples="group", val_fraction=0))
    op = {"Authorization": f"Bearer {create_token(lake, 'op', 'operator')}"}
    params = {"name": "windows", "version": row["version"], "format": "lerobot"}
    with serve(settings) as base:
        r = httpx.post(f"{base}/v1/jobs", json={"kind": "export", "params": params}, headers=op)
        assert r.status_code == 202, r.text
        for _ in range(900):
            state = httpx.get(f"{base}/v1/jobs/{r.json()['id']}", headers=op).json()
            if state["status"] not in ("submitted", "running"):
                break
            time.sleep(0.2)
    assert state["status"] == "succeeded", state
    root = Path(state["result"]["root"])
    info = json.loads((root / "meta/info.json").read_text())
    keys = ["observation.images.front", "observation.images.left"]
    assert [k for k, f in info["features"].items() if f["dtype"] == "video"] == keys
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    data = pq.read_table(root / "data/chunk-000/file-000.parquet").to_pylist()
    assert len(episodes) == info["total_episodes"] >= 2 and len(data) == info["total_frames"]
    clips = {c["clip_id"]: c for c in lake.read("clips").to_pylist()}
    uneven = False
    for ep in episodes:
        rows = data[ep["dataset_from_index"] : ep["dataset_to_index"]]
        for key in keys:
            lo, hi = ep[f"videos/{key}/from_timestamp"], ep[f"videos/{key}/to_timestamp"]
            path = root / info["video_path"].format(video_key=key, chunk_index=0, file_index=0)
            shown = np.array([t - lo for t in _decoded(path) if lo - 1e-4 <= t < hi - 1e-4])
            if key.endswith("front"):  # the frame clock: one row per frame, at the frame's own pts
                ts = np.array([r["timestamp"] for r in rows])
                assert len(shown) == ep["length"] and np.abs(ts - shown).max() < 1e-4
                uneven = uneven or np.ptp(np.diff(ts)) > 1e-3  # variable frame rate kept, not evened out
            else:  # another camera: all of its own frames, none lost or borrowed
                cam = next(c for c in ep["fleetmine/clip_ids"] if clips[c]["camera"] == "left")
                assert len(shown) == round(clips[cam]["fps"] * clips[cam]["duration_s"])
    assert uneven
