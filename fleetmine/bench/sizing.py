"""Cluster sizing from measured figures: ``python -m fleetmine.bench.sizing BENCH.json > deploy/SIZING.md``.

``BENCH.json`` is what ``fleetmine bench --json`` writes; ``--catalog CATALOG.json...``
adds what ``fleetmine bench --catalog N --json`` measured (:mod:`fleetmine.bench.sizing_catalog`:
the catalog at N clips and the plan for the index and API at ``index_clips``); ``--cluster
CLUSTER.json`` what ``--only cluster-scale`` measured (:mod:`fleetmine.bench.sizing_cluster`:
a holder's memory, the fan-out cost, what more nodes buy). Every number in the output
is a bench figure, an :class:`Assumptions` field (printed in the file with its
reason), or arithmetic on the two. A missing figure fails with the names of the
rows wanted; the learned-encoder row is optional (the plan then says it is not
measured rather than guessing it).

The FAISS plan is priced with the bench's own index: the coarse-quantizer rule
(``nlist / sqrt(n)``), ``nprobe`` and the time per 256-d distance are all read from
the measured rows, then applied to shards of ``index_shard_clips`` vectors.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fleetmine.bench.sizing_catalog import CatalogFigures, render_catalog
from fleetmine.bench.sizing_cluster import ClusterFigures, render_cluster
from storage.errors import ConfigError

__all__ = ["Assumptions", "Figures", "IndexPlan", "Plan", "Stage", "main", "plan", "render"]

DAY_S = 86_400.0


def _why(default: float, why: str) -> float:
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class Assumptions:
    """What the bench does not measure. Each field's reason is printed in SIZING.md."""

    video_bytes_per_day: float = _why(1e15, "the target: 1 PB (10^15 bytes, SI) of camera video per day")
    bitrate_bps: float = _why(8e6, "1080p H.264 at 8 Mbit/s, as the bench's 1080p input is encoded")
    clip_seconds: float = _why(10.0, "`Settings.clip_seconds`")
    keyframes_per_clip: float = _why(4, "`Settings.keyframes_per_clip`; the builtin-encoder row embeds 4")
    cameras_per_vehicle: float = _why(1, "one camera per car: the most CAN per byte of video (conservative)")
    can_frames_per_s: float = _why(2258, "the recorded RAV4 log: 67,741 frames in 30.0 s")
    can_log_bytes_per_frame: float = _why(
        45, "the recorded RAV4 candump log: 3,074,394 bytes / 67,741 frames"
    )
    can_row_bytes: float = _why(60, "a `can_frames` row in memory (Arrow), the unit of the delta_write MB/s")
    can_stored_bytes: float = _why(12, "a `can_frames` row in Parquet (zstd, sorted by bus and time)")
    signal_rate_hz: float = _why(20, "`Settings.signal_rate_hz`")
    signal_row_bytes: float = _why(130, "a `signals` row in memory: ids, time, ten float64 signals")
    signal_stored_bytes: float = _why(30, "a `signals` row in Parquet")
    remux_ratio: float = _why(1.0, "a clip is remuxed, not re-encoded: the lake holds the video bytes again")
    keyframe_jpeg_bytes: float = _why(20_000, "one `clip_frames` JPEG, 224 px short side, quality 85")
    thumbnail_bytes: float = _why(15_000, "one clip thumbnail JPEG")
    clip_row_bytes: float = _why(2_000, "one `clips` row with its features and events, in Parquet")
    embedding_dim: float = _why(256, "the builtin encoder's dimension, as in the FAISS rows")
    score_row_bytes: float = _why(120, "one `mining_scores` row in Parquet")
    export_share: float = _why(0.01, "1 % of each day's clips cut into dataset versions and exported")
    index_clips: float = _why(1e8, "the FAISS reference set planned for: 10^8 clips")
    index_shard_clips: float = _why(1e7, "vectors per index shard (shards by date range, searched together)")
    utilisation: float = _why(0.8, "provisioned cores are busy 80 % of the day (peaks, retries, stragglers)")
    node_cores: float = _why(16, "cores per Ray worker pod (`deploy/k8s/raycluster.yaml`)")
    ingest_gib_per_core: float = _why(1.5, "a video decoder, one clip's packets and Arrow buffers per worker")
    can_gib_per_core: float = _why(1.0, "one drive's CAN log and decoded columns per worker")
    embed_gib_per_core: float = _why(1.0, "a batch of keyframe JPEGs and the builtin encoder")
    learned_gib_per_core: float = _why(2.0, "an ONNX session and a batch of 224 px frames")
    export_gib_per_core: float = _why(1.0, "one shard being written")
    goal_cores: float = _why(200, "the goal: 1 PB/day on at most 200 CPU cores")
    route_budget_ms: float = _why(150, "the p99 a catalog request is promised, at any lake size")


