"""The lake: every table of DESIGN.md under one root, local or on S3.

:class:`Lake` reads and writes rows. Beside it, in rooms of their own: creating,
upgrading and maintaining the tables (:mod:`storage.maintenance`), the threads' shared
latest versions (:mod:`storage.snapshots`), which files under the root may be served
(:mod:`storage.served`) and leases (:mod:`storage.lease`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import TableNotFoundError as DeltaNotFound
from deltalake.transaction import AddAction, CommitProperties, Transaction

from storage import maintenance, served
from storage.config import Settings, normalize_uri
from storage.delta import CommitResult, TableWriter, Txn, claim, commit
from storage.errors import CommitError, FleetError, LeaseHeldError, StorageError, TableNotFoundError
from storage.maintenance import TableInfo
from storage.objectstore import Location, reachable
from storage.partitions import PartitionFiles, partition_files
from storage.query import arrow_table, audit_scan, auditing, run_sql, run_sql_on, select_sql
from storage.results import ResultCache
from storage.schema import TableSpec
from storage.snapshots import Snapshots
from storage.tables import get_spec
from storage.views import current_view

__all__ = ["Lake"]

log = logging.getLogger(__name__)

_PARTITION_MAPS = 8  # versions' file maps a lake keeps (storage.partitions)


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
        file_cache_bytes: int = 64 << 20,
    ):
        self.root = Location(normalize_uri(uri), dict(storage_options or {}))
        self.commit_retries = commit_retries
        self.query_cache_bytes = query_cache_bytes
        self._snapshots = Snapshots()  # a pickled copy starts empty
        self._partitions: dict[tuple[str, str, int], PartitionFiles] = {}  # (table, column, version)
        self._maps_lock = threading.Lock()
        self._answers = ResultCache(query_cache_bytes)  # query answers by table version (storage.results)
        self.file_cache_bytes = file_cache_bytes
        self._file_columns = ResultCache(file_cache_bytes)  # data files' columns read (storage.results)

    def __getstate__(self) -> dict[str, Any]:  # Ray ships lakes to workers: not the caches
        state = dict(self.__dict__)
        state["_partitions"], state["_answers"], state["_maps_lock"] = {}, None, None
        state["_file_columns"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._answers = ResultCache(self.query_cache_bytes)
        self._file_columns = ResultCache(self.file_cache_bytes)
        self._maps_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        return cls(
            settings.lake,
            settings.storage_options,
            commit_retries=settings.commit_retries,
            query_cache_bytes=int(settings.query_cache_mib * (1 << 20)),
            file_cache_bytes=int(settings.file_cache_mib * (1 << 20)),
        )

    @property
    def uri(self) -> str:
        return self.root.uri

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    def location(self, table: str) -> Location:
        return self.root.join(get_spec(table).name)

    def locate(self, uri: str) -> Location | None:
        """A file the lake wrote (a clip's video, a thumbnail), with the lake's storage
        options; None for a URI outside the lake (:func:`storage.served.locate`)."""
        return served.locate(self.root, uri)

    def confined(self, loc: Location) -> bool:
        """Whether serving ``loc`` serves a file the lake holds (:func:`storage.served.confined`)."""
        return served.confined(self.root, loc)

    # -- tables ----------------------------------------------------------------

    def exists(self, table: str) -> bool:
        loc = self.location(table)
        with reachable(loc.uri):
            return DeltaTable.is_deltatable(loc.uri, storage_options=loc.storage_options)

    def create_tables(self, names: list[str] | None = None) -> list[str]:
        """Create the missing tables (all by default), upgrade the others' schemas; returns
        the ones created (:func:`storage.maintenance.create_tables`)."""
        return maintenance.create_tables(self, names)

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
        """The table's latest version for reading, shared by the threads of a process
        (:mod:`storage.snapshots`: a request costs one log listing, not a replay).
        Inside a :func:`storage.views.read_view`, the version the view pinned.
        """
        view = current_view()
        if view is not None and (pinned := view.get(self.uri, table)) is not None:
            return pinned
        latest = self._snapshots.latest(self, table)
        return latest if view is None else view.pin(self.uri, table, latest)

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

    def upsert(
        self, table: str, data: pa.Table, txn: Txn | None = None, only_if: str | None = None
    ) -> dict[str, Any]:
        """MERGE ``data`` on the table's key: matched rows updated, new rows inserted.
        ``only_if``: a predicate on the row as it is (alias ``t``): a matched row it does not
        hold for is left as it is (a later state another writer recorded is not undone)."""
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
                        .when_matched_update_all(predicate=only_if)
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
        partitions: Sequence[Any] | None = None,
    ) -> pa.Table:
        """``SELECT columns WHERE where ORDER BY order_by LIMIT limit``, all of it run by
        the engine (see :mod:`storage.query`): only the answer's rows reach Python. An
        answer is kept for the table version it read (:mod:`storage.results`), so asking
        again of that version does not run the engine again.

        ``partitions``: values of the table's (first) partition column that ``where``
        itself confines the rows to (say ``date = ...`` or a range of days); the query
        then opens those partitions' files alone (:mod:`storage.partitions`), so its cost
        does not grow with the table's file count. Rows outside them are never seen: the
        caller's predicate must not match any.
        """
        spec = get_spec(table)
        sql = select_sql(table, columns, where, order_by, limit)
        cache = None if auditing() else self._answers  # an audit counts the engine's scans
        with reachable(self.location(table).uri):
            delta = self.snapshot(table) if version is None else None
            if delta is not None:
                version = delta.version()
            key = (table, version, sql)  # the partitions named are those ``where`` confines it to

            def run() -> pa.Table:
                delta_ = delta if delta is not None else self.delta(table, version)
                files = None
                if partitions is not None and spec.partition_by:
                    files = self._files(table, spec.partition_by[0], delta_)
                if files is not None and files.readable and partitions is not None:
                    loc, named = self.location(table), files

                    def read(cols: list[str]) -> tuple[pa.Table, int]:
                        return named.read(loc.path, loc.arrow_fs, partitions, cols, self._file_columns)

                    data = run_sql_on(table, files.schema, read, sql)
                else:
                    data = run_sql({table: delta_}, sql)
                if data.num_columns == 0 and columns is None:
                    return spec.schema.empty_table()
                return _plain_types(data, spec)

            return run() if cache is None else cache.get_or_run(key, run)

    def partition_rows(self, table: str, column: str, version: int | None = None) -> pa.Table:
        """Rows per value of the partition column ``column``, sorted by value, from the
        Delta log alone (``value``, ``rows``, ``files``): no data file is read."""
        delta = self.snapshot(table) if version is None else self.delta(table, version)
        return self._files(table, column, delta).counts

    def _files(self, table: str, column: str, delta: DeltaTable) -> PartitionFiles:
        """The version's files by value of ``column`` (:mod:`storage.partitions`), kept for
        the last few versions asked (a map holds an entry per file: ~10 MB at 50,000
        files, and each ingest commit makes a new version)."""
        key = (table, column, delta.version())
        with self._maps_lock:
            hit = self._partitions.pop(key, None)
        if hit is None:
            hit = partition_files(delta, column)  # outside the lock: other tables' reads go on
        with self._maps_lock:
            self._partitions[key] = hit  # the most recently asked last
            while len(self._partitions) > _PARTITION_MAPS:
                self._partitions.pop(next(iter(self._partitions)))
        return hit

    # -- leases & maintenance ------------------------------------------------------

    def info(self) -> list[TableInfo]:
        """Each table's version, rows, files and bytes (:func:`storage.maintenance.info`)."""
        return maintenance.info(self)

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
        """Compact, sort and vacuum under the lake-wide lease (:func:`storage.maintenance.maintain`)."""
        return maintenance.maintain(
            self,
            holder,
            tables=tables,
            retention_hours=retention_hours,
            enforce_retention=enforce_retention,
            ttl_s=ttl_s,
        )
