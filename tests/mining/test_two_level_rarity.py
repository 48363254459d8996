"""Issue 27 item 3: rarity keeps meaning at scale. Past one level's reach the cluster model
has two (mining.scores.clusters): a scene of a few look-alike clips gets a fine cluster of its
own and stands out, where one level folds it into a cluster as common as its neighbours. The
scale is shrunk by MineConfig's knobs (4 top clusters of ~750 clips, fine clusters of ~25),
as 256 top clusters of ~3,900 stand at 10^6 (``fleetmine bench --only rarity`` measures that).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fleetmine.bench.catalog_lake import add_clips
from fleetmine.bench.rarity import scenes
from jobs.mine_job import SubFitTasks, run_mine
from mining.encoders.registry import resolve
from mining.encoders.vectors import EmbeddingSource
from mining.scores.clusters import cluster_counts, fit_sub_levels, sub_counts
from mining.scores.lineage import latest_run, latest_scores
from mining.scores.mine import MineConfig
from mining.scores.mining_model import MiningModel
from mining.search.queries import build_index
from storage import Lake, Settings
from tests.conftest import LOCAL

N = 3000
PLANTED = 6
TWO = MineConfig(max_top=4, fine_size=25)


def test_one_level_is_what_it_was_until_it_stops_resolving_then_two() -> None:
    for n in [2, 3, 10, 765, 1000, 4096, 40_000, 65_536, 100_000]:
        old = min(n, max(2, min(256, 2 ** round(math.log2(math.sqrt(n))))))  # the rule before
        assert cluster_counts(n) == (old, old)
    assert cluster_counts(1_000_000) == (256, 4096)  # fine clusters of ~244
    assert cluster_counts(10**8) == (256, 65_536)  # at most MAX_FINE
    assert cluster_counts(10**8, clusters=64) == (64, 64)  # asked for: one level
    k = sub_counts(np.array([3900, 10, 0, 7800]), 48)  # in proportion, at least one, at most its clips
    assert k.tolist() == [15, 1, 1, 32]


@pytest.fixture
def lake_with_a_rare_scene(tmp_path: Path) -> tuple[Settings, Lake, list[str]]:
    """30 scenes of ~100 clips, then one of PLANTED clips (their ids: the third item)."""
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    batch = add_clips(lake, resolve(lake), 0, N, given=scenes(N - PLANTED, PLANTED, scenes=30, seed=5))
    build_index(settings)
    return settings, lake, batch.clip_ids[-PLANTED:]


def _planted_rank(scores: list[dict[str, object]], planted: list[str]) -> float:
    """Share of the corpus at least as rare as the planted clips' median rarity."""
    rarity = {str(s["clip_id"]): float(s["rarity"]) for s in scores}  # type: ignore[arg-type]
    mine = float(np.median([rarity[c] for c in planted]))
    return float(np.mean(np.array(list(rarity.values())) >= mine))


def test_a_rare_scene_stands_out_at_two_levels_and_new_clips_fall_in_fine_clusters(
    lake_with_a_rare_scene: tuple[Settings, Lake, list[str]],
) -> None:
    settings, lake, planted = lake_with_a_rare_scene
    spec = resolve(lake)
    one = run_mine(settings, None, MineConfig(clusters=4), runner=LOCAL)
    flat = _planted_rank(latest_scores(lake, spec), planted)
    two = run_mine(settings, None, MineConfig(max_top=4, fine_size=25, refit=True), runner=LOCAL)
    assert two.mode == "full" and two.run_id != one.run_id
    scores = latest_scores(lake, spec)
    fine = _planted_rank(scores, planted)
    print(f"planted scene's rarity: rarest {fine:.2%} at two levels, {flat:.2%} at one")
    assert fine <= 0.03 < 0.2 <= flat
    model = MiningModel.load(lake, spec, two.run_id)
    assert model is not None and model.two_level and len(model.centroids) == 4
    assert model.clusters == len(model.sizes) == len(model.fine_centroids) > 64
    clusters = np.array([int(s["cluster_id"]) for s in scores])  # type: ignore[call-overload]
    assert int(model.sizes.sum()) == N and np.array_equal(
        np.bincount(clusters, minlength=model.clusters), model.sizes
    )
    rarity = np.array([float(s["rarity"]) for s in scores])  # type: ignore[arg-type]
    assert np.allclose(rarity, model.rarity_of(clusters))
    # New clips, incrementally: each in the fine cluster its vector falls in, ranked on the fit.
    more = scenes(200, 0, scenes=30, seed=5)[-200:]
    batch = add_clips(lake, spec, N, 200, given=more)
    inc = run_mine(settings, None, TWO, runner=LOCAL)
    assert (inc.mode, inc.scored, inc.base_run) == ("incremental", 200, two.run_id)
    got = {str(s["clip_id"]): s for s in latest_scores(lake, spec)}
    new = [got[c] for c in batch.clip_ids]
    assert [int(s["cluster_id"]) for s in new] == model.assign(more).tolist()  # type: ignore[call-overload]
    assert np.allclose([float(s["rarity"]) for s in new], model.rarity(more))  # type: ignore[arg-type]
    prev = latest_run(lake, spec)
    assert prev is not None and prev[1] == two.run_id


def test_the_fine_level_fitted_as_ray_tasks_is_the_one_fitted_here(
    lake_with_a_rare_scene: tuple[Settings, Lake, list[str]], ray_local: object
) -> None:
    """Each task reads its members' vectors from the lake itself (real Delta reads in Ray
    workers); tasks of at most 700 vectors, so the fine level is several tasks."""
    _, lake, _ = lake_with_a_rare_scene
    spec = resolve(lake)
    source = EmbeddingSource(lake, spec)
    ids = source.ids()
    vectors = np.vstack([v for _, v in source.batches()])
    order = pa.concat_arrays([i for i, _ in source.batches()])
    centroids = vectors[:4].copy()
    model = MiningModel("t", N, centroids, np.zeros(4, np.int64), *(np.zeros(0),) * 5)
    tops = model.assign_top(vectors)
    assert len(ids) == N
    here = fit_sub_levels(source, order, tops, centroids, 128, 7, 700)
    there = fit_sub_levels(source, order, tops, centroids, 128, 7, 700, SubFitTasks(None))
    assert np.array_equal(here[0], there[0]) and here[0][-1] > 64
    assert np.allclose(here[1], there[1], atol=1e-5)
