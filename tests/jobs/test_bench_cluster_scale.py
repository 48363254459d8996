"""``fleetmine bench --only cluster-scale`` at a small N: index and mine in this process on one
index and two shards, then on a loopback cluster of one 1-CPU node and of two (started and
stopped by PID), every row measured, and with two nodes each holder held one shard only;
the mine's driving process's peak RSS measured, and the host's own ceiling for the node
ratio (two shards' k-NN in two processes at once, against in turn).
(Two Ray clusters one after the other: about a minute of a core; in the unit of the modules
that start Ray nodes, last: tests/conftest.py.)"""

from __future__ import annotations

import math
import re
from pathlib import Path

from fleetmine.bench import BenchContext, run_all


def test_cluster_scale_bench_measures_one_node_beside_two(tmp_path: Path) -> None:
    rows = run_all(BenchContext(quick=True, workdir=tmp_path, catalog=2_000), only=["cluster-scale"])
    assert len(rows) == 8, [r.name for r in rows]
    for r in rows:
        assert r.measured > 0 and r.baseline > 0 and not math.isnan(r.ratio), r
    nodes = [r for r in rows if "2 nodes vs 1" in r.name]
    assert len(nodes) == 2 and all(r.goal == "<= 0.6x" and r.met is not None for r in nodes)
    held = re.search(r"holders (\[.*\])\)", nodes[1].name)
    assert held and held.group(1) == "[([0], 1000), ([1], 1000)]", nodes[1].name  # a shard each
    (memory,) = [r for r in rows if r.name.startswith("most index bytes one holder held")]
    assert memory.measured < memory.baseline  # no holder held the whole index
    # the host's own ceiling for two nodes against one: both shards scanned at once, and in turn
    (ceiling,) = [r for r in rows if r.name.startswith("this host's ceiling")]
    assert ceiling.baseline_name == "in turn" and ceiling.goal == "", ceiling
    (driver,) = [r for r in rows if r.name.startswith("mine's driving process peak RSS")]
    assert driver.measured > 0  # measured (the run's own scores and features: no index in it)
    # a full run's rows waited on the driver's disk: ~170 B a clip of 2,000 (ids, signals, k-NN)
    (spill,) = [r for r in rows if r.name.startswith("mine's rows spilled to the driver's local disk")]
    assert 0.1 < spill.measured < 2.0, spill