@dataclass(frozen=True)
class Row:
    name: str
    measured: float
    unit: str
    baseline: float
    baseline_name: str


_NUM = r"[\d,]+"
_FAISS = rf"^FAISS IVF(?P<nlist>\d+),Flat nprobe (?P<nprobe>\d+), (?P<n>{_NUM}) x (?P<dim>\d+)-d, 1 thread: "
PATTERNS = {
    "video": r"^video ingest 1080p H\.264 8 Mbit/s B-frames (?P<seconds>\d+)s \(wall, 1 core\)$",
    "can": r"^CAN parse\+decode\b",
    "delta": r"^delta_write\b",
    "faiss_qps": _FAISS + r"queries/s",
    "faiss_build": _FAISS + r"build \(train \+ add\)$",
    "faiss_bytes": _FAISS + r"bytes per vector$",
    "faiss_recall": _FAISS + r"recall@10$",
    "builtin": r"^builtin encoder, (?P<keyframes>\d+) keyframes per clip, 1 core$",
    "shard": r"^shard download\b",
}


@dataclass(frozen=True)
class Figures:
    """The bench rows the plan rests on, found by name."""

    rows: dict[str, Row]
    groups: dict[str, dict[str, str]]
    learned: Row | None

    @classmethod
    def from_rows(cls, raw: list[dict[str, Any]]) -> Figures:
        rows: dict[str, Row] = {}
        groups: dict[str, dict[str, str]] = {}
        learned = None
        for r in raw:
            row = Row(
                str(r["name"]),
                float(r["measured"]),
                str(r["unit"]),
                float(r.get("baseline") or 0.0),
                str(r.get("baseline_name", "")),
            )
            for key, pattern in PATTERNS.items():
                m = re.search(pattern, row.name)
                if m and key not in rows:
                    rows[key], groups[key] = row, m.groupdict()
            if row.unit == "clips/s" and "encoder" in row.name and not row.name.startswith("builtin"):
                learned = learned or row
        missing = [f"{k}: /{PATTERNS[k]}/" for k in PATTERNS if k not in rows]
        if missing:
            raise ConfigError("the bench JSON lacks rows the sizing needs: " + "; ".join(missing))
        return cls(rows, groups, learned)

    def value(self, key: str) -> float:
        return self.rows[key].measured

    @property
    def faiss(self) -> dict[str, float]:
        g = self.groups["faiss_qps"]
        return {"nlist": float(g["nlist"]), "nprobe": float(g["nprobe"]), "n": float(g["n"].replace(",", ""))}


@dataclass(frozen=True)
class Stage:
    name: str
    basis: str  # which figures it rests on
    core_s: float  # core-seconds per day
    memory_gib: float
    read_bytes: float  # object store, per day
    write_bytes: float

    @property
    def cores(self) -> float:
        return self.core_s / DAY_S


