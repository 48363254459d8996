"""Engine queries, keyset pages and the sorted layout, on a local lake and an s3:// lake where
the storage differs (log listings, file opens, the layout), on a local lake alone where only the
engine's answer is under test."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from storage import Lake
from storage.errors import ConfigError, StorageError
from storage.pages import Position, keyset_page
from storage.query import audit, explain_rows
from tests.conftest import LOCAL_LAKE_ONLY
from tests.storage.helpers import clip_rows

COLS = ["clip_id", "vehicle_id", "events"]


def _ids(lake: Lake, where: str | None = None) -> list[str]:
    return sorted(lake.read("clips", columns=["clip_id"], where=where).column("clip_id").to_pylist())


@LOCAL_LAKE_ONLY
def test_query_runs_predicate_order_and_limit_in_the_engine(lake: Lake) -> None:
    lake.append("clips", clip_rows(60))
    top = lake.query(
        "clips", columns=["clip_id", "speed_mean"], where="speed_mean >= 10", order_by=["clip_id"], limit=5
    )
    assert top.column("clip_id").to_pylist() == _ids(lake, "speed_mean >= 10")[:5]
    assert top.schema.field("clip_id").type == lake.read("clips").schema.field("clip_id").type
    with pytest.raises(StorageError, match="no_such"):
        lake.query("clips", where="no_such = 1")


@LOCAL_LAKE_ONLY
def test_audit_counts_rows_the_scans_decode(lake: Lake) -> None:
    lake.append("clips", clip_rows(60))  # 3 days of 20 clips
    with audit() as tally:
        lake.query("clips", where="date = '2018-08-02'", order_by=["speed_mean"], limit=1)
        lake.read("clips", columns=["clip_id"])
    (_, one_day), (_, everything) = tally.queries
    assert 20 <= one_day < everything and everything >= 60
    assert tally.rows == one_day + everything


@LOCAL_LAKE_ONLY
def test_a_query_answer_is_kept_per_table_version(lake: Lake) -> None:
    lake.append("clips", clip_rows(30))
    first = lake.query("clips", columns=COLS, order_by=["clip_id"], limit=5)
    assert lake.query("clips", columns=COLS, order_by=["clip_id"], limit=5) is first  # not run again
    v = lake.version("clips")
    lake.append("clips", clip_rows(3, start=-3))  # ids below every earlier one: the page changes
    now = lake.query("clips", columns=COLS, order_by=["clip_id"], limit=5)
    assert now.column("clip_id").to_pylist() == _ids(lake)[:5] != first.column("clip_id").to_pylist()
    assert lake.query("clips", columns=COLS, order_by=["clip_id"], limit=5, version=v) is first
    with audit() as tally:  # an audit counts what the engine scans: the query runs
        assert lake.query("clips", columns=COLS, order_by=["clip_id"], limit=5).equals(now)
    assert len(tally.queries) == 1 and tally.rows > 0


@LOCAL_LAKE_ONLY
def test_a_lake_set_to_keep_no_answers_runs_every_query(lake: Lake) -> None:
    from storage import Settings

    lake.append("clips", clip_rows(30))
    settings = Settings(lake=lake.uri, storage_options=lake.root.storage_options, query_cache_mib=0)
    bare = Lake.from_settings(settings)
    first = bare.query("clips", columns=COLS, order_by=["clip_id"], limit=5)
    again = bare.query("clips", columns=COLS, order_by=["clip_id"], limit=5)
    assert again is not first and again.equals(first)


def test_threads_asking_the_same_cold_query_at_once_run_it_once(lake: Lake) -> None:
    """A commit or a server's first second sent some forty threads into the same query at
    once (storage.results: get_or_run); the others wait for the one that runs it."""
    from storage.results import ResultCache

    cache, runs, gate = ResultCache(), [], threading.Event()
    answer = pa.table({"x": [1, 2, 3]})

    def run() -> pa.Table:
        runs.append(1)
        gate.wait(5)
        return answer

    with ThreadPoolExecutor(8) as pool:
        asked = [pool.submit(cache.get_or_run, ("clips", 1, "q"), run) for _ in range(8)]
        time.sleep(0.2)
        gate.set()
        assert all(f.result() is answer for f in asked)
    assert len(runs) == 1 and cache.get(("clips", 1, "q")) is answer

    failed = threading.Event()

    def fails() -> pa.Table:
        runs.append(1)
        failed.wait(5)
        raise StorageError("no such column")

    with ThreadPoolExecutor(4) as pool:
        asked = [pool.submit(cache.get_or_run, ("clips", 1, "bad"), fails) for _ in range(4)]
        time.sleep(0.2)
        failed.set()
        for f in asked:  # each caller gets the error of its own run: a waiter runs it again
            with pytest.raises(StorageError, match="no such column"):
                f.result()
    assert len(runs) == 1 + 4 and cache.get(("clips", 1, "bad")) is None

    lake.append("clips", clip_rows(30))  # the lake's queries go through it
    with ThreadPoolExecutor(6) as pool:
        pages = list(
            pool.map(lambda _: lake.query("clips", columns=COLS, order_by=["clip_id"], limit=5), range(6))
        )
    assert all(p is pages[0] for p in pages)


def test_concurrent_reads_share_log_listings_and_see_every_earlier_commit(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.version("clips")  # the table opened: later calls list its log
    writer = Lake(lake.uri, lake.root.storage_options)
    writer.append("clips", clip_rows(3))  # another process's commit, before the reads
    listings = 0
    real = DeltaTable.update_incremental

    def slow(self: DeltaTable) -> None:
        nonlocal listings
        listings += 1
        time.sleep(0.2)
        real(self)

    monkeypatch.setattr(DeltaTable, "update_incremental", slow)
    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: lake.version("clips"), range(8)))
    assert seen == [writer.version("clips")] * 8
    assert listings <= 2  # one begun before the rest arrived, one after: all eight served


def test_explain_rows_adds_filtered_rows_and_rounds_up() -> None:
    plan = (
        "DeltaScanExec, metrics=[output_rows=2.00 K]\n"
        "  DataSourceExec: file_groups={1 group: [[a]]}, metrics=[output_rows=19, elapsed_compute=1µs, "
        "pushdown_rows_pruned=1.50 K, page_index_rows_pruned=9.00 K]\n"
    )
    assert explain_rows(plan) == 19 + 1510


@LOCAL_LAKE_ONLY
def test_keyset_pages_walk_every_match_once_in_order(lake: Lake) -> None:
    lake.append("clips", clip_rows(90))  # 3 days, hard_brake on every 5th clip
    want = _ids(lake, "array_has(events, 'hard_brake')")
    seen: list[str] = []
    start = None
    while True:
        page = keyset_page(
            lake,
            "clips",
            key="clip_id",
            columns=COLS,
            where="array_has(events, 'hard_brake')",
            limit=4,
            start=start,
        )
        ids = page.rows.column("clip_id").to_pylist()
        assert ids == sorted(ids) and len(ids) <= 4
        seen += ids
        if page.next is None:
            break
        start = page.next
    assert seen == want


@LOCAL_LAKE_ONLY
def test_time_ordered_pages_walk_every_row_once_in_real_time_order(lake: Lake) -> None:
    """Times against id order, ties (broken by id) and rows with no time (last in their
    day): a walk in pages of 4 sees each row once, in (date, start_time, clip_id) order."""
    import pyarrow as pa

    rows = clip_rows(45).to_pylist()
    for i, r in enumerate(rows):  # later ids earlier in the day, pairs of rows at one time
        nine = dt.datetime.combine(r["date"], dt.time(9), dt.UTC)
        r["start_time"] = None if i % 7 == 3 else nine - dt.timedelta(minutes=i // 6)
    lake.append("clips", pa.Table.from_pylist(rows, schema=clip_rows(1).schema))
    key = lambda r: (r["date"], r["start_time"] is None, r["start_time"] or dt.datetime.min, r["clip_id"])  # noqa: E731
    want = [r["clip_id"] for r in sorted(rows, key=key)]
    assert want != sorted(want)  # time order is not id order here
    times = [(r["date"], r["start_time"]) for r in rows if r["start_time"]]
    assert len(set(times)) < len(times)  # and some rows share a time
    seen: list[str] = []
    start = None
    while True:
        page = keyset_page(
            lake, "clips", key="clip_id", columns=COLS, where=None, limit=4, start=start, time="start_time"
        )
        seen += page.rows.column("clip_id").to_pylist()
        if page.next is None:
            break
        start = Position.decode(page.next.encode())  # through the client, as the grid does
    assert seen == want
    with pytest.raises(ConfigError, match="invalid cursor"):  # a cursor of the other order
        keyset_page(
            lake,
            "clips",
            key="clip_id",
            columns=COLS,
            where=None,
            limit=4,
            start=Position(dt.date(2018, 8, 1), "x"),
            time="start_time",
        )


@LOCAL_LAKE_ONLY
def test_a_spent_budget_answers_a_short_page_that_goes_on(lake: Lake) -> None:
    lake.append("clips", clip_rows(6000, days=6))  # six days of 1,000; a filter matching three
    rows = lake.read("clips", columns=["clip_id", "date"]).sort_by("clip_id").to_pylist()
    assert len(rows) == 6000
    rare = [r["clip_id"] for r in rows[::2000]]
    where = "clip_id IN (" + ", ".join(f"'{c}'" for c in rare) + ")"
    seen: list[str] = []
    start, pages = None, 0
    while True:
        with audit() as tally:
            page = keyset_page(
                lake,
                "clips",
                key="clip_id",
                columns=COLS,
                where=where,
                limit=10,
                start=start,
                budget_rows=1000,
            )
        assert tally.rows <= 2 * 1000 + 20
        seen += page.rows.column("clip_id").to_pylist()
        pages += 1
        if page.next is None:
            break
        start = page.next
    assert seen == sorted(rare) and pages > 1


@LOCAL_LAKE_ONLY
def test_a_page_past_the_days_in_reach_goes_on_where_it_stopped(lake: Lake) -> None:
    """A page turns only the days it can reach into Python (the budget's rows, and one
    more day); a walk that runs past them answers a cursor there, so 40 small days read
    with a budget of a few days still yield every match once, in order. The first day is
    smaller than the rest: the first page's span then takes every day in reach (1 + 5 + 5
    + 5 rows against a budget of 12) and ends there with the budget spent only just."""
    rows = clip_rows(200, days=40)  # 40 days of 5 rows, one file each
    first = pc.equal(rows.column("date"), pa.scalar(dt.date(2018, 8, 1), pa.date32()))
    one = pc.equal(rows.column("clip_id"), "20180801-00000000")
    lake.append("clips", rows.filter(pc.or_(pc.invert(first), one)))
    where = "CAST(speed_mean AS BIGINT) % 7 = 0"
    want = [
        r["clip_id"]
        for r in lake.query(
            "clips", columns=["clip_id"], where=where, order_by=["date", "clip_id"]
        ).to_pylist()
    ]
    seen: list[str] = []
    start, pages = None, 0
    while True:
        with audit() as tally:
            page = keyset_page(
                lake, "clips", key="clip_id", columns=COLS, where=where, limit=50, start=start, budget_rows=12
            )
        assert tally.rows <= 12 + 2 * 5, tally.queries  # the budget, the day it starts in, one more
        seen += page.rows.column("clip_id").to_pylist()
        pages += 1
        if page.next is None:
            break
        start = page.next
    assert seen == want and pages >= 10


@LOCAL_LAKE_ONLY
def test_a_few_matches_in_the_cursors_day_do_not_spend_the_budget(lake: Lake) -> None:
    """One match after the cursor in its day of ~190 rows said "1 in 190" and asked for
    the whole budget; a span grows at most fourfold a step, so a page of 20 at 2 % reads
    about what it needs (~1,000 rows), not the 4,000 of the table."""
    lake.append("clips", clip_rows(4000, days=21))  # ~190 rows a day; i % 50 == 0 matches: ~2 %
    where = "CAST(speed_mean AS BIGINT) % 50 = 0"
    first = dt.date(2018, 8, 1)
    day0 = (
        lake.query(
            "clips", columns=["clip_id"], where=f"({where}) AND date = '{first}'", order_by=["clip_id"]
        )
        .column("clip_id")
        .to_pylist()
    )
    start = Position(first, day0[-2])  # one match left in the cursor's day
    with audit() as tally:
        page = keyset_page(lake, "clips", key="clip_id", columns=COLS, where=where, limit=20, start=start)
    assert page.rows.num_rows == 20 and page.rows.column("clip_id").to_pylist()[0] == day0[-1]
    assert tally.rows <= 2000, tally.queries


def test_day_bounds_skip_partitions_without_reading_them(lake: Lake) -> None:
    lake.append("clips", clip_rows(30))
    day = dt.date(2018, 8, 2)
    with audit() as tally:
        page = keyset_page(lake, "clips", key="clip_id", columns=COLS, where=None, limit=100, days=(day, day))
    assert set(page.rows.column("date").to_pylist()) == {day} and page.rows.num_rows == 10
    assert page.next is None and len(tally.queries) == 1


def test_a_query_naming_its_days_opens_their_files_alone_and_answers_as_the_engine(lake: Lake) -> None:
    """``partitions=``: the catalog's routes name the days their predicate bounds, and the
    query reads those days' files only (storage.partitions), so its cost does not follow
    the table's file count; the answer is the engine's, row for row and type for type."""
    lake.append("clips", clip_rows(60))  # 3 days of 20
    lake.append("clips", clip_rows(30, start=1000))  # a second file in each day
    lake.upsert("clips", clip_rows(5, start=1000))  # and a day's file rewritten
    d1, d2, d3 = (dt.date(2018, 8, 1) + dt.timedelta(days=i) for i in range(3))
    one = _ids(lake, f"date = '{d2}'")[7]
    asked = [
        (f"clip_id = '{one}' AND date = '{d2}'", None, None, [d2]),
        (
            "array_has(events, 'hard_brake') AND date >= '2018-08-01' AND date <= '2018-08-02'",
            ["date", "clip_id"],
            7,
            [d1, d2],
        ),
        (f"date = '{d3}' AND speed_mean > 20", ["speed_mean DESC"], 4, [d3]),
        (f"date = '{d3}' AND vehicle_id = 'veh1'", ["start_time ASC NULLS LAST", "clip_id"], None, [d3, d3]),
    ]
    apart = Lake(lake.uri, lake.root.storage_options, query_cache_bytes=0)  # no answer kept from the other
    for where, order, limit, days in asked:
        engine = lake.query("clips", where=where, order_by=order, limit=limit)
        named = apart.query("clips", where=where, order_by=order, limit=limit, partitions=days)
        assert named.num_rows and named.equals(engine), where
    # a predicate the planner folds away reads no column, and still answers (the clip grid's
    # filter by a scenario that hit nothing is "(false) AND date ...")
    nothing = apart.query("clips", columns=COLS, where=f"(false) AND date = '{d1}'", partitions=[d1])
    assert nothing.num_rows == 0 and nothing.column_names == COLS
    with audit() as tally:  # the rows of the days' files: nothing of another day is opened
        lake.query("clips", columns=["clip_id"], where=f"date = '{d2}'", partitions=[d2])
        empty = lake.query(
            "clips", columns=COLS, where="date = '2019-01-01'", partitions=[dt.date(2019, 1, 1)]
        )
    assert tally.queries == [("clips", len(_ids(lake, f"date = '{d2}'"))), ("clips", 0)]
    assert empty.num_rows == 0 and empty.column_names == COLS


@LOCAL_LAKE_ONLY
def test_a_statement_asked_again_at_a_new_version_is_planned_once_and_reads_the_new_rows(
    lake: Lake,
) -> None:
    """The columns a statement scans are planned once per process (storage.query._scanned):
    a catalog route asks the same statements at each version of a busy table."""
    from storage.query import _scanned

    day = dt.date(2018, 8, 2)
    where = f"date = '{day}' AND speed_mean >= 0"
    asked = {"where": where, "order_by": ["clip_id"], "partitions": [day]}
    lake.append("clips", clip_rows(30))
    before = _scanned.cache_info()
    first = lake.query("clips", columns=["clip_id", "vehicle_id"], **asked)  # type: ignore[arg-type]
    lake.append("clips", clip_rows(30, start=1000))  # a new version: the answer is not kept
    again = lake.query("clips", columns=["clip_id", "vehicle_id"], **asked)  # type: ignore[arg-type]
    after = _scanned.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert again.num_rows == 2 * first.num_rows == 20
    assert again.equals(
        lake.query("clips", columns=["clip_id", "vehicle_id"], where=where, order_by=["clip_id"])
    )


def test_a_data_files_columns_are_read_once_and_a_commit_opens_only_its_new_files(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data file never changes, so a lake keeps the columns a query read from it
    (storage.results): under load every page of clips opened the same files again."""
    from storage.partitions import PartitionFiles

    opened: list[list[str]] = []  # the columns of each file opened
    real = PartitionFiles._read_file

    def counted(
        self: PartitionFiles, fs: Any, path: str, value: Any, schema: pa.Schema, remote: bool
    ) -> pa.Table:
        opened.append(schema.names)
        return real(self, fs, path, value, schema, remote)

    monkeypatch.setattr(PartitionFiles, "_read_file", counted)
    day = dt.date(2018, 8, 2)
    lake.append("clips", clip_rows(30))
    lake.append("clips", clip_rows(30, start=30))  # two files of each day
    apart = Lake(lake.uri, lake.root.storage_options, query_cache_bytes=0)  # no answer kept
    asked = {"columns": COLS, "order_by": ["clip_id"], "partitions": [day]}
    first = apart.query("clips", where=f"date = '{day}'", **asked)  # type: ignore[arg-type]
    assert len(opened) == 2 and first.num_rows == 20
    hard = apart.query("clips", where=f"date = '{day}' AND speed_mean > 20", **asked)  # type: ignore[arg-type]
    assert opened[2:] == [["speed_mean"]] * 2  # the same files, for the one column they did not hold
    assert hard.equals(
        lake.query("clips", columns=COLS, where=f"date = '{day}' AND speed_mean > 20", order_by=["clip_id"])
    )
    lake.append("clips", clip_rows(3, start=1000))  # one new file on the day
    after = apart.query("clips", where=f"date = '{day}'", **asked)  # type: ignore[arg-type]
    assert len(opened) == 5 and after.num_rows == 21
    assert after.equals(lake.query("clips", columns=COLS, where=f"date = '{day}'", order_by=["clip_id"]))
    with audit() as tally:  # an audit counts the rows of the files the query reads, kept or not
        apart.query("clips", columns=["clip_id"], where=f"date = '{day}'", partitions=[day])
    assert tally.queries == [("clips", 21)]
    bare = Lake(lake.uri, lake.root.storage_options, query_cache_bytes=0, file_cache_bytes=0)
    for _ in range(2):
        bare.query("clips", where=f"date = '{day}'", **asked)  # type: ignore[arg-type]
    assert len(opened) == 5 + 2 * 3  # a lake set to keep none opens every file each time


