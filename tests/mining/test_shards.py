"""An index as shards by date range (``fleetmine index --shard-size``): the shards answer
as one index of every vector would, search, serving and mine read them unchanged, the
``runs`` row says which shards were built where, and a top-up grows only the newest."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pyarrow.compute as pc
import pytest

from fleetmine.bench.catalog_lake import CatalogConfig, add_clips
from jobs.index_job import IndexJob, run_index, run_job
from jobs.mine_job import run_mine
from mining.encoders.registry import resolve
from mining.search import serving
from mining.search.index import ClipIndex, IndexConfig, write_meta
from mining.search.queries import similar
from mining.search.shards import ShardSet, plan_shards
from storage import Lake, Settings
from tests.conftest import LOCAL
from tests.jobs.test_cli import run

DAYS = CatalogConfig(clips_per_day=500)
N = 2000  # four days of 500
FLAT = IndexConfig(kind="flat", shard_size=1000)


def _lake(root: Path) -> tuple[Settings, Lake, np.ndarray, list[str]]:
    settings = Settings(lake=str(root / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    batch = add_clips(lake, resolve(lake), 0, N, DAYS)
    return settings, lake, batch.vectors, batch.clip_ids


@pytest.fixture(scope="module")
def two_lakes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Settings]:
    """The same clips twice: one lake indexed as one flat index, one as flat shards."""
    root = tmp_path_factory.mktemp("shards")
    one, *_ = _lake(root / "one")
    shutil.copytree(root / "one" / "lake", root / "sharded" / "lake")
    sharded = Settings(lake=str(root / "sharded" / "lake"))
    run_index(one, cfg=IndexConfig(kind="flat"), runner=LOCAL)
    run_index(sharded, cfg=FLAT, runner=LOCAL)
    return one, sharded


def test_days_are_cut_in_order_and_never_split() -> None:
    days = [("2024-01-03", 400), ("2024-01-01", 500), ("2024-01-02", 700), ("2024-01-04", 2000)]
    plans = plan_shards(days, 1000)
    assert [(p.first_day, p.last_day, p.n) for p in plans] == [
        ("2024-01-01", "2024-01-01", 500),  # 500 + 700 would pass 1,000
        ("2024-01-02", "2024-01-02", 700),
        ("2024-01-03", "2024-01-03", 400),
        ("2024-01-04", "2024-01-04", 2000),  # a day bigger than a shard is a shard of its own
    ]
    assert plan_shards(days, 1200)[1] == plan_shards(days, 1200)[1] and [
        p.n for p in plan_shards(days, 1200)
    ] == [
        1200,
        400,
        2000,
    ]
    assert sum(p.n for p in plans) == 3600 and [p.number for p in plans] == list(range(len(plans)))
    assert all(a.last_day < b.first_day for a, b in itertools.pairwise(plans))
    assert plan_shards([], 10) == []


def test_shards_answer_as_one_index_of_every_vector(two_lakes: tuple[Settings, Settings]) -> None:
    one, sharded = two_lakes
    single, _ = ClipIndex.load(ClipIndex.location(Lake.from_settings(one), resolve(Lake.from_settings(one))))  # type: ignore[misc]
    lake = Lake.from_settings(sharded)
    loaded, meta = ClipIndex.load(ClipIndex.location(lake, resolve(lake)), mmap=True)  # type: ignore[misc]
    assert isinstance(loaded, ShardSet) and len(loaded.shards) == 2 and len(loaded) == N
    assert [s["n"] for s in meta["shards"]] == [1000, 1000] and meta["n"] == N
    rng = np.random.default_rng(4)
    q = rng.standard_normal((25, loaded.index.d)).astype(np.float32)
    allowed = single.ids.take(rng.choice(N, 300, replace=False))
    for k, among in ((10, None), (10, allowed), (400, allowed), (N + 5, None)):
        d_one, n_one = single.search(q, k, among)
        d_sh, n_sh = loaded.search(q, k, among)
        np.testing.assert_allclose(d_sh, d_one, rtol=1e-5, atol=1e-5)
        for row_one, row_sh, dist in zip(n_one, n_sh, d_one, strict=True):  # the same clips, in the
            assert len(row_sh) == len(row_one) == min(k, N if among is None else 300)  # same order
            assert sorted(zip(np.round(dist, 4), row_sh, strict=True)) == sorted(
                zip(np.round(dist, 4), row_one, strict=True)
            ), (k, among is not None)  # but where two distances tie to the 4th decimal
    clip = single.ids[1500].as_py()
    np.testing.assert_array_equal(loaded.stored_vector(clip), single.stored_vector(clip))


def test_search_and_mine_read_the_shards_as_they_read_one_index(two_lakes: tuple[Settings, Settings]) -> None:
    one, sharded = two_lakes
    a, b = Lake.from_settings(one), Lake.from_settings(sharded)
    probe = a.read("clips", columns=["clip_id"], where="date = '2024-01-03'").column(0)[7].as_py()
    for where in (None, "vehicle_id = 'veh-007'", "date <= '2024-01-02'"):
        want = [(n.clip_id, round(n.distance, 5)) for n in similar(a, clip_id=probe, k=20, where=where)]
        got = [(n.clip_id, round(n.distance, 5)) for n in similar(b, clip_id=probe, k=20, where=where)]
        assert got == want and len(got) == 20, where
    assert isinstance(serving.live(b, resolve(b)).main, ShardSet)
    for settings in (one, sharded):
        run_mine(settings, runner=LOCAL)
    cols = ["clip_id", "novelty", "rarity", "signal_rarity", "knn_distances", "duplicate_of"]
    sa, sb = (lk.read("mining_scores", columns=cols).sort_by("clip_id") for lk in (a, b))
    assert sa.num_rows == sb.num_rows == N
    assert sa.column("clip_id").equals(sb.column("clip_id"))
    np.testing.assert_allclose(sa.column("novelty").to_numpy(), sb.column("novelty").to_numpy(), atol=1e-9)
    knn_a = pc.list_flatten(sa.column("knn_distances")).to_numpy()
    knn_b = pc.list_flatten(sb.column("knn_distances")).to_numpy()
    np.testing.assert_allclose(knn_a, knn_b, rtol=1e-5)
    assert sa.column("duplicate_of").equals(sb.column("duplicate_of"))


def test_the_runs_row_names_each_shard_and_its_node(tmp_path: Path, runner: object) -> None:
    """Each shard is a stage item: a Ray task under the Ray runner (the node id it ran on),
    this process under the sequential one; the set is named when all are written."""
    settings, lake, _, _ = _lake(tmp_path)
    out = run_index(settings, cfg=IndexConfig(shard_size=700), runner=runner)  # type: ignore[arg-type]
    (row,) = lake.read("runs", where=f"run_id = '{out['run_id']}'").to_pylist()
    assert row["kind"] == "index" and row["status"] == "succeeded"
    counts = json.loads(row["counts"])
    shards = counts["shards"]
    assert counts["vectors"] == N and [s["n"] for s in shards] == [500, 500, 500, 500]  # a day each
    assert [(s["first_day"], s["last_day"]) for s in shards] == [
        (f"2024-01-0{d}", f"2024-01-0{d}") for d in (1, 2, 3, 4)
    ]
    assert all(s["node"] for s in shards)
    if type(runner).__name__ == "RayRunner":
        import ray

        assert {s["node"] for s in shards} <= {n["NodeID"] for n in ray.nodes()}
    meta = ClipIndex.read_meta(ClipIndex.location(lake, resolve(lake)))
    assert meta is not None and len(meta["shards"]) == 4 and meta["config"]["shard_size"] == 700
    assert out["vectors"] == N and len(out["shards"]) == 4


def test_a_top_up_grows_the_newest_shard_and_leaves_the_others(tmp_path: Path) -> None:
    settings, lake, _, _ = _lake(tmp_path)
    run_index(settings, cfg=IndexConfig(kind="flat", shard_size=1200), runner=LOCAL)
    loc = ClipIndex.location(lake, resolve(lake))
    before = ClipIndex.read_meta(loc)
    assert before is not None and [s["n"] for s in before["shards"]] == [1000, 1000]
    add_clips(lake, resolve(lake), N, 300, DAYS)  # a fifth day: 200 grow the newest shard, 100 a new one
    out = run_job(IndexJob(shard_size=1200, index_kind="flat"), settings, runner=LOCAL)
    after = ClipIndex.read_meta(loc)
    assert after is not None and out["added"] == 300 and out["rebuilt"] is False
    assert [s["n"] for s in after["shards"]] == [1000, 1200, 100]
    assert after["shards"][0]["files"] == before["shards"][0]["files"]  # the old shard stays as written
    assert after["shards"][1]["files"] != before["shards"][1]["files"]
    assert after["shards"][2]["first_day"] == after["shards"][2]["last_day"] == "2024-01-05"
    names = {p.rsplit("/", 1)[-1] for p in loc.fs.ls(loc.path, detail=False)}
    for s in after["shards"]:
        assert set(s["files"].values()) <= names
    held = serving.live(lake, resolve(lake))
    assert len(held) == N + 300 and isinstance(held.main, ShardSet)
    again = run_job(IndexJob(shard_size=1200, index_kind="flat"), settings, runner=LOCAL)
    assert again["added"] == 0  # nothing new: nothing added twice


def test_a_failed_shard_names_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One shard whose stage fails fails the job before the set is named: the saved build
    is the one before, whole."""
    from mining.search.shards import ShardStage

    settings, lake, _, _ = _lake(tmp_path)
    run_index(settings, cfg=IndexConfig(kind="flat"), runner=LOCAL)
    loc = ClipIndex.location(lake, resolve(lake))
    before = ClipIndex.read_meta(loc)
    built = ShardStage.process_batch

    def second_fails(self: ShardStage, plans: list) -> list:  # type: ignore[type-arg]
        if plans[0].number == 1:
            raise OSError("disk full")
        return built(self, plans)

    monkeypatch.setattr(ShardStage, "process_batch", second_fails)
    with pytest.raises(Exception, match=r"1 shard\(s\) failed, none named"):
        run_index(settings, cfg=IndexConfig(kind="flat", shard_size=1000), runner=LOCAL)
    assert ClipIndex.read_meta(loc) == before
    assert (
        serving.live(lake, resolve(lake)).main.kind == "flat" and len(serving.live(lake, resolve(lake))) == N
    )


