"""The lake: every table of DESIGN.md under one root, local or on S3."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaNotFound
from deltalake.transaction import AddAction, CommitProperties, Transaction

from storage.config import Settings, normalize_uri
from storage.delta import CommitResult, TableWriter, Txn, commit
from storage.errors import CommitError, LeaseHeldError, StorageError, TableNotFoundError
from storage.objectstore import Location, reachable
from storage.schema import TableSpec
from storage.tables import TABLES, get_spec

__all__ = ["Lake", "TableInfo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableInfo:
    name: str
    version: int
    rows: int
    files: int
    bytes: int


def _plain_types(data: pa.Table, spec: TableSpec) -> pa.Table:
    """DataFusion hands back view types; give callers the spec's own types."""
    fields = {f.name: f for f in spec.schema}
    cols = []
    for name in data.column_names:
        col = data.column(name)
        want = fields.get(name)
        if want is not None and col.type != want.type:
            col = col.cast(want.type)
        cols.append(col)
    return pa.table(cols, names=data.column_names)


class Lake:
    """Opens and creates the tables; appends, upserts, reads, commits, maintains."""

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None, *, commit_retries: int = 10):
        self.root = Location(normalize_uri(uri), dict(storage_options or {}))
        self.commit_retries = commit_retries

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(settings.lake, settings.storage_options, commit_retries=settings.commit_retries)

    @property
    def uri(self) -> str:
        return self.root.uri

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    def location(self, table: str) -> Location:
        return self.root.join(get_spec(table).name)

    def locate(self, uri: str) -> Location | None:
        """A file the lake wrote (a clip's video, a thumbnail), with the lake's
        storage options; None for a URI outside the lake."""
        root = self.uri.rstrip("/")
        if not uri.startswith(root + "/"):
            return None
        rel = uri[len(root) + 1 :]
        if any(part in ("..", ".", "") for part in rel.split("/")):  # "<root>/../x" is outside
            return None
        return self.root.join(rel)

    # -- tables ----------------------------------------------------------------

    @staticmethod
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

    def exists(self, table: str) -> bool:
        loc = self.location(table)
        with reachable(loc.uri):
            return DeltaTable.is_deltatable(loc.uri, storage_options=loc.storage_options)

    def create_tables(self, names: list[str] | None = None) -> list[str]:
        """Create the missing tables (all by default); returns the ones created.

        A table made by an older fleetmine gains the columns its schema has added since
        (nullable, so old rows read as null): a lake is never rebuilt for an upgrade.
        """
        created = []
        for name in names or list(TABLES):
            spec = get_spec(name)
            loc = self.location(name)
            if self.exists(name):
                self._add_new_columns(spec, loc)
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
                if not self.exists(name):  # someone else creating it at once is fine
                    raise StorageError(f"cannot create table {name} at {loc.uri}: {exc}") from exc
        return created

    def delta(self, table: str, version: int | None = None) -> DeltaTable:
        loc = self.location(table)
        try:
            with reachable(loc.uri):
                return DeltaTable(loc.uri, version=version, storage_options=loc.storage_options)
        except DeltaNotFound as exc:
            raise TableNotFoundError(
                f"table {table} not found at {loc.uri}; run `fleetmine ingest` or create the lake first"
            ) from exc

    def version(self, table: str) -> int:
        return self.delta(table).version()

    # -- writes ------------------------------------------------------------------

    def writer(self, table: str, **options: Any) -> TableWriter:
        """A picklable writer for Ray workers; pair it with :meth:`commit`."""
        return TableWriter(self.location(table), get_spec(table), **options)

    def commit(
        self,
        table: str,
        actions: list[AddAction],
        txn: Txn | None = None,
        metadata: dict[str, str] | None = None,
    ) -> CommitResult:
        return commit(
            self.location(table),
            get_spec(table),
            actions,
            txn,
            retries=self.commit_retries,
            metadata=metadata,
        )

    def append(self, table: str, data: pa.Table, txn: Txn | None = None) -> CommitResult:
        """Append rows in one commit (idempotent when ``txn`` is given)."""
        spec = get_spec(table)
        if txn is not None and self.committed(table, txn):
            return CommitResult(table, self.version(table), 0, 0, already_committed=True)
        actions = self.writer(table).write(spec.conform(data))
        return self.commit(table, actions, txn)

    def upsert(self, table: str, data: pa.Table, txn: Txn | None = None) -> dict[str, Any]:
        """MERGE ``data`` on the table's key: matched rows updated, new rows inserted."""
        spec = get_spec(table)
        if txn is not None and self.committed(table, txn):
            return {"already_committed": True}
        source = spec.conform(data)
        props = CommitProperties(
            app_transactions=None if txn is None else [Transaction(txn.app_id, txn.version)],
            custom_metadata=None
            if txn is None
            else {"fleetmine.app_id": txn.app_id, "fleetmine.run": str(txn.version)},
        )
        last: Exception | None = None
        for _ in range(self.commit_retries + 1):
            try:
                with reachable(self.location(table).uri):
                    metrics = (
                        self.delta(table)
                        .merge(
                            source,
                            spec.key_predicate("t", "s"),
                            source_alias="s",
                            target_alias="t",
                            commit_properties=props,
                        )
                        .when_matched_update_all()
                        .when_not_matched_insert_all()
                        .execute()
                    )
                return dict(metrics)
            except CommitFailedError as exc:  # a conflicting commit; the merge is re-planned
                last = exc
                if txn is not None and self.committed(table, txn):
                    return {"already_committed": True}
        raise CommitError(f"upsert into {table} failed: {last}")

    def delete(self, table: str, predicate: str) -> dict[str, Any]:
        with reachable(self.location(table).uri):
            return dict(self.delta(table).delete(predicate))

    def committed(self, table: str, txn: Txn) -> bool:
        v = self.delta(table).transaction_version(txn.app_id)
        return v is not None and v >= txn.version

    def last_run_number(self, app_id: str, tables: list[str]) -> int:
        """The highest run number ``app_id`` committed to any of ``tables`` (0 if none)."""
        versions = [self.delta(t).transaction_version(app_id) for t in tables if self.exists(t)]
        return max([v for v in versions if v is not None], default=0)

    # -- reads -------------------------------------------------------------------

    def read(
        self,
        table: str,
        columns: list[str] | None = None,
        where: str | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """Rows matching the SQL predicate ``where`` (partition + file-stat pruning)."""
        spec = get_spec(table)
        try:
            with reachable(self.location(table).uri):
                data = self.delta(table, version).scan(columns=columns, predicate=where).read_all()
        except DeltaError as exc:
            raise StorageError(f"cannot read {table} where {where!r}: {exc}") from exc
        result = pa.table(data)
        if result.num_columns == 0 and columns is None:
            return spec.schema.empty_table()
        return _plain_types(result, spec)

    # -- info & maintenance ------------------------------------------------------

    def info(self) -> list[TableInfo]:
        out = []
        for name in TABLES:
            if not self.exists(name):
                continue
            t = self.delta(name)
            adds = pa.table(t.get_add_actions(flatten=True))
            rows = int(pa.compute.sum(adds.column("num_records")).as_py() or 0) if adds.num_rows else 0
            size = int(pa.compute.sum(adds.column("size_bytes")).as_py() or 0) if adds.num_rows else 0
            out.append(TableInfo(name, t.version(), rows, adds.num_rows, size))
        return out

    @contextmanager
    def lease(
        self, name: str, holder: str, ttl_s: float = 3600.0, wait_s: float = 0.0, *, reclaim: bool = False
    ) -> Iterator[str]:
        """Hold the lake-wide lease ``name``; waits up to ``wait_s`` for another holder to let go
        (``reclaim``: see :func:`storage.lease.acquire`)."""
        from storage.lease import acquire, release

        deadline = time.monotonic() + wait_s
        while True:
            try:
                token = acquire(self, name, holder, ttl_s, reclaim=reclaim)
                break
            except LeaseHeldError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        try:
            yield token
        finally:
            release(self, name, token, holder)

    def maintain(
        self,
        holder: str,
        *,
        tables: list[str] | None = None,
        retention_hours: int = 168,
        enforce_retention: bool = True,
        ttl_s: float = 3600.0,
    ) -> list[dict[str, Any]]:
        """Compact small files and vacuum, one table at a time, under the lake-wide lease."""
        reports = []
        with self.lease("maintenance", holder, ttl_s):
            for name in tables or [n for n in TABLES if not n.startswith("_")]:
                if not self.exists(name):
                    continue
                t = self.delta(name)
                compacted = t.optimize.compact()
                t = self.delta(name)
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
                        "version": self.version(name),
                    }
                )
        return reports
