"""IVF-PQ keeps its exact vectors in a file beside its codes and re-ranks on it.

The file is read by position: through a mapping per read on a local lake, by ranged
reads on S3 (a moto server); a top-up writes the saved rows and the new ones under the
new build's name. A search never reads the ``embeddings`` table for them, and a build
saved before the file existed still re-ranks on the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fleetmine.bench.catalog_lake import add_clips
from mining.encoders.registry import resolve
from mining.search.index import ClipIndex, IndexConfig, write_meta
from mining.search.queries import build_index, similar
from mining.search.vector_file import VectorFile
from storage import Lake, Settings
from storage.errors import StorageError
from storage.objectstore import Location

PQ = IndexConfig(kind="ivf-pq", nlist=16, train_per_list=40, pq_m=16)


def _rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _vector_file_round_trip(loc: Location) -> None:
    rows = _rows(300)
    vf = VectorFile(8)
    vf.append(rows[:120])
    vf.append(rows[120:200])
    pos = np.array([199, 0, 57, 57, 120])
    np.testing.assert_array_equal(vf.read(pos), rows[pos])  # from the temporary file
    vf.write(loc)
    saved = VectorFile.open(loc, 8, 200)
    np.testing.assert_array_equal(saved.read(pos), rows[pos])  # from the saved file
    saved.append(rows[200:])  # a top-up: saved rows, then added ones
    pos = np.array([250, 3, 199, 200, 299, 3])
    np.testing.assert_array_equal(saved.read(pos), rows[pos])
    assert saved.read(np.array([], np.int64)).shape == (0, 8)
    with pytest.raises(StorageError, match=r"outside 0\.\.299"):
        saved.read(np.array([300]))
    with pytest.raises(StorageError, match="outside"):
        saved.read(np.array([-1]))
    with pytest.raises(StorageError, match="written over while it is read"):
        saved.write(loc)
    grown = loc.fs.unstrip_protocol(loc.path + ".grown") if not loc.is_local else loc.path + ".grown"
    saved.write(Location(grown, loc.storage_options))
    np.testing.assert_array_equal(
        VectorFile.open(Location(grown, loc.storage_options), 8, 300).read(np.arange(300)), rows
    )
    with pytest.raises(StorageError, match="its index has 201 vectors"):  # a file short of its index
        VectorFile.open(loc, 8, 201)
    # A reader keeps its rows when a later build's clean-up removes the file's name.
    kept = VectorFile.open(loc, 8, 200)
    loc.fs.rm(loc.path)
    np.testing.assert_array_equal(kept.read(np.array([5, 150])), rows[[5, 150]])


def test_rows_read_back_by_position_on_a_local_lake(tmp_path: Path) -> None:
    _vector_file_round_trip(Location(str(tmp_path / "v.vectors.f32")))


def test_rows_read_back_by_position_on_s3(s3_options: dict[str, str], s3_bucket: str) -> None:
    _vector_file_round_trip(Location(f"s3://{s3_bucket}/idx/v.vectors.f32", s3_options))


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Settings, Lake]:
    settings = Settings(lake=str(tmp_path / "lake"))
    lake = Lake.from_settings(settings)
    lake.create_tables()
    return settings, lake


def _no_lake_reads(ids: list[str]) -> np.ndarray:
    raise AssertionError(f"the embeddings table was read for {len(ids)} vectors")


def test_ivf_pq_reranks_on_its_own_vectors_and_a_top_up_writes_them_again(
    lake: tuple[Settings, Lake],
) -> None:
    settings, lk = lake
    spec = resolve(lk)
    first = add_clips(lk, spec, 0, 3000)
    built = build_index(settings, cfg=PQ)
    assert built["kind"] == "ivf-pq" and built["vectors"] == 3000
    loc = ClipIndex.location(lk, spec)
    index, meta = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    vec_file = Path(loc.join(meta["files"]["vectors"]).path)
    assert vec_file.name == meta["files"]["index"].replace(".faiss", ".vectors.f32")
    by_id = dict(zip(first.clip_ids, first.vectors, strict=True))
    on_disk = np.fromfile(vec_file, np.float32).reshape(-1, 256)
    np.testing.assert_array_equal(on_disk, np.stack([by_id[c] for c in index.ids.to_pylist()]))

    rng = np.random.default_rng(4)
    q = first.vectors[rng.choice(3000, 12, replace=False)] + 0.05 * rng.standard_normal((12, 256))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    dist, names = index.search(q, 10, raw=_no_lake_reads)
    truth = np.argsort(((first.vectors[None] - q[:, None]) ** 2).sum(-1), axis=1)[:, :10]
    ids = np.array(first.clip_ids)
    recall = np.mean([len(set(n) & set(ids[t])) / 10 for n, t in zip(names, truth, strict=True)])
    assert recall >= 0.95, recall
    for row, got, d in zip(q, names, dist, strict=True):  # exact distances, not the codes'
        np.testing.assert_allclose(
            d, np.linalg.norm(np.stack([by_id[c] for c in got]) - row, axis=1), rtol=1e-5
        )
    # a filtered search small enough to be exact, and a clip's own vector, from the file
    allowed = first.clip_ids[::100]
    _, few = index.search(q[:2], 5, allowed=allowed, raw=_no_lake_reads)
    exact_few = [ids[::100][np.argsort(((first.vectors[::100] - r) ** 2).sum(1))[:5]].tolist() for r in q[:2]]
    assert few == exact_few
    np.testing.assert_array_equal(index.stored_vector(first.clip_ids[7]), first.vectors[7:8])  # type: ignore[arg-type]
    hits = similar(lk, clip_id=first.clip_ids[7], k=5)
    assert len(hits) == 5 and first.clip_ids[7] not in {h.clip_id for h in hits}

    more = add_clips(lk, spec, 3000, 500)
    topped = build_index(settings, cfg=PQ)
    assert topped["added"] == 500 and not topped["rebuilt"]
    again, meta2 = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    assert meta2["files"]["vectors"] != meta["files"]["vectors"]
    by_id.update(zip(more.clip_ids, more.vectors, strict=True))
    on_disk = np.fromfile(loc.join(meta2["files"]["vectors"]).path, np.float32).reshape(-1, 256)
    np.testing.assert_array_equal(on_disk, np.stack([by_id[c] for c in again.ids.to_pylist()]))
    _, near_new = again.search(more.vectors[:3], 1, raw=_no_lake_reads)
    assert [n[0] for n in near_new] == more.clip_ids[:3]


def test_an_ivf_pq_build_saved_before_its_vector_file_reranks_on_the_table(
    lake: tuple[Settings, Lake],
) -> None:
    settings, lk = lake
    spec = resolve(lk)
    batch = add_clips(lk, spec, 0, 2000)
    build_index(settings, cfg=PQ)
    loc = ClipIndex.location(lk, spec)
    meta = ClipIndex.read_meta(loc)
    assert meta is not None
    write_meta(loc, {**meta, "files": {k: v for k, v in meta["files"].items() if k != "vectors"}})
    old, _ = ClipIndex.load(loc, mmap=True)  # type: ignore[misc]
    assert old.vectors is None and old.stored_vector(batch.clip_ids[0]) is None
    by_id = dict(zip(batch.clip_ids, batch.vectors, strict=True))
    reads: list[int] = []

    def raw(ids: list[str]) -> np.ndarray:
        reads.append(len(ids))
        return np.stack([by_id[c] for c in ids])

    _, names = old.search(batch.vectors[:4], 3, raw=raw)
    assert len(reads) == 1 and [n[0] for n in names] == batch.clip_ids[:4]
    _, few = old.search(
        batch.vectors[:2], 3, allowed=batch.clip_ids[:50], raw=raw
    )  # probed: no stored subset
    assert len(reads) == 2 and [n[0] for n in few] == batch.clip_ids[:2]
    hits = similar(lk, clip_id=batch.clip_ids[9], k=3)  # the API's path: read from the lake
    assert len(hits) == 3
    for hostile in (
        "../../../etc/passwd",
        "/etc/passwd",
        ".hidden",
        "a/b.f32",
    ):  # meta names files in its folder
        write_meta(loc, {**meta, "files": {**meta["files"], "vectors": hostile}})
        with pytest.raises(StorageError, match="outside its folder"):
            ClipIndex.load(loc, mmap=True)
    write_meta(loc, {**meta, "files": {k: v for k, v in meta["files"].items() if k != "vectors"}})
    again = build_index(settings, cfg=PQ)  # the next build is whole again, with the file
    assert again["rebuilt"] and "vectors" in (ClipIndex.read_meta(loc) or {})["files"]


def test_candidates_are_reranked_in_blocks_of_queries_as_they_would_be_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mine batch's candidates are re-ranked a block of queries at a time (each block's
    rows read once): each query's k exactly nearest of its candidates, nearest first."""
    from mining.search import index as clip_index

    rng = np.random.default_rng(7)
    base = _rows(500, dim=16, seed=1)
    q = _rows(37, dim=16, seed=2)
    cand = np.stack([rng.choice(500, 24, replace=False) for _ in range(37)])
    cand[::3, 20:] = -1  # lists shorter than asked
    cand[5] = -1  # a query with none
    reads: list[int] = []

    def read(uniq: np.ndarray) -> np.ndarray:
        reads.append(len(uniq))
        return base[uniq]

    monkeypatch.setattr(clip_index, "_REFINE_FLOATS", 24 * 16 * 10)  # ten queries a block
    d2, pos = clip_index.refine(q, cand, 5, read)
    assert len(reads) == 4 and max(reads) <= 10 * 24 and d2.shape == pos.shape == (37, 5)
    for i in range(37):
        mine = cand[i][cand[i] >= 0]
        dist = ((base[mine] - q[i]) ** 2).sum(1)
        order = np.argsort(dist, kind="stable")[:5]
        assert pos[i][pos[i] >= 0].tolist() == mine[order].tolist(), i
        np.testing.assert_allclose(d2[i][pos[i] >= 0], dist[order], rtol=1e-5)
    assert (pos[5] == -1).all() and np.isinf(d2[5]).all()