def test_ivf_shards_share_one_quantizer_and_refine_once(tmp_path: Path) -> None:
    """IVF shards probe the same lists of one shared quantizer: probing every list is exact,
    the default probe finds what one index would; IVF-PQ shards' candidates are re-ranked
    in one read of the exact vectors per search, not one per shard."""
    settings, lake, vectors, ids = _lake(tmp_path)
    spec = resolve(lake)
    rng = np.random.default_rng(9)
    q = vectors[rng.choice(N, 20, replace=False)] + 0.05 * rng.standard_normal((20, vectors.shape[1]))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    exact = ClipIndex.build(vectors, ids, IndexConfig(kind="flat"))
    _, truth = exact.search(q, 10)
    run_index(
        settings, cfg=IndexConfig(kind="ivf-flat", nlist=16, train_per_list=20, shard_size=1000), runner=LOCAL
    )
    ivf, meta = ClipIndex.load(ClipIndex.location(lake, spec), mmap=True)  # type: ignore[misc]
    assert isinstance(ivf, ShardSet) and len(ivf.shards) == 2 and meta["kind"] == "ivf-flat"
    a, b = (s.ivf.quantizer.reconstruct_n(0, 16) for s in ivf.shards)  # type: ignore[union-attr]
    np.testing.assert_array_equal(a, b)  # one quantizer
    # mapped lists are read where they lie: no prefetch threads started by every search
    assert [faiss.downcast_InvertedLists(s.ivf.invlists).prefetch_nthread for s in ivf.shards] == [0, 0]  # type: ignore[union-attr]
    ivf.configure(IndexConfig(kind="ivf-flat", nlist=16, nprobe=16, shard_size=1000))
    _, every = ivf.search(q, 10)
    assert [set(r) for r in every] == [set(r) for r in truth]
    # Probing 4 of the 16 lists: what one IVF of every vector on that quantizer finds.
    ivf.configure(IndexConfig(kind="ivf-flat", nlist=16, nprobe=4, shard_size=1000))
    coarse = faiss.IndexFlatL2(vectors.shape[1])
    coarse.add(a)
    one = faiss.IndexIVFFlat(coarse, vectors.shape[1], 16)
    one.is_trained = True
    for shard in ivf.shards:  # in the set's order: positions run over the shards
        one.add(shard.vectors_at(np.arange(len(shard))))
    one.nprobe = 4
    want_d2, want_pos = one.search(q, 10)
    got_d2, got_pos = ivf.search_positions(q, 10)
    assert [set(r) for r in got_pos.tolist()] == [set(r) for r in want_pos.tolist()]
    np.testing.assert_allclose(got_d2, want_d2, rtol=1e-5, atol=1e-5)
    run_index(
        settings, cfg=IndexConfig(kind="ivf-pq", nlist=16, train_per_list=20, shard_size=1000), runner=LOCAL
    )
    pq, meta = ClipIndex.load(ClipIndex.location(lake, spec), mmap=True)  # type: ignore[misc]
    assert isinstance(pq, ShardSet) and meta["kind"] == "ivf-pq"
    pq.configure(IndexConfig(kind="ivf-pq", nlist=16, nprobe=16, refine_factor=8, shard_size=1000))
    reads: list[list[str]] = []
    by_id = dict(zip(ids, vectors, strict=True))

    def raw(clip_ids: list[str]) -> np.ndarray:
        reads.append(clip_ids)
        return np.stack([by_id[c] for c in clip_ids])

    # Each shard keeps its exact vectors in a file beside its codes and re-ranks on it:
    # the lake is not read, and the distances are the exact ones.
    assert all(set(s["files"]) == {"index", "ids", "vectors"} for s in meta["shards"])
    dist, refined = pq.search(q, 10, raw=raw)
    assert reads == []
    for row, names, d in zip(q, refined, dist, strict=True):
        want = np.sqrt(((np.stack([by_id[c] for c in names]) - row) ** 2).sum(1))
        np.testing.assert_allclose(d, want, rtol=1e-4, atol=1e-5)
    recall = np.mean([len(set(r) & set(t)) / 10 for r, t in zip(refined, truth, strict=True)])
    assert recall >= 0.9, recall
    # A set saved before shards kept their vectors: one re-rank over both shards' candidates
    # (8 x k of them, where each shard above re-ranked its own 8 x k: a superset), on
    # vectors read from the lake.
    loc = ClipIndex.location(lake, spec)
    old = {
        **meta,
        "shards": [
            {**s, "files": {"index": s["files"]["index"], "ids": s["files"]["ids"]}} for s in meta["shards"]
        ],
    }
    write_meta(loc, old)
    before, _ = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    before.configure(pq.cfg)
    farther, again = before.search(q, 10, raw=raw)
    assert len(reads) == 1  # one re-rank over both shards' candidates
    assert (dist <= farther + 1e-6).all()
    assert np.mean([len(set(r) & set(t)) / 10 for r, t in zip(again, truth, strict=True)]) >= 0.9
    # One shard with its file, one without: still one re-rank of both shards' candidates by
    # their codes (the one with its file reads its rows there), the same answer as above.
    write_meta(loc, {**meta, "shards": [old["shards"][0], meta["shards"][1]]})
    mixed, _ = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    mixed.configure(pq.cfg)
    _, same = mixed.search(q, 10, raw=raw)
    assert same == again and len(reads) == 2
    assert reads[-1] and set(reads[-1]) <= set(mixed.shards[0].ids.to_pylist())  # type: ignore[attr-defined]
    # A plain `fleetmine index` builds such a set again, as a set, its shards with their files.
    rebuilt = run_index(settings, runner=LOCAL)
    shards = (ClipIndex.read_meta(loc) or {})["shards"]
    assert rebuilt["rebuilt"] and len(shards) == 2 and all("vectors" in s["files"] for s in shards)


