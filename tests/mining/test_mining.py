"""Mining on a small synthetic fleet: registry, encoders, embed job, FAISS, novelty, queries."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import pyarrow as pa
import pytest
from onnx import TensorProto, helper, numpy_helper

from ingest.synth.fleet import SynthConfig
from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from jobs.mine_job import run_mine
from jobs.runner import RayRunner
from mining.encoders import make_encoder
from mining.encoders.embed import load_inputs, load_vectors
from mining.encoders.registry import list_models, register, resolve, set_current
from mining.interfaces import ClipInput
from mining.search.index import ClipIndex, IndexConfig, choose_factory
from mining.search.queries import build_index, corner_cases, similar
from storage import ConfigError, Lake, Settings
from tests.conftest import LOCAL, synthesized


@pytest.fixture(scope="session")
def _ingested_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic fleet, ingested once per session; tests get copies of its lake."""
    root = tmp_path_factory.mktemp("mining")
    synthesized(root / "raw", SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2))
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    resolve(Lake.from_settings(settings))  # registers the default model, as a first `embed` does
    return root


@pytest.fixture
def fleet_lake(_ingested_fleet: Path, tmp_path: Path) -> Settings:
    """A test's own copy of the ingested lake: no test sees another's models, vectors or
    datasets (media files stay shared, read-only, where the clips rows point)."""
    shutil.copytree(_ingested_fleet / "lake", tmp_path / "lake")
    shutil.copy(_ingested_fleet / "raw" / "labels.json", tmp_path / "labels.json")
    return Settings(lake=str(tmp_path / "lake"))