@dataclass(frozen=True)
class IndexPlan:
    clips: float
    shards: int
    shard_clips: float
    nlist: int
    nprobe: int
    bytes_per_vector: float
    distance_s: float  # one 256-d distance on one core, from the measured queries/s
    build_core_s_per_shard: float
    query_s_per_shard: float
    recall: float
    bench_n: float

    @property
    def shard_bytes(self) -> float:
        return self.shard_clips * self.bytes_per_vector

    @property
    def total_bytes(self) -> float:
        return self.clips * self.bytes_per_vector


@dataclass(frozen=True)
class Plan:
    footage_s: float
    clips: float
    can_frames: float
    stages: list[Stage]
    learned: Stage | None
    index: IndexPlan

    @property
    def busy_cores(self) -> float:
        return sum(s.cores for s in self.stages)

    def provisioned(self, a: Assumptions) -> float:
        return self.busy_cores / a.utilisation


def index_plan(f: Figures, a: Assumptions) -> IndexPlan:
    fa = f.faiss
    n, nlist_b, nprobe = fa["n"], fa["nlist"], fa["nprobe"]
    c = nlist_b / math.sqrt(n)  # the index's own coarse-quantizer rule (4 sqrt(n))
    evals_b = nprobe * n / nlist_b + nlist_b  # distances per query: probed lists + centroids
    distance_s = 1.0 / (f.value("faiss_qps") * evals_b)
    s = a.index_shard_clips
    nlist = min(65536, int(c * math.sqrt(s)))
    # train + add both compare every vector with every centroid: scale by n * nlist (an upper bound,
    # since training uses a bounded sample)
    build = f.value("faiss_build") * (s * nlist) / (n * nlist_b)
    return IndexPlan(
        clips=a.index_clips,
        shards=math.ceil(a.index_clips / s),
        shard_clips=s,
        nlist=nlist,
        nprobe=int(nprobe),
        bytes_per_vector=f.value("faiss_bytes"),
        distance_s=distance_s,
        build_core_s_per_shard=build,
        query_s_per_shard=(nprobe * s / nlist + nlist) * distance_s,
        recall=f.value("faiss_recall"),
        bench_n=n,
    )


