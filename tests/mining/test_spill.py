"""What a full ``mine`` holds per clip is a few numbers: its rows wait in a spill file
(:mod:`mining.scores.spill`), its samples are drawn a chunk of ids at a time, and its
feature rows are read one day at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from fleetmine.bench.catalog_lake import CatalogConfig, add_clips
from mining.encoders.registry import resolve
from mining.encoders.vectors import lowest, sample_ids
from mining.scores.clusters import sample_members
from mining.scores.novelty import SIGNALS, day_features, features_of, signal_values
from mining.scores.spill import Spill, day_batches
from storage import Lake
from storage.errors import TableNotFoundError

IDS = pa.array([f"20240101-{i:06d}" for i in range(5000)], pa.string())


def chunks(ids: pa.Array, size: int) -> list[pa.Array]:
    return [ids.slice(s, size) for s in range(0, len(ids), size)]


@pytest.mark.parametrize("n", [1, 700, 4999, 5000, 6000])
def test_a_sample_drawn_in_chunks_is_the_one_drawn_from_every_id(n: int) -> None:
    whole = sample_ids(IDS, n, seed=3)
    assert len(whole) == min(n, len(IDS))
    for size in (1, 333, 4096):
        assert sorted(sample_ids(iter(chunks(IDS, size)), n, seed=3).to_pylist()) == sorted(whole.to_pylist())
    assert sorted(sample_ids(IDS, n, seed=4).to_pylist()) != sorted(whole.to_pylist()) or n >= len(IDS)


def test_each_clusters_sample_is_its_members_lowest_hashes_whatever_the_chunks() -> None:
    rng = np.random.default_rng(0)
    tops = rng.integers(0, 6, len(IDS))
    want = np.array([0, 10, 2_000, 50, 0, 1])  # 0: not split, so not sampled
    got = sample_members(iter(chunks(IDS, 777)), tops, want, seed=9)
    assert sorted(got) == [1, 2, 3, 5]
    for t, drawn in got.items():
        members = IDS.filter(pa.array(tops == t))
        assert sorted(drawn.to_pylist()) == sorted(sample_ids(members, int(want[t]), 9 + t).to_pylist())
    assert len(got[2]) == int((tops == 2).sum())  # fewer members than asked: all of them
    with pytest.raises(ValueError, match="ids for"):
        sample_members(IDS.slice(0, 10), tops, want, seed=9)


def _features(day: str, n: int, start: int) -> pa.Table:
    return pa.table(
        {
            "clip_id": pa.array([f"{day.replace('-', '')}-{i:04d}" for i in range(start, start + n)]),
            "date": pa.array([dt.date.fromisoformat(day)] * n, pa.date32()),
            "start_time": pa.array(np.arange(start, start + n) * 10_000_000, pa.int64()).cast(
                pa.timestamp("us", "UTC")
            ),
            "events": pa.array([["hard_brake"] if i % 7 == 0 else [] for i in range(start, start + n)]),
            **{s: pa.array(np.arange(start, start + n, dtype=np.float64) + j) for j, s in enumerate(SIGNALS)},
        }
    )


def test_the_spill_gives_back_every_row_in_order(tmp_path: Path) -> None:
    spill = Spill(tmp_path, 3)
    parts = [("2024-01-01", _features("2024-01-01", 40, 0)), ("2024-01-01", _features("2024-01-01", 25, 40))]
    parts.append(("2024-01-02", _features("2024-01-02", 30, 0)))
    knns = [np.arange(len(f) * 3, dtype=np.float32).reshape(-1, 3) for _, f in parts]
    knns[1][:, 2] = np.nan  # fewer than k neighbours found
    for (day, f), knn in zip(parts, knns, strict=True):
        spill.add(day, f, knn)
    with pytest.raises(ValueError, match="added apart"):
        spill.add("2024-01-01", _features("2024-01-01", 1, 99), np.zeros((1, 3)))
    spill.close()
    assert spill.rows == 95 and spill.days == {"2024-01-01": (0, 65), "2024-01-02": (65, 95)}
    tables = list(spill.tables(["clip_id", "knn", "events"]))
    assert pa.concat_arrays([t.column("clip_id").combine_chunks() for t in tables]).to_pylist() == [
        c for _, f in parts for c in f.column("clip_id").to_pylist()
    ]
    got = np.vstack([spill.knn_of(t) for t in tables])
    assert np.array_equal(got, np.vstack(knns), equal_nan=True)
    assert spill.ids_of("2024-01-02").to_pylist() == parts[2][1].column("clip_id").to_pylist()
    every = np.vstack([signal_values(f) for _, f in parts])
    for j, column in enumerate(spill.signals()):
        assert np.array_equal(column, every[:, j])
    times = spill.start_times({"20240101-0041", "20240102-0003", "elsewhere"})
    assert sorted(times) == ["20240101-0041", "20240102-0003"]
    assert times["20240101-0041"] == dt.datetime(1970, 1, 1, 0, 6, 50, tzinfo=dt.UTC)


def test_a_days_batches_carry_their_feature_rows_and_a_clip_filed_elsewhere_is_found(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    spec = resolve(lake)
    add_clips(lake, spec, 0, 60, CatalogConfig(clips_per_day=30))
    from mining.encoders.vectors import EmbeddingSource

    source = EmbeddingSource(lake, spec, batch_rows=7)
    seen = 0
    for day, ids, vectors, rows in day_batches(lake, source, ["2024-01-02", "2024-01-01"], features=True):
        assert rows is not None and rows.column("clip_id").combine_chunks().equals(ids)
        assert len(vectors) == len(ids) <= 7
        assert {d.isoformat() for d in rows.column("date").to_pylist()} == {day}
        seen += len(ids)
    assert seen == 60
    first = day_features(lake, "2024-01-01")
    other = lake.read("clips", columns=["clip_id"], where="date = '2024-01-02'").column(0).combine_chunks()
    found = features_of(lake, other.slice(0, 3), first)  # not in the day's rows: read by id
    assert found.column("clip_id").to_pylist() == other.slice(0, 3).to_pylist()
    with pytest.raises(TableNotFoundError, match="clips rows missing for embedded clips"):
        features_of(lake, pa.array(["20240101-nosuchclip"]), first)


def test_the_lowest_keys_break_ties_by_id_whatever_the_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from mining.encoders import vectors

    ids = pa.array(["e", "d", "c", "b", "a"])
    assert sorted(lowest(np.array([5, 1, 5, 5, 2], np.uint32), ids, 3).tolist()) == [1, 3, 4]  # d, b, a
    monkeypatch.setattr(vectors, "id_hashes", lambda part, seed: np.zeros(len(part), np.uint32))
    every = IDS.take(pa.array(np.random.default_rng(1).permutation(len(IDS))))  # all keys tie
    for size in (97, 5000):
        assert sample_ids(iter(chunks(every, size)), 10, seed=3).to_pylist() == IDS.slice(0, 10).to_pylist()


def test_a_spill_without_neighbours_and_one_left_by_an_error(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with Spill(tmp_path / "none", 0) as spill:
        spill.add("2024-01-01", _features("2024-01-01", 4, 0), np.zeros((4, 0), np.float32))
    (t,) = spill.tables(["knn"])
    assert spill.knn_of(t).shape == (4, 0)
    (tmp_path / "failed").mkdir()
    with pytest.raises(RuntimeError), Spill(tmp_path / "failed", 2) as failed:
        failed.add("2024-01-01", _features("2024-01-01", 4, 0), np.zeros((4, 2), np.float32))
        raise RuntimeError("the k-NN pass failed")
    assert failed._sink.closed and all(f.closed for f in failed._signals)


def test_a_clips_row_filed_under_another_date_than_its_id_names_is_found(tmp_path: Path) -> None:
    from storage.tables import clips

    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    add_clips(lake, resolve(lake), 0, 10, CatalogConfig(clips_per_day=10))
    row = lake.read("clips").slice(0, 1).to_pylist()[0]
    row.update(clip_id="20240105-misfiled", date=dt.date(2024, 1, 1))  # its id names the 5th
    lake.append("clips", clips.SPEC.conform(pa.Table.from_pylist([row], schema=lake.read("clips").schema)))
    found = features_of(lake, pa.array(["20240105-misfiled"]), day_features(lake, "2024-01-02"))
    assert found.column("clip_id").to_pylist() == ["20240105-misfiled"]
