"""The storage suite: every test that touches storage runs against a local lake and an s3://
lake (moto); the three whose answer comes before storage is touched, on a local lake."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from storage import Lake, StorageError, Txn
from storage.errors import SchemaError, TableNotFoundError
from storage.tables import TABLES
from tests.conftest import LOCAL_LAKE_ONLY
from tests.storage.helpers import clip_rows


def count(lake: Lake, table: str, where: str | None = None) -> int:
    return lake.read(table, columns=["clip_id"], where=where).num_rows


def history_ops(lake: Lake, table: str) -> list[dict[str, object]]:
    return list(lake.delta(table).history())


def test_create_tables_is_idempotent(lake_uri: tuple[str, dict[str, str]]) -> None:
    lake = Lake(*lake_uri)  # made here, not copied by the fixture from a template
    assert sorted(lake.create_tables()) == sorted(TABLES)
    assert {t.name for t in lake.info()} == set(TABLES)
    assert lake.create_tables() == []
    assert all(t.version == 0 and t.rows == 0 for t in lake.info())


def test_append_and_read_with_predicates(lake: Lake) -> None:
    lake.append("clips", clip_rows(30))
    assert count(lake, "clips") == 30
    # Partition predicate: one day in three.
    day2 = lake.read("clips", where="date = '2018-08-02'")
    assert day2.num_rows == 10
    assert set(day2.column("date").to_pylist()) == {dt.date(2018, 8, 2)}
    # Partition + column predicate.
    fast = lake.read(
        "clips", columns=["clip_id", "speed_mean"], where="date = '2018-08-02' AND speed_mean > 20"
    )
    assert sorted(fast.column("speed_mean").to_pylist()) == [22.0, 25.0, 28.0]
    # A predicate on a list column (events) and a timestamp.
    braking = lake.read("clips", where="array_has(events, 'hard_brake')")
    assert braking.num_rows == 6
    late = lake.read("clips", where="start_time >= '2018-08-01T08:02:00Z' AND date = '2018-08-01'")
    assert late.num_rows == sum(1 for i in range(30) if i % 3 == 0 and 10 * i >= 120)
    # Reads hand back the table's own types, not DataFusion's view types.
    assert day2.schema.field("clip_id").type == pa.string()


def test_read_prunes_files_by_partition(lake: Lake) -> None:
    for day_block in range(3):
        lake.append("clips", clip_rows(9, start=day_block * 9))
    files = lake.delta("clips").file_uris(file_pruning_predicate="date = '2018-08-03'")
    assert files and all("date=2018-08-03" in f for f in files)
    assert len(files) < len(lake.delta("clips").file_uris())


@LOCAL_LAKE_ONLY  # the engine's and the schema's answer: no storage in it
def test_bad_predicate_is_a_storage_error(lake: Lake) -> None:
    with pytest.raises(StorageError, match="no_such_column"):
        lake.read("clips", where="no_such_column = 1")


@LOCAL_LAKE_ONLY  # the engine's and the schema's answer: no storage in it
def test_unknown_table_lists_known(lake: Lake) -> None:
    with pytest.raises(TableNotFoundError, match="known:"):
        lake.read("clipz")


@LOCAL_LAKE_ONLY  # the engine's and the schema's answer: no storage in it
def test_conform_rejects_unknown_columns(lake: Lake) -> None:
    with pytest.raises(SchemaError, match="unknown columns"):
        lake.append("clips", clip_rows(2).append_column("oops", pa.array([1, 2])))


def test_upsert_updates_and_inserts(lake: Lake) -> None:
    lake.append("clips", clip_rows(10))
    changed = clip_rows(4, start=8).set_column(
        clip_rows(4).schema.get_field_index("speed_mean"), "speed_mean", pa.array([100.0] * 4)
    )
    metrics = lake.upsert("clips", changed)
    assert metrics["num_target_rows_updated"] == 2
    assert metrics["num_target_rows_inserted"] == 2
    data = lake.read("clips", columns=["clip_id", "speed_mean"])
    assert data.num_rows == 12
    assert sorted(data.column("speed_mean").to_pylist())[-4:] == [100.0] * 4


def test_same_run_committed_twice_lands_once(lake: Lake) -> None:
    rows = clip_rows(12)
    first = lake.append("clips", rows, Txn("ingest", 1))
    second = lake.append("clips", rows, Txn("ingest", 1))
    assert not first.already_committed and second.already_committed
    assert count(lake, "clips") == 12
    writes = [h for h in history_ops(lake, "clips") if h.get("operation") == "WRITE"]
    assert len(writes) == 1 and writes[0]["fleetmine.app_id"] == "ingest"
    # Committing raw actions of the same run again is also a no-op.
    actions = lake.writer("clips").write(rows)
    assert lake.commit("clips", actions, Txn("ingest", 1)).already_committed
    assert count(lake, "clips") == 12
    # The next run number lands.
    lake.append("clips", clip_rows(3, start=100), Txn("ingest", 2))
    assert count(lake, "clips") == 15
    assert lake.last_run_number("ingest", ["clips", "drives"]) == 2


def test_idempotent_upsert(lake: Lake) -> None:
    lake.upsert("clips", clip_rows(5), Txn("curate", 1))
    assert lake.upsert("clips", clip_rows(5), Txn("curate", 1)) == {"already_committed": True}
    assert count(lake, "clips") == 5


def _write_part(lake: Lake, part: int) -> list[object]:
    return lake.writer("clips").write(clip_rows(25, start=part * 25))  # type: ignore[return-value]


def test_distributed_write_of_8_ray_tasks_commits_once(lake: Lake, ray_local: object) -> None:
    import ray

    write = ray.remote(_write_part)
    before = lake.version("clips")
    parts = ray.get([write.remote(lake, i) for i in range(8)])
    assert count(lake, "clips") == 0, "nothing is visible before the commit"
    actions = [a for p in parts for a in p]
    result = lake.commit("clips", actions, Txn("distributed", 7))
    assert result.rows == 200 and result.version == before + 1
    assert count(lake, "clips") == 200
    assert lake.commit("clips", actions, Txn("distributed", 7)).already_committed
    assert count(lake, "clips") == 200 and lake.version("clips") == before + 1


def test_ray_data_datasink_commits_once(lake: Lake, ray_local: object) -> None:
    import ray

    from storage.datasink import DeltaTxnDatasink

    blocks = [clip_rows(10, start=i * 10) for i in range(8)]
    before = lake.version("clips")
    ds = ray.data.from_arrow(blocks)
    ds.write_datasink(DeltaTxnDatasink(lake, "clips", Txn("embed", 1)))
    assert count(lake, "clips") == 80 and lake.version("clips") == before + 1
    ray.data.from_arrow(blocks).write_datasink(DeltaTxnDatasink(lake, "clips", Txn("embed", 1)))
    assert count(lake, "clips") == 80 and lake.version("clips") == before + 1


def _py(code: str, lake: Lake) -> list[str]:
    env = {**os.environ, "LAKE_URI": lake.uri, "LAKE_OPTS": json.dumps(lake.root.storage_options)}
    return [sys.executable, "-c", textwrap.dedent(code)], env  # type: ignore[return-value]


KILLED_JOB = """
    import json, os, sys, time
    from storage import Lake
    from tests.storage.helpers import clip_rows
    lake = Lake(os.environ["LAKE_URI"], json.loads(os.environ["LAKE_OPTS"]))
    actions = []
    for i in range(8):
        actions += lake.writer("clips").write(clip_rows(10, start=1000 + 10 * i))
    print("WROTE", len(actions), flush=True)
    time.sleep(600)
    lake.commit("clips", actions)
