"""Delta IO: data files written anywhere (Ray workers), one idempotent commit.

The shape is Ray Data's ``Datasink``: workers call :meth:`TableWriter.write`,
which writes Parquet files into the table location and returns their Delta
add-actions (with column statistics, so reads can skip files); the driver calls
:func:`commit` once with all of them. A commit carries an application
transaction id (Delta's ``txn`` action: app id = job name, version = run
number), so committing the same run twice is a no-op, and a failed commit is
retried only after checking whether it landed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import math
import posixpath
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from storage.errors import CommitError, StorageError, StorageUnavailableError
from storage.faults import fault_point
from storage.objectstore import Location, reachable
from storage.schema import TableSpec

__all__ = ["CommitResult", "TableWriter", "Txn", "claim", "commit", "replace_files"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Txn:
    """An application transaction: ``app_id`` (job name) and ``version`` (run number)."""

    app_id: str
    version: int


@dataclass(frozen=True)
class CommitResult:
    table: str
    version: int
    files: int
    rows: int
    already_committed: bool = False


def _partition_runs(data: pa.Table, cols: tuple[str, ...]) -> Iterator[tuple[dict[str, Any], pa.Table]]:
    """Split ``data`` by partition values; contiguous runs are zero-copy slices."""
    if not cols:
        yield {}, data
        return
    if data.num_rows == 0:
        return
    keys = [data.column(c).combine_chunks() for c in cols]
    changed = pc.or_(pc.not_equal(keys[0][1:], keys[0][:-1]), pa.scalar(False))
    for k in keys[1:]:
        changed = pc.or_(changed, pc.not_equal(k[1:], k[:-1]))
    changed = pc.fill_null(changed, True)
    starts = [0, *(pc.indices_nonzero(changed).to_numpy() + 1).tolist()]
    distinct = pa.table(keys, names=list(cols)).group_by(list(cols)).aggregate([]).num_rows
    if len(starts) != distinct:
        data = data.sort_by([(c, "ascending") for c in cols])
        yield from _partition_runs(data, cols)
        return
    bounds = [*starts, data.num_rows]
    for a, b in itertools.pairwise(bounds):
        part = data.slice(a, b - a)
        yield {c: part.column(c)[0].as_py() for c in cols}, part


def _partition_value(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")
    return str(v)


def _stat_value(v: Any, *, is_max: bool) -> Any:
    if isinstance(v, dt.datetime):
        # Delta keeps millisecond stats: round the max up so no row lies above it.
        us = v.microsecond
        if is_max and us % 1000:
            v = v + dt.timedelta(microseconds=1000 - us % 1000)
        v = v.replace(microsecond=(v.microsecond // 1000) * 1000)
        return v.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _file_stats(data: pa.Table, skip: tuple[str, ...]) -> str:
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for f in data.schema:
        if f.name in skip:
            continue
        col = data.column(f.name)
        t = f.type
        if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            continue
        nulls[f.name] = col.null_count
        if pa.types.is_boolean(t) or col.null_count == len(col):
            continue
        if not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_string(t)
            or pa.types.is_date(t)
            or pa.types.is_timestamp(t)
        ):
            continue
        mm = pc.min_max(col)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if isinstance(lo, str) and (len(lo) > 64 or len(hi) > 64):
            continue
        lo, hi = _stat_value(lo, is_max=False), _stat_value(hi, is_max=True)
        if lo is not None and hi is not None:
            mins[f.name], maxs[f.name] = lo, hi
    return json.dumps({"numRecords": data.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls})


@dataclass(frozen=True)
class TableWriter:
    """Writes Parquet data files for one table; picklable, so it runs in Ray tasks."""

    location: Location
    spec: TableSpec
    compression: str = "zstd"
    row_group_size: int = 128 * 1024
    max_rows_per_file: int = 1_000_000

    def write(self, data: pa.Table, prefix: str | None = None) -> list[AddAction]:
        """Write ``data`` (already conformed) and return the add-actions to commit.

        Nothing is visible to readers until the actions are committed; files of
        a write that never commits are orphans that vacuum removes.
        """
        prefix = prefix or uuid.uuid4().hex
        fs = self.location.arrow_fs
        root = self.location.path
        parts = self.spec.partition_by
        actions: list[AddAction] = []
        now_ms = int(time.time() * 1000)
        n = 0
        for values, part in _partition_runs(data, parts):
            pvalues = {k: _partition_value(v) for k, v in values.items()}
            subdir = "/".join(
                f"{k}={v if v is not None else '__HIVE_DEFAULT_PARTITION__'}" for k, v in pvalues.items()
            )
            body = part.drop_columns(list(parts)) if parts else part
            dictionary: bool | list[str] = (
                [c for c in body.column_names if c not in self.spec.no_dictionary]
                if self.spec.no_dictionary
                else True
            )
            if self.location.is_local:
                fs.create_dir(posixpath.join(root, subdir) if subdir else root, recursive=True)
            for off in range(0, max(body.num_rows, 1), self.max_rows_per_file):
                chunk = body.slice(off, self.max_rows_per_file)
                if chunk.num_rows == 0:
                    continue
                rel = posixpath.join(subdir, f"part-{prefix}-{n:05d}.{self.compression}.parquet")
                n += 1
                path = posixpath.join(root, rel)
                pq.write_table(
                    chunk,
                    path,
                    filesystem=fs,
                    compression=self.compression,
                    row_group_size=self.row_group_size,
                    use_dictionary=dictionary,
                )
                size = fs.get_file_info(path).size
                actions.append(
                    AddAction(
                        path=rel,
                        size=int(size or 0),
                        partition_values=pvalues,
                        modification_time=now_ms,
                        data_change=True,
                        stats=_file_stats(chunk, parts),
                    )
                )
        return actions


def _num_rows(actions: list[AddAction]) -> int:
    return sum(int(json.loads(a.stats).get("numRecords", 0)) for a in actions)


def commit(
    location: Location,
    spec: TableSpec,
    actions: list[AddAction],
    txn: Txn | None = None,
    *,
    retries: int = 10,
    metadata: dict[str, str] | None = None,
) -> CommitResult:
    """Commit ``actions`` to the table in one Delta transaction.

    With ``txn``, a run already committed is a no-op (``already_committed``); a
    failed attempt is retried only after checking ``transaction_version``, since
    a commit can land and still report an error. Without ``txn``, only a
    conflict (which by definition did not land) is retried.
    """
    so = location.storage_options
    with reachable(location.uri):
        table = DeltaTable(location.uri, storage_options=so)
    rows = _num_rows(actions)

    def landed(t: DeltaTable) -> bool:
        if txn is None:
            return False
        v = t.transaction_version(txn.app_id)
        return v is not None and v >= txn.version

    if landed(table):
        return CommitResult(spec.name, table.version(), 0, 0, already_committed=True)

    custom = dict(metadata or {})
    app_txns = None
    if txn is not None:
        custom.update({"fleetmine.app_id": txn.app_id, "fleetmine.run": str(txn.version)})
        app_txns = [Transaction(txn.app_id, txn.version)]
    props = CommitProperties(custom_metadata=custom or None, app_transactions=app_txns)
    batch: list[AddAction | RemoveAction] = list(actions)
    delay = 0.05
    last: Exception | None = None
    fault_point(f"commit.before:{spec.name}")
    for attempt in range(retries + 1):
        try:
            table.create_write_transaction(
                batch,
                mode="append",
                schema=table.schema(),
                partition_by=list(spec.partition_by) or None,
                commit_properties=props,
            )
            fault_point(f"commit.after:{spec.name}")
            table = DeltaTable(location.uri, storage_options=so)
            return CommitResult(spec.name, table.version(), len(actions), rows)
        except (CommitFailedError, DeltaError, OSError) as exc:
            last = exc
            if not isinstance(exc, CommitFailedError) and txn is None:
                raise _failed(spec, location, exc, "") from exc
            with reachable(location.uri):
                table = DeltaTable(location.uri, storage_options=so)
            if landed(table):
                log.info("commit of %s run %s landed despite %s", spec.name, txn, exc)
                return CommitResult(spec.name, table.version(), len(actions), rows)
            log.warning("commit to %s failed (attempt %d): %s", spec.name, attempt + 1, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise _failed(spec, location, last, f" after {retries + 1} attempts") from last


def claim(
    location: Location,
    spec: TableSpec,
    actions: list[AddAction],
    txn: Txn,
    token: str,
    *,
    retries: int = 10,
) -> bool:
    """Commit ``actions`` as the claim of ``txn.version`` in the ``txn.app_id`` stream,
    or return False when a commit already holds that number or a later one.

    A compare-and-swap on the app id: the number is checked free on one snapshot and
    the claim is committed on that same snapshot, so a claim that landed after it is a
    concurrent commit carrying the same app id, which Delta refuses (checking on one
    snapshot and merging on a fresher one let two claims of a number both land).
    ``token`` goes into the commit's metadata: after an error, a claim found in the log
    with it is ours (the commit landed and its answer was lost), one without it is not.
    """
    so = location.storage_options
    custom = {"fleetmine.app_id": txn.app_id, "fleetmine.run": str(txn.version), "fleetmine.claim": token}
    props = CommitProperties(custom_metadata=custom, app_transactions=[Transaction(txn.app_id, txn.version)])
    tried_at: int | None = None  # the snapshot version of the last attempt that failed
    delay = 0.05
    last: Exception | None = None
    for attempt in range(retries + 1):
        with reachable(location.uri):
            table = DeltaTable(location.uri, storage_options=so)
        if tried_at is not None and _holds_token(table, tried_at, token):
            log.info("claim of %s in %s landed despite %s", txn, spec.name, last)
            return True
        held = table.transaction_version(txn.app_id)
        if held is not None and held >= txn.version:
            return False
        fault_point(f"claim.checked:{spec.name}")
        tried_at = table.version()
        try:
            table.create_write_transaction(
                list(actions),
                mode="append",
                schema=table.schema(),
                partition_by=list(spec.partition_by) or None,
                commit_properties=props,
            )
            return True
        except (CommitFailedError, DeltaError, OSError) as exc:
            last = exc
            log.info("claim of %s in %s not made (attempt %d): %s", txn, spec.name, attempt + 1, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise _failed(spec, location, last, f" (claim of {txn}) after {retries + 1} attempts") from last


def _holds_token(table: DeltaTable, since: int, token: str) -> bool:
    """Whether a commit after version ``since`` carries ``token`` in its metadata."""
    newer = table.version() - since
    return newer > 0 and any(h.get("fleetmine.claim") == token for h in table.history(limit=newer))


def replace_files(
    location: Location,
    spec: TableSpec,
    adds: list[AddAction],
    removes: list[RemoveAction],
    metadata: dict[str, str] | None = None,
) -> bool:
    """Swap ``removes`` for ``adds`` (the same rows, rewritten) in one transaction.

    Not retried: a conflict means another writer changed those files, and the caller's
    rewrite is stale. Returns whether it landed.
    """
    with reachable(location.uri):
        table = DeltaTable(location.uri, storage_options=location.storage_options)
        try:
            table.create_write_transaction(
                [*adds, *removes],
                mode="append",
                schema=table.schema(),
                partition_by=list(spec.partition_by) or None,
                commit_properties=CommitProperties(custom_metadata=metadata),
            )
        except CommitFailedError as exc:
            log.warning(
                "rewrite of %d %s files lost to a concurrent commit: %s", len(removes), spec.name, exc
            )
            return False
    return True


def _failed(spec: TableSpec, location: Location, exc: Exception | None, after: str) -> StorageError:
    """A commit that failed for good: the store did not answer, or the commit was refused."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        return StorageUnavailableError(f"commit to {spec.name}{after}: {location.uri} did not answer: {exc}")
    return CommitError(f"commit to {spec.name} failed{after}: {exc}")
