"""The lake's tables kept: created, upgraded, compacted, sorted, vacuumed, measured.

The lake's second job, apart from reading and writing rows (:mod:`storage.lake`): this
module changes the tables themselves. It creates the missing ones and gives a table an
older fleetmine made the columns its schema has added since; it rewrites data files
(small files compacted, a table with ``cluster_by`` columns rewritten sorted by them) and
deletes the ones no version needs any more (vacuum), one table at a time under the
lake-wide ``maintenance`` lease, since two compactions at once duplicate rows; and it
says what each table holds. :class:`~storage.lake.Lake`'s ``create_tables``,
``maintain`` and ``info`` call it.
"""

from __future__ import annotations

import dataclasses
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import RemoveAction

from storage.delta import TableWriter, _partition_value, replace_files
from storage.errors import StorageError
from storage.objectstore import Location, reachable
from storage.query import arrow_table
from storage.schema import TableSpec
from storage.sql import literal
from storage.tables import TABLES, get_spec

if TYPE_CHECKING:
    from storage.lake import Lake

__all__ = ["TableInfo", "create_tables", "info", "maintain"]

_CLUSTERED = "fleetmine.sorted_by"  # commit metadata of a `maintain` sort
_SORTED = "part-sorted-"  # data files `maintain` wrote sorted by the table's cluster_by (prefix "sorted-")


@dataclass(frozen=True)
class TableInfo:
    name: str
    version: int
    rows: int
    files: int
    bytes: int


def create_tables(lake: Lake, names: list[str] | None = None) -> list[str]:
    """Create the missing tables (all by default); returns the ones created.

    A table made by an older fleetmine gains the columns its schema has added since
    (nullable, so old rows read as null): a lake is never rebuilt for an upgrade.
    """
    created = []
    for name in names or list(TABLES):
        spec = get_spec(name)
        loc = lake.location(name)
        if lake.exists(name):
            _add_new_columns(spec, loc)
            continue
        if loc.is_local:
            loc.fs.makedirs(loc.path, exist_ok=True)
        try:
            with reachable(loc.uri):
                DeltaTable.create(
                    loc.uri,
                    spec.schema,
                    mode="ignore",
                    partition_by=list(spec.partition_by) or None,
                    name=spec.name,
                    description=spec.description,
                    storage_options=loc.storage_options,
                )
            created.append(name)
        except (CommitFailedError, DeltaError) as exc:
            if not lake.exists(name):  # someone else creating it at once is fine
                raise StorageError(f"cannot create table {name} at {loc.uri}: {exc}") from exc
    return created


def _add_new_columns(spec: TableSpec, loc: Location) -> None:
    from deltalake import Schema as DeltaSchema

    with reachable(loc.uri):
        table = DeltaTable(loc.uri, storage_options=loc.storage_options)
    have = set(table.schema().to_arrow().names)
    missing = [f for f in spec.schema if f.name not in have and f.nullable]
    if not missing:
        return
    fields = DeltaSchema.from_arrow(pa.schema(missing)).fields
    try:
        table.alter.add_columns(list(fields))
    except (CommitFailedError, DeltaError):
        fresh = DeltaTable(loc.uri, storage_options=loc.storage_options)
        if {f.name for f in missing} - set(fresh.schema().to_arrow().names):
            raise  # not a concurrent upgrade that already added them


def info(lake: Lake) -> list[TableInfo]:
    """Each existing table's latest version, rows, data files and bytes, from its Delta log."""
    out = []
    for name in TABLES:
        if not lake.exists(name):
            continue
        t = lake.delta(name)
        adds = arrow_table(t.get_add_actions(flatten=True))
        rows = int(pa.compute.sum(adds.column("num_records")).as_py() or 0) if adds.num_rows else 0
        size = int(pa.compute.sum(adds.column("size_bytes")).as_py() or 0) if adds.num_rows else 0
        out.append(TableInfo(name, t.version(), rows, adds.num_rows, size))
    return out


def maintain(
    lake: Lake,
    holder: str,
    *,
    tables: list[str] | None = None,
    retention_hours: int = 168,
    enforce_retention: bool = True,
    ttl_s: float = 3600.0,
) -> list[dict[str, Any]]:
    """Compact small files and vacuum, one table at a time, under the lake-wide lease.

    A table with ``cluster_by`` columns is instead rewritten sorted by them, in the
    partitions that hold files not sorted yet (:func:`_sort_partitions`).
    """
    reports = []
    with lake.lease("maintenance", holder, ttl_s):
        for name in tables or [n for n in TABLES if not n.startswith("_")]:
            if not lake.exists(name):
                continue
            t = lake.delta(name)
            spec = get_spec(name)
            compacted = _sort_partitions(lake, name, spec) if spec.cluster_by else t.optimize.compact()
            if compacted.get("numFilesAdded", 0):  # readers then load one file, not the rewrites' log
                lake.delta(name).create_checkpoint()
            t = lake.delta(name)
            removed = t.vacuum(
                retention_hours=retention_hours,
                dry_run=False,
                enforce_retention_duration=enforce_retention,
                full=True,
            )
            reports.append(
                {
                    "table": name,
                    "files_added": compacted.get("numFilesAdded", 0),
                    "files_removed": compacted.get("numFilesRemoved", 0),
                    "vacuumed": len(removed),
                    "version": lake.version(name),
                }
            )
    return reports


def _sort_partitions(lake: Lake, name: str, spec: TableSpec) -> dict[str, Any]:
    """Rewrite each partition holding files not yet sorted as files sorted by
    ``spec.cluster_by`` (one partition in memory at a time), in row groups of
    ``spec.cluster_row_group`` rows, so min/max statistics narrow a lookup to one.

    Each partition is one transaction that removes the files it read (no data
    change); if a writer replaced one of them meanwhile, the commit fails and the
    partition waits for the next run. (deltalake's ``z_order`` was tried first:
    on ids sharing their first nine bytes it leaves row groups overlapping.)
    """
    table = lake.delta(name)
    version = table.version()
    adds = arrow_table(table.get_add_actions(flatten=True))
    if adds.num_rows == 0:
        return {"numFilesAdded": 0, "numFilesRemoved": 0}
    (col,) = spec.partition_by or (None,)
    files: dict[Any, list[dict[str, Any]]] = {}
    for f in adds.select(["path", "size_bytes", *([f"partition.{col}"] if col else [])]).to_pylist():
        files.setdefault(f.get(f"partition.{col}") if col else None, []).append(f)
    added = removed = 0
    location = lake.location(name)
    writer = TableWriter(location, spec, row_group_size=spec.cluster_row_group)
    for value, part in sorted(files.items(), key=lambda kv: str(kv[0])):
        if all(posixpath.basename(f["path"]).startswith(_SORTED) for f in part):
            continue
        where = None if col is None else f"{col} = {literal(value)}"
        rows = lake.read(name, where=where, version=version)
        rows = rows.sort_by([(c, "ascending") for c in spec.cluster_by])
        new = [
            dataclasses.replace(a, data_change=False)
            for a in writer.write(spec.conform(rows), prefix=f"sorted-{uuid.uuid4().hex}")
        ]
        now = int(time.time() * 1000)
        pvalues = {} if col is None else {col: _partition_value(value)}
        gone = [RemoveAction(f["path"], False, now, int(f["size_bytes"]), pvalues) for f in part]
        if replace_files(location, spec, new, gone, {_CLUSTERED: ",".join(spec.cluster_by)}):
            added, removed = added + len(new), removed + len(gone)
    return {"numFilesAdded": added, "numFilesRemoved": removed}
