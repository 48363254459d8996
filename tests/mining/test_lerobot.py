"""LeRobotDataset v3.0 export of a synth fleet, read back as LeRobot reads it: each frame's
state and action are the signals table interpolated at the frame's own pts, and each
episode's stretch of its video decodes to exactly its rows."""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ingest.synth.fleet import SynthConfig
from jobs.ingest_job import run_ingest
from jobs.requests import execute, parse_job
from mining.datasets.curation import DatasetQuery, create_version
from mining.datasets.lerobot import ACTION, STATE, lerobot_location
from mining.datasets.media import join_videos
from storage import ConfigError, Lake, Settings
from tests.conftest import LOCAL, synthesized


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, Settings, Path, dict]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("lerobot")
    synthesized(
        root / "raw", SynthConfig(vehicles=1, drives=2, minutes=1, seed=11, width=320, height=180, workers=2)
    )
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    row = create_version(lake, "policy", DatasetQuery(val_fraction=0.4))
    report = execute(
        parse_job("export", {"name": "policy", "version": row["version"], "format": "lerobot"}), settings
    )
    return lake, settings, Path(report["root"]), report


def _signals(lake: Lake, drive_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    t = lake.read("signals", where=f"drive_id = '{drive_id}'").sort_by("t")
    return t.column("t").cast("int64").to_numpy().astype(float), {
        c: t.column(c).cast("float64").to_numpy() for c in STATE
    }


def test_a_synth_fleet_reads_back_frame_by_frame(exported: tuple[Lake, Settings, Path, dict]) -> None:  # type: ignore[type-arg]
    lake, _, root, report = exported
    assert root == Path(lerobot_location(lake, "policy", 1).path)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    key = "observation.images.front"
    assert info["features"][key]["dtype"] == "video" and info["features"][key]["shape"] == [180, 320, 3]
    assert info["features"]["observation.state"]["names"] == list(STATE)
    assert info["features"]["action"]["names"] == list(ACTION)
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    clips = lake.read("dataset_clips", where="name = 'policy'").num_rows
    assert info["total_episodes"] == len(episodes) == clips == report["episodes"]
    assert info["total_frames"] == sum(e["length"] for e in episodes)
    n_train = sum(1 for e in episodes if e["fleetmine/split"] == "train")
    assert 0 < n_train < len(episodes) and info["splits"] == {
        "train": f"0:{n_train}",
        "val": f"{n_train}:{len(episodes)}",
    }
    tasks = pd.read_parquet(root / "meta/tasks.parquet")  # as lerobot.datasets.io_utils.load_tasks does
    assert tasks.index.name == "task" and sorted(tasks["task_index"]) == list(range(info["total_tasks"]))
    stats = json.loads((root / "meta/stats.json").read_text())
    for feat in ("observation.state", "action", key, "timestamp", "index"):
        assert {"min", "max", "mean", "std", "count"} <= set(stats[feat]), feat
    assert np.asarray(stats[key]["mean"]).shape == (3, 1, 1)
    assert report["videos"][key]["remux"] == len(episodes) and report["videos"][key]["reencode"] == 0

    err_state = err_action = err_ts = 0.0
    data: dict[str, list] = {}  # type: ignore[type-arg]
    decoded: dict[str, list[float]] = {}
    for ep in episodes:
        dpath = root / info["data_path"].format(
            chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]
        )
        if str(dpath) not in data:
            data[str(dpath)] = pq.read_table(dpath).to_pylist()
        rows = data[str(dpath)][ep["dataset_from_index"] : ep["dataset_to_index"]]
        rows = [r for r in rows if r["episode_index"] == ep["episode_index"]]
        assert len(rows) == ep["length"] and [r["frame_index"] for r in rows] == list(range(ep["length"]))
        assert [r["index"] for r in rows] == list(range(ep["dataset_from_index"], ep["dataset_to_index"]))
        vpath = root / info["video_path"].format(
            video_key=key,
            chunk_index=ep[f"videos/{key}/chunk_index"],
            file_index=ep[f"videos/{key}/file_index"],
        )
        if str(vpath) not in decoded:
            with av.open(str(vpath)) as c:
                v = c.streams.video[0]
                decoded[str(vpath)] = sorted(float(f.pts * v.time_base) for f in c.decode(v))
        lo, hi = ep[f"videos/{key}/from_timestamp"], ep[f"videos/{key}/to_timestamp"]
        shown = [t - lo for t in decoded[str(vpath)] if lo - 1e-4 <= t < hi - 1e-4]
        assert len(shown) == ep["length"]  # the episode's stretch decodes to exactly its rows
        ts = np.array([r["timestamp"] for r in rows], dtype=np.float64)
        err_ts = max(err_ts, float(np.abs(ts - np.asarray(shown)).max()))  # lerobot's tolerance is 1e-4 s
        t, sig = _signals(lake, ep["fleetmine/drive_id"])
        at = ep["fleetmine/start_time_us"] + np.asarray(shown) * 1e6  # each frame's own pts, in UTC
        step = np.append(np.diff(at), np.median(np.diff(at)))
        want_state = np.stack([np.interp(at, t, sig[c]) for c in STATE], 1)
        want_action = np.stack([np.interp(at + step, t, sig[c]) for c in ACTION], 1)
        got_state = np.array([r["observation.state"] for r in rows], dtype=np.float64)
        got_action = np.array([r["action"] for r in rows], dtype=np.float64)
        inside = (at >= t[0]) & (at + step <= t[-1])
        assert inside.mean() > 0.9
        err_state = max(err_state, float(np.abs(got_state - want_state)[inside].max()))
        err_action = max(err_action, float(np.abs(got_action - want_action)[inside].max()))
    print(
        f"lerobot read-back: {len(episodes)} episodes, {info['total_frames']} frames; "
        f"max |state - signals@pts| {err_state:.2e}, max |action - signals@next pts| {err_action:.2e}, "
        f"max |timestamp - pts| {err_ts:.2e} s"
    )
    assert err_ts < 1e-4 and err_state < 1e-4 and err_action < 1e-4  # float32 rounding, nothing more


