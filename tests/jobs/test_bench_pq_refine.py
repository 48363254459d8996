"""``fleetmine bench --only pq-refine`` at a small N: IVF-PQ re-ranked on its own vector file
and on the ``embeddings`` table each answer both cases, with their recall, beside the index's
size on disk (codes, ids and the exact vectors it keeps)."""

from __future__ import annotations

import re
from pathlib import Path

from fleetmine.bench import BenchContext, run_all


def test_pq_refine_bench_times_both_reranks_of_one_build(tmp_path: Path) -> None:
    rows = run_all(BenchContext(quick=True, workdir=tmp_path, catalog=3_000), only=["pq-refine"])
    assert all(r.name.startswith("IVF-PQ search 3,000 clips (IVF") for r in rows), [r.name for r in rows]
    timed = [r for r in rows if r.unit == "ms"]
    assert [r.name.split(": p99")[0].split("refine_factor 8), ", 1)[-1] for r in timed] == [
        "unfiltered",
        "events has hard_brake (1.0% of clips), 30 allowed "
        "(exact over their vectors with the file, probed without)",
        "events has hard_brake (1.0% of clips), probed by codes (brute_force_below 0)",
    ]
    for r in timed:
        recalls = [float(x) for x in re.findall(r"recall@10 ([0-9.]+)", r.name)]
        assert len(recalls) == 2 and min(recalls) >= 0.9, r.name
        assert r.measured > 0 and r.baseline > 0 and r.met is not None
    (size,) = [r for r in rows if r.unit == "MB"]
    vectors = float(re.search(r"\(([0-9.]+) MB of them\)", size.name).group(1))  # type: ignore[union-attr]
    assert vectors == round(3_000 * 256 * 4 / 1e6, 1) and size.measured > vectors