def plan(f: Figures, a: Assumptions) -> Plan:
    footage = a.video_bytes_per_day * 8 / a.bitrate_bps
    clips = footage / a.clip_seconds
    vehicle_s = footage / a.cameras_per_vehicle
    frames = vehicle_s * a.can_frames_per_s
    signal_rows = vehicle_s * a.signal_rate_hz
    delta_bps = f.value("delta") * 1e6
    vec_bytes = a.embedding_dim * 4
    idx = index_plan(f, a)
    ingest_s = footage * f.value("video") / float(f.groups["video"]["seconds"])
    can_s = (
        frames / f.value("can") + (frames * a.can_row_bytes + signal_rows * a.signal_row_bytes) / delta_bps
    )
    # the builtin row embeds its own number of keyframes per clip; the cost goes with the keyframes
    builtin_rate = f.value("builtin") * float(f.groups["builtin"]["keyframes"]) / a.keyframes_per_clip
    embed_s = clips / builtin_rate + clips * vec_bytes / delta_bps
    shards_per_day = clips / a.index_shard_clips
    export_bytes = a.export_share * a.video_bytes_per_day * a.remux_ratio
    jpeg_bytes = clips * a.keyframes_per_clip * a.keyframe_jpeg_bytes

    def gib(core_s: float, per_core: float) -> float:
        return math.ceil(core_s / DAY_S) * per_core

    stages = [
        Stage(
            "ingest: video (probe, cut, remux, keyframes, thumbnails)",
            f.rows["video"].name,
            ingest_s,
            gib(ingest_s, a.ingest_gib_per_core),
            a.video_bytes_per_day,
            a.video_bytes_per_day * a.remux_ratio
            + jpeg_bytes
            + clips * (a.thumbnail_bytes + a.clip_row_bytes),
        ),
        Stage(
            "ingest: CAN (parse, DBC decode, `can_frames` + `signals` writes)",
            f"{f.rows['can'].name}; {f.rows['delta'].name}",
            can_s,
            gib(can_s, a.can_gib_per_core),
            frames * a.can_log_bytes_per_frame,
            frames * a.can_stored_bytes + signal_rows * a.signal_stored_bytes,
        ),
        Stage(
            "embed: builtin encoder",
            f"{f.rows['builtin'].name}; {f.rows['delta'].name}",
            embed_s,
            gib(embed_s, a.embed_gib_per_core),
            jpeg_bytes,
            clips * vec_bytes,
        ),
        Stage(
            f"index: {shards_per_day:g} new shards of {a.index_shard_clips:,.0f} vectors a day",
            f.rows["faiss_build"].name,
            shards_per_day * idx.build_core_s_per_shard,
            math.ceil(shards_per_day * idx.build_core_s_per_shard / DAY_S) * 2 * idx.shard_bytes / 2**30,
            clips * vec_bytes,
            clips * idx.bytes_per_vector,
        ),
        Stage(
            f"mine: k-NN of every new clip over {idx.shards} shards",
            f.rows["faiss_qps"].name,
            clips * idx.shards * idx.query_s_per_shard,
            idx.total_bytes / 2**30,
            idx.total_bytes + clips * vec_bytes,
            clips * a.score_row_bytes,
        ),
        Stage(
            f"export: {a.export_share:.0%} of the clips into WebDataset shards",
            f.rows["shard"].name,
            export_bytes / (f.value("shard") * 1e6),
            gib(export_bytes / (f.value("shard") * 1e6), a.export_gib_per_core),
            export_bytes,
            export_bytes,
        ),
    ]
    learned = None
    if f.learned is not None:
        ls = clips / f.learned.measured + clips * vec_bytes / delta_bps
        learned = Stage(
            "embed: learned encoder (instead of the builtin)",
            f"{f.learned.name}; {f.rows['delta'].name}",
            ls,
            gib(ls, a.learned_gib_per_core),
            jpeg_bytes,
            clips * vec_bytes,
        )
    return Plan(footage, clips, frames, stages, learned, idx)


def _b(n: float) -> str:
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def _gbps(bytes_per_day: float) -> str:
    return f"{bytes_per_day * 8 / DAY_S / 1e9:,.1f}"


def _stage_row(s: Stage) -> str:
    return (
        f"| {s.name} | {s.cores:,.1f} | {s.memory_gib:,.0f} | {_b(s.read_bytes)} ({_gbps(s.read_bytes)}) "
        f"| {_b(s.write_bytes)} ({_gbps(s.write_bytes)}) | {s.basis} |"
    )


def render(
    p: Plan,
    f: Figures,
    a: Assumptions,
    command: str,
    note: str = "",
    catalog: CatalogFigures | None = None,
    cluster: ClusterFigures | None = None,
) -> str:
    """SIZING.md: workload, stages, the learned encoder, the index plan, the catalog and
    the cluster at scale (when measured), then what it rests on."""
    sections = [_header(p, a, command, note), _stages(p, f, a), _learned(p, f, a), _index(p, f)]
    if catalog is not None:
        sections.append(render_catalog(catalog, a.index_clips, a.index_shard_clips, a.route_budget_ms))
    if cluster is not None:
        (mine,) = [s for s in p.stages if s.name.startswith("mine:")]
        sections.append(render_cluster(cluster, a.index_shard_clips, a.index_clips, mine.cores))
    sections.append(_basis(f, a))
    return "\n".join(line for section in sections for line in section)


