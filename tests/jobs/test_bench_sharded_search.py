"""``fleetmine bench --only sharded-search`` at a small N: one index, the same vectors as four
shards in this process and as the same shards held by Ray actors answer every case with the
exact top-k (the kinds at this size are exact), exactly ``min(k, allowed)`` clips each, and
each sharded p99 stands beside the one index's."""

from __future__ import annotations

import re
from pathlib import Path

from fleetmine.bench import BenchContext, run_all
from tests.jobs.test_bench_filtered_search import CASES

SYSTEMS = ("one index", "shards, this process", "shards, held")


def test_sharded_search_bench_answers_as_one_index_does(tmp_path: Path) -> None:
    rows = run_all(BenchContext(quick=True, workdir=tmp_path, catalog=4_000), only=["sharded-search"])
    label = "search across shards 4,000 clips, "
    assert rows and all(r.name.startswith(label) for r in rows), [r.name for r in rows]
    assert len(rows) == len(CASES) * (len(SYSTEMS) + 2), [r.name for r in rows]
    for case in CASES:
        mine = [r for r in rows if r.name.startswith(f"{label}{case}: ")]
        want = 4 if "driver_override" in case else 10  # 0.1 % of 4,000 clips: 4 allowed
        for system in SYSTEMS:
            (recall,) = [r for r in mine if r.unit == "recall" and f": {system} (" in r.name]
            assert recall.measured == 1.0 and recall.met, recall
            wrong = re.search(r"; (\d+) of 200 counts != min\(k, allowed\) = (\d+)\)", recall.name)
            assert wrong and wrong.group(1) == "0" and int(wrong.group(2)) == want, recall.name
        assert "shards, this process (4 x " in " ".join(r.name for r in mine)
        assert re.search(r"shards, held \(4 shards in [12] holder\(s\)\)", " ".join(r.name for r in mine))
        ratios = [r for r in mine if r.unit == "ms"]
        assert [r.name.split(": p99, ")[1].split(" / ")[0] for r in ratios] == list(SYSTEMS[1:])
        assert all(r.measured > 0 and r.baseline > 0 and r.goal == "<= 1.3" for r in ratios), ratios