def test_another_kind_or_size_is_a_new_set(tmp_path: Path) -> None:
    settings, lake, _, _ = _lake(tmp_path)
    run_index(settings, cfg=FLAT, runner=LOCAL)
    loc = ClipIndex.location(lake, resolve(lake))
    out = run_index(settings, cfg=IndexConfig(kind="ivf-flat", nlist=8, shard_size=1000), runner=LOCAL)
    meta = ClipIndex.read_meta(loc)
    assert meta is not None and meta["kind"] == "ivf-flat" and len(meta["shards"]) == 2 and out["rebuilt"]
    run_index(settings, cfg=IndexConfig(shard_size=600), runner=LOCAL)
    meta = ClipIndex.read_meta(loc)
    assert meta is not None and [s["n"] for s in meta["shards"]] == [500, 500, 500, 500]


def test_a_shard_size_that_cuts_too_many_shards_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every search asks every shard: a size that would cut more than MAX_SHARDS (one a day,
    for years) is refused, naming the count, before anything is built."""
    from mining.search import shards

    settings, lake, _, _ = _lake(tmp_path)
    monkeypatch.setattr(shards, "MAX_SHARDS", 3)  # four days of 500: four one-day shards
    with pytest.raises(Exception, match="into 4 shards; at most 3"):
        run_index(settings, cfg=IndexConfig(shard_size=1), runner=LOCAL)
    assert ClipIndex.read_meta(ClipIndex.location(lake, resolve(lake))) is None


def test_the_cli_builds_shards_and_says_which(tmp_path: Path) -> None:
    settings, *_ = _lake(tmp_path)
    out = run("index", "--shard-size", "1000", "--lake", settings.lake)
    assert out.returncode == 0, out.stderr
    assert "index of 2000 vectors (2000 added, rebuilt)" in out.stdout, out.stdout
    assert "shard 0: 2024-01-01..2024-01-02, 1000 vectors, built on " in out.stdout
    assert "shard 1: 2024-01-03..2024-01-04, 1000 vectors, built on " in out.stdout
    refused = run("index", "--shard-size", "0", "--lake", settings.lake)
    assert refused.returncode == 2 and "shard-size" in refused.stderr