def small_onnx(path: Path, dim: int = 8) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((dim, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["g"]),
            helper.make_node("Flatten", ["g"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dim])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_builtin_vectors_are_deterministic_and_unit_length(fleet_lake: Settings) -> None:
    report = run_embed(fleet_lake, runner=LOCAL)
    lake = Lake.from_settings(fleet_lake)
    n_clips = lake.read("clips", columns=["clip_id"]).num_rows
    assert report.model == "builtin-motion@1" and report.embedded == n_clips
    assert run_embed(fleet_lake, runner=LOCAL).embedded == 0  # incremental
    ids, stored = load_vectors(lake, resolve(lake))
    assert stored.shape == (n_clips, 256)
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
    inputs = load_inputs(lake, ids)
    enc = make_encoder(resolve(lake))
    enc.setup()
    again = enc.process_batch(
        [
            ClipInput(c, j, __import__("json").loads(f))
            for c, j, f in zip(
                *(inputs.column(k).to_pylist() for k in ("clip_id", "jpegs", "features")), strict=True
            )
        ]
    )
    order = {c: i for i, c in enumerate(inputs.column("clip_id").to_pylist())}
    assert np.array_equal(again[[order[c] for c in ids]], stored)


def test_registry_rows_are_immutable_versions_with_one_current(fleet_lake: Settings, tmp_path: Path) -> None:
    lake = Lake.from_settings(fleet_lake)
    with pytest.raises(ConfigError, match="valid kinds"):
        register(lake, "x", "tensorflow", uri="m.pb", dim=4)
    with pytest.raises(ConfigError, match="TorchScript"):
        make_encoder(register(lake, "ts", "torchscript", uri="m.pt", dim=4))
    a = register(
        lake, "tiny", "onnx", uri=str(small_onnx(tmp_path / "a.onnx")), dim=8, params={"input_size": [32, 32]}
    )
    b = register(
        lake, "tiny", "onnx", uri=str(small_onnx(tmp_path / "b.onnx")), dim=8, params={"input_size": [32, 32]}
    )
    assert (a.version, b.version) == (1, 2)
    set_current(lake, "tiny", 2)
    tiny = [m for m in list_models(lake) if m.name == "tiny"]
    assert [m.is_current for m in tiny] == [False, True]
    assert resolve(lake, "tiny").ref == "tiny@2" and resolve(lake, "tiny@1").uri == a.uri


def test_onnx_model_becomes_current_and_backfills_while_old_version_stays_queryable(
    fleet_lake: Settings, tmp_path: Path, ray_local: object
) -> None:
    lake = Lake.from_settings(fleet_lake)
    run_embed(fleet_lake, "builtin-motion@1", runner=LOCAL)
    n_clips = lake.read("clips", columns=["clip_id"]).num_rows
    probe_clip = lake.read("clips", columns=["clip_id"]).column("clip_id")[0].as_py()
    spec = register(
        lake,
        "conv",
        "onnx",
        uri=str(small_onnx(tmp_path / "conv.onnx")),
        dim=8,
        params={"input_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        current=True,
    )
    assert resolve(lake).ref == spec.ref  # the lake's current model is the one made current last
    errors: list[BaseException] = []
    answers: list[int] = []

    def query_old_version() -> None:
        try:
            for _ in range(5):
                answers.append(len(similar(lake, clip_id=probe_clip, k=3, model="builtin-motion@1")))
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=query_old_version)
    reader.start()
    report = run_embed(fleet_lake, runner=RayRunner())  # the back-fill, on Ray, for the current (ONNX) model
    reader.join()
    assert not errors and answers == [3] * 5
    assert report.model == "conv@1" and report.embedded == n_clips
    ids, vecs = load_vectors(lake, spec)
    assert len(ids) == n_clips and vecs.shape == (n_clips, 8)
    old_ids, _ = load_vectors(lake, resolve(lake, "builtin-motion@1"))
    assert len(old_ids) == n_clips
    assert similar(lake, clip_id=probe_clip, k=3, model="conv@1")
    set_current(lake, "builtin-motion", 1)


def test_index_search_filters_and_persistence(fleet_lake: Settings) -> None:
    lake = Lake.from_settings(fleet_lake)
    run_embed(fleet_lake, "builtin-motion@1", runner=LOCAL)
    built = build_index(fleet_lake, "builtin-motion@1")
    assert built["factory"] == "Flat" and built["added"] == built["vectors"]
    assert build_index(fleet_lake, "builtin-motion@1")["added"] == 0  # incremental, nothing new
    loaded = ClipIndex.load(ClipIndex.location(lake, resolve(lake, "builtin-motion@1")))
    assert loaded is not None and len(loaded[0]) == built["vectors"]
    clips = lake.read("clips", columns=["clip_id", "start_time"]).sort_by("start_time").to_pylist()
    first_drive_day = clips[0]["clip_id"][:8]
    where = f"substr(clip_id, 1, 8) = '{first_drive_day}'"
    hits = similar(lake, clip_id=clips[-1]["clip_id"], k=50, where=where, model="builtin-motion@1")
    assert hits and all(h.clip_id.startswith(first_drive_day) for h in hits)
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert choose_factory(50_000, 256, IndexConfig()) == "Flat"
    assert choose_factory(1_000_000, 256, IndexConfig()).startswith("IVF4000,Flat")
    assert choose_factory(20_000_000, 256, IndexConfig()).endswith("PQ32x8")


def test_mine_scores_every_clip_and_corner_cases_rank_by_novelty(fleet_lake: Settings) -> None:
    lake = Lake.from_settings(fleet_lake)
    run_embed(fleet_lake, "builtin-motion@1", runner=LOCAL)
    report = run_mine(fleet_lake, "builtin-motion@1", runner=LOCAL)
    n_clips = lake.read("clips", columns=["clip_id"]).num_rows
    assert report.scored == n_clips and report.reference == "corpus"
    assert report.duplicates >= 1  # the re-recorded stretch
    top = corner_cases(lake, k=5, model="builtin-motion@1")
    assert len(top) == 5 and [r["novelty"] for r in top] == sorted((r["novelty"] for r in top), reverse=True)
    assert all(r["duplicate_of"] is None for r in top)
    braking = corner_cases(lake, k=50, event="hard_brake", model="builtin-motion@1")
    ids = {r["clip_id"] for r in braking}
    with_event = lake.read("clips", columns=["clip_id"], where="array_has(events, 'hard_brake')").column(
        "clip_id"
    )
    assert ids <= set(with_event.to_pylist())


def test_export_on_ray_matches_local_byte_for_byte(fleet_lake: Settings, ray_local: object) -> None:
    from jobs.export_job import export_version
    from mining.datasets.curation import DatasetQuery, create_version

    lake = Lake.from_settings(fleet_lake)
    row = create_version(lake, "all-clips", DatasetQuery(val_fraction=0.3))
    on_ray = export_version(lake, "all-clips", row["version"], shard_bytes=600_000, runner=RayRunner())
    assert len(on_ray["shardlist"]) > 1 and on_ray["num_samples"] == row["clip_count"]
    assert sum(s["nsamples"] for s in on_ray["shardlist"]) == row["clip_count"]
    local = export_version(lake, "all-clips", row["version"], shard_bytes=600_000, runner=LOCAL)
    assert [s["sha256"] for s in local["shardlist"]] == [s["sha256"] for s in on_ray["shardlist"]]
    splits = lake.read("dataset_clips", where="name = 'all-clips'").to_pylist()
    drives = {
        r["clip_id"]: r["drive_id"] for r in lake.read("clips", columns=["clip_id", "drive_id"]).to_pylist()
    }
    by_drive: dict[str, set[str]] = {}
    for m in splits:
        by_drive.setdefault(drives[m["clip_id"]], set()).add(m["split"])
    assert all(len(s) == 1 for s in by_drive.values())  # a drive is never split across train and val


def test_concurrent_creates_of_one_dataset_get_distinct_versions(fleet_lake: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from mining.datasets.curation import DatasetQuery, create_version

    lake = Lake.from_settings(fleet_lake)
    with ThreadPoolExecutor(3) as pool:
        rows = list(pool.map(lambda _: create_version(lake, "raced", DatasetQuery()), range(3)))
    assert sorted(r["version"] for r in rows) == [1, 2, 3]
    members = lake.read("dataset_clips", where="name = 'raced'").to_pylist()
    for r in rows:
        assert sum(m["version"] == r["version"] for m in members) == r["clip_count"] > 0


def test_concurrent_registrations_number_versions_once(lake: Lake) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:  # a new lake: everyone asks for the default model at once
        defaults = list(pool.map(lambda _: resolve(lake), range(3)))
        added = list(pool.map(lambda _: register(lake, "raced", "builtin"), range(3)))
    assert {m.ref for m in defaults} == {"builtin-motion@1"}
    assert sorted(m.version for m in added) == [1, 2, 3]
    models = list_models(lake)
    assert sorted(m.ref for m in models) == ["builtin-motion@1", "raced@1", "raced@2", "raced@3"]
    assert [m.version for m in models if m.name == "raced" and m.is_current] == [1]


def test_eval_mining_scores_the_planted_events(fleet_lake: Settings) -> None:
    import json
    from collections import Counter

    from mining.scores.evaluation import evaluate

    lake = Lake.from_settings(fleet_lake)
    existing = [m.ref for m in list_models(lake) if m.name == "builtin-motion"]
    model = existing[0] if existing else register(lake, "builtin-motion", "builtin").ref
    run_embed(fleet_lake, model, runner=LOCAL)
    run_mine(fleet_lake, model, runner=LOCAL)
    labels = Path(fleet_lake.lake).parent / "labels.json"
    report = evaluate(lake, labels, model)
    planted = Counter(e["type"] for e in json.loads(labels.read_text())["events"])
    assert report.planted == sum(planted.values()) > 0
    assert sum(total for _, total in report.per_type.values()) == report.planted
    assert report.recall >= report.recall_random
    # precision@5 of "more like this" only exists for a type planted at least twice
    assert (report.more_like_this_p5 is None) == all(n < 2 for n in planted.values())


def test_input_plan_covers_every_pending_clip_once_by_date_and_drive(fleet_lake: Settings) -> None:
    from mining.encoders.embed import InputWork, pending, plan_inputs

    lake = Lake.from_settings(fleet_lake)
    spec = register(lake, "plan-check", "builtin")  # a new version: every clip is pending
    todo, _ = pending(lake, spec)
    work = plan_inputs(todo, clips_per_task=7)
    planned = [c for w in work for c in w.clip_ids]
    assert sorted(planned) == todo.column("clip_id").to_pylist() and len(work) > 2
    where = {r["clip_id"]: (r["date"], r["drive_id"]) for r in todo.to_pylist()}
    for w in work:
        assert {where[c][0] for c in w.clip_ids} == {w.date}
        assert {where[c][1] for c in w.clip_ids} == set(w.drive_ids)
        assert len(w.clip_ids) <= 7 or len(w.drive_ids) == 1  # only a drive alone may exceed a task
        assert InputWork.from_json(w.to_json()) == w
    parts = [load_inputs(lake, list(w.clip_ids), w.predicate()) for w in work]
    by_task = pa.concat_tables(parts).sort_by("clip_id")
    whole = load_inputs(lake, todo.column("clip_id").to_pylist()).sort_by("clip_id")
    assert by_task.equals(whole)


def test_evidence_of_one_extreme_score_is_not_averaged_away() -> None:
    """A clip in the top 4 % of signal rarity whose look the fleet has seen many times
    (knn in the bottom 20 %) outranks one in the top 12 % of signals and top 25 % of knn:
    as upper-tail surprisal, not as a mean of percentile ranks (which ranks them the other
    way round: 0.6 x 0.96 + 0.3 x 0.2 = 0.64 < 0.6 x 0.88 + 0.3 x 0.75 = 0.75)."""
    from mining.scores.mine import MineConfig
    from mining.scores.novelty import evidence as _evidence

    cfg = MineConfig()
    ref = np.linspace(0.0, 1.0, 10_001)  # a score's sketch: its value is its percentile rank
    rarity = np.array([0.5, 0.5])
    hard_brake = (np.array([0.20]), rarity[:1], np.array([0.96]))
    stop = (np.array([0.75]), rarity[:1], np.array([0.88]))
    ev = [float(_evidence(cfg, s, (ref, ref, ref))[0]) for s in (hard_brake, stop)]
    assert ev[0] > ev[1]
    ranks = [
        sum(w * float(x[0]) for w, x in zip((0.3, 0.1, 0.6), s, strict=True)) for s in (hard_brake, stop)
    ]
    assert ranks[0] < ranks[1]  # what the mean of ranks would have said
    # Within [0, 1]: 0 at the bottom of every score, near 1 at the top of every one (the
    # top value's rank is a half step from 1: ties count at their middle); rising with each.
    grid = np.linspace(0.0, 1.0, 11)
    for i in range(3):
        scores = [np.full(11, 0.5) for _ in range(3)]
        scores[i] = grid
        e = _evidence(cfg, (scores[0], scores[1], scores[2]), (ref, ref, ref))
        assert np.all(np.diff(e) > 0)
    lo = _evidence(cfg, (np.zeros(1), np.zeros(1), np.zeros(1)), (ref, ref, ref))
    hi = _evidence(cfg, (np.ones(1), np.ones(1), np.ones(1)), (ref, ref, ref))
    assert lo[0] == pytest.approx(0.0, abs=1e-4) and 0.95 < hi[0] <= 1.0


def test_rarity_is_the_share_of_the_corpus_in_a_clips_cluster_however_tight() -> None:
    """Twelve near-identical clips (a dozen hard brakes) among 765: each one's k nearest
    are the other eleven, so a density calls them common; their cluster's share (1.6 %)
    calls them rare, rarer than any clip of the big clusters around them."""
    from mining.scores.mining_model import MiningModel

    rng = np.random.default_rng(0)
    common = rng.normal(size=(753, 8))
    tight = rng.normal(size=(12, 8)) * 0.01 + 3.0
    vectors = np.vstack([common, tight]).astype(np.float32)
    centroids = np.vstack([np.zeros(8), np.full(8, 3.0), np.full(8, -9.0)]).astype(np.float32)
    model = MiningModel("run", 765, centroids, np.zeros(3, np.int64), *(np.zeros(0),) * 5)
    clusters = model.assign(vectors)
    model.sizes = np.bincount(clusters, minlength=3).astype(np.int64)
    assert model.sizes.tolist()[2] == 0 and model.sizes[1] >= 12
    rarity = model.rarity(vectors)
    assert rarity[-12:].min() > rarity[:700].max()
    assert np.allclose(rarity, model.rarity_of(clusters))
    assert model.rarity_of(np.array([2]))[0] == pytest.approx(-np.log(0.5 / 765))  # empty: half a clip
