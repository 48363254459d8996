"""A dataset version as a LeRobotDataset v3.0 tree, for trainers of driving policies::

    meta/info.json                 codebase_version "v3.0", fps, features, chunks_size,
                                   data/video file sizes, path templates, totals, splits
    meta/stats.json                min/max/mean/std/count (+ quantiles) per feature
    meta/tasks.parquet             task (the index) -> task_index
    meta/episodes/chunk-000/file-000.parquet
                                   per episode: length, tasks, its data file and rows, per
                                   camera its video file and [from, to) timestamps
    meta/fleetmine.json            provenance: dataset, version, pinned lake, model, query
    data/chunk-XXX/file-XXX.parquet
                                   one row per video frame: timestamp (the frame's own pts,
                                   s from the episode start), frame_index, episode_index,
                                   index, task_index, observation.state, action
    videos/observation.images.<camera>/chunk-XXX/file-XXX.mp4
                                   episodes one after another (remuxed; re-encoded only where
                                   codec parameters differ or a clip does not start on a keyframe)

An episode is a clip (a ``samples="clip"`` dataset) or a clip group (``"group"``: every
camera of one window, the first camera by name giving the frame clock). Signals are
linearly interpolated at each frame's own time (pts), never placed by frame count:
``observation.state`` = speed, acceleration, steering angle, yaw rate at the frame;
``action`` = acceleration and steering angle at the next frame's time (the last frame:
one frame period after it). The layout follows LeRobot's documented v3.0 format and its
reader's source (``lerobot.datasets``: ``DatasetInfo``, ``DEFAULT_FEATURES``, episode
``videos/<key>/from_timestamp``); the ``lerobot`` package itself needs torch and is not
a dependency.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mining.datasets.media import VideoInfo, join_videos, video_info
from mining.datasets.shards import ExportPlan, plan_export, shard_samples
from storage.config import normalize_uri
from storage.errors import ConfigError
from storage.lake import Lake
from storage.objectstore import Location
from storage.sql import in_set, literal
from storage.tables.signals import UNITS

__all__ = ["ACTION", "STATE", "LeRobotConfig", "export_lerobot", "lerobot_location"]

STATE = ("speed_mps", "accel_mps2", "steering_angle_deg", "yaw_rate_dps")
ACTION = ("accel_mps2", "steering_angle_deg")
CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
_ROW_BYTES = 64  # a frame row in parquet, for cutting data files by size


@dataclass(frozen=True)
class LeRobotConfig:
    chunks_size: int = 1000
    data_files_size_in_mb: int = 100
    video_files_size_in_mb: int = 200


def lerobot_location(lake: Lake, name: str, version: int) -> Location:
    """Where ``--format lerobot`` writes by default: beside the version's shards."""
    return lake.root.join("datasets", name, str(version), "lerobot")