def test_a_version_a_plain_parquet_read_cannot_give_goes_through_the_engine(lake: Lake) -> None:
    """Deletion vectors hide rows a Parquet read would return: with the feature on, the
    named days' query is the engine's (and still right)."""
    from deltalake import TableFeatures

    from storage.partitions import partition_files

    lake.append("clips", clip_rows(30))
    assert partition_files(lake.snapshot("clips"), "date").readable
    lake.delta("clips").alter.add_feature(
        TableFeatures.DeletionVectors, allow_protocol_versions_increase=True
    )
    assert not partition_files(lake.snapshot("clips"), "date").readable
    day = dt.date(2018, 8, 1)
    got = lake.query(
        "clips", columns=["clip_id"], where=f"date = '{day}'", order_by=["clip_id"], partitions=[day]
    )
    assert got.column("clip_id").to_pylist() == _ids(lake, f"date = '{day}'")


def test_cursors_are_opaque_and_checked() -> None:
    pos = Position(dt.date(2024, 1, 5), "20240105-abc")
    assert Position.decode(pos.encode()) == pos
    bare = base64.urlsafe_b64encode(b"20240105-abc").decode()  # what older servers handed out
    assert Position.decode(bare) == pos
    at = dt.datetime(2024, 1, 5, 8, 0, 0, 123456, tzinfo=dt.UTC)
    for timed in (Position(pos.date, pos.after, at, True), Position(pos.date, pos.after, None, True)):
        assert Position.decode(timed.encode()) == timed
    hostile = (b"not-a-day", b"2024-01-05@+1|k", b"2024-01-05@1_0|k", b"2024-01-05@" + b"9" * 30 + b"|k")
    for bad in ("!!!", *(base64.urlsafe_b64encode(h).decode() for h in hostile)):
        with pytest.raises(ConfigError, match="invalid cursor"):
            Position.decode(bad)


def test_maintain_sorts_clips_by_id_in_small_row_groups_and_only_once(lake: Lake) -> None:
    for i in range(4):
        lake.append("clips", clip_rows(3000, start=3000 * i, days=1))
    before = _ids(lake)
    report = lake.maintain("test", tables=["clips"], retention_hours=0, enforce_retention=False)
    assert report[0]["files_removed"] == 4 and report[0]["files_added"] >= 1
    assert _ids(lake) == before
    target = before[len(before) // 2]
    with audit() as tally:
        hit = lake.query("clips", where=f"clip_id = '{target}' AND date = '2018-08-01'", limit=1)
    assert hit.column("clip_id").to_pylist() == [target]
    assert tally.rows <= 1024 + 20  # one row group of the sorted file, not the day's 12,000
    again = lake.maintain("test", tables=["clips"], retention_hours=0, enforce_retention=False)
    assert again[0]["files_removed"] == 0  # nothing new since: nothing rewritten
    lake.append("clips", clip_rows(10, start=50_000, days=1))
    third = lake.maintain("test", tables=["clips"], retention_hours=0, enforce_retention=False)
    assert third[0]["files_removed"] >= 2 and len(_ids(lake)) == len(before) + 10
