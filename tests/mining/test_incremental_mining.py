"""Incremental ``mine`` on a catalog lake: new clips are scored against the last full
run's fit, the old clips they come near are re-scored, every clip has one current
score per lineage, the ready lists stay the top k of every score, and the top 100
agrees with a full recompute."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fleetmine.bench.catalog_lake import add_clips
from fleetmine.bench.faiss_search import embeddings_like
from jobs.mine_job import run_mine
from mining.encoders.registry import resolve
from mining.encoders.vectors import EmbeddingSource
from mining.scores.dedup import Pairs as _Pairs
from mining.scores.lineage import current_scores, latest_run, latest_scores
from mining.scores.mine import MineConfig
from mining.scores.mining_model import MiningModel
from mining.scores.novelty import SIGNALS
from mining.scores.novelty import signal_stats as _signal_stats
from mining.scores.novelty import signal_values as _signal_values
from mining.search.queries import build_index, corner_cases
from mining.search.ready import merge_corner_cases
from storage import Lake, Settings
from storage.tables import mining_scores
from storage.tables.corner_cases import ANY_EVENT
from tests.conftest import LOCAL

N = 3000
NEW = N // 10


def knn_mean(scores: list[dict[str, object]]) -> dict[str, float]:
    return {str(s["clip_id"]): float(np.mean(s["knn_distances"])) for s in scores}  # type: ignore[arg-type]


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
    before = knn_mean(latest_scores(lake, spec))
    batch = add_clips(lake, spec, N, NEW, given=corpus[N : N + NEW])
    second = run_mine(settings, None, MineConfig(batch_rows=128), runner=LOCAL)
    assert (second.mode, second.scored, second.base_run) == ("incremental", NEW, first.run_id)
    assert second.rescored > N // 10  # the old clips whose k nearest a new clip entered
    scores = latest_scores(lake, spec)
    ids = [str(s["clip_id"]) for s in scores]
    embedded = lake.read("embeddings", columns=["clip_id"]).column("clip_id").to_pylist()
    assert len(ids) == len(set(ids)) == N + NEW and set(ids) == set(embedded)
    of_run = {str(s["clip_id"]) for s in scores if s["run_id"] == second.run_id}
    assert set(batch.clip_ids) <= of_run
    old_rows = of_run - set(batch.clip_ids)
    assert len(old_rows) == second.rescored and old_rows <= set(before)
    # The ready list of the incremental run is the top of every clip's current score.
    ready = [str(r["clip_id"]) for r in corner_cases(lake, k=100)]
    assert ready == top(scores)
    assert latest_run(lake, spec) == (second.run_id, first.run_id)
    # A page of clips (the grid, the clip page) reads the same current scores for its ids.
    page = ids[:: max(1, len(ids) // 50)]
    on_page = current_scores(lake, spec, page, columns=["novelty"])
    assert set(on_page) == set(page)
    current = {str(s["clip_id"]): s for s in scores}
    assert all(on_page[c]["run_id"] == current[c]["run_id"] for c in page)
    assert all(on_page[c]["novelty"] == current[c]["novelty"] for c in page)
    assert run_mine(settings, runner=LOCAL).scored == 0  # nothing new: nothing scored again

    full = run_mine(settings, None, MineConfig(full=True), runner=LOCAL)
    assert (full.mode, full.scored) == ("full", N + NEW)
    recomputed = latest_scores(lake, spec)
    assert len(recomputed) == N + NEW and {s["run_id"] for s in recomputed} == {full.run_id}
    # Old clips' knn is what a recompute finds, as it was not before the re-scoring.
    now, truth = knn_mean(scores), knn_mean(recomputed)
    moved = [c for c in before if not np.isclose(before[c], truth[c])]
    assert len(moved) > N // 10
    assert sum(not np.isclose(now[c], truth[c]) for c in truth) < 0.02 * (N + NEW)
    assert all(now[c] <= before[c] + 1e-6 for c in before)
    agreement = len(set(top(scores)) & set(top(recomputed))) / 100
    assert agreement >= 0.95, agreement


def test_a_corpus_grown_past_the_factor_is_refitted(grown: tuple[Settings, Lake, np.ndarray]) -> None:
    settings, lake, corpus = grown
    run_mine(settings, runner=LOCAL)
    add_clips(lake, resolve(lake), N, N, given=corpus[N : 2 * N])  # twice the fitted corpus
    again = run_mine(settings, None, MineConfig(refit_growth=1.5), runner=LOCAL)
    assert (again.mode, again.scored) == ("full", 2 * N)


def test_a_ready_list_whose_clips_fell_ends_where_it_is_still_exact(
    grown: tuple[Settings, Lake, np.ndarray],
) -> None:
    settings, lake, _ = grown
    spec = resolve(lake)
    first = run_mine(settings, None, MineConfig(ready_k=50), runner=LOCAL)
    listed = [r["clip_id"] for r in corner_cases(lake, k=50)]
    scores = {str(s["clip_id"]): s for s in latest_scores(lake, spec)}
    # Re-scored: the 3rd listed clip falls below the whole list, the 10th barely moves.
    fell = {**scores[listed[2]], "novelty": -1.0, "run_id": "next"}
    moved = {**scores[listed[9]], "novelty": scores[listed[9]]["novelty"] - 1e-9, "run_id": "next"}
    rescored = mining_scores.SPEC.conform(pa.Table.from_pylist([fell, moved]))
    lists = merge_corner_cases(lake, spec.ref, first.run_id, [], "next", 50, rescored)
    (any_event,) = [t for t in lists if t.column("event")[0].as_py() == ANY_EVENT]
    # Clips outside the old list may now rank above the one that fell: the list stops at
    # the old 50th score (all it can vouch for) instead of listing it there.
    assert any_event.column("clip_id").to_pylist() == [c for c in listed if c != listed[2]]
    assert any_event.column("rank").to_pylist() == list(range(1, 50))
    assert any_event.column("novelty")[8].as_py() == moved["novelty"]


def test_a_full_run_refits_from_the_last_fit_so_clusters_stay(
    grown: tuple[Settings, Lake, np.ndarray],
) -> None:
    settings, lake, corpus = grown
    spec = resolve(lake)
    run_mine(settings, runner=LOCAL)
    before = {str(s["clip_id"]): s["cluster_id"] for s in latest_scores(lake, spec)}
    add_clips(lake, spec, N, NEW, given=corpus[N : N + NEW])
    run_mine(settings, None, MineConfig(refit=True), runner=LOCAL)
    after = {str(s["clip_id"]): s["cluster_id"] for s in latest_scores(lake, spec)}
    # k-means from a random start would number (and draw) its clusters afresh.
    assert sum(before[c] == after[c] for c in before) >= 0.9 * len(before)


def test_a_full_run_keeps_the_cluster_model_until_asked_or_outgrown(
    grown: tuple[Settings, Lake, np.ndarray],
) -> None:
    """``mine --full`` re-scores and re-ranks every clip against the fit it has (k-means
    fitted again would move every clip's rarity, and the top of the ranking with it);
    ``--refit``, or a corpus past ``refit_growth`` times the fitted one, fits again."""
    settings, lake, corpus = grown
    spec = resolve(lake)
    first = run_mine(settings, runner=LOCAL)

    def fit_of(scores: list[dict[str, object]]) -> dict[str, tuple[object, object]]:
        return {str(s["clip_id"]): (s["rarity"], s["cluster_id"]) for s in scores}

    before = fit_of(latest_scores(lake, spec))
    add_clips(lake, spec, N, NEW, given=corpus[N : N + NEW])
    full = run_mine(settings, None, MineConfig(full=True), runner=LOCAL)
    assert (full.mode, full.scored, full.base_run) == ("full", N + NEW, full.run_id)
    after = fit_of(latest_scores(lake, spec))
    assert all(after[c] == before[c] for c in before)  # the same rarity and cluster, exactly
    kept = MiningModel.load(lake, spec, full.run_id)
    fitted = MiningModel.load(lake, spec, first.run_id)
    assert kept is not None and fitted is not None
    assert (kept.n_fit, kept.trained) == (N + NEW, N)
    assert np.array_equal(kept.centroids, fitted.centroids) and np.array_equal(kept.sizes, fitted.sizes)
    refit = run_mine(settings, None, MineConfig(refit=True), runner=LOCAL)
    again = MiningModel.load(lake, spec, refit.run_id)
    assert again is not None and again.trained == N + NEW
    assert not np.array_equal(again.centroids, kept.centroids)
    assert sum(again.sizes) == N + NEW
    # Grown past the factor of the corpus the centroids were fitted on: a refit, unasked.
    add_clips(lake, spec, N + NEW, N, given=corpus[N + NEW : 2 * N + NEW])
    grown_run = run_mine(settings, None, MineConfig(refit_growth=1.5), runner=LOCAL)
    assert grown_run.mode == "full"
    latest = MiningModel.load(lake, spec, grown_run.run_id)
    assert latest is not None and latest.trained == 2 * N + NEW


def test_near_duplicates_are_pairs_that_drove_alike(tmp_path: Path) -> None:
    """Clips that look alike are one clip twice only if they are two recordings (two
    drives) and the car drove alike: every signal feature within ``dup_signal_z`` of its
    robust scale."""
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    batch = add_clips(lake, resolve(lake), 0, 200, vectors=False)
    rows = lake.read("clips", columns=["clip_id", "drive_id", *SIGNALS]).to_pylist()
    speed = {r["clip_id"]: r["speed_mean"] for r in rows}
    drive = {r["clip_id"]: r["drive_id"] for r in rows}
    _, scale = _signal_stats(_signal_values(lake.read("clips", columns=["clip_id", *SIGNALS])))
    by_speed = sorted(batch.clip_ids, key=lambda c: speed[c])
    gaps = [
        (speed[b] - speed[a], a, b) for a, b in itertools.combinations(by_speed, 2) if drive[a] != drive[b]
    ]
    _, near_a, near_b = min((abs(g), a, b) for g, a, b in gaps)
    same = [
        (abs(speed[b] - speed[a]), a, b)
        for a, b in itertools.combinations(by_speed, 2)
        if drive[a] == drive[b]
    ]
    _, one_a, one_b = min(same)
    far_a, far_b = by_speed[0], by_speed[-1]
    assert drive[far_a] != drive[far_b]
    middle = by_speed[100]
    pairs = _Pairs()
    pairs.a = [near_a, far_a, one_a, middle]
    pairs.b = [near_b, far_b, one_b, "20240101-no-such-clip"]
    groups = pairs.groups(lake, scale, 0.1)
    assert abs(speed[one_a] - speed[one_b]) < 0.1 * scale[SIGNALS.index("speed_mean")]
    assert groups.find(near_a) == groups.find(near_b)  # two drives, speeds within a hair: one clip twice
    assert groups.find(far_a) != groups.find(far_b)  # the same look at 0 and 30 m/s: two
    assert groups.find(one_a) != groups.find(one_b)  # one drive: two moments, however alike
    assert groups.find(middle) == middle  # a partner with no clips row links nothing
    # And through mine: two clips with one vector but other speeds are not duplicates.
    vectors = embeddings_like(200, resolve(lake).dim, seed=3)
    at = {c: i for i, c in enumerate(batch.clip_ids)}
    vectors[at[near_b]] = vectors[at[near_a]]
    vectors[at[far_b]] = vectors[at[far_a]]
    _write_vectors(lake, batch.clip_ids, vectors)
    settings = Settings(lake=lake.uri)
    run_mine(settings, runner=LOCAL)
    dup_of = {str(s["clip_id"]): s["duplicate_of"] for s in latest_scores(lake, resolve(lake))}
    assert {dup_of[near_a], dup_of[near_b]} - {None} and not {dup_of[far_a], dup_of[far_b]} - {None}


def _write_vectors(lake: Lake, ids: list[str], vectors: np.ndarray) -> None:
    import datetime as dt

    from storage.schema import UTC_TS
    from storage.tables import embeddings

    spec = resolve(lake)
    dates = lake.read("clips", columns=["clip_id", "date"]).to_pylist()
    date = {r["clip_id"]: r["date"] for r in dates}
    n = len(ids)
    table = pa.table(
        {
            "clip_id": ids,
            "date": pa.array([date[c] for c in ids], pa.date32()),
            "model_name": [spec.name] * n,
            "model_version": pa.array([spec.version] * n, pa.int32()),
            "vector": pa.array([v.tolist() for v in vectors], pa.list_(pa.float32())),
            "run_id": ["test"] * n,
            "created_at": pa.array([dt.datetime.now(dt.UTC)] * n, UTC_TS),
        }
    )
    lake.append("embeddings", embeddings.SPEC.conform(table))


def test_a_full_run_written_in_slices_keeps_every_clip_once_and_lists_the_exact_top_k(
    grown: tuple[Settings, Lake, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run writes its rows a date range at a time and ranks the ready lists from
    the rows near each list's top only: the same clips, once each, and the same lists as
    ranking every row."""
    import mining.scores.mine

    settings, lake, _ = grown
    spec = resolve(lake)
    monkeypatch.setattr(mining.scores.mine, "_WRITE_ROWS", 700)  # 3,000 clips: five writes
    run = run_mine(settings, None, MineConfig(ready_k=20, full=True), runner=LOCAL)
    scores = latest_scores(lake, spec)
    assert run.scored == N and sorted(str(s["clip_id"]) for s in scores) == sorted(
        lake.read("clips", columns=["clip_id"]).column(0).to_pylist()
    )
    files = pa.table(lake.delta("mining_scores").get_add_actions(flatten=True)).column("path")
    assert len(files) >= 5
    events = {
        r["clip_id"]: r["events"] or [] for r in lake.read("clips", columns=["clip_id", "events"]).to_pylist()
    }
    assert [r["clip_id"] for r in corner_cases(lake, k=20)] == top(scores, 20)
    listed = {e for ev in events.values() for e in ev}
    assert listed, "the catalog lake plants trigger events"
    for event in sorted(listed):
        members = [s for s in scores if event in events[str(s["clip_id"])]]
        assert [r["clip_id"] for r in corner_cases(lake, k=20, event=event)] == top(members, 20), event


def test_a_full_run_scores_the_same_whatever_its_batches(
    grown: tuple[Settings, Lake, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full run keeps its rows in a spill file until the corpus-wide numbers are known and
    fits the fine level from samples drawn a chunk at a time: the same lake mined in
    batches of 16,384 (one a day) and of 333 (ten a day, read back by position and matched
    by id per day when the fine level re-assigns) scores every clip alike, at two levels;
    the spill is gone from ``TMPDIR`` after each run."""
    import shutil
    import tempfile

    settings, lake, _ = grown
    spec = resolve(lake)
    copy = Settings(lake=str(tmp_path / "copy"))
    shutil.copytree(settings.lake, copy.lake)
    spills = tmp_path / "tmp"
    spills.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spills))
    two_levels = {"max_top": 8, "fine_size": 64, "full": True, "ready_k": 20}  # 8 top, 64 fine
    run_mine(settings, None, MineConfig(**two_levels), runner=LOCAL)  # type: ignore[arg-type]
    assert not list(spills.iterdir())
    run_mine(copy, None, MineConfig(batch_rows=333, **two_levels), runner=LOCAL)  # type: ignore[arg-type]
    assert not list(spills.iterdir())
    model = MiningModel.load(lake, spec, latest_run(lake, spec)[1])  # type: ignore[index]
    assert model.two_level and model.clusters == 64
    ours = {s["clip_id"]: s for s in latest_scores(lake, spec)}
    theirs = {s["clip_id"]: s for s in latest_scores(Lake.from_settings(copy), spec)}
    assert len(ours) == N and ours.keys() == theirs.keys()
    for clip, a in ours.items():
        b = theirs[clip]
        same = ("cluster_id", "duplicate_of", "date", "rarity", "signal_rarity")
        assert [a[c] for c in same] == [b[c] for c in same], clip
        # k-NN distances of one query differ in their last bits with the batch it is asked in
        # (BLAS blocks), which may swap two near-equal clips' ranks: a rank moves by 1 / N
        assert a["knn_distances"] == pytest.approx(b["knn_distances"], rel=1e-5), clip
        assert a["novelty"] == pytest.approx(b["novelty"], abs=3 / N), clip
    for ids, vectors in EmbeddingSource(lake, spec).batches():  # each clip's own fine cluster
        assert [ours[c]["cluster_id"] for c in ids.to_pylist()] == model.assign(vectors).tolist()
    listed = [[r["clip_id"] for r in corner_cases(at, k=20)] for at in (lake, Lake.from_settings(copy))]
    assert listed[0] == listed[1] and len(listed[0]) == 20
