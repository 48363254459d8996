"""Similarity search at every index kind the project builds, on a real Delta lake.

A catalog lake of synthetic clips (vectors in 1,000 clusters; ``hard_brake`` on
1 % of clips, ``driver_override`` on 0.1 %) is indexed as each kind in turn,
forced through :class:`IndexConfig`; search by clip id, by vector and under the
selective filters must return exactly ``min(k, matching clips)`` neighbours with
recall@10 >= 0.95 against exact search on the allowed subset.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fleetmine.bench.catalog_lake import CatalogBatch, add_clips
from fleetmine.bench.faiss_search import embeddings_like
from mining.encoders.registry import resolve
from mining.search import index as clip_index
from mining.search import serving
from mining.search.index import ClipIndex, IndexConfig, choose_factory
from mining.search.queries import build_index, similar
from mining.search.serving import served_indexes
from mining.search.shards import ShardSet
from storage import ConfigError, Lake, Settings
from storage.errors import NotFoundError, StorageError

N = 12_000  # 1 % = 120 clips, 0.1 % = 12
K = 10
QUERIES = 15

KINDS = {
    "flat": IndexConfig(kind="flat"),
    "ivf-flat": IndexConfig(kind="ivf-flat"),
    # no exact pass over small subsets: filtered search goes through the IVF probes
    "ivf-flat-probed": IndexConfig(kind="ivf-flat", brute_force_below=0),
    "ivf-pq": IndexConfig(kind="ivf-pq", train_sample=4096),
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Lake, CatalogBatch]:
    settings = Settings(lake=str(tmp_path_factory.mktemp("catalog") / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    return settings, lake, add_clips(lake, resolve(lake), 0, N)


def near(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New vectors like these (a clip of a scene seen before): noise, renormalised."""
    out = v + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def exact(base: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    sub = np.flatnonzero(allowed)
    return sub[np.argsort(((base[sub] - q) ** 2).sum(1), kind="stable")[:k]]


@pytest.mark.parametrize("kind", list(KINDS))
def test_search_by_id_by_vector_and_under_filters_at_every_kind(
    catalog: tuple[Settings, Lake, CatalogBatch], kind: str
) -> None:
    settings, lake, batch = catalog
    built = build_index(settings, cfg=KINDS[kind])
    assert built["kind"] == KINDS[kind].kind and built["vectors"] == N
    similar(lake, clip_id=batch.clip_ids[0], k=1)
    assert serving.live(lake, resolve(lake)).main.cfg == KINDS[kind]  # served as built
    ids = np.array(batch.clip_ids)
    rng = np.random.default_rng(1)
    probes = near(batch.vectors[rng.choice(N, QUERIES, replace=False)], rng)
    cases = {
        "by vector": (None, np.ones(N, bool)),
        "by clip id": (None, np.ones(N, bool)),
        "1% of clips": ("array_has(events, 'hard_brake')", batch.events["hard_brake"]),
        "0.1% of clips": ("array_has(events, 'driver_override')", batch.events["driver_override"]),
    }
    recall: dict[str, float] = {}
    for case, (where, allowed) in cases.items():
        hits_per_query = []
        for i in range(QUERIES):
            if case == "by vector":
                q, mask = probes[i], allowed
                hits = similar(lake, vector=probes[i].tolist(), k=K, where=where)
            else:
                j = int(rng.choice(np.flatnonzero(allowed))) if i % 2 else int(rng.integers(N))
                q, mask = batch.vectors[j], allowed.copy()
                mask[j] = False  # a clip is not its own neighbour
                hits = similar(lake, clip_id=ids[j], k=K, where=where)
            assert len(hits) == min(K, int(mask.sum())), (case, i)
            assert [h.distance for h in hits] == sorted(h.distance for h in hits)
            got = {h.clip_id for h in hits}
            assert got <= set(ids[mask]), "only allowed clips"
            hits_per_query.append(len(got & set(ids[exact(batch.vectors, q, mask, K)])) / K)
        recall[case] = float(np.mean(hits_per_query))
    print(f"\nrecall@{K} {kind} ({built['factory']}): {recall}")
    assert min(recall.values()) >= 0.95, recall


def test_fewer_matches_than_k_give_every_match(catalog: tuple[Settings, Lake, CatalogBatch]) -> None:
    settings, lake, batch = catalog
    build_index(settings, cfg=KINDS["ivf-pq"])
    rare = np.flatnonzero(batch.events["driver_override"])
    hits = similar(lake, clip_id=batch.clip_ids[rare[0]], k=50, where="array_has(events, 'driver_override')")
    assert sorted(h.clip_id for h in hits) == sorted(batch.clip_ids[i] for i in rare[1:])
    assert similar(lake, clip_id=batch.clip_ids[0], k=5, where="vehicle_id = 'nobody'") == []
    with pytest.raises(NotFoundError, match="no builtin-motion@1 embedding"):
        similar(lake, clip_id="20240101-notaclip", k=5)
    with pytest.raises(ConfigError, match="dims"):
        similar(lake, vector=[0.1] * 7, k=5)


def test_ivf_probe_widens_until_k_allowed_are_found() -> None:
    x = embeddings_like(6000, 64, clusters=200, sub=16, seed=4)
    index = ClipIndex.build(
        x, [f"c{i}" for i in range(len(x))], IndexConfig(kind="ivf-flat", brute_force_below=0)
    )
    assert index.ivf is not None
    q = x[:1]
    _, lists = index.ivf.quantizer.search(q, index.ivf.nlist)  # lists, nearest first
    _, assigned = index.ivf.quantizer.search(x, 1)
    far = np.isin(assigned.ravel(), lists[0, -index.ivf.nlist // 3 :])  # only the farthest third allowed
    _, pos = index.search_positions(q, K, far)
    assert pos.shape == (1, K) and (pos >= 0).all()
    assert set(pos[0]) == set(exact(x, q[0], far, K))  # the widest probe is exact on IVF-Flat


def test_new_embeddings_join_the_served_index_without_reloading_it(tmp_path: Path) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    spec = resolve(lake)
    first = add_clips(lake, spec, 0, 3000)
    build_index(settings, cfg=IndexConfig(kind="ivf-flat"))
    assert len(similar(lake, clip_id=first.clip_ids[0], k=K)) == K
    served = serving.live(lake, spec)
    assert served.main.read_only  # mapped from its file, never added to
    with pytest.raises(StorageError, match="read-only"):
        served.main.add(first.vectors[:1], ["20240101-other"])
    more = add_clips(lake, spec, 3000, 40)
    hits = similar(lake, clip_id=more.clip_ids[0], k=K)
    assert len(hits) == K
    now = serving.live(lake, spec)
    assert now.main is served.main and now.fresh is not None and len(now.fresh) == 40
    near_new = similar(lake, vector=more.vectors[1].tolist(), k=1)
    assert near_new[0].clip_id == more.clip_ids[1] and near_new[0].distance < 1e-3
    (info,) = [s for s in served_indexes() if s["lake"] == lake.uri]
    assert info["vectors"] == 3040 and info["fresh_vectors"] == 40 and info["bytes"] > 3040 * 256 * 4
    # `fleetmine index` folds them into the saved build, which this process then serves.
    built = build_index(settings)
    assert built["added"] == 40 and not built["rebuilt"] and built["vectors"] == 3040
    assert similar(lake, clip_id=more.clip_ids[2], k=K)
    again = serving.live(lake, spec)
    assert again.build == built["build"] and again.fresh is None and len(again) == 3040


def test_a_request_pinned_before_a_top_up_searches_the_clips_of_its_own_version(tmp_path: Path) -> None:
    """A request reads embeddings at the version its view pinned; another request that
    saw a newer commit first has topped the served index up past it. The pinned one must
    not get neighbours its view has no rows for."""
    from concurrent.futures import ThreadPoolExecutor

    from storage.views import read_view

    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    spec = resolve(lake)
    first = add_clips(lake, spec, 0, 2000)
    build_index(settings)
    more = add_clips(lake, spec, 2000, 20)  # a commit after the build: the fresh part
    with read_view() as old:
        pinned = lake.version("embeddings")

        def elsewhere() -> CatalogBatch:  # another request (a thread without the view): commit, search
            batch = add_clips(lake, spec, 2020, 20)
            assert similar(lake, vector=batch.vectors[0].tolist(), k=1)[0].clip_id == batch.clip_ids[0]
            return batch

        with ThreadPoolExecutor(1) as pool:
            newest = pool.submit(elsewhere).result()
        assert serving.live(lake, spec).embeddings_version == pinned  # not the newer top-up
        near = similar(lake, vector=newest.vectors[0].tolist(), k=5)
        assert not {n.clip_id for n in near} & set(newest.clip_ids)
        assert similar(lake, vector=more.vectors[0].tolist(), k=1)[0].clip_id == more.clip_ids[0]
        assert old.versions["embeddings"] == pinned
    assert similar(lake, vector=newest.vectors[0].tolist(), k=1)[0].clip_id == newest.clip_ids[0]
    assert first.clip_ids


def test_many_clips_embedded_since_the_build_are_kept_in_inverted_lists_and_answer_as_one_index(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past FRESH_IVF_FROM the fresh part is an IVF on the build's centroids: the two parts,
    merged, find exactly what one IVF index of every vector (same centroids, same nprobe)
    finds, with and without a filter."""
    monkeypatch.setattr(clip_index, "FRESH_IVF_FROM", 500)
    vectors = embeddings_like(4000, 64, clusters=40, seed=3)
    ids = pa.array([f"20240101-{i:06d}" for i in range(4000)])
    cfg = IndexConfig(kind="ivf-flat", nprobe=4)
    main = ClipIndex.build(vectors[:3000], ids.slice(0, 3000), cfg)
    assert main.ivf is not None
    live = serving.LiveIndex(main).with_added(vectors[3000:], ids.slice(3000), 1)
    assert live.fresh is not None and live.fresh.kind == "ivf-flat" and len(live) == 4000
    quantizer = faiss.IndexFlatL2(64)
    quantizer.add(main.ivf.quantizer.reconstruct_n(0, main.ivf.nlist))
    one = faiss.IndexIVFFlat(quantizer, 64, main.ivf.nlist, faiss.METRIC_L2)
    one.add(vectors)
    whole = ClipIndex(one, ids, f"IVF{main.ivf.nlist},Flat", cfg)  # every vector in the build's lists
    queries = vectors[::97]
    allowed = ids.filter(pa.array(np.arange(4000) % 7 == 0))
    for subset in (None, allowed):
        d_live, n_live = live.search(queries, 10, subset)
        d_whole, n_whole = whole.search(queries, 10, subset)
        assert n_live == n_whole
        np.testing.assert_allclose(d_live, d_whole, rtol=1e-5)
    more = live.with_added(vectors[:10] + 1.0, pa.array([f"20240102-{i:06d}" for i in range(10)]), 2)
    assert more.fresh is not None and len(more.fresh) == 1010  # a top-up keeps the fresh clips


def test_top_up_when_the_delta_log_no_longer_reaches_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    spec = resolve(lake)
    add_clips(lake, spec, 0, 500)
    assert build_index(settings)["vectors"] == 500
    more = add_clips(lake, spec, 500, 30)
    add_clips(lake, spec, 530, 20)
    table = lake.delta("embeddings")
    table.create_checkpoint()
    log = Path(lake.location("embeddings").path) / "_delta_log"
    for v in range(table.version() + 1):  # log retention: only the checkpoint is left
        (log / f"{v:020d}.json").unlink()
    with caplog.at_level("WARNING", logger="mining.search.queries"):
        built = build_index(settings)  # reads the ids the index lacks instead
    assert "diffing ids" in caplog.text
    assert built["added"] == 50 and built["vectors"] == 550
    assert len(similar(lake, clip_id=more.clip_ids[0], k=3)) == 3


def test_an_ivf_index_saved_without_a_direct_map_still_answers_search_by_id(tmp_path: Path) -> None:
    """Indexes saved before this fix: one file pair, no direct map (reconstruct failed)."""
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    spec = resolve(lake)
    batch = add_clips(lake, spec, 0, 2000)
    index = faiss.index_factory(256, "IVF40,Flat")
    index.train(batch.vectors)
    index.add(batch.vectors)
    loc = ClipIndex.location(lake, spec)
    Path(loc.path).mkdir(parents=True)
    faiss.write_index(index, str(Path(loc.path) / "index.faiss"))
    pq.write_table(
        pa.table({"faiss_id": range(2000), "clip_id": batch.clip_ids}), Path(loc.path) / "ids.parquet"
    )
    version = lake.version("embeddings")
    meta = {"factory": "IVF40,Flat", "n": 2000, "dim": 256, "embeddings_version": version, "config": {}}
    (Path(loc.path) / "meta.json").write_text(json.dumps(meta))
    hits = similar(lake, clip_id=batch.clip_ids[7], k=K, where="array_has(events, 'hard_brake')")
    assert len(hits) == K
    assert build_index(settings)["added"] == 0  # re-saved in the new layout
    assert ClipIndex.read_meta(loc)["files"]  # type: ignore[index]
    assert not (Path(loc.path) / "index.faiss").exists()  # the old generation is gone


def test_kind_is_a_typed_setting() -> None:
    with pytest.raises(ConfigError, match="valid kinds"):
        IndexConfig(kind="hnsw")
    assert choose_factory(50_000, 256, IndexConfig()) == "Flat"
    assert choose_factory(1_000_000, 256, IndexConfig()) == "IVF4000,Flat"
    assert choose_factory(20_000_000, 256, IndexConfig()) == "IVF17888,PQ32x8"
    assert choose_factory(5000, 8, IndexConfig(kind="ivf-pq")) == "IVF282,PQ8x8"


def test_vectors_by_clip_id_come_back_in_order_with_nan_for_unknown_ids(
    catalog: tuple[Settings, Lake, CatalogBatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, lake, batch = catalog
    monkeypatch.setattr(serving, "_READ_CHUNK", 700)  # several IN lists
    pick = np.random.default_rng(3).choice(N, 2000, replace=False)
    ids = [batch.clip_ids[i] for i in pick] + ["20240101-unknown", "not-a-date"]
    got = serving.read_vectors(lake, resolve(lake), ids)
    assert np.array_equal(got[:-2], batch.vectors[pick]) and np.isnan(got[-2:]).all()


def test_a_streamed_build_holds_every_clip_once_and_answers_as_an_in_memory_build(
    catalog: tuple[Settings, Lake, CatalogBatch],
) -> None:
    from mining.encoders.vectors import EmbeddingSource
    from mining.search.index_build import stream_build

    _, lake, batch = catalog
    spec = resolve(lake)
    scans = list(lake.scan("embeddings", ["clip_id"], batch_rows=1000))
    assert max(t.num_rows for t in scans) == 1000 and sum(t.num_rows for t in scans) == N
    for cfg in (IndexConfig(kind="flat"), IndexConfig(kind="ivf-flat", nlist=64, train_per_list=20)):
        built = stream_build(EmbeddingSource(lake, spec, batch_rows=1000), cfg)
        ids = built.ids.to_pylist()
        assert len(ids) == len(set(ids)) == N and set(ids) == set(batch.clip_ids)
        assert cfg.train_size(N, built.factory) == (0 if cfg.kind == "flat" else 64 * 20)
        memory = ClipIndex.build(batch.vectors, batch.clip_ids, cfg)
        q = near(batch.vectors[:QUERIES], np.random.default_rng(5))
        _, got = built.search(q, K)
        _, want = memory.search(q, K)
        overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(got, want, strict=True)])
        assert overlap == 1.0 if cfg.kind == "flat" else overlap >= 0.9


def _mapped_rss_kb(path: str) -> int:
    """Resident kB of this process's mappings of ``path``."""
    rss, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5 and ":" in line.split()[3]:
            inside = line.rstrip().endswith(path)
        elif inside and line.startswith("Rss:"):
            rss += int(line.split()[1])
    return rss


@pytest.mark.parametrize("kind", ["flat", "ivf-flat"])
def test_a_mapped_index_reads_scattered_vectors_exactly_without_mapping_their_pages(
    tmp_path: Path, kind: str
) -> None:
    """A clip's own vector and a filter's allowed subset are read from the file (through a
    mapping of their own, closed once they are copied), equal to the index's own copy, and
    leave the index's mapping as it was."""
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    spec = resolve(lake)
    batch = add_clips(lake, spec, 0, 6000)
    built = ClipIndex.build(batch.vectors, batch.clip_ids, IndexConfig(kind=kind))
    loc = ClipIndex.location(lake, spec)
    meta = built.save(loc, lake.version("embeddings"))
    assert meta["files"]["ids"].endswith(".arrow")
    mapped, _ = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    in_memory, _ = ClipIndex.load(loc, mmap=False)  # type: ignore[misc]
    path = str(Path(loc.join(meta["files"]["index"]).path).resolve())
    pos = np.random.default_rng(3).choice(6000, 1500, replace=False)
    before = _mapped_rss_kb(path)
    got = mapped.vectors_at(pos)
    after = _mapped_rss_kb(path)
    assert np.array_equal(got, in_memory.index.reconstruct_batch(pos.astype(np.int64)))
    assert np.array_equal(got, batch.vectors[pos])
    assert after - before < 256, f"{after - before} kB mapped for 1,500 scattered vectors"
    assert np.array_equal(mapped.stored_vector(batch.clip_ids[42]), batch.vectors[42:43])  # type: ignore[arg-type]


def test_training_samples_do_not_depend_on_the_order_rows_are_read() -> None:
    """A table's files come back in the order of their random names: k-means and an IVF
    quantizer trained on a sample must see it in one order (clip id), or the same
    vectors give other clusters (another rarity for every clip) on another run."""
    from mining.encoders.vectors import ArraySource
    from mining.search.index_build import gather

    rng = np.random.default_rng(7)
    ids = pa.array([f"20240101-{i:06d}" for i in range(500)])
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    shuffled = rng.permutation(500)
    chosen = pa.array([f"20240101-{i:06d}" for i in range(0, 500, 3)])
    a = gather(ArraySource(ids, vectors, batch_rows=64), chosen)
    b = gather(ArraySource(ids.take(pa.array(shuffled)), vectors[shuffled], batch_rows=50), chosen)
    assert a.shape == (len(chosen), 16) and np.array_equal(a, b)
    assert np.array_equal(a, vectors[::3])  # in clip id order


def test_a_filter_asked_again_reuses_its_mask_and_vectors_until_the_index_grows() -> None:
    """The same allowed array gives the same (read-only) mask and the same kept subset of
    vectors, so a filter's next search costs the index alone; an add forgets them, and the
    next search under the filter finds the clip it added."""
    rng = np.random.default_rng(11)
    base = near(rng.standard_normal((3000, 32)).astype(np.float32), rng)
    ids = [f"c{i:05d}" for i in range(3000)]
    index = ClipIndex.build(base, ids, IndexConfig(kind="flat"))
    allowed = pa.array([*ids[::20], "c99999"], pa.string())  # the last one not held yet
    mask = index.mask(allowed)
    assert index.mask(allowed) is mask and not mask.flags.writeable
    assert index.mask(pa.array([*ids[::20], "c99999"], pa.string())) is mask  # the same ids, sent again
    assert index.mask(pa.array(ids[::20], pa.string())) is not mask
    q = near(base[40:41], rng)
    for _ in range(2):  # the second search reads the kept subset
        _, names = index.search(q, K, allowed)
        assert names[0] == [ids[i] for i in exact(base, q[0], mask, K)]
    generation = index._generation
    subset = clip_index._SUBSETS.get((generation, clip_index.digest(np.flatnonzero(mask))))
    assert subset is not None and np.array_equal(subset, base[mask])

    index.add(q, ["c99999"])
    grown = index.mask(allowed)
    assert grown is not mask and len(grown) == 3001 and grown[-1]
    assert index._generation != generation  # its kept subsets are another index's now
    _, names = index.search(q, K, allowed)
    assert names[0][0] == "c99999"

    # a set of shards forgets its masks when a shard grows, as one index does
    shards = [ClipIndex.build(base[:1500], ids[:1500]), ClipIndex.build(base[1500:], ids[1500:])]
    info = [{"number": i, "first_day": "", "last_day": "", "n": 1500} for i in range(2)]
    sharded = ShardSet(shards, info, IndexConfig(kind="flat", shard_size=2000))
    mask = sharded.mask(allowed)
    assert sharded.mask(allowed) is mask and not mask[-1]
    sharded.add(q, ["c99999"])
    grown = sharded.mask(allowed)
    assert grown is not mask and len(grown) == 3001 and grown[-1]
