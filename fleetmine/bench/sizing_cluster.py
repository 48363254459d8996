"""The cluster part of SIZING.md: what ``fleetmine bench --only cluster-scale`` measured
(index and mine on 1 vs 2 shards in one process, and on a loopback cluster of one vs two
1-CPU nodes holding the shards), and what it says of 10^8 clips.

Three figures price the plan, each a bench row or arithmetic on it:

- **bytes a holder holds per vector**: the largest holder's index bytes over the vectors
  it held (read from the mine row's holder list), times ``index_shard_clips``: the memory
  of one shard's holder.
- **fan-out cost in one process**: mine over 2 shards / over 1 index. The IVF model the
  per-stage plan prices the k-NN with (distances per query ``nprobe * n / nlist + nlist``,
  ``nlist`` growing with ``sqrt(n)``) predicts ``sqrt(2)`` for it; the measured ratio over
  that is the merge and per-shard overhead the model leaves out (a lower bound: the ratio
  is of the whole run, the k-NN a part of it), applied to the mine stage.
- **the serial share of a mine on the cluster**: from the two-node / one-node time ratio
  ``r`` (Amdahl: ``r = s + (1 - s) * c``), ``s = (r - c) / (1 - c)``: the share of the run
  the driving process does alone (reading each batch, merging, features, writes). ``c`` is
  what the host lets two nodes do at once: 1/2 on two hosts; on the loopback cluster, the
  bench's ceiling row (two shards' k-NN in two processes at once / in turn: both nodes
  share one memory bus, and the scan is bound by it). With 10 holders on hosts of their
  own the run takes ``s + (1 - s) / 10`` of one node's time.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from typing import Any

from storage.errors import ConfigError

__all__ = ["ClusterFigures", "render_cluster"]

_N = r"\((?P<n>[\d,]+) clips"
PATTERNS = {
    "index_shards": rf"^index, 2 shards vs 1 index, this process {_N}\)",
    "mine_shards": rf"^mine, 2 shards vs 1 index, this process {_N}\)",
    "index_nodes": r"^index --shard-size [\d,]+, 2 nodes vs 1 \(1 CPU each, (?P<n>[\d,]+) clips\)",
    "mine_nodes": (
        r"^mine on the held shards, 2 nodes vs 1 \(1 CPU each, (?P<n>[\d,]+) clips; "
        r"holders (?P<holders>\[.*\])\)"
    ),
    "holder_bytes": rf"^most index bytes one holder held, 2 nodes {_N}\)",
    "driver_rss": rf"^mine's driving process peak RSS above idle, 2 nodes {_N}\)",
    "driver_spill": rf"^mine's rows spilled to the driver's local disk, 2 nodes {_N}\)",
    "host_ceiling": r"^this host's ceiling for that ratio: 2 shards' k-NN",
}
OPTIONAL = ("driver_rss", "driver_spill", "host_ceiling")  # from bench runs since each was added
HELD_PER_CLIP = 112
"""Bytes a full mine's driving process holds per clip of the corpus at most: four float64 or
int64 numbers kept (k-NN mean, cluster, rarity, signal), and while ranking three sorted
copies, the evidence and a percentile's temporaries (mining/scores/mine.py ``_full``)."""


@dataclass(frozen=True)
class Ratio:
    name: str
    measured: float
    baseline: float
    unit: str
    baseline_name: str

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline


@dataclass(frozen=True)
class ClusterFigures:
    n: int
    rows: dict[str, Ratio]
    holder_vectors: int  # vectors of the holder that held the most bytes (the largest shard set)

    @classmethod
    def from_rows(cls, raw: list[dict[str, Any]]) -> ClusterFigures:
        rows: dict[str, Ratio] = {}
        groups: dict[str, dict[str, str]] = {}
        for r in raw:
            for key, pattern in PATTERNS.items():
                m = re.search(pattern, str(r["name"]))
                if m and key not in rows and float(r.get("baseline") or 0) > 0:
                    rows[key] = Ratio(
                        str(r["name"]),
                        float(r["measured"]),
                        float(r["baseline"]),
                        str(r["unit"]),
                        str(r.get("baseline_name", "")),
                    )
                    groups[key] = m.groupdict()
        missing = [f"{k}: /{PATTERNS[k]}/" for k in PATTERNS if k not in rows and k not in OPTIONAL]
        if missing:
            raise ConfigError("the cluster bench JSON lacks rows the sizing needs: " + "; ".join(missing))
        try:  # [([shard numbers], vectors), ...] as the bench printed it
            held = [int(v) for _, v in ast.literal_eval(groups["mine_nodes"]["holders"])]
        except (ValueError, SyntaxError, TypeError) as exc:
            raise ConfigError("the cluster bench's holder list is not [([shards], vectors), ...]") from exc
        if not held:
            raise ConfigError("the cluster bench's mine row lists no holders")
        return cls(int(groups["mine_nodes"]["n"].replace(",", "")), rows, max(held))


