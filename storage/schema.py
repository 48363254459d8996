"""What a table is: an Arrow schema, its key columns and its partition columns."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from storage.errors import SchemaError

__all__ = ["UTC_TS", "TableSpec", "us_since_epoch"]

UTC_TS = pa.timestamp("us", tz="UTC")
"""Delta's ``timestamp`` type: microseconds, UTC-adjusted."""

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def us_since_epoch(t: dt.datetime) -> int:
    """A :data:`UTC_TS` value as the int64 it is stored as, exactly (no float on the way;
    a naive datetime is taken as UTC)."""
    return ((t if t.tzinfo else t.replace(tzinfo=dt.UTC)) - _EPOCH) // dt.timedelta(microseconds=1)


@dataclass(frozen=True)
class TableSpec:
    """A Delta table's contract. One module per table under ``storage.tables``."""

    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()
    description: str = ""
    # Columns of near-unique values (vectors, JPEG bytes): Parquet's dictionary
    # encoding never pays off on them, and trying it per column chunk costs time.
    no_dictionary: tuple[str, ...] = ()
    # Columns `lake maintain` sorts each partition's rows by, in row groups of
    # `cluster_row_group` rows, so min/max statistics prune reads.
    cluster_by: tuple[str, ...] = ()
    cluster_row_group: int = 8192

    def __post_init__(self) -> None:
        missing = [
            c
            for c in (*self.keys, *self.partition_by, *self.no_dictionary, *self.cluster_by)
            if c not in self.schema.names
        ]
        if missing:
            raise SchemaError(f"table {self.name}: key/partition columns {missing} not in schema")

    def conform(self, data: pa.Table) -> pa.Table:
        """Reorder and cast ``data`` to this schema; absent nullable columns become nulls.

        Extra columns are an error: a typo must not silently vanish.
        """
        extra = [c for c in data.column_names if c not in self.schema.names]
        if extra:
            raise SchemaError(f"table {self.name}: unknown columns {extra}; known: {self.schema.names}")
        columns = []
        for f in self.schema:
            if f.name in data.column_names:
                col = data.column(f.name)
                if col.type != f.type:
                    col = col.cast(f.type)
                columns.append(col)
            elif f.nullable:
                columns.append(pa.nulls(data.num_rows, f.type))
            else:
                raise SchemaError(f"table {self.name}: required column {f.name!r} missing")
        return pa.Table.from_arrays(columns, schema=self.schema)

    def key_predicate(self, target: str = "t", source: str = "s") -> str:
        """The MERGE predicate on this table's key (partition columns first, so it prunes)."""
        cols = [c for c in self.partition_by if c not in self.keys] + list(self.keys)
        return " AND ".join(f"{target}.`{c}` = {source}.`{c}`" for c in cols)