def _header(p: Plan, a: Assumptions, command: str, note: str) -> list[str]:
    return [
        "# Sizing fleetmine for 1 PB/day",
        "",
        "<!-- generated: do not edit by hand -->",
        f"Generated by `{command}` from `fleetmine bench --json` figures; every number below is a bench",
        "figure, an assumption listed at the end, or arithmetic on the two.",
        *([f"Measured on: {note}."] if note else []),
        "",
        "## Workload",
        "",
        f"- {_b(a.video_bytes_per_day)} of video a day at {a.bitrate_bps / 1e6:g} Mbit/s = "
        f"{p.footage_s:,.0f} s = {p.footage_s / 3600:,.0f} hours of footage a day, "
        f"{p.footage_s / DAY_S:,.0f} cameras recording at any moment",
        f"- {p.clips:,.0f} clips of {a.clip_seconds:g} s a day, "
        f"{p.clips * a.keyframes_per_clip:,.0f} keyframes",
        f"- {p.can_frames:,.0f} CAN frames a day ({a.cameras_per_vehicle:g} camera per car, "
        f"{a.can_frames_per_s:,.0f} frames/s per car)",
        "",
    ]


_TABLE = ["| stage | cores | memory (GiB) | reads | writes | figures |", "|---|---:|---:|---:|---:|---|"]


def _stages(p: Plan, f: Figures, a: Assumptions) -> list[str]:
    prov = p.provisioned(a)
    seconds = float(f.groups["video"]["seconds"])
    return [
        "## Per stage",
        "",
        "Cores are busy cores (core-seconds a day / 86,400). Memory is for the workers of the stage at",
        "once. Object-store traffic per day, with the average in Gbit/s in brackets.",
        "",
        *_TABLE,
        *(_stage_row(s) for s in p.stages),
        f"| **total, builtin encoder** | **{p.busy_cores:,.1f}** | "
        f"**{sum(s.memory_gib for s in p.stages):,.0f}** | "
        f"{_b(sum(s.read_bytes for s in p.stages))} | {_b(sum(s.write_bytes for s in p.stages))} | |",
        "",
        f"Provisioned at {a.utilisation:.0%} utilisation: **{prov:,.0f} CPU cores**, "
        f"{math.ceil(prov / a.node_cores)} worker pods of {a.node_cores:g} cores. "
        f"Goal <= {a.goal_cores:g} cores: **{'met' if prov <= a.goal_cores else 'not met'}**.",
        "",
        f"Video ingest is {p.stages[0].cores / p.busy_cores:.0%} of the busy cores: at "
        f"{f.value('video'):.3f} s per {seconds:g} s of footage on one core it runs at "
        f"{seconds / f.value('video'):,.0f}x realtime per core. " + _break_even(p, f, a),
        "",
    ]


def _break_even(p: Plan, f: Figures, a: Assumptions) -> str:
    """The video-ingest figure at which the goal is just met, the other stages as measured."""
    others = p.busy_cores - p.stages[0].cores
    room = a.goal_cores * a.utilisation - others
    if room <= 0:
        return f"The other stages alone exceed the goal ({others:,.1f} busy cores)."
    limit = f.value("video") * room / p.stages[0].cores
    seconds = float(f.groups["video"]["seconds"])
    return (
        f"With the other stages as measured, the goal holds while video ingest takes at most "
        f"{limit:.3f} s per {seconds:g} s ({seconds / limit:,.0f}x realtime per core)."
    )


def _learned(p: Plan, f: Figures, a: Assumptions) -> list[str]:
    if p.learned is None:
        builtin = f.rows["builtin"]
        return [
            "The learned encoder is **not measured** in this bench run (no encoder row in clips/s but the",
            "builtin's), so the total counts the builtin. Any encoder at least decodes the keyframes: "
            f"at the builtin row's baseline ({builtin.baseline_name}, {builtin.baseline:,.0f} clips/s) "
            f"that alone is {p.clips / builtin.baseline / DAY_S:,.1f} cores. Regenerate once "
            "`fleetmine bench` reports the learned encoder, or plan it on the GPU worker group.",
            "",
        ]
    alt = p.busy_cores - p.stages[2].cores + p.learned.cores
    return [
        "With the learned encoder on CPU instead of the builtin:",
        "",
        *_TABLE,
        _stage_row(p.learned),
        "",
        f"Total busy cores then {alt:,.1f}, provisioned {alt / a.utilisation:,.0f}; or run it on the "
        "GPU worker group (`deploy/k8s/raycluster.yaml`, not measured here).",
        "",
    ]


