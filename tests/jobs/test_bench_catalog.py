"""``fleetmine bench --catalog N`` at a small N: every figure it reports is measured (a
bench whose probe no longer matches the pages it reads reports 0 cards, not an error)."""

from __future__ import annotations

from pathlib import Path

from fleetmine.bench import BenchContext, run_all


def test_catalog_bench_measures_search_and_the_clip_page(tmp_path: Path) -> None:
    rows = run_all(BenchContext(quick=True, workdir=tmp_path, catalog=2_000), only=["catalog"])
    by = {r.name: r for r in rows}
    for n in ("200 clips", "2,000 clips"):
        mine = [r for name, r in by.items() if name.startswith(f"catalog {n},")]
        cards = [r for r in mine if r.unit == "cards"]
        assert len(cards) == 1 and cards[0].measured == 8 and "HTTP 200" in cards[0].name, cards
        kind = {r.name: r.name.partition("recall@10 ")[2].partition(" (")[0] for r in mine}
        recalls = {kind[r.name]: r.measured for r in mine if r.unit == "recall"}
        assert recalls["by vector"] >= 0.95 and recalls["by clip id"] >= 0.95, recalls
        rss = [r for r in mine if r.unit == "MB"]
        assert rss and all(r.measured > 0 for r in rss)