@dataclass
class _Episode:
    index: int
    clips: list[dict[str, Any]]  # one per camera, sorted by camera
    infos: list[VideoInfo]
    mp4s: list[bytes]
    task: str
    split: str
    frames: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class _TreeWriter:
    """Frame rows into data files and clips into per-camera video files, each cut by size
    at episode boundaries; an episode's ``meta`` gets where its rows and videos landed."""

    def __init__(self, loc: Location, keys: list[str], fps: float, cfg: LeRobotConfig):
        self.loc, self.fs, self.keys, self.fps, self.cfg = loc, loc.fs, keys, fps, cfg
        self.rows: list[pa.Table] = []
        self.data_at, self.data_bytes, self.index = (0, 0), 0, 0
        self.pending: dict[str, list[_Episode]] = {k: [] for k in keys}
        self.pending_bytes = dict.fromkeys(keys, 0)
        self.video_at = {k: (0, 0) for k in keys}
        self.modes: dict[str, dict[str, int]] = {k: {"remux": 0, "reencode": 0, "files": 0} for k in keys}

    def add(self, ep: _Episode, state: np.ndarray, action: np.ndarray, ts: np.ndarray, task: int) -> None:
        n = len(ts)
        if self.rows and self.data_bytes + n * _ROW_BYTES > self.cfg.data_files_size_in_mb * 1024 * 1024:
            self._flush_data()
        ep.frames = n
        ep.meta.update(
            {
                "data/chunk_index": self.data_at[0],
                "data/file_index": self.data_at[1],
                "dataset_from_index": self.index,
                "dataset_to_index": self.index + n,
            }
        )
        self.rows.append(
            pa.table(
                {
                    "timestamp": pa.array(ts, pa.float32()),
                    "frame_index": pa.array(np.arange(n), pa.int64()),
                    "episode_index": pa.array(np.full(n, ep.index), pa.int64()),
                    "index": pa.array(np.arange(self.index, self.index + n), pa.int64()),
                    "task_index": pa.array(np.full(n, task), pa.int64()),
                    "observation.state": pa.FixedSizeListArray.from_arrays(
                        pa.array(state.reshape(-1), pa.float32()), len(STATE)
                    ),
                    "action": pa.FixedSizeListArray.from_arrays(
                        pa.array(action.reshape(-1), pa.float32()), len(ACTION)
                    ),
                }
            )
        )
        self.data_bytes += n * _ROW_BYTES
        self.index += n
        limit = self.cfg.video_files_size_in_mb * 1024 * 1024
        for key, blob in zip(self.keys, ep.mp4s, strict=True):
            if self.pending[key] and self.pending_bytes[key] + len(blob) > limit:
                self._flush_video(key)
            self.pending[key].append(ep)
            self.pending_bytes[key] += len(blob)

    def close(self) -> None:
        self._flush_data()
        for key in self.keys:
            self._flush_video(key)

    def _put(self, rel: str, data: bytes) -> None:
        path = self.loc.join(rel).path
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def _flush_data(self) -> None:
        if not self.rows:
            return
        chunk, file = self.data_at
        self._put(DATA_PATH.format(chunk_index=chunk, file_index=file), _parquet(pa.concat_tables(self.rows)))
        self.data_at = _next_file(chunk, file, self.cfg.chunks_size)
        self.rows, self.data_bytes = [], 0

    def _flush_video(self, key: str) -> None:
        eps = self.pending[key]
        if not eps:
            return
        cam = self.keys.index(key)
        joined = join_videos([e.mp4s[cam] for e in eps], self.fps)
        chunk, file = self.video_at[key]
        self._put(VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file), joined.data)
        for e, start, end in zip(eps, joined.starts_s, joined.ends_s, strict=True):
            e.meta[f"videos/{key}/chunk_index"] = chunk
            e.meta[f"videos/{key}/file_index"] = file
            e.meta[f"videos/{key}/from_timestamp"] = float(start)
            e.meta[f"videos/{key}/to_timestamp"] = float(end)
            e.mp4s[cam] = b""  # joined and written: not held for the rest of the export
        self.modes[key][joined.mode] += len(eps)
        self.modes[key]["files"] += 1
        self.video_at[key] = _next_file(chunk, file, self.cfg.chunks_size)
        self.pending[key], self.pending_bytes[key] = [], 0


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file + 1 >= chunks_size else (chunk, file + 1)


def _parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _units(lake: Lake, plan: ExportPlan, split: dict[str, str]) -> list[list[dict[str, Any]]]:
    units = [members for w in plan.shards for members in shard_samples(lake, plan, w)]
    # train episodes first, then val: LeRobot's splits are index ranges
    return sorted(
        units,
        key=lambda m: (
            split[m[0]["clip_id"]] != "train",
            m[0]["drive_id"],
            m[0]["start_time"],
            m[0]["clip_id"],
        ),
    )


def _task(members: list[dict[str, Any]]) -> str:
    events = sorted({e for m in members for e in (m.get("events") or [])})
    return "drive: " + ", ".join(events) if events else "drive"