def _x(r: float) -> str:
    return f"{r:,.2f}x"


def _goal(key: str, r: Ratio, ceiling: Ratio | None) -> str:
    """The issue's goal for the node ratios: two 1-CPU nodes in <= 0.6x one's time (and
    what this host allows two loopback nodes, where measured)."""
    if not key.endswith("_nodes"):
        return "-"
    allows = f" (this host allows {_x(ceiling.ratio)})" if ceiling else ""
    return "<= 0.60x: " + ("met" if r.ratio <= 0.6 else "**not met**") + allows


def render_cluster(c: ClusterFigures, shard_clips: float, index_clips: float, mine_cores: float) -> list[str]:
    """The measured rows and the 10^8 plan they give; ``mine_cores``: the per-stage plan's
    busy cores for the k-NN of a day's clips (priced by the IVF model alone)."""
    r = c.rows
    per_vector = r["holder_bytes"].measured * 1e6 / c.holder_vectors
    shards = math.ceil(index_clips / shard_clips)
    overhead = r["mine_shards"].ratio / math.sqrt(2)
    ceiling = r.get("host_ceiling")
    both = min(ceiling.ratio, 0.99) if ceiling else 0.5  # of the in-turn time, two at once

    def serial_of(ratio: float) -> float:
        return min(1.0, max(0.0, (ratio - both) / (1 - both)))

    serial, index_serial = serial_of(r["mine_nodes"].ratio), serial_of(r["index_nodes"].ratio)
    labels = {
        "index_shards": "`fleetmine index`, 2 shards / 1 index, one process (time)",
        "mine_shards": "`fleetmine mine`, 2 shards / 1 index, one process (time)",
        "index_nodes": "`fleetmine index --address`, 2 nodes / 1 node (time)",
        "mine_nodes": "`fleetmine mine --address`, 2 nodes / 1 node (time)",
        "holder_bytes": "index bytes the largest holder held / the whole index (MB)",
        "driver_rss": "a mine's driving process, peak RSS above idle / the whole index (MB)",
        "driver_spill": "a mine's rows on the driving process's local disk / the whole index (MB)",
        "host_ceiling": "this host: 2 shards' k-NN in 2 processes at once / in turn (time)",
    }
    driver, spill = r.get("driver_rss"), r.get("driver_spill")
    driver_line = []
    if driver and spill:  # a full run's rows wait on disk (mining/scores/spill.py)
        per_clip = spill.measured * 1e6 / c.n
        bound = (driver.measured * 1e6 + HELD_PER_CLIP * index_clips) / 1e9
        driver_line = [
            f"- **A mine's driving process** (2 nodes): {driver.measured:,.1f} MB above idle at its peak "
            f"({driver.ratio:,.2f}x the whole index). It holds none of the index, and of each clip of the "
            f"corpus only the numbers its rank needs (k-NN mean, cluster, rarity, signal, evidence, novelty "
            f"and their sorted copies while ranking: at most {HELD_PER_CLIP} B, from the arrays "
            "mining/scores/mine.py keeps, not measured apart); each clip's row (id, date, start time, "
            f"events, signals, k-NN distances) waits on its local disk, {spill.measured:,.1f} MB here, "
            f"{per_clip:,.0f} B per clip: **{per_clip * index_clips / 1e9:,.1f} GB** of `TMPDIR` for a "
            f"full run over {index_clips:,.0f} clips. The rest of its peak does not grow with the corpus "
            "(two batches of `batch_rows` queries and their answers in flight, a day's `clips` features, "
            f"the k-means sample of `cluster_sample` vectors): at most **{bound:,.1f} GB** for that run. "
            "An incremental run holds every clip already scored too: its id and k-th distance, cut from "
            "the k-NN lists its lineage wrote one slice read at a time (mining/scores/mine.py: "
            "`_kth_of_scored`; not measured here)."
        ]
    elif driver:
        driver_line = [
            f"- **A mine's driving process** (2 nodes): {driver.measured:,.1f} MB above idle at its peak, "
            f"{driver.ratio:,.2f}x the whole index, {driver.measured * 1e6 / c.n:,.0f} B per clip of the "
            "corpus (measured before a full run's rows waited on disk: ids, k-NN distances, clusters, "
            "scores and features were kept until the rows were written; none of the index): at most "
            f"**{driver.measured * 1e6 / c.n * index_clips / 1e9:,.1f} GB** for a full run over "
            f"{index_clips:,.0f} clips."
        ]
    return [
        f"## Past one machine: shards held over a cluster (measured at {c.n:,} clips)",
        "",
        f"From `fleetmine bench --catalog {c.n:,} --only cluster-scale`: the nodes are a loopback",
        "cluster of two 1-CPU Ray nodes on the same 2-core machine as the driving process, so a node",
        "ratio measures the work that moves to the holders, not a network.",
        "",
        "| figure | measured | baseline | ratio | goal |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {label} | {r[k].measured:,.1f} | {r[k].baseline:,.1f} | {_x(r[k].ratio)} "
            f"| {_goal(k, r[k], ceiling)} |"
            for k, label in labels.items()
            if k in r
        ),
        "",
        f"### The cluster at {index_clips:,.0f} clips, from these figures",
        "",
        f"- **A holder's memory:** the largest holder held {r['holder_bytes'].measured:,.1f} MB for "
        f"{c.holder_vectors:,} vectors, {per_vector:,.0f} B per vector (its shards' files, ids included; "
        f"nothing else of the index): a holder of one {shard_clips:,.0f}-vector shard holds "
        f"**{per_vector * shard_clips / 1e9:,.2f} GB**, {shards} holders for {index_clips:,.0f} clips. "
        "A server or a mine's driving process holds none of them (only clips embedded since the build).",
        *driver_line,
        f"- **Fan-out cost:** mining over 2 shards took {_x(r['mine_shards'].ratio)} one index's time in one "
        f"process; the IVF model the per-stage table prices the k-NN with predicts {_x(math.sqrt(2))} "
        + (
            f"(sqrt 2) for its k-NN, so the merge and per-shard overhead add at least {overhead - 1:+.0%} "
            "(at least: the ratio is of the whole run, of which the k-NN is a part): the mine stage's "
            f"{mine_cores:,.1f} busy cores are **at least {mine_cores * overhead:,.1f}** with it."
            if overhead > 1
            else f"(sqrt 2) for its k-NN alone, and the whole run stayed under it: the mine stage's "
            f"{mine_cores:,.1f} busy cores stand as the model prices them (no overhead measured past it)."
        ),
        f"- **What more nodes buy:** a mine on two nodes took {_x(r['mine_nodes'].ratio)} one node's "
        "time"
        + (
            f", where this host lets two holders' k-NN take {_x(ceiling.ratio)} of its time in turn "
            "(both loopback nodes read through one memory bus, and an IVF scan is bound by it; two "
            "hosts have a bus each: 0.50x)"
            if ceiling
            else ""
        )
        + ", so "
        f"{serial:.0%} of it is the driving process's own serial work (reading each batch, merging, "
        "features, writes; Amdahl"
        + ("; on the loopback cluster that work also takes the nodes' cores" if ceiling else "")
        + f"); with {shards} holders on hosts of their own a run takes at best "
        f"**{_x(serial + (1 - serial) / shards)}** one node's time. An index build: "
        f"{_x(r['index_nodes'].ratio)} on two nodes, {index_serial:.0%} serial (sampling and training "
        "the shared quantizer, the commit). Past that bound, batches must be driven by several "
        "processes at once, each fanning out to the holders.",
        "",
    ]
