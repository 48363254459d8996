"""A set of shards held by Ray actors (``mining.search.holders``), on a local Ray: a search
across the holders answers what the set answers in one process, to the bit (flat and
IVF-PQ with refine, filtered and not); ``mine`` driven over held shards writes the scores
and corner-case lists a local run writes; a holder killed mid-use gives no short answer.
(The same over a two-node cluster through the CLI: tests/jobs/test_cluster.py.)"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from fleetmine.bench.catalog_lake import CatalogConfig, add_clips
from jobs.index_job import run_index
from jobs.mine_job import run_mine
from mining.encoders.registry import resolve
from mining.scores.mine import MineConfig, ahead
from mining.search.holders import HeldIndex, ShardUnavailable
from mining.search.index import ClipIndex, IndexConfig
from mining.search.serving import read_vectors
from mining.search.shards import ShardSet
from storage import Lake, Settings
from tests.conftest import LOCAL

DAYS = CatalogConfig(clips_per_day=500)
N = 2000  # four days of 500
BATCHES = MineConfig(batch_rows=512)
KINDS = {
    "flat": IndexConfig(kind="flat", shard_size=700),  # a shard a day
    "ivf-pq": IndexConfig(kind="ivf-pq", nlist=16, train_per_list=20, refine_factor=4, shard_size=1000),
}


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory, ray_local: object) -> dict[str, Settings]:
    """The same 2,000 clips, indexed as flat shards and as IVF-PQ shards (a lake each)."""
    root = tmp_path_factory.mktemp("held")
    first = Settings(lake=str(root / "flat" / "lake"))
    lake = Lake.from_settings(first)
    lake.create_tables()
    add_clips(lake, resolve(lake), 0, N, DAYS)
    shutil.copytree(root / "flat" / "lake", root / "ivf-pq" / "lake")
    out = {}
    for name, cfg in KINDS.items():
        out[name] = Settings(lake=str(root / name / "lake"))
        run_index(out[name], cfg=cfg, runner=LOCAL)
    return out


def assert_mined_alike(la: Lake, lb: Lake) -> None:
    """Two lakes' ``mining_scores`` and ``corner_cases`` hold the same rows (but when computed)."""
    cols = ["clip_id", "run_id", "cluster_id", "rarity", "signal_rarity"]
    sa, sb = (
        lk.read("mining_scores", columns=[*cols, "duplicate_of", "novelty"]).sort_by("clip_id")
        for lk in (la, lb)
    )
    assert sa.num_rows == sb.num_rows and sa.select(cols).equals(sb.select(cols))
    assert sa.column("duplicate_of").equals(sb.column("duplicate_of"))
    # Distances as FAISS's BLAS sums them: a holder runs its own process, so a sum may round
    # differently in its last bit; the neighbours are the same. A new clip's novelty is where
    # its evidence falls among the full run's quantiles: one whose evidence lies on a
    # quantile then lands one step (1 / 2,000 here) to either side (1 run in 4 alone, at
    # eb615ff too). Every other clip's novelty is the same, and so are the lists below.
    na, nb = (t.column("novelty").to_numpy() for t in (sa, sb))
    np.testing.assert_allclose(na, nb, rtol=0, atol=1e-3)
    assert int((na != nb).sum()) <= 2, np.flatnonzero(na != nb)
    knn_a, knn_b = (
        lk.read("mining_scores", columns=["clip_id", "knn_distances"]).sort_by("clip_id") for lk in (la, lb)
    )
    offsets = [t.column(1).combine_chunks().offsets for t in (knn_a, knn_b)]
    assert offsets[0].equals(offsets[1])
    np.testing.assert_allclose(
        pc.list_flatten(knn_a.column(1)).to_numpy(),
        pc.list_flatten(knn_b.column(1)).to_numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    ca, cb = (
        lk.read(
            "corner_cases",
            columns=["run_id", "event", "rank", "clip_id", "novelty", "rarity", "cluster_id"],
        ).sort_by([("run_id", "ascending"), ("event", "ascending"), ("rank", "ascending")])
        for lk in (la, lb)
    )
    assert ca.num_rows > 0 and ca.num_rows == cb.num_rows
    # the same clips in each list, each at most one place from where the other run put it
    # (a clip a novelty step moved may pass its neighbour in the list)
    place = [
        {
            (r["run_id"], r["event"], r["clip_id"]): (r["rank"], r["rarity"], r["cluster_id"])
            for r in t.to_pylist()
        }
        for t in (ca, cb)
    ]
    assert place[0].keys() == place[1].keys()
    for key, (rank, rarity, cluster) in place[0].items():
        other = place[1][key]
        assert abs(rank - other[0]) <= 1 and (rarity, cluster) == other[1:], (key, other)
    np.testing.assert_allclose(
        np.sort(ca.column("novelty").to_numpy()), np.sort(cb.column("novelty").to_numpy()), rtol=0, atol=1e-3
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_held_shards_answer_what_the_set_answers_in_one_process(
    lakes: dict[str, Settings], kind: str
) -> None:
    lake = Lake.from_settings(lakes[kind])
    spec = resolve(lake)
    loaded, _ = ClipIndex.load(ClipIndex.location(lake, spec), mmap=True)  # type: ignore[misc]
    assert isinstance(loaded, ShardSet) and len(loaded.shards) >= 2
    ids = lake.read("clips", columns=["clip_id", "vehicle_id"]).sort_by("clip_id")
    rng = np.random.default_rng(3)
    probe = sorted(rng.choice(ids.column("clip_id").to_pylist(), 40, replace=False).tolist())
    q = read_vectors(lake, spec, probe) + 0.01 * rng.standard_normal((40, spec.dim)).astype(np.float32)
    one_vehicle = ids.filter(pc.equal(ids.column("vehicle_id"), ids.column("vehicle_id")[0])).column(
        "clip_id"
    )
    few = ids.column("clip_id").slice(1500, 4)  # fewer allowed than k, all on one shard

    def raw(c: list[str]) -> np.ndarray:
        return read_vectors(lake, spec, c)

    held = HeldIndex.start(lake, spec, holders=2)
    assert held is not None
    try:
        served = sorted(s for i in held.infos for s in i["shards"])
        assert served == list(range(len(loaded.shards))) and len(held.infos) == 2
        assert all(i["vectors"] < N for i in held.infos)  # none holds the whole index
        for allowed in (None, one_vehicle, few):
            for r in (None, raw):
                want_d, want_n = loaded.search(q, 10, allowed, r)
                got_d, got_n = held.search(q, 10, allowed, r)
                assert got_n == want_n, (kind, allowed is None, r is None)
                np.testing.assert_allclose(
                    got_d, want_d, rtol=1e-5, atol=1e-5
                )  # BLAS threads: see the mine test
                assert all(len(row) == min(10, N if allowed is None else len(allowed)) for row in got_n)
    finally:
        held.stop()


def test_mine_over_held_shards_writes_what_a_local_run_writes(
    lakes: dict[str, Settings], tmp_path: Path
) -> None:
    """Full, then incremental after a new day: scores, clusters, duplicates and the ready
    lists equal a run in one process over a copy of the same lake and shards."""
    held_lake = tmp_path / "held"
    shutil.copytree(lakes["flat"].lake, held_lake)
    shutil.copytree(lakes["flat"].lake, tmp_path / "local")
    local = Settings(lake=str(tmp_path / "local"))
    on_ray = Settings(lake=str(held_lake), ray_address="local")  # the module's Ray is already up
    for day in (0, 1):
        if day:
            for s in (local, on_ray):
                lk = Lake.from_settings(s)
                add_clips(lk, resolve(lk), N, 400, DAYS)  # a fifth day
        # Batches of 512: the held run asks for the next batch's k-NN while it takes in the
        # last (mine.ahead); the local run takes them in turn.
        a = run_mine(local, cfg=BATCHES, runner=LOCAL)
        b = run_mine(on_ray, cfg=BATCHES)
        assert (a.mode, a.scored) == (b.mode, b.scored) and b.scored > 0, (a, b)
        la, lb = Lake.from_settings(local), Lake.from_settings(on_ray)
        assert_mined_alike(la, lb)
    (row,) = lb.read("runs", where=f"run_id = '{b.run_id}'").to_pylist()
    import json

    holders = json.loads(row["counts"])["holders"]
    assert sorted(s for h in holders for s in h["shards"]) == list(range(5)), (
        holders
    )  # topped up: a new shard


def test_a_killed_holder_gives_no_short_answer(lakes: dict[str, Settings]) -> None:
    """SIGKILL one holder: a search that may not wait raises ShardUnavailable (the API's 503),
    never answers from the other holder's shards alone; Ray restarts it and the next is whole."""
    lake = Lake.from_settings(lakes["flat"])
    spec = resolve(lake)
    q = read_vectors(lake, spec, lake.read("clips", columns=["clip_id"]).column(0).to_pylist()[:8])
    held = HeldIndex.start(lake, spec, holders=2)
    assert held is not None
    try:
        whole = held.search(q, 10)
        os.kill(held.infos[0]["pid"], signal.SIGKILL)
        time.sleep(0.5)
        try:
            d, names = held.search(q, 10)
        except ShardUnavailable as exc:
            assert "retry" in str(exc)
        else:  # already restarted: then the answer is whole
            assert names == whole[1]
        held.wait_s = 60.0  # as mine waits: for the restart, then the whole answer
        d, names = held.search(q, 10)
        assert names == whole[1]
        np.testing.assert_array_equal(d, whole[0])
    finally:
        held.stop()


def test_holders_are_dealt_over_the_nodes_by_their_cpus() -> None:
    """Placement is named, not left to Ray's best-effort SPREAD: consecutive holders on
    different nodes, no node past its CPUs while another has room, dead and CPU-less
    nodes never chosen."""
    from mining.search.holders import placements

    def node(name: str, cpus: float, alive: bool = True) -> dict[str, object]:
        return {"NodeID": name, "Alive": alive, "Resources": {"CPU": cpus} if cpus else {}}

    nodes = [node("b", 1), node("a", 3), node("dead", 8, alive=False), node("gcs-only", 0)]
    assert placements(nodes, 4, 1.0) == ["a", "b", "a", "a"]
    assert placements(nodes, 2, 1.0) == ["a", "b"]
    assert placements(nodes, 6, 1.0) == ["a", "b", "a", "a", "a", "b"]  # past the room: dealt on
    assert placements(nodes, 3, 0.0) == ["a", "b", "a"]  # a server's holders ask for no CPU
    assert placements([node("dead", 8, alive=False)], 2, 1.0) == [None, None]


def test_a_shared_set_is_found_again_by_name_and_outlives_the_open_it_replaced(
    lakes: dict[str, Settings],
) -> None:
    """Servers' holders are named: a second open finds the first's actors (one copy of the
    index, not one per replica or reopen); ending the first open, as its retirement does,
    spares the holders the second still asks; a lost handle set marks itself ``lost``."""
    lake = Lake.from_settings(lakes["flat"])
    spec = resolve(lake)
    q = read_vectors(lake, spec, lake.read("clips", columns=["clip_id"]).column(0).to_pylist()[:3])
    first = HeldIndex.start(lake, spec, holders=2, shared=True)
    second = HeldIndex.start(lake, spec, holders=2, shared=True)
    assert first is not None and second is not None
    try:
        ids = [h._actor_id for h in second.holders]
        assert [h._actor_id for h in first.holders] == ids  # the same actors
        first.stop(keep=frozenset(ids))
        loaded, _ = ClipIndex.load(ClipIndex.location(lake, spec), mmap=True)  # type: ignore[misc]
        assert second.search(q, 5)[1] == loaded.search(q, 5)[1] and not second.lost
        first.holders = list(second.holders)
        first.stop()  # now really ended: the next call through the other handles fails
        with pytest.raises(ShardUnavailable):
            second.search(q, 5)
        assert second.lost
    finally:
        second.stop()


def test_clips_embedded_since_the_build_are_kept_by_the_newest_shards_holder(
    lakes: dict[str, Settings], tmp_path: Path
) -> None:
    """Served with held shards, the clips embedded since the build are in the newest shard's
    holder, not in the server (one copy for every replica), each with its commit: the
    answers are those of a server holding the set itself, as of the latest commit and as of
    an older one a read view pinned (which sees none of the later commit's clips); the
    holder killed, it is topped up again and the next answer is whole."""
    from mining.search import serving

    shutil.copytree(lakes["flat"].lake, tmp_path / "lake")
    lake = Lake.from_settings(Settings(lake=str(tmp_path / "lake")))
    spec = resolve(lake)
    first = add_clips(lake, spec, N, 300, DAYS)  # a fifth day, in two commits
    v1 = lake.version("embeddings")
    second = add_clips(lake, spec, N + 300, 200, DAYS)
    v2 = lake.version("embeddings")
    probe = [*first.clip_ids[:4], *second.clip_ids[:4], "unknown"]
    q = np.nan_to_num(read_vectors(lake, spec, probe[:-1]))
    plain = serving.live(lake, spec)
    serving.hold_shards(True)
    serving.forget(lake, spec)
    try:
        held = serving.live(lake, spec)
        assert isinstance(held.main, HeldIndex) and held.fresh is None  # none of them here
        assert plain.fresh is not None and len(plain.fresh) == held.fresh_held == 500
        (info,) = held.main.ray.get([held.main.newest.info.remote()])
        assert (info["fresh"], info["covers"], info["shards"][-1]) == (500, v2, 3)
        others = [i for i in held.main.infos if i["pid"] != info["pid"]]
        assert others and all(i["fresh"] == 0 for i in others)
        want_d, want_n = plain.search(q, 10)
        got_d, got_n = held.search(q, 10)
        assert got_n == want_n and set(second.clip_ids[:4]) <= {c for row in got_n for c in row}
        np.testing.assert_allclose(got_d, want_d, rtol=1e-5, atol=1e-5)
        # As of the first commit: the second's clips are not there, as in the set held here.
        old_p, old_h = (serving._as_of(lake, spec, s, v1, None) for s in (plain, held))
        (want_n1, got_n1) = (s.search(q, 10)[1] for s in (old_p, old_h))
        assert got_n1 == want_n1 and not set(second.clip_ids) & {c for row in got_n1 for c in row}
        # The newest shard's holder killed: restarted empty, topped up again, the answer whole.
        os.kill(info["pid"], signal.SIGKILL)
        time.sleep(0.5)
        held.main.wait_s = 60.0
        assert held.search(q, 10)[1] == want_n
        (again,) = held.main.ray.get([held.main.newest.info.remote()])
        assert again["pid"] != info["pid"] and (again["fresh"], again["covers"]) == (500, v2)
    finally:
        serving.hold_shards(False)
        serving.forget(lake, spec, now=True)  # none left for a later test's search to end


def test_the_fresh_part_answers_as_of_a_commit_and_is_never_topped_up_across_a_gap(
    lakes: dict[str, Settings],
) -> None:
    """The newest shard's holder's fresh part, asked directly (in this process): a top-up
    from past what it covers answers Stale; a clip embedded again is its new vector from its
    new commit on and its old one before; a top-up another replica already made adds
    nothing; a search past what it covers answers Stale."""
    import pyarrow as pa

    from mining.search.holders import ShardHolder, Stale, sharded_meta

    lake = Lake.from_settings(lakes["flat"])
    spec = resolve(lake)
    meta = sharded_meta(lake, spec)
    assert meta is not None
    v = int(meta["embeddings_version"])
    holder = ShardHolder(lake, spec, None, meta, list(range(len(meta["shards"]))))
    far = np.full((2, spec.dim), 50.0, np.float32)
    far[1] += 1.0  # x2 a little beyond x1
    ids = pa.array(["x1", "x2"])
    assert holder.top_up(ids, far, np.array([v + 1, v + 1]), v + 1, v + 1) == Stale(v)
    assert holder.top_up(ids, far, np.array([v + 1, v + 1]), v, v + 1) == 2
    moved = np.full((1, spec.dim), 90.0, np.float32)
    assert holder.top_up(pa.array(["x1"]), moved, np.array([v + 2]), v + 1, v + 2) == 3
    assert holder.top_up(ids, far, np.array([v + 1, v + 1]), v, v + 1) == 3  # another replica's: nothing

    def fresh(as_of: int, q: np.ndarray) -> list[str]:
        hits = holder.search(q, 2, None, as_of)
        assert not isinstance(hits, Stale)
        (part,) = [h for h in hits if h.number == len(meta["shards"])]
        return list(part.names.to_pylist()[: len(part.pos[0])])

    assert fresh(v + 1, far[:1]) == ["x1", "x2"]  # x1 where it was first
    assert fresh(v + 2, far[:1]) == ["x2", "x1"]  # x1 moved away at v + 2
    assert fresh(v + 2, moved) == ["x1", "x2"]
    assert all(h.number < len(meta["shards"]) for h in holder.search(far[:1], 2, None, v))  # none at v
    assert holder.search(far[:1], 2, None, v + 3) == Stale(v + 2)
    assert holder.holds(ids).tolist() == [True, True]
    assert holder.holds(ids, fresh=False).tolist() == [False, False]


def test_a_two_level_fit_beside_holders_holding_every_cpu_runs_and_fits_what_a_local_run_fits(
    lakes: dict[str, Settings], tmp_path: Path
) -> None:
    """The holders of a mine ask one CPU each, every CPU of the module's Ray: the fine
    level's fit tasks ask none, so they run (asking one each, they would wait forever), and
    every clip falls in the cluster a run in one process gives it."""
    from mining.scores.mine import MineConfig
    from mining.scores.mining_model import MiningModel

    two = MineConfig(max_top=4, fine_size=25)  # two levels at 2,000 clips
    shutil.copytree(lakes["flat"].lake, tmp_path / "held")
    shutil.copytree(lakes["flat"].lake, tmp_path / "local")
    on_ray = Settings(lake=str(tmp_path / "held"), ray_address="local")  # the module's Ray
    local = Settings(lake=str(tmp_path / "local"))
    b = run_mine(on_ray, None, two)
    a = run_mine(local, None, two, runner=LOCAL)
    la, lb = Lake.from_settings(local), Lake.from_settings(on_ray)
    model = MiningModel.load(lb, resolve(lb), b.run_id)
    assert model is not None and model.two_level and model.clusters > 4
    (row,) = lb.read("runs", where=f"run_id = '{b.run_id}'").to_pylist()
    assert "holders" in row["counts"]  # the k-NN was the holders'
    ca, cb = (
        lk.read("mining_scores", columns=["clip_id", "cluster_id"]).sort_by("clip_id") for lk in (la, lb)
    )
    assert a.scored == b.scored == N and ca.equals(cb)


def test_many_fresh_clips_move_to_inverted_lists_on_the_newest_shards_centroids(
    lakes: dict[str, Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past FRESH_IVF_FROM the newest holder's fresh part is an IVF on the newest shard's
    trained centroids, as the fresh part in one process is (``serving._fresh_part``), and
    grows in place (a top-up costs the clips it adds): it finds what that one finds, as of
    each commit, a clip embedded again included."""
    import pyarrow as pa

    from fleetmine.bench.faiss_search import embeddings_like
    from mining.search import index as clip_index
    from mining.search.holders import ShardHolder, sharded_meta

    monkeypatch.setattr(clip_index, "FRESH_IVF_FROM", 300)
    shutil.copytree(lakes["flat"].lake, tmp_path / "lake")
    settings = Settings(lake=str(tmp_path / "lake"))
    # brute_force_below 100: a filtered search of the fresh part probes its lists, as at scale
    cfg = IndexConfig(kind="ivf-flat", nlist=16, nprobe=4, shard_size=1000, brute_force_below=100)
    run_index(settings, cfg=cfg, runner=LOCAL)
    lake = Lake.from_settings(settings)
    spec = resolve(lake)
    meta = sharded_meta(lake, spec)
    assert meta is not None and len(meta["shards"]) == 2
    v = int(meta["embeddings_version"])
    holder = ShardHolder(lake, spec, None, meta, [0, 1])
    newest = holder.shards[1][2]
    assert newest.ivf is not None and newest.exact
    extra = embeddings_like(500, spec.dim, seed=11)
    ids = pa.array([f"x{i:04d}" for i in range(500)])
    assert holder.top_up(ids.slice(0, 200), extra[:200], np.full(200, v + 1), v, v + 1) == 200
    assert holder.fresh is not None and holder.fresh.ivf is None  # flat while few
    assert holder.top_up(ids.slice(200), extra[200:], np.full(300, v + 2), v + 1, v + 2) == 500
    assert holder.fresh.ivf is not None and holder.fresh.ivf.nlist == 16

    def fresh(q: np.ndarray, as_of: int) -> list[list[str]]:
        hits = holder.search(q, 5, None, as_of)
        assert isinstance(hits, list)
        (part,) = [h for h in hits if h.number == 2]
        names = np.asarray(part.names.to_pylist(), object).reshape(part.pos.shape)
        return [list(row[pos >= 0]) for row, pos in zip(names, part.pos, strict=True)]

    # what one process keeps past FRESH_IVF_FROM: the same lists on the same centroids
    one = ClipIndex.ivf_beside(newest, extra, ids)
    queries = extra[::25] + 0.01
    _, pos = one.search_positions(queries, 5, np.ones(500, bool))  # filtered, as a holder's as_of is
    assert fresh(queries, v + 2) == [ids.take(pa.array(row)).to_pylist() for row in pos]
    moved = extra[7:8] + 3.0
    assert holder.top_up(ids.slice(0, 1), moved, np.array([v + 3]), v + 2, v + 3) == 501
    assert fresh(moved, v + 3)[0][0] == "x0000" and "x0000" not in fresh(extra[:1], v + 3)[0]
    assert fresh(extra[:1], v + 2)[0][0] == "x0000" and "x0000" not in fresh(moved, v + 2)[0]


def test_ahead_keeps_the_order_and_at_most_depth_asks_under_way() -> None:
    """What the held mine's batch loop relies on: answers in the items' order whatever order
    they finish in, never more than ``depth`` asks at once, a failure raised where its item
    is taken in (and nothing asked past the window after it); depth 1 asks in this thread."""
    import threading

    lock = threading.Lock()
    running, most, asked, threads = [0], [0], [], set()

    def slow(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            asked.append(i)
            threads.add(threading.get_ident())
        time.sleep(0.02 * (i % 3))  # later items finish first
        with lock:
            running[0] -= 1
        if i == 7:
            raise ValueError("item 7")
        return i * i

    got = [(i, r) for i, r in ahead(range(7), slow, 3)]
    assert got == [(i, i * i) for i in range(7)] and most[0] == 3, (got, most)
    assert threading.get_ident() not in threads
    asked.clear()
    taken = []
    with pytest.raises(ValueError, match="item 7"):
        for i, _ in ahead(range(20), slow, 2):
            taken.append(i)
    assert taken == list(range(7)) and max(asked) <= 8, (taken, asked)
    threads.clear()
    assert [r for _, r in ahead(range(3), slow, 1)] == [0, 1, 4] and threads == {threading.get_ident()}