"""


def test_job_killed_before_commit_leaves_table_unchanged(lake: Lake) -> None:
    lake.append("clips", clip_rows(5))
    version = lake.version("clips")
    cmd, env = _py(KILLED_JOB, lake)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("WROTE"), line
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert count(lake, "clips") == 5 and lake.version("clips") == version
    fs = lake.location("clips").fs
    data_files = [p for p in fs.find(lake.location("clips").path) if p.endswith(".parquet")]
    assert len(data_files) > 1, "the killed job's files are orphans on storage"
    # Vacuum (here with no retention) removes the orphans and keeps the rows.
    lake.maintain("test", tables=["clips"], retention_hours=0, enforce_retention=False)
    left = [
        p for p in fs.find(lake.location("clips").path) if p.endswith(".parquet") and "_delta_log" not in p
    ]
    assert len(left) == len(lake.delta("clips").file_uris())
    assert count(lake, "clips") == 5


APPENDER = """
    import json, os, sys
    from storage import Lake
    from tests.storage.helpers import clip_rows
    lake = Lake(os.environ["LAKE_URI"], json.loads(os.environ["LAKE_OPTS"]))
    base = int(sys.argv[1])
    for i in range(8):
        lake.append("clips", clip_rows(3, start=base + 3 * i))
"""


def test_concurrent_appends_from_two_processes_all_land(lake: Lake) -> None:
    cmd, env = _py(APPENDER, lake)
    procs = [subprocess.Popen([*cmd, str(base)], env=env) for base in (0, 10_000)]
    for p in procs:
        assert p.wait(180) == 0
    assert count(lake, "clips") == 2 * 8 * 3
    assert lake.version("clips") == 16
    ids = lake.read("clips", columns=["clip_id"]).column("clip_id").to_pylist()
    assert len(set(ids)) == 48


def test_lease_excludes_second_holder(lake: Lake) -> None:
    from storage.errors import LeaseHeldError

    with (
        lake.lease("maintenance", "first", ttl_s=60),
        pytest.raises(LeaseHeldError, match="held by first"),
        lake.lease("maintenance", "second"),
    ):
        pass
    with lake.lease("maintenance", "second"):
        pass


def test_expired_lease_does_not_block(lake: Lake) -> None:
    from storage.lease import acquire

    acquire(lake, "maintenance", "crashed", ttl_s=0.5)
    time.sleep(0.6)
    with lake.lease("maintenance", "next"):
        pass


def test_a_lease_left_by_a_dead_attempt_is_reclaimed_by_its_own_holder_only(lake: Lake) -> None:
    from storage.errors import LeaseHeldError
    from storage.lease import acquire

    dead = acquire(lake, "ingest-commit", "ingest-000007", ttl_s=600)  # never released: it died
    with pytest.raises(LeaseHeldError, match="held by ingest-000007"):
        acquire(lake, "ingest-commit", "ingest-000008", ttl_s=600, reclaim=True)
    with lake.lease("ingest-commit", "ingest-000007", reclaim=True) as token:
        assert token == dead  # took the dead grant over
        with pytest.raises(LeaseHeldError):
            acquire(lake, "ingest-commit", "ingest-000008", ttl_s=600)
    with lake.lease("ingest-commit", "ingest-000008"):  # one release freed both grants
        pass


def test_maintenance_compacts_small_files(lake: Lake) -> None:
    for i in range(6):
        lake.append("clips", clip_rows(3, start=3 * i, days=1))
    assert len(lake.delta("clips").file_uris()) == 6
    report = lake.maintain("test", tables=["clips"], retention_hours=0, enforce_retention=False)
    assert report[0]["files_removed"] == 6 and report[0]["files_added"] == 1
    assert len(lake.delta("clips").file_uris()) == 1
    assert count(lake, "clips") == 18


RACER = """
    import json, os, sys, time
    from storage import Lake
    from storage.errors import LeaseHeldError
    from storage.lease import acquire
    lake = Lake(os.environ["LAKE_URI"], json.loads(os.environ["LAKE_OPTS"]))
    go = float(sys.argv[1])
    time.sleep(max(0.0, go - time.time()))
    try:
        acquire(lake, "maintenance", sys.argv[2], ttl_s=120)
        print("GOT")
    except LeaseHeldError as exc:
        print("HELD", exc)
