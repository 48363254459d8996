"""A table version's data files by partition, so a query that names its partitions opens
their files alone.

Why: the engine (``QueryBuilder``) plans a query over every file of the table: it
prunes by the partition values and statistics the Delta log holds, but the pruning
walks all of them, per request. Measured on a ``clips`` table of 5,000 day partitions
(the catalog at 10^7 clips), a lookup of one clip by id and day took 42 ms, of which
reading its one file was ~2; at 10^8 the walk is ten times longer. A catalog route
already knows its days (a clip id begins with its day; a page walks days in order), so
it names them, and the query runs on just those days' files (``lake.query(...,
partitions=[...])``): its cost follows the rows it needs, not the table.

The map of a version is built once from the log's add actions (what
:meth:`storage.lake.Lake.partition_rows` counts) and kept per version. A version whose
files a plain Parquet read cannot give exactly (reader features such as deletion
vectors or column mapping, paths that are not plain relative ones) says so
(``readable`` False) and its queries run through the engine as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable

from storage.query import arrow_table
from storage.results import ResultCache

__all__ = ["DataFile", "PartitionFiles", "partition_files"]

# What a plain Parquet read of the files gives exactly; any other reader feature (deletion
# vectors hide rows, column mapping renames columns) sends the version's queries to the engine.
_PLAIN_FEATURES = frozenset({"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck"})


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the table's root, decoded
    size: int
    rows: int


@dataclass(frozen=True)
class PartitionFiles:
    """One version of a table partitioned by ``column``: per value, its data files; and
    per value the rows and files (sorted by value: what ``partition_rows`` answers)."""

    version: int
    column: str
    files: dict[Any, tuple[DataFile, ...]]
    counts: pa.Table
    schema: pa.Schema
    readable: bool

    def of(self, values: Iterable[Any]) -> list[tuple[Any, DataFile]]:
        """The files of ``values`` (a value with no files has none), each with its value."""
        return [(v, f) for v in dict.fromkeys(values) for f in self.files.get(_key(v), ())]

    def read(
        self,
        root: str,
        fs: Any,
        values: Iterable[Any],
        columns: list[str],
        cache: ResultCache | None = None,
    ) -> tuple[pa.Table, int]:
        """``columns`` of the files of ``values``, in the table's schema (the partition
        column from each file's value, as the log has it; a column an older file lacks as
        nulls; ``string_view`` as the strings the schema says), and the rows the files hold.

        ``cache`` keeps each column of each file so read, and a file is opened only for the
        columns it does not hold (a data file never changes: see :mod:`storage.results`);
        the rows counted are the log's either way, so a scan audit counts the same.

        Each file through ``pyarrow.parquet``, not a ``pyarrow.dataset``: that module
        imports pandas, which an API replica never loads (60 MB of its memory)."""
        schema = pa.schema([self.schema.field(c) for c in columns])
        remote = not isinstance(fs, pafs.LocalFileSystem)  # coalesced ranged reads pay off on a store only
        tables, rows = [], 0
        for value, f in self.of(values):
            path = f"{root.rstrip('/')}/{f.path}"
            kept: dict[str, pa.Table] = {}
            if cache is not None:
                hits = {c: cache.get((path, f.size, c)) for c in columns}
                kept = {c: hit for c, hit in hits.items() if hit is not None}
            missing = [fld for fld in schema if fld.name not in kept]
            if missing:
                got = self._read_file(fs, path, value, pa.schema(missing), remote)
                for fld in missing:
                    kept[fld.name] = one = got.select([fld.name])
                    if cache is not None:
                        cache.put((path, f.size, fld.name), one)
            tables.append(pa.Table.from_arrays([kept[c].column(0) for c in columns], schema=schema))
            rows += f.rows
        return (pa.concat_tables(tables) if tables else schema.empty_table()), rows

    def _read_file(self, fs: Any, path: str, value: Any, schema: pa.Schema, remote: bool) -> pa.Table:
        with fs.open_input_file(path) as src:
            parquet = pq.ParquetFile(src, pre_buffer=remote)
            present = set(parquet.schema_arrow.names)
            got = parquet.read(columns=[c for c in schema.names if c in present and c != self.column])
        n = got.num_rows
        return pa.Table.from_arrays(
            [
                pa.array([value] * n, fld.type)
                if fld.name == self.column
                else _as(got.column(fld.name), fld.type)
                if fld.name in got.column_names
                else pa.nulls(n, fld.type)
                for fld in schema
            ],
            schema=schema,
        )


def _as(column: pa.ChunkedArray, type_: pa.DataType) -> pa.ChunkedArray:
    """``column`` in ``type_``: as it is when it already is (a cast of every column of every
    file was a tenth of a catalog replica's CPU under load, for nothing)."""
    return column if column.type == type_ else column.cast(type_)


def _key(value: Any) -> Any:
    # a datetime is a date to ``isinstance``; a day partition is keyed by the day alone
    return value.date() if isinstance(value, dt.datetime) else value


def _plain_path(path: str) -> bool:
    return bool(path) and "://" not in path and not path.startswith("/") and ".." not in path.split("/")


def partition_files(delta: DeltaTable, column: str) -> PartitionFiles:
    """The map of ``delta``'s version (one read of its add actions, no data file)."""
    adds = arrow_table(delta.get_add_actions(flatten=True))
    schema = pa.schema(delta.schema().to_arrow())
    protocol = delta.protocol()
    features = set(protocol.reader_features or ()) if protocol.min_reader_version >= 3 else set()
    readable = protocol.min_reader_version <= 3 and features <= _PLAIN_FEATURES
    files: dict[Any, list[DataFile]] = {}
    if adds.num_rows:
        paths = [unquote(p) for p in adds.column("path").to_pylist()]
        readable = readable and all(_plain_path(p) for p in paths)
        values = adds.column(f"partition.{column}").to_pylist()
        sizes = adds.column("size_bytes").to_pylist()
        has_rows = "num_records" in adds.column_names
        rows = adds.column("num_records").to_pylist() if has_rows else [None] * len(paths)
        readable = readable and None not in rows  # the scan audit counts a file's rows from the log
        for p, v, s, n in zip(paths, values, sizes, rows, strict=True):
            files.setdefault(v, []).append(DataFile(p, int(s), int(n or 0)))
        by = adds.group_by(f"partition.{column}").aggregate([("num_records", "sum"), ("path", "count")])
        counts = pa.table(
            {
                "value": by.column(f"partition.{column}"),
                "rows": by.column("num_records_sum").cast(pa.int64()),
                "files": by.column("path_count").cast(pa.int64()),
            }
        ).sort_by("value")
    else:
        empty = {"value": schema.field(column).type, "rows": pa.int64(), "files": pa.int64()}
        counts = pa.schema(empty).empty_table()
    return PartitionFiles(
        delta.version(), column, {k: tuple(v) for k, v in files.items()}, counts, schema, readable
    )
