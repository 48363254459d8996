"""The lake: every table of DESIGN.md under one root, local or on S3."""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaNotFound
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from storage.config import Settings, normalize_uri
from storage.delta import CommitResult, TableWriter, Txn, _partition_value, claim, commit, replace_files
from storage.errors import CommitError, FleetError, LeaseHeldError, StorageError, TableNotFoundError
from storage.objectstore import Location, reachable
from storage.query import arrow_table, audit_scan, auditing, run_sql, select_sql
from storage.results import ResultCache
from storage.schema import TableSpec
from storage.sql import literal
from storage.tables import TABLES, get_spec
from storage.views import current_view

__all__ = ["Lake", "TableInfo"]

log = logging.getLogger(__name__)
_CLUSTERED = "fleetmine.sorted_by"  # commit metadata of a `maintain` sort
_SORTED = "part-sorted-"  # data files `maintain` wrote sorted by the table's cluster_by (prefix "sorted-")


@dataclass(frozen=True)
class _Snapshot:
    """A table's cached latest version: ``probe`` follows the log, ``served`` is handed
    out (never updated in place); ``checked``: when the listing that found it began."""

    probe: DeltaTable
    served: DeltaTable
    checked: float


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

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, str] | None = None,
        *,
        commit_retries: int = 10,
        query_cache_bytes: int = 16 << 20,
    ):
        self.root = Location(normalize_uri(uri), dict(storage_options or {}))
        self.commit_retries = commit_retries
        self.query_cache_bytes = query_cache_bytes
        self._snapshots: dict[str, _Snapshot] = {}
        self._snapshot_lock = threading.Lock()  # guards the dict of per-table locks
        self._table_locks: dict[str, threading.Lock] = {}
        self._partitions: dict[tuple[str, str, int], pa.Table] = {}  # (table, column, version)
        self._answers = ResultCache(query_cache_bytes)  # query answers by table version (storage.results)

    def __getstate__(self) -> dict[str, Any]:  # Ray ships lakes to workers: not the cache
        state = dict(self.__dict__)
        state["_snapshots"], state["_snapshot_lock"], state["_partitions"] = {}, None, {}
        state["_table_locks"], state["_answers"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._snapshot_lock = threading.Lock()
        self._answers = ResultCache(self.query_cache_bytes)

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(
            settings.lake,
            settings.storage_options,
            commit_retries=settings.commit_retries,
            query_cache_bytes=int(settings.query_cache_mib * (1 << 20)),
        )

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
        loc = self.root.join(rel)
        return loc if self.confined(loc) else None

    def confined(self, loc: Location) -> bool:
        """Whether serving ``loc`` serves a file the lake holds: on local disk, no part of
        its path below the lake root is a symlink (the lake never writes one; one planted
        there could point at any file of the host) and it resolves inside the root. An
        object store has no symlinks."""
        if not (loc.is_local and self.root.is_local):
            return True
        root = os.path.abspath(self.root.path)
        path = os.path.abspath(loc.path)
        if not path.startswith(root.rstrip("/") + "/"):
            return False
        walked = root
        for part in path[len(root) :].strip("/").split("/"):
            walked = os.path.join(walked, part)
            if os.path.islink(walked):
                return False
        real_root = os.path.realpath(root)
        return os.path.realpath(path).startswith(real_root.rstrip("/") + "/")

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

    def snapshot(self, table: str) -> DeltaTable:
        """The table's latest version for reading, shared by the threads of a process.

        Opening a table replays its log (tens of ms after many commits); a request only
        checks for new commits (``update_incremental`` on a probe copy: one listing) and
        opens the table again only when there are some. The object handed out is never
        updated in place, so queries running on it in other threads are undisturbed.
        Inside a :func:`storage.views.read_view`, the version the view pinned.
        """
        view = current_view()
        if view is not None and (pinned := view.get(self.uri, table)) is not None:
            return pinned
        latest = self._latest(table)
        return latest if view is None else view.pin(self.uri, table, latest)

    def _latest(self, table: str) -> DeltaTable:
        """The table as of a log listing begun after this call was: every commit that
        landed before the call is in it.

        Concurrent callers share listings: one table's callers queue on its own lock, and
        a caller that finds a listing begun after it arrived takes that one's answer. So
        under load a table's log is listed about once per listing time, not once per
        request, and one table's callers never wait on another's listing.
        """
        asked = time.monotonic()
        with self._snapshot_lock:
            lock = self._table_locks.setdefault(table, threading.Lock())
        with lock:
            cached = self._snapshots.get(table)
            if cached is not None and cached.checked >= asked:
                return cached.served
            checked = time.monotonic()
            if cached is None:
                probe = self.delta(table)
                served = self.delta(table, probe.version())
            else:
                probe, served = cached.probe, cached.served
                with reachable(self.location(table).uri):
                    probe.update_incremental()
                if probe.version() != served.version():
                    served = self.delta(table, probe.version())
            self._snapshots[table] = _Snapshot(probe, served, checked)
            return served

    def version(self, table: str) -> int:
        """The latest version (in a read view: the one it reads)."""
        return self.snapshot(table).version()

    def _wrote(self, table: str) -> None:
        """After a write: a read view reads the table's new version from now on."""
        if (view := current_view()) is not None:
            view.unpin(self.uri, table)

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
        try:
            return commit(
                self.location(table),
                get_spec(table),
                actions,
                txn,
                retries=self.commit_retries,
                metadata=metadata,
            )
        finally:
            self._wrote(table)

    def append(self, table: str, data: pa.Table, txn: Txn | None = None) -> CommitResult:
        """Append rows in one commit (idempotent when ``txn`` is given)."""
        spec = get_spec(table)
        if txn is not None and self.committed(table, txn):
            return CommitResult(table, self.version(table), 0, 0, already_committed=True)
        actions = self.writer(table).write(spec.conform(data))
        return self.commit(table, actions, txn)

    def claim(self, table: str, data: pa.Table, txn: Txn, token: str) -> bool:
        """Append ``data`` as the claim of run number ``txn.version`` (see
        :func:`storage.delta.claim`): True if this caller now holds it, False if another
        commit holds that number or a later one. ``token`` tells this caller's claim
        from another's when the answer to a commit was lost."""
        spec = get_spec(table)
        actions = self.writer(table).write(spec.conform(data))
        return claim(self.location(table), spec, actions, txn, token, retries=self.commit_retries)

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
                self._wrote(table)
                return dict(metrics)
            except CommitFailedError as exc:  # a conflicting commit; the merge is re-planned
                last = exc
                if txn is not None and self.committed(table, txn):
                    return {"already_committed": True}
        raise CommitError(f"upsert into {table} failed: {last}")

    def delete(self, table: str, predicate: str) -> dict[str, Any]:
        with reachable(self.location(table).uri):
            done = dict(self.delta(table).delete(predicate))
        self._wrote(table)
        return done

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
                delta = self.snapshot(table) if version is None else self.delta(table, version)
                data = delta.scan(columns=columns, predicate=where).read_all()
                audit_scan(delta, table, columns, where)
        except DeltaError as exc:
            raise StorageError(f"cannot read {table} where {where!r}: {exc}") from exc
        result = arrow_table(data)
        if result.num_columns == 0 and columns is None:
            return spec.schema.empty_table()
        return _plain_types(result, spec)

    def scan(
        self,
        table: str,
        columns: list[str] | None = None,
        where: str | None = None,
        batch_rows: int = 65_536,
        version: int | None = None,
    ) -> Iterator[pa.Table]:
        """As :meth:`read`, streamed: tables of at most ``batch_rows`` rows, so a pass over
        a table holds one batch (plus the engine's read-ahead), not the table."""
        spec = get_spec(table)
        try:
            with reachable(self.location(table).uri):
                delta = self.snapshot(table) if version is None else self.delta(table, version)
                reader = pa.RecordBatchReader.from_stream(delta.scan(columns=columns, predicate=where))
                audit_scan(delta, table, columns, where)
            pending: list[pa.RecordBatch] = []
            held = 0
            for batch in reader:
                while batch.num_rows:
                    take = batch.slice(0, batch_rows - held)
                    pending.append(take)
                    held += take.num_rows
                    batch = batch.slice(take.num_rows)
                    if held == batch_rows:
                        yield _plain_types(pa.Table.from_batches(pending), spec)
                        pending, held = [], 0
            if held:
                yield _plain_types(pa.Table.from_batches(pending), spec)
        except DeltaError as exc:
            raise StorageError(f"cannot scan {table} where {where!r}: {exc}") from exc

    def query(
        self,
        table: str,
        *,
        columns: list[str] | None = None,
        where: str | None = None,
        order_by: list[str] | None = None,
        limit: int | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """``SELECT columns WHERE where ORDER BY order_by LIMIT limit``, all of it run by
        the engine (see :mod:`storage.query`): only the answer's rows reach Python. An
        answer is kept for the table version it read (:mod:`storage.results`), so asking
        again of that version does not run the engine again."""
        spec = get_spec(table)
        sql = select_sql(table, columns, where, order_by, limit)
        cache = None if auditing() else self._answers  # an audit counts the engine's scans
        with reachable(self.location(table).uri):
            delta = self.snapshot(table) if version is None else None
            if delta is not None:
                version = delta.version()
            key = (table, version, sql)
            if cache is not None and (hit := cache.get(key)) is not None:
                return hit
            data = run_sql({table: delta if delta is not None else self.delta(table, version)}, sql)
        if data.num_columns == 0 and columns is None:
            return spec.schema.empty_table()
        answer = _plain_types(data, spec)
        if cache is not None:
            cache.put(key, answer)
        return answer

    def partition_rows(self, table: str, column: str, version: int | None = None) -> pa.Table:
        """Rows per value of the partition column ``column``, sorted by value, from the
        Delta log alone (``value``, ``rows``, ``files``): no data file is read."""
        delta = self.snapshot(table) if version is None else self.delta(table, version)
        key = (table, column, delta.version())
        if (hit := self._partitions.get(key)) is not None:
            return hit
        adds = arrow_table(delta.get_add_actions(flatten=True))
        if adds.num_rows == 0:
            value_type = get_spec(table).schema.field(column).type
            return pa.schema({"value": value_type, "rows": pa.int64(), "files": pa.int64()}).empty_table()
        by = adds.group_by(f"partition.{column}").aggregate([("num_records", "sum"), ("path", "count")])
        out = pa.table(
            {
                "value": by.column(f"partition.{column}"),
                "rows": by.column("num_records_sum").cast(pa.int64()),
                "files": by.column("path_count").cast(pa.int64()),
            }
        )
        out = out.sort_by("value")
        if len(self._partitions) > 64:
            self._partitions.clear()
        self._partitions[key] = out
        return out

    # -- info & maintenance ------------------------------------------------------

    def info(self) -> list[TableInfo]:
        out = []
        for name in TABLES:
            if not self.exists(name):
                continue
            t = self.delta(name)
            adds = arrow_table(t.get_add_actions(flatten=True))
            rows = int(pa.compute.sum(adds.column("num_records")).as_py() or 0) if adds.num_rows else 0
            size = int(pa.compute.sum(adds.column("size_bytes")).as_py() or 0) if adds.num_rows else 0
            out.append(TableInfo(name, t.version(), rows, adds.num_rows, size))
        return out

    def _sort_partitions(self, name: str, spec: TableSpec) -> dict[str, Any]:
        """Rewrite each partition holding files not yet sorted as files sorted by
        ``spec.cluster_by`` (one partition in memory at a time), in row groups of
        ``spec.cluster_row_group`` rows, so min/max statistics narrow a lookup to one.

        Each partition is one transaction that removes the files it read (no data
        change); if a writer replaced one of them meanwhile, the commit fails and the
        partition waits for the next run. (deltalake's ``z_order`` was tried first:
        on ids sharing their first nine bytes it leaves row groups overlapping.)
        """
        table = self.delta(name)
        version = table.version()
        adds = arrow_table(table.get_add_actions(flatten=True))
        if adds.num_rows == 0:
            return {"numFilesAdded": 0, "numFilesRemoved": 0}
        (col,) = spec.partition_by or (None,)
        files: dict[Any, list[dict[str, Any]]] = {}
        for f in adds.select(["path", "size_bytes", *([f"partition.{col}"] if col else [])]).to_pylist():
            files.setdefault(f.get(f"partition.{col}") if col else None, []).append(f)
        added = removed = 0
        writer = TableWriter(self.location(name), spec, row_group_size=spec.cluster_row_group)
        for value, part in sorted(files.items(), key=lambda kv: str(kv[0])):
            if all(posixpath.basename(f["path"]).startswith(_SORTED) for f in part):
                continue
            where = None if col is None else f"{col} = {literal(value)}"
            rows = self.read(name, where=where, version=version)
            rows = rows.sort_by([(c, "ascending") for c in spec.cluster_by])
            new = [
                dataclasses.replace(a, data_change=False)
                for a in writer.write(spec.conform(rows), prefix=f"sorted-{uuid.uuid4().hex}")
            ]
            now = int(time.time() * 1000)
            pvalues = {} if col is None else {col: _partition_value(value)}
            gone = [RemoveAction(f["path"], False, now, int(f["size_bytes"]), pvalues) for f in part]
            if replace_files(self.location(name), spec, new, gone, {_CLUSTERED: ",".join(spec.cluster_by)}):
                added, removed = added + len(new), removed + len(gone)
        return {"numFilesAdded": added, "numFilesRemoved": removed}

    @contextmanager
    def lease(
        self,
        name: str,
        holder: str,
        ttl_s: float = 3600.0,
        wait_s: float = 0.0,
        *,
        reclaim: bool = False,
        keep_alive: bool = False,
    ) -> Iterator[str]:
        """Hold the lake-wide lease ``name``; waits up to ``wait_s`` for another holder to let go
        (``reclaim``: see :func:`storage.lease.acquire`). ``keep_alive``: a thread renews it
        every third of ``ttl_s`` while the block runs, so a job of any length keeps it and a
        holder that died frees it within ``ttl_s``."""
        from storage.lease import acquire, release, renew

        deadline = time.monotonic() + wait_s
        while True:
            try:
                token = acquire(self, name, holder, ttl_s, reclaim=reclaim)
                break
            except LeaseHeldError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
        stop = threading.Event()

        def keep() -> None:
            while not stop.wait(ttl_s / 3):
                try:
                    renew(self, name, token, holder, ttl_s)
                except FleetError as exc:  # taken over after a stall: the job's commit txn still guards it
                    log.warning("lease %s not renewed: %s", name, exc)
                    return

        keeper = threading.Thread(target=keep, name=f"lease {name}", daemon=True) if keep_alive else None
        if keeper is not None:
            keeper.start()
        try:
            yield token
        finally:
            stop.set()
            if keeper is not None:
                keeper.join()
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
        """Compact small files and vacuum, one table at a time, under the lake-wide lease.

        A table with ``cluster_by`` columns is instead rewritten sorted by them, in the
        partitions that hold files not sorted yet (:meth:`_sort_partitions`).
        """
        reports = []
        with self.lease("maintenance", holder, ttl_s):
            for name in tables or [n for n in TABLES if not n.startswith("_")]:
                if not self.exists(name):
                    continue
                t = self.delta(name)
                spec = get_spec(name)
                compacted = self._sort_partitions(name, spec) if spec.cluster_by else t.optimize.compact()
                if compacted.get("numFilesAdded", 0):  # readers then load one file, not the rewrites' log
                    self.delta(name).create_checkpoint()
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
