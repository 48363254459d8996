"""``fleetmine synth``: a synthetic fleet in the raw layout, with ground-truth labels.

Same seed, same bytes: every random draw comes from generators seeded by
(seed, vehicle, drive), x264 runs single-threaded, and no file records the
wall clock. Drives render in parallel processes.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ingest.synth.canlog import FORMATS, messages, write_can_log
from ingest.synth.render import LIGHTS, Look, Renderer
from ingest.synth.scenario import EVENT_TYPES, HZ, DriveState, simulate
from storage.errors import ConfigError

__all__ = ["DriveJob", "SynthConfig", "drive_state", "plan_drives", "render_drive", "synthesize"]


@dataclass(frozen=True)
class SynthConfig:
    vehicles: int = 3
    drives: int = 2
    minutes: float = 2.0
    seed: int = 0
    rare_rate: float = 0.02
    width: int = 640
    height: int = 360
    fps: int = 20
    gop_seconds: float = 1.0
    duplicates: int | None = None  # duplicate drives (30 s each); default: one per 3 drives
    workers: int = 0  # 0: one per CPU
    # The CAN log formats vehicles write in turn (vehicle v: ``can_formats[v % len]``). Every
    # format by default; a fleet whose test is not about formats writes candump alone, the
    # cheapest to write and to read (python-can's ASC and BLF readers and writers handle
    # each frame in Python: two thirds of a fleet's CAN time).
    can_formats: tuple[str, ...] = FORMATS

    def __post_init__(self) -> None:
        if not self.can_formats or not set(self.can_formats) <= set(FORMATS):
            raise ConfigError(f"can_formats {self.can_formats!r}: one or more of {FORMATS}")


@dataclass(frozen=True)
class DriveJob:
    vehicle_id: str
    drive: str
    start: dt.datetime
    seconds: float
    seed: int
    light: str
    can_suffix: str
    planted: dict[int, str] = field(default_factory=dict)
    # A duplicate drive re-records 3 windows of ``source`` from ``source_window`` on;
    # exact when ``brightness`` is 0, a near duplicate (other exposure, sensor noise) otherwise.
    source: DriveJob | None = None
    source_window: int = 0
    brightness: float = 0.0


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def plan_drives(cfg: SynthConfig) -> list[DriveJob]:
    rng = np.random.default_rng(cfg.seed)
    base = dt.datetime(2024, 5, 1, 6, 0, tzinfo=dt.UTC) + dt.timedelta(days=int(rng.integers(0, 200)))
    seconds = round(cfg.minutes * 60 / 10) * 10
    windows = max(1, int(seconds // 10))
    jobs: list[DriveJob] = []
    for v in range(cfg.vehicles):
        for d in range(cfg.drives):
            start = base + dt.timedelta(
                days=d, hours=int(rng.integers(0, 12)), minutes=int(rng.integers(0, 60)) + 7 * v
            )
            jobs.append(
                DriveJob(
                    vehicle_id=f"veh-{v:03d}",
                    drive=f"{start:%Y-%m-%d--%H-%M-%S}",
                    start=start,
                    seconds=float(seconds),
                    seed=int(rng.integers(0, 2**31)),
                    light=LIGHTS[int(rng.integers(0, len(LIGHTS)))],
                    can_suffix=cfg.can_formats[v % len(cfg.can_formats)],
                )
            )
    # Rare events over the whole fleet, types balanced, never in a drive's first or
    # last window nor next to another event of the same drive.
    candidates = [(j, w) for j in range(len(jobs)) for w in range(1, windows - 1)]
    want = round(cfg.rare_rate * len(jobs) * windows) if cfg.rare_rate > 0 else 0
    want = min(max(want, 1 if cfg.rare_rate > 0 and candidates else 0), len(candidates) // 3)
    order = rng.permutation(len(candidates))
    planted: dict[int, dict[int, str]] = {}
    types = list(EVENT_TYPES)
    rng.shuffle(types)
    for k in order:
        if sum(len(p) for p in planted.values()) >= want:
            break
        j, w = candidates[k]
        taken = planted.setdefault(j, {})
        if any(abs(w - o) <= 1 for o in taken):
            continue
        taken[w] = types[sum(len(p) for p in planted.values()) % len(types)]
    jobs = [replace(jb, planted=planted.get(i, {})) for i, jb in enumerate(jobs)]
    # Duplicates: a 30 s event-free stretch of a drive, recorded again by another vehicle.
    n_dup = cfg.duplicates if cfg.duplicates is not None else max(1, len(jobs) // 3)
    if windows >= 5:

        def free(job: DriveJob) -> list[int]:
            return [
                w for w in range(1, windows - 3) if not any(o in job.planted for o in range(w - 1, w + 4))
            ]

        sources = [j for j in jobs if free(j)]
        for k in range(n_dup if sources else 0):
            src = sources[int(rng.integers(0, len(sources)))]
            spans = free(src)
            w0 = spans[int(rng.integers(0, len(spans)))]
            exact = k % 2 == 0
            start = src.start + dt.timedelta(days=30 + k, hours=1)
            vehicle = f"veh-{int(rng.integers(0, cfg.vehicles)):03d}"
            jobs.append(
                DriveJob(
                    vehicle_id=vehicle,
                    drive=f"{start:%Y-%m-%d--%H-%M-%S}-dup",
                    start=start,
                    seconds=30.0,
                    seed=int(rng.integers(0, 2**31)),
                    light=src.light,
                    can_suffix=cfg.can_formats[int(vehicle[-3:]) % len(cfg.can_formats)],
                    source=src,
                    source_window=w0,
                    brightness=0.0 if exact else 14.0,
                )
            )
    return jobs


def drive_state(job: DriveJob) -> DriveState:
    if job.source is None:
        return simulate(np.random.default_rng(job.seed), job.seconds, job.planted)
    src = job.source
    full = simulate(np.random.default_rng(src.seed), src.seconds, src.planted)
    a, b = job.source_window * 10 * HZ, (job.source_window + 3) * 10 * HZ
    cut = copy.copy(full)
    for k, v in vars(full).items():
        if isinstance(v, np.ndarray):
            setattr(cut, k, v[a:b])
    cut.t = cut.t - cut.t[0]
    cut.origin = a
    cut.events = []
    return cut


def render_drive(out: str, job: DriveJob, cfg: SynthConfig) -> dict[str, object]:
    """Write one drive folder; returns its label entries."""
    st = drive_state(job)
    folder = Path(out) / job.vehicle_id / job.drive
    (folder / "cameras").mkdir(parents=True, exist_ok=True)
    (folder / "can").mkdir(parents=True, exist_ok=True)
    look = Look(job.light)
    render_seed = job.seed
    if job.source is not None:
        look = Look(job.source.light, brightness=job.brightness, noise=3.0 if job.brightness else 0.0)
        render_seed = job.source.seed
    renderer = Renderer(cfg.width, cfg.height, look, render_seed)
    video = folder / "cameras" / "front.mp4"
    n_frames = int(len(st.t) / HZ * cfg.fps)
    with av.open(str(video), "w", format="mp4") as c:
        s = c.add_stream(
            "libx264",
            rate=cfg.fps,
            options={
                "preset": "ultrafast",
                "crf": "23",
                "g": str(int(cfg.gop_seconds * cfg.fps)),
                "threads": "1",
                "keyint_min": str(int(cfg.gop_seconds * cfg.fps)),
                "sc_threshold": "0",
            },
        )
        s.width, s.height, s.pix_fmt = cfg.width, cfg.height, "yuv420p"
        to_yuv = VideoReformatter()  # one swscale context for the drive, not one per frame
        for k in range(n_frames):
            i = min(round(k / cfg.fps * HZ), len(st.t) - 1)
            if renderer.planar:  # drawn as planes: no RGB frame to convert (ingest/synth/render.py)
                frame = av.VideoFrame.from_ndarray(renderer.yuv420(st, i), format="yuv420p")
            else:
                rgb = av.VideoFrame.from_ndarray(renderer.frame(st, i), format="rgb24")
                frame = to_yuv.reformat(rgb, format="yuv420p")
            frame.pts = k
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    msgs = messages(st, job.start, np.random.default_rng(job.seed + 1))
    write_can_log(folder / "can" / f"vehicle{job.can_suffix}", msgs)
    doc = {
        "platform": "fleetmine_synth",
        "start_time": _iso(job.start),
        "cameras": {"front": {"fps": cfg.fps, "width": cfg.width, "height": cfg.height}},
        "can_time_offset_s": 0.0,
    }
    (folder / "drive.json").write_text(json.dumps(doc, indent=2) + "\n")
    return {"frames": n_frames, "can": len(msgs)}


def _events(jobs: list[DriveJob]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for job in jobs:
        for w, typ in sorted(job.planted.items()):
            out.append(
                {
                    "vehicle_id": job.vehicle_id,
                    "drive": job.drive,
                    "camera": "front",
                    "type": typ,
                    "start_time": _iso(job.start + dt.timedelta(seconds=w * 10 + 1.0)),
                    "end_time": _iso(job.start + dt.timedelta(seconds=w * 10 + 9.0)),
                }
            )
    return out


def _duplicates(jobs: list[DriveJob]) -> list[dict[str, object]]:
    by_key = {(j.vehicle_id, j.drive): j for j in jobs}
    out: list[dict[str, object]] = []
    for job in jobs:
        if job.source is None:
            continue
        src = by_key[(job.source.vehicle_id, job.source.drive)]
        for k in range(3):
            a0 = src.start + dt.timedelta(seconds=(job.source_window + k) * 10)
            b0 = job.start + dt.timedelta(seconds=k * 10)
            out.append(
                {
                    "a": {
                        "vehicle_id": src.vehicle_id,
                        "drive": src.drive,
                        "start_time": _iso(a0),
                        "end_time": _iso(a0 + dt.timedelta(seconds=10)),
                    },
                    "b": {
                        "vehicle_id": job.vehicle_id,
                        "drive": job.drive,
                        "start_time": _iso(b0),
                        "end_time": _iso(b0 + dt.timedelta(seconds=10)),
                    },
                }
            )
    return out


def synthesize(
    out: Path, cfg: SynthConfig, on_drive: Callable[[str], None] | None = None
) -> dict[str, object]:
    jobs = plan_drives(cfg)
    out.mkdir(parents=True, exist_ok=True)
    workers = cfg.workers or min(os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        for job in jobs:
            render_drive(str(out), job, cfg)
            if on_drive:
                on_drive(f"{job.vehicle_id}/{job.drive}")
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(render_drive, str(out), job, cfg): job for job in jobs}
            for fut, job in futures.items():
                fut.result()
                if on_drive:
                    on_drive(f"{job.vehicle_id}/{job.drive}")
    labels = {"seed": cfg.seed, "events": _events(jobs), "duplicates": _duplicates(jobs)}
    (out / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    return labels
