"""Incremental ``mine`` on a catalog lake: new clips are scored against the last full
run's fit, every clip is scored once per lineage, the ready lists stay the top k of
every score, and the top 100 agrees with a full recompute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jobs.bench.catalog_lake import add_clips
from jobs.bench.faiss_search import embeddings_like
from jobs.mine_job import run_mine
from mining.novelty import MineConfig, latest_run, latest_scores
from mining.queries import build_index, corner_cases
from mining.registry import resolve
from storage import Lake, Settings
from tests.conftest import LOCAL

N = 3000
NEW = N // 10


def top(scores: list[dict[str, object]], k: int = 100) -> list[str]:
    kept = [s for s in scores if s["duplicate_of"] is None]
    kept.sort(key=lambda s: (-float(s["novelty"]), str(s["clip_id"])))  # type: ignore[arg-type]
    return [str(s["clip_id"]) for s in kept[:k]]


@pytest.fixture
def grown(tmp_path: Path) -> tuple[Settings, Lake, np.ndarray]:
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    # One distribution (new clips are more of the same), ~100 clips per scene cluster as at 10^5
    corpus = embeddings_like(3 * N, clusters=N // 100, seed=11)
    add_clips(lake, resolve(lake), 0, N, given=corpus[:N])
    build_index(settings)
    return settings, lake, corpus


def test_a_second_run_scores_only_the_new_clips_and_ranks_as_a_full_recompute(
    grown: tuple[Settings, Lake, np.ndarray],
) -> None:
    settings, lake, corpus = grown
    spec = resolve(lake)
    first = run_mine(settings, runner=LOCAL)
    assert (first.mode, first.scored) == ("full", N)
    batch = add_clips(lake, spec, N, NEW, given=corpus[N : N + NEW])
    second = run_mine(settings, None, MineConfig(batch_rows=128), runner=LOCAL)
    assert (second.mode, second.scored, second.base_run) == ("incremental", NEW, first.run_id)
    scores = latest_scores(lake, spec)
    ids = [str(s["clip_id"]) for s in scores]
    embedded = lake.read("embeddings", columns=["clip_id"]).column("clip_id").to_pylist()
    assert len(ids) == len(set(ids)) == N + NEW and set(ids) == set(embedded)
    new_rows = [s for s in scores if s["run_id"] == second.run_id]
    assert {str(s["clip_id"]) for s in new_rows} == set(batch.clip_ids)
    # The ready list of the incremental run is the top of every clip's current score.
    ready = [str(r["clip_id"]) for r in corner_cases(lake, k=100)]
    assert ready == top(scores)
    assert latest_run(lake, spec) == (second.run_id, first.run_id)
    assert run_mine(settings, runner=LOCAL).scored == 0  # nothing new: nothing scored again

    full = run_mine(settings, None, MineConfig(full=True), runner=LOCAL)
    assert (full.mode, full.scored) == ("full", N + NEW)
    recomputed = latest_scores(lake, spec)
    assert len(recomputed) == N + NEW and {s["run_id"] for s in recomputed} == {full.run_id}
    agreement = len(set(top(scores)) & set(top(recomputed))) / 100
    assert agreement >= 0.95, agreement


def test_a_corpus_grown_past_the_factor_is_refitted(grown: tuple[Settings, Lake, np.ndarray]) -> None:
    settings, lake, corpus = grown
    run_mine(settings, runner=LOCAL)
    add_clips(lake, resolve(lake), N, N, given=corpus[N : 2 * N])  # twice the fitted corpus
    again = run_mine(settings, None, MineConfig(refit_growth=1.5), runner=LOCAL)
    assert (again.mode, again.scored) == ("full", 2 * N)
