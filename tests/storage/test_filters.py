"""``ClipFilter`` on a local and an s3:// lake: its predicate selects what each field says.

Each filter is a test of its own on a local lake; on S3 (where only the object store
differs, not the predicate) one test runs them all over one lake."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from storage import Lake
from storage.filters import ClipFilter
from storage.tables import clips

D1 = dt.date(2018, 8, 1)
MIDNIGHT = dt.datetime(2018, 8, 2, tzinfo=dt.UTC)


def _rows() -> pa.Table:
    """Two drives: one of 08-01 that runs past midnight (its last clips start on 08-02), one of 08-02."""
    rows: list[dict[str, Any]] = []
    for day, vehicle, first in (
        (D1, "veh'a", MIDNIGHT - dt.timedelta(seconds=30)),
        (D1 + dt.timedelta(1), "b", MIDNIGHT + dt.timedelta(hours=9)),
    ):
        for i in range(6):
            start = first + dt.timedelta(seconds=10 * i)
            for camera in ("front", "rear"):
                rows.append(
                    {
                        "clip_id": f"{day:%Y%m%d}-{vehicle[0]}{i}{camera[0]}",
                        "date": day,
                        "vehicle_id": vehicle,
                        "camera": camera,
                        "group_id": f"{day:%Y%m%d}-{vehicle[0]}g{i}",
                        "start_time": start,
                        "end_time": start + dt.timedelta(seconds=10),
                        "speed_min": float(i),
                        "speed_max": float(i + 5),
                        "events": [["hard_brake"], ["creep"], []][i % 3],
                    }
                )
    return clips.SPEC.conform(pa.Table.from_pylist(rows, schema=clips.SPEC.schema))


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=dt.UTC)


def _expected(rows: list[dict[str, Any]], f: ClipFilter) -> set[str]:
    since, until = _utc(f.since), _utc(f.until)

    def keep(r: dict[str, Any]) -> bool:
        return (
            (not f.events or any(e in r["events"] for e in f.events))
            and (not f.vehicles or r["vehicle_id"] in f.vehicles)
            and (since is None or r["start_time"] >= since)
            and (until is None or r["start_time"] < until)
            and (f.min_speed is None or r["speed_max"] >= f.min_speed)
            and (f.max_speed is None or r["speed_min"] <= f.max_speed)
            and (f.group_id is None or r["group_id"] == f.group_id)
            and (f.camera is None or r["camera"] == f.camera)
        )

    return {r["clip_id"] for r in rows if keep(r)}


FILTERS = [
    ClipFilter(),
    ClipFilter(events=["hard_brake", "creep"]),
    ClipFilter(vehicles=["veh'a"]),
    ClipFilter(since=MIDNIGHT),  # the 08-01 drive's clips after midnight are in
    ClipFilter(until=MIDNIGHT),
    ClipFilter(since=MIDNIGHT - dt.timedelta(seconds=5), until=MIDNIGHT + dt.timedelta(seconds=25)),
    ClipFilter(since=dt.datetime(2018, 8, 2, 0, 0, 5)),  # naive is UTC
    ClipFilter(until=dt.datetime(2018, 8, 2, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    ClipFilter(min_speed=8.0, max_speed=3.0),
    ClipFilter(group_id="20180801-vg4"),
    ClipFilter(group_id="not-a-day", camera="rear"),
    ClipFilter(camera="front", events=["creep"], vehicles=["b", "veh'a"]),
]


@pytest.mark.parametrize("f", FILTERS, ids=lambda f: f.model_dump_json(exclude_defaults=True))
def test_predicate_selects_what_the_fields_say(tmp_path: Path, f: ClipFilter) -> None:
    lake = Lake(str(tmp_path / "lake"))
    lake.create_tables()
    data = _rows()
    lake.append("clips", data)
    got = lake.read("clips", columns=["clip_id"], where=f.predicate()).column("clip_id").to_pylist()
    assert sorted(got) == sorted(_expected(data.to_pylist(), f))


@pytest.mark.s3
def test_every_predicate_selects_the_same_on_an_s3_lake(s3_options: dict[str, str], s3_bucket: str) -> None:
    lake = Lake(f"s3://{s3_bucket}/lake", s3_options)
    lake.create_tables()
    data = _rows()
    lake.append("clips", data)
    for f in FILTERS:
        got = lake.read("clips", columns=["clip_id"], where=f.predicate()).column("clip_id").to_pylist()
        assert sorted(got) == sorted(_expected(data.to_pylist(), f)), f


def test_predicate_prunes_partitions_where_the_day_is_implied() -> None:
    assert ClipFilter().predicate() is None
    assert "date = '2018-08-01'" in str(ClipFilter(group_id="20180801-vg4").predicate())
    assert "date <= '2018-08-02'" in str(ClipFilter(until=MIDNIGHT).predicate())
    assert "date" not in str(ClipFilter(since=MIDNIGHT).predicate())
    assert "date" not in str(ClipFilter(group_id="not-a-day").predicate())
    assert ClipFilter(vehicles=["x' OR '1'='1"]).predicate() == "vehicle_id IN ('x'' OR ''1''=''1')"