"""


def test_racing_for_the_lease_exactly_one_wins(lake: Lake) -> None:
    lake.create_tables(["_leases"])
    cmd, env = _py(RACER, lake)
    go = time.time() + 4
    procs = [
        subprocess.Popen([*cmd, str(go), f"racer{i}"], env=env, stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert sum(o.startswith("GOT") for o in outs) == 1, outs
    assert sum(o.startswith("HELD") for o in outs) == 3, outs


def test_near_unique_columns_are_written_without_dictionary_encoding(lake: Lake) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from storage.objectstore import Location
    from storage.tables import embeddings

    rng = np.random.default_rng(0)
    rows = pa.table(
        {
            "clip_id": [f"20240101-{i:04x}" for i in range(64)],
            "date": pa.array([dt.date(2024, 1, 1)] * 64, pa.date32()),
            "model_name": ["m"] * 64,
            "model_version": pa.array([1] * 64, pa.int32()),
            "vector": pa.array(list(rng.standard_normal((64, 16), dtype=np.float32)), pa.list_(pa.float32())),
        }
    )
    lake.append("embeddings", embeddings.SPEC.conform(rows))
    (uri,) = lake.delta("embeddings").file_uris()
    loc = Location(uri, lake.root.storage_options)
    meta = pq.ParquetFile(loc.path, filesystem=loc.arrow_fs).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert not any("DICTIONARY" in e for e in encodings["vector.list.element"])
    assert any("DICTIONARY" in e for e in encodings["model_name"])
    back = lake.read("embeddings", columns=["clip_id", "vector"]).sort_by("clip_id")
    assert back.column("vector").to_pylist() == rows.column("vector").to_pylist()


def test_locate_finds_files_inside_the_lake_only(lake: Lake) -> None:
    inside = lake.locate(lake.uri.rstrip("/") + "/media/clip.mp4")
    assert inside is not None and inside.path.endswith("/media/clip.mp4")
    assert inside.storage_options == lake.root.storage_options
    assert lake.locate(lake.uri.rstrip("/") + "-sibling/clip.mp4") is None  # a prefix is not a parent
    assert lake.locate("/etc/passwd") is None


def test_locate_keeps_to_the_lake(lake: Lake) -> None:
    root = lake.uri.rstrip("/")
    assert lake.locate(f"{root}/clips/media/a.mp4") is not None
    for outside in (f"{root}/../secret", f"{root}/clips/../../secret", f"{root}//etc/passwd", "/etc/passwd"):
        assert lake.locate(outside) is None, outside


def _run_rows(number: int, token: str) -> pa.Table:
    from jobs.runs import RunRecord, run_row

    return run_row(RunRecord(f"job-{number:06d}", "job", {"token": token}, run_number=number), "running")


def test_claim_takes_a_number_once_and_never_one_below_the_last(lake: Lake) -> None:
    assert lake.claim("runs", _run_rows(1, "a"), Txn("job-run", 1), "a")
    assert not lake.claim("runs", _run_rows(1, "b"), Txn("job-run", 1), "b")
    assert lake.claim("runs", _run_rows(3, "b"), Txn("job-run", 3), "b")
    assert not lake.claim("runs", _run_rows(2, "c"), Txn("job-run", 2), "c")
    assert sorted(lake.read("runs").column("run_number").to_pylist()) == [1, 3]


def test_two_claims_that_both_saw_the_number_free_one_lands(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both threads pass the check before either commits (held 1 s after it): the
    second commit is refused although the number was free on its snapshot."""
    import threading

    monkeypatch.setenv("FLEETMINE_FAULT", "claim.checked:runs@1")
    got: dict[str, bool] = {}

    def claim(token: str) -> None:
        got[token] = lake.claim("runs", _run_rows(1, token), Txn("job-run", 1), token)

    threads = [threading.Thread(target=claim, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(60)
    assert sorted(got.values()) == [False, True], got
    (row,) = lake.read("runs").to_pylist()
    assert json.loads(row["params"])["token"] == next(t for t, won in got.items() if won)
