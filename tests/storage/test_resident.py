"""The resident filter columns (``storage.resident``) answer every clip filter as a scan of
``clips`` at the same version answers it, and follow the table's commits by the days
they touched."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from storage.filters import ClipFilter, among
from storage.lake import Lake
from storage.resident import CLIP_FILTER_COLUMNS, Resident
from storage.views import read_view
from tests.storage.helpers import clip_rows

DAY0 = dt.datetime(2018, 8, 1, tzinfo=dt.UTC)


def _scan(lake: Lake, where: str) -> list[str]:
    return sorted(lake.read("clips", columns=["clip_id"], where=where).column(0).to_pylist())


def _held(r: Resident, lake: Lake, where: str) -> list[str]:
    got = r.select(lake, where)
    assert got is not None, where
    return sorted(got.to_pylist())


def _wheres(ids: list[str]) -> list[str]:
    filters = [
        ClipFilter(events=["hard_brake"]),
        ClipFilter(events=["hard_brake", "creep"], vehicles=["veh1"]),
        ClipFilter(vehicles=["veh0"]),
        ClipFilter(since=DAY0 + dt.timedelta(hours=8, minutes=5), until=DAY0 + dt.timedelta(days=1, hours=9)),
        ClipFilter(min_speed=10.0, max_speed=120.0),
        ClipFilter(camera="front"),
        ClipFilter(clip_ids=ids[3:40]),
    ]
    out = [f.predicate() for f in filters]
    return [w for w in out if w] + [among(ids[::7]), "speed_mean > 50 AND date = '2018-08-02'"]


def test_every_filter_answers_as_a_scan_does(lake: Lake) -> None:
    lake.append("clips", clip_rows(200, 0))
    lake.append("clips", clip_rows(150, 200))
    r = Resident("clips", CLIP_FILTER_COLUMNS)
    ids = sorted(lake.read("clips", columns=["clip_id"]).column(0).to_pylist())
    for where in _wheres(ids):
        want = _scan(lake, where)
        assert _held(r, lake, where) == want, where
    assert any(_scan(lake, w) for w in _wheres(ids)), "the filters select something"  # it can fail


def test_a_commit_reads_again_only_the_days_it_touched(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["clips"])
    lake.append("clips", clip_rows(90, 0, days=3))
    r = Resident("clips", CLIP_FILTER_COLUMNS)
    where = ClipFilter(events=["hard_brake"]).predicate()
    assert where is not None
    assert _held(r, lake, where) == _scan(lake, where)
    assert r.select(lake, where) is r.select(lake, where)  # answered once per version
    clock = "start_time <= now() AND date <= today()"  # ... but for what moves with the clock
    assert r.select(lake, clock) is not r.select(lake, clock) and _held(r, lake, clock) == _scan(lake, clock)
    first = r.held(lake)
    assert first is not None and first.count == 90 and len(first.rows) == 3

    lake.append("clips", clip_rows(2, 1000, days=1))  # day 2018-08-01 only (ids 1000, 1001)
    assert _held(r, lake, where) == _scan(lake, where)
    second = r.held(lake)
    assert second is not None and second.count == 92
    assert second.rows["2018-08-02"] is first.rows["2018-08-02"]  # untouched days are kept
    assert second.rows["2018-08-03"] is first.rows["2018-08-03"]
    assert second.rows["2018-08-01"] is not first.rows["2018-08-01"]

    lake.delete("clips", "date = '2018-08-02' AND speed_mean < 50")  # a replaced drive's old rows go
    assert _held(r, lake, where) == _scan(lake, where)
    assert _held(r, lake, "true") == _scan(lake, "true")
    third = r.held(lake)
    assert third is not None and third.rows["2018-08-03"] is first.rows["2018-08-03"]

    lake.maintain("test")  # compaction rewrites every day's files: every day read again
    assert _held(r, lake, "true") == _scan(lake, "true")
    assert _held(r, lake, where) == _scan(lake, where)


def test_a_view_pinned_before_a_refresh_reads_its_own_version(tmp_path: Path) -> None:
    """A request whose view pinned ``clips`` before the held rows moved on is answered by
    the engine at its version (None here), never with rows its version lacks."""
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["clips"])
    lake.append("clips", clip_rows(30, 0))
    r = Resident("clips", CLIP_FILTER_COLUMNS)
    with read_view():
        before = _scan(lake, "true")  # pins the version
        other = Lake(str(tmp_path / "lake"))  # another writer's commit, outside this view
        writer = threading.Thread(target=other.append, args=("clips", clip_rows(5, 500)))
        writer.start()
        writer.join()
        with read_view():  # a later request: the held rows move to the new version
            assert len(_held(r, other, "true")) == 35
        assert r.select(lake, "true") is None
        assert _scan(lake, "true") == before and len(before) == 30


def test_what_it_cannot_answer_falls_to_the_engine(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["clips"])
    lake.append("clips", clip_rows(30, 0))
    r = Resident("clips", CLIP_FILTER_COLUMNS)
    assert r.select(lake, "video_uri IS NOT NULL") is None  # a column not held
    assert r.select(lake, "no_such_column = 1") is None
    assert Resident("clips", CLIP_FILTER_COLUMNS, max_rows=29).select(lake, "true") is None  # too big
    assert r.select(lake, "true") is not None


def test_an_empty_table_selects_nothing(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["clips"])
    got = Resident("clips", CLIP_FILTER_COLUMNS).select(lake, "true")
    assert got is not None and len(got) == 0 and got.type == pa.string()


@pytest.mark.parametrize("hostile", ["1; DROP TABLE t", "true) OR (true", "clip_id = '' UNION SELECT 1"])
def test_a_predicate_is_never_more_than_a_predicate(tmp_path: Path, hostile: str) -> None:
    """Predicates come from validated filters (storage.filters); still, what is not one
    expression is refused (the engine answers), never run as more than a filter."""
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables(["clips"])
    lake.append("clips", clip_rows(10, 0))
    assert Resident("clips", CLIP_FILTER_COLUMNS).select(lake, hostile) is None
