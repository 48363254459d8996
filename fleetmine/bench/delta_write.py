"""Delta write throughput of a clips-like table vs ``pyarrow.parquet.write_table``.

Same table, same compression, same row-group size, same process. The Delta side
is the storage layer's real path (``TableWriter.write`` + one ``commit``): files
split by the ``date`` partition, column statistics for the add-actions, the
vector column written without dictionary encoding (``TableSpec.no_dictionary``),
the Delta commit. The baseline is ``write_table`` with pyarrow's defaults, as a
user would call it, so the ratio says what the lakehouse costs (or saves) on
top of plain Parquet.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fleetmine.bench import BenchContext, BenchResult, benchmark
from storage.delta import Txn
from storage.errors import JobError
from storage.lake import Lake
from storage.tables import embeddings

DIM = 256


def clips_like_table(rows: int, seed: int = 0) -> pa.Table:
    """Embedding rows as ingest and embed produce them: ids, 8 days, 256-d vectors."""
    rng = np.random.default_rng(seed)
    days = np.sort(rng.integers(0, 8, rows))
    dates = np.datetime64("2018-08-01") + days.astype("timedelta64[D]")
    ids = [f"{d:%Y%m%d}-{i:012x}" for d, i in zip(dates.astype(dt.date), range(rows), strict=True)]
    vec = rng.standard_normal((rows, DIM), dtype=np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    return embeddings.SPEC.conform(
        pa.table(
            {
                "clip_id": ids,
                "date": pa.array(dates, pa.date32()),
                "model_name": pa.array(["builtin"] * rows),
                "model_version": pa.array(np.ones(rows, np.int32)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.ravel()), DIM).cast(
                    pa.list_(pa.float32())
                ),
                "run_id": pa.array(["bench"] * rows),
            }
        )
    )


@benchmark("delta_write")
def delta_write(ctx: BenchContext) -> list[BenchResult]:
    rows = 200_000 if ctx.quick else 1_000_000
    repeats = 3 if ctx.quick else 5  # best of: the disk is shared and noisy
    data = clips_like_table(rows)
    mb = data.nbytes / 1e6
    root = ctx.workdir / "delta_write"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    lake = Lake(str(root / "lake"))
    lake.create_tables(["embeddings"])
    writer = lake.writer("embeddings")
    delta_best, pq_best = float("inf"), float("inf")
    for i in range(repeats):
        t0 = time.perf_counter()
        pq.write_table(
            data,
            str(root / f"plain-{i}.parquet"),
            compression=writer.compression,
            row_group_size=writer.row_group_size,
        )
        pq_best = min(pq_best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        lake.commit("embeddings", writer.write(data), Txn("bench", i + 1))
        delta_best = min(delta_best, time.perf_counter() - t0)
    committed = next(t.rows for t in lake.info() if t.name == "embeddings")
    if committed != rows * repeats:
        raise JobError(f"delta_write: committed {committed} rows, expected {rows * repeats}")
    shutil.rmtree(root, ignore_errors=True)
    return [
        BenchResult(
            name=f"delta_write {rows:,} rows x {DIM}-d ({mb:.0f} MB)",
            measured=mb / delta_best,
            baseline=mb / pq_best,
            unit="MB/s",
            baseline_name="pyarrow.parquet.write_table",
            goal=">= 0.95",
        )
    ]