class _Signals:
    """A drive's signals at the pinned version, interpolated at any UTC time."""

    def __init__(self, lake: Lake, version: int):
        self.lake, self.version = lake, version
        self.cache: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def at(self, clip: dict[str, Any], t_us: np.ndarray, cols: Iterable[str]) -> np.ndarray:
        key = clip["drive_id"]
        if key not in self.cache:
            tab = self.lake.read(
                "signals",
                columns=["t", *STATE],
                where=f"drive_id = {literal(clip['drive_id'])} AND date = {literal(clip['date'])}",
                version=self.version,
            ).sort_by("t")
            t = tab.column("t").cast(pa.int64()).to_numpy().astype(np.float64)
            self.cache = {key: (t, {c: tab.column(c).cast(pa.float64()).to_numpy() for c in STATE})}
        t, values = self.cache[key]
        cols = list(cols)
        if len(t) == 0:
            return np.full((len(t_us), len(cols)), np.nan)
        out = np.stack([np.interp(t_us, t, values[c]) for c in cols], axis=1)
        # Past the drive's signals by more than one sample: unknown, not the edge value held.
        period = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
        out[(t_us < t[0] - period) | (t_us > t[-1] + period)] = np.nan
        return out


def _stats(x: np.ndarray) -> dict[str, Any]:
    x = x.reshape(len(x), -1).astype(np.float64)
    out = {
        "min": np.nanmin(x, axis=0),
        "max": np.nanmax(x, axis=0),
        "mean": np.nanmean(x, axis=0),
        "std": np.nanstd(x, axis=0),
        "count": np.array([len(x)]),
    }
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.nanquantile(x, q, axis=0)
    return {k: v.tolist() for k, v in out.items()}


def _image_stats(lake: Lake, clip_ids: list[str]) -> dict[str, Any]:
    """Per channel, in [0, 1], over the clips' stored keyframes (shape [3, 1, 1])."""
    from PIL import Image

    rows = lake.read("clip_frames", columns=["jpeg"], where=in_set("clip_id", clip_ids)).to_pylist()
    pix = [
        np.asarray(Image.open(io.BytesIO(r["jpeg"])).convert("RGB"), np.float64).reshape(-1, 3) / 255.0
        for r in rows[:2000]
    ]
    if not pix:
        return {}
    allpix = np.concatenate(pix)
    out = {
        "min": allpix.min(0),
        "max": allpix.max(0),
        "mean": allpix.mean(0),
        "std": allpix.std(0),
    }
    for q in QUANTILES:
        out[f"q{round(q * 100):02d}"] = np.quantile(allpix, q, axis=0)
    res: dict[str, Any] = {k: v.reshape(3, 1, 1).tolist() for k, v in out.items()}
    res["count"] = [len(pix)]
    return res


MARKER = ".fleetmine-lerobot.json"
"""Written first into every tree an export writes: what it holds. An export replaces only a
folder whose marker names the same dataset version, so it never deletes what it did not write."""
_OURS = ("data", "videos", "meta", MARKER)


def _target(lake: Lake, name: str, version: int, out: str | None) -> Location:
    if out is None:
        loc = lerobot_location(lake, name, version)
    else:
        uri = normalize_uri(out)
        loc = Location(uri, lake.root.storage_options if uri.startswith("s3://") else {})
    fs = loc.fs
    if fs.exists(loc.path) and (not fs.isdir(loc.path) or fs.ls(loc.path)):
        if not _written_by_us(fs, loc, name, version):
            raise ConfigError(
                f"the output folder is not empty and is not a LeRobot dataset that fleetmine wrote for "
                f"{name}@{version}: choose an empty --out"
            )
        for sub in _OURS:  # an earlier export of this version: written anew
            if fs.exists(loc.join(sub).path):
                fs.rm(loc.join(sub).path, recursive=True)
    fs.makedirs(loc.path, exist_ok=True)
    _json(fs, loc, MARKER, {"writer": "fleetmine", "dataset": name, "version": int(version)})
    return loc


def _written_by_us(fs: Any, loc: Location, name: str, version: int) -> bool:
    """Whether the folder's marker (or, from exports before the marker, its
    ``meta/fleetmine.json``) names this dataset version."""
    for rel in (MARKER, "meta/fleetmine.json"):
        path = loc.join(rel).path
        try:
            if not fs.isfile(path) or fs.size(path) > 1 << 20:
                continue
            doc = json.loads(fs.cat_file(path))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("dataset") == name and doc.get("version") == int(version):
            return True
    return False