def _index(p: Plan, f: Figures) -> list[str]:
    idx = p.index
    per_shard_ms = idx.query_s_per_shard * 1e3
    return [
        f"## Index plan for {idx.clips:,.0f} clips",
        "",
        f"- {idx.shards} shards of {idx.shard_clips:,.0f} vectors (by date range, searched together), "
        f"each IVF{idx.nlist},Flat (nlist by the measured rule "
        f"{f.faiss['nlist']:.0f}/sqrt({idx.bench_n:,.0f}) x sqrt(shard)), nprobe {idx.nprobe}",
        f"- memory: {idx.bytes_per_vector:,.0f} B per vector (measured) -> {_b(idx.shard_bytes)} per "
        f"shard, {_b(idx.total_bytes)} in all; building a shard holds about twice its size",
        f"- build: {idx.build_core_s_per_shard / 3600:,.1f} core-hours per shard (the measured "
        f"{f.value('faiss_build'):,.1f} s at {idx.bench_n:,.0f} scaled by vectors x lists, an upper bound)",
        f"- query: {idx.distance_s * 1e9:,.0f} ns per distance (from the measured queries/s) -> "
        f"{per_shard_ms:,.2f} ms per shard; {idx.shards * per_shard_ms:,.1f} ms for all shards on one "
        f"core, {per_shard_ms:,.2f} ms with one core per shard",
        f"- recall@10 {idx.recall:.3f} measured at {idx.bench_n:,.0f} vectors with the same nprobe; "
        "re-measure at shard size before relying on it (`fleetmine bench` full run: 10^6)",
        "- IVF-PQ (what `IndexConfig` picks from 10^7 vectors) holds 32-byte codes and keeps the exact "
        "vectors in a file it reads candidates' rows from; the bench measures it at 2x10^5 only "
        "(`--only pq-refine`, below), so the plan prices IVF-Flat, the kind it measures at every size",
        "",
    ]


def _basis(f: Figures, a: Assumptions) -> list[str]:
    return [
        "## Figures used",
        "",
        "| bench row | measured |",
        "|---|---:|",
        *(f"| {r.name} | {r.measured:,.4g} {r.unit} |" for r in _used(f)),
        "",
        "## Assumptions",
        "",
        "| name | value | why |",
        "|---|---:|---|",
        *(f"| `{x.name}` | {getattr(a, x.name):,.6g} | {x.metadata['why']} |" for x in fields(a)),
        "",
    ]


def _used(f: Figures) -> list[Row]:
    rows = list(f.rows.values())
    return [*rows, f.learned] if f.learned else rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m fleetmine.bench.sizing", description=__doc__.splitlines()[0])
    ap.add_argument("bench", type=Path, help="the file `fleetmine bench --json` wrote")
    ap.add_argument("--note", default="", help="where the figures were measured (printed in the file)")
    ap.add_argument(
        "--catalog", type=Path, nargs="*", default=[], help="files `fleetmine bench --catalog N --json` wrote"
    )
    ap.add_argument(
        "--cluster",
        type=Path,
        default=None,
        help="the file `fleetmine bench --only cluster-scale --json` wrote",
    )
    args = ap.parse_args(argv)
    try:
        figures = Figures.from_rows(json.loads(args.bench.read_text()))
        rows = [r for path in args.catalog for r in json.loads(path.read_text())]
        catalog = CatalogFigures.from_rows(rows) if args.catalog else None
        cluster = ClusterFigures.from_rows(json.loads(args.cluster.read_text())) if args.cluster else None
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    a = Assumptions()
    command = shlex.join(["python", "-m", "fleetmine.bench.sizing", *argv])
    sys.stdout.write(render(plan(figures, a), figures, a, command, args.note, catalog, cluster))


if __name__ == "__main__":
    main()