def test_episodes_whose_videos_cannot_be_remuxed_are_reencoded_frame_for_frame() -> None:
    def clip(w: int, h: int, n: int, fps: int) -> bytes:
        buf = io.BytesIO()
        with av.open(buf, mode="w", format="mp4") as out:
            s = out.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), i * 7 % 255, np.uint8), format="rgb24")
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                for pkt in s.encode(frame):
                    out.mux(pkt)
            for pkt in s.encode():
                out.mux(pkt)
        return buf.getvalue()

    same = join_videos([clip(64, 48, 10, 20), clip(64, 48, 7, 20)], 20)
    assert same.mode == "remux" and same.frames == [10, 7]
    mixed = join_videos([clip(64, 48, 10, 20), clip(32, 24, 7, 20)], 20)
    assert mixed.mode == "reencode" and mixed.frames == [10, 7]
    for joined in (same, mixed):
        with av.open(io.BytesIO(joined.data)) as c:
            v = c.streams.video[0]
            pts = sorted(float(f.pts * v.time_base) for f in c.decode(v))
        assert (
            len(pts) == 17
            and joined.starts_s[1] == pytest.approx(0.5)
            and joined.ends_s[1] == pytest.approx(0.85)
        )
        assert sum(1 for t in pts if joined.starts_s[1] - 1e-4 <= t < joined.ends_s[1] - 1e-4) == 7


def test_export_options_are_checked(exported: tuple[Lake, Settings, Path, dict], tmp_path: Path) -> None:  # type: ignore[type-arg]
    _, settings, _, _ = exported
    with pytest.raises(ConfigError, match="only --format lerobot"):
        execute(parse_job("export", {"name": "policy", "version": 1, "out": str(tmp_path)}), settings)
    with pytest.raises(ConfigError, match="format"):
        parse_job("export", {"name": "policy", "version": 1, "format": "rlds"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a LeRobot dataset"):
        execute(
            parse_job(
                "export", {"name": "policy", "version": 1, "format": "lerobot", "out": str(tmp_path / "mine")}
            ),
            settings,
        )
    again = execute(
        parse_job(
            "export", {"name": "policy", "version": 1, "format": "lerobot", "out": str(tmp_path / "lr")}
        ),
        settings,
    )
    assert again["frames"] > 0 and (tmp_path / "lr" / "meta" / "info.json").exists()