def export_lerobot(
    lake: Lake, name: str, version: int, out: str | None = None, cfg: LeRobotConfig | None = None
) -> dict[str, Any]:
    """Write the version as a LeRobotDataset v3.0 tree; returns what was written."""
    cfg = cfg or LeRobotConfig()
    plan = plan_export(lake, name, version)
    if plan.by_span:
        raise ConfigError(
            f"{name}@{version} is a span dataset: export it as WebDataset shards (its samples are cut "
            "windows; a LeRobot episode here is a whole clip or group)"
        )
    split = plan.split()
    units = _units(lake, plan, split)
    if not units:
        raise ConfigError(f"{name}@{version} has no clips to export")
    cameras = [str(c["camera"]) for c in units[0]]
    odd = [m[0]["clip_id"] for m in units if [str(c["camera"]) for c in m] != cameras]
    if odd:
        hint = "" if plan.by_group else ' (clips of several cameras: create it with "samples": "group")'
        raise ConfigError(
            f"every episode needs cameras {cameras}; {odd[0]} and {len(odd) - 1} more differ{hint}"
        )
    loc = _target(lake, name, version, out)
    fs = loc.fs
    keys = [f"observation.images.{c}" for c in cameras]
    fps_exact = float(units[0][0]["fps"] or 0) or 20.0
    fps = max(1, round(fps_exact))
    signals = _Signals(lake, plan.pinned["signals"])
    tasks: dict[str, int] = {}
    episodes: list[_Episode] = []
    tree = _TreeWriter(loc, keys, fps_exact, cfg)
    all_state, all_action, all_ts = [], [], []
    for ep_index, members in enumerate(units):
        mp4s = [fs.cat_file(_media(lake, c["video_uri"])) for c in members]
        infos = [video_info(b) for b in mp4s]
        task = _task(members)
        ep = _Episode(ep_index, members, infos, mp4s, task, split[members[0]["clip_id"]])
        # The first camera's frames are the episode's clock: one row each, at its own pts.
        t, ref_clip = infos[0].frame_times_s, members[0]
        if len(t) == 0:
            raise ConfigError(f"clip {ref_clip['clip_id']} has no frames")
        step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0 / fps_exact
        t_us = ref_clip["start_time"].timestamp() * 1e6 + t * 1e6
        next_us = np.append(t_us[1:], t_us[-1] + step * 1e6)
        state = signals.at(ref_clip, t_us, STATE).astype(np.float32)
        action = signals.at(ref_clip, next_us, ACTION).astype(np.float32)
        ts = t.astype(np.float32)
        tree.add(ep, state, action, ts, tasks.setdefault(task, len(tasks)))
        ep.meta["stats"] = {
            "observation.state": _stats(state),
            "action": _stats(action),
            "timestamp": _stats(ts),
        }
        all_state.append(state)
        all_action.append(action)
        all_ts.append(ts)
        episodes.append(ep)
    tree.close()
    index, modes = tree.index, tree.modes

    # meta/episodes: one file (a few hundred bytes an episode).
    ep_rows = []
    for e in episodes:
        row: dict[str, Any] = {
            "episode_index": e.index,
            "tasks": [e.task],
            "length": e.frames,
            **{k: v for k, v in e.meta.items() if k != "stats"},
            "meta/episodes/chunk_index": 0,
            "meta/episodes/file_index": 0,
            "fleetmine/clip_ids": [c["clip_id"] for c in e.clips],
            "fleetmine/drive_id": e.clips[0]["drive_id"],
            "fleetmine/start_time_us": int(e.clips[0]["start_time"].timestamp() * 1e6),
            "fleetmine/split": e.split,
        }
        for feat, st in e.meta["stats"].items():
            for stat, value in st.items():
                row[f"stats/{feat}/{stat}"] = value
        ep_rows.append(row)
    path = loc.join(EPISODES_PATH.format(chunk_index=0, file_index=0)).path
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, _parquet(pa.Table.from_pylist(ep_rows)))
    _write_tasks(fs, loc, tasks)

    w, h = int(units[0][0]["width"]), int(units[0][0]["height"])
    features: dict[str, Any] = {
        "observation.state": {"dtype": "float32", "shape": [len(STATE)], "names": list(STATE)},
        "action": {"dtype": "float32", "shape": [len(ACTION)], "names": list(ACTION)},
    }
    for key, clip, info in zip(keys, units[0], episodes[0].infos, strict=True):
        features[key] = {
            "dtype": "video",
            "shape": [int(clip["height"]), int(clip["width"]), 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": int(clip["height"]),
                "video.width": int(clip["width"]),
                "video.codec": "h264" if info.codec in ("h264", "libx264") else info.codec,
                "video.pix_fmt": info.pix_fmt or "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
    features.update(
        {
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        }
    )
    n_train = sum(1 for e in episodes if e.split == "train")
    splits = {"train": f"0:{n_train}"} if n_train else {}
    if n_train < len(episodes):
        splits["val"] = f"{n_train}:{len(episodes)}"
    info_doc = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": _robot_type(lake, {e.clips[0]["drive_id"] for e in episodes}),
        "total_episodes": len(episodes),
        "total_frames": index,
        "total_tasks": len(tasks),
        "chunks_size": cfg.chunks_size,
        "data_files_size_in_mb": cfg.data_files_size_in_mb,
        "video_files_size_in_mb": cfg.video_files_size_in_mb,
        "fps": fps,
        "splits": splits,
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    _json(fs, loc, "meta/info.json", info_doc)
    stats = {
        "observation.state": _stats(np.concatenate(all_state)),
        "action": _stats(np.concatenate(all_action)),
        "timestamp": _stats(np.concatenate(all_ts)),
        "frame_index": _stats(np.concatenate([np.arange(e.frames) for e in episodes])),
        "episode_index": _stats(np.concatenate([np.full(e.frames, e.index) for e in episodes])),
        "index": _stats(np.arange(index)),
        "task_index": _stats(np.concatenate([np.full(e.frames, tasks[e.task]) for e in episodes])),
    }
    for cam, key in enumerate(keys):
        img = _image_stats(lake, [e.clips[cam]["clip_id"] for e in episodes])
        if img:
            stats[key] = img
    _json(fs, loc, "meta/stats.json", stats)
    report = {
        "format": "lerobot",
        "root": loc.uri,
        "dataset": name,
        "version": int(version),
        "episodes": len(episodes),
        "frames": index,
        "fps": fps,
        "width": w,
        "height": h,
        "videos": modes,
    }
    _json(
        fs,
        loc,
        "meta/fleetmine.json",
        {
            **report,
            "lake_version": plan.pinned,
            "model": plan.dataset.get("model"),
            "query": json.loads(plan.dataset["query"]),
            "state": {"names": list(STATE), "units": [UNITS[c] for c in STATE]},
            "action": {
                "names": list(ACTION),
                "units": [UNITS[c] for c in ACTION],
                "definition": "the signals at the next frame's time (the last frame: one frame period on)",
            },
            "sampling": "signals linearly interpolated at each frame's pts; timestamp = pts - first pts",
        },
    )
    return report


def _write_tasks(fs: Any, loc: Location, tasks: dict[str, int]) -> None:
    """``meta/tasks.parquet`` as LeRobot writes it: pandas, the task strings as the index."""
    import pandas as pd

    df = pd.DataFrame({"task_index": list(tasks.values())}, index=pd.Index(list(tasks), name="task"))
    buf = io.BytesIO()
    df.to_parquet(buf)
    fs.pipe_file(loc.join("meta", "tasks.parquet").path, buf.getvalue())


def _json(fs: Any, loc: Location, rel: str, doc: dict[str, Any]) -> None:
    path = loc.join(rel).path
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(doc, indent=2).encode())


def _robot_type(lake: Lake, drive_ids: set[str]) -> str:
    rows = lake.read("drives", columns=["platform"], where=in_set("drive_id", sorted(drive_ids)))
    platforms = {p for p in rows.column("platform").to_pylist() if p}
    return platforms.pop() if len(platforms) == 1 else "car"


def _media(lake: Lake, uri: str) -> str:
    found = lake.locate(uri)
    return found.path if found is not None else uri
