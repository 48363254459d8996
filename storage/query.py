"""Queries run by the Delta engine: DataFusion SQL through deltalake's ``QueryBuilder``.

Predicate, projection, ORDER BY and LIMIT all execute in the engine, which skips
partitions and files by their statistics (min/max per column in the Delta log, per
row group in Parquet) and keeps only ``limit`` rows while it scans (TopK). Nothing
here hands Python more rows than the query asks for.

Scan audit: inside :func:`audit`, every query (and every :meth:`Lake.read`) is run a
second time as ``EXPLAIN ANALYZE`` and the rows its table scans produced, as the
engine's own metrics count them, are added to the :class:`ScanTally`. The API turns
it on per request with ``FLEETMINE_SCAN_AUDIT=1`` (the tests and ``fleetmine bench``
do), so a route that reads an unbounded number of rows shows it.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder
from deltalake.exceptions import DeltaError

from storage.errors import StorageError

__all__ = [
    "ScanTally",
    "arrow_table",
    "audit",
    "auditing",
    "explain_rows",
    "run_sql",
    "run_sql_on",
    "select_sql",
]


def arrow_table(data: object) -> pa.Table:
    """A pyarrow Table from what deltalake returns (arro3 tables, over the C stream).

    Not ``pa.table(data)``: that first asks whether ``data`` is a pandas DataFrame,
    which imports pandas (60 MB of every API replica's memory) on the first read.
    """
    if isinstance(data, pa.Table):
        return data
    return pa.RecordBatchReader.from_stream(data).read_all()


_TALLY: contextvars.ContextVar[ScanTally | None] = contextvars.ContextVar(
    "fleetmine_scan_tally", default=None
)
_METRIC = re.compile(r"(\w+)=([0-9.]+(?: [KMBT])?)(?=[,\]])")
_SCALE = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


@dataclass
class ScanTally:
    """Rows the engine scanned (after partition, file and row-group pruning), per query."""

    queries: list[tuple[str, int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.queries)

    def add(self, table: str, rows: int) -> None:
        self.queries.append((table, rows))


@contextmanager
def audit() -> Iterator[ScanTally]:
    """Count the rows every query in this context scans (costs one extra run per query)."""
    tally = ScanTally()
    token = _TALLY.set(tally)
    try:
        yield tally
    finally:
        _TALLY.reset(token)


def auditing() -> bool:
    """Whether a :func:`audit` is counting this context's scans."""
    return _TALLY.get() is not None


def _count(text: str) -> float:
    value, _, unit = text.strip().partition(" ")
    scale = _SCALE[unit.strip()]
    # DataFusion prints three digits (``2.00 K``): round up, so a bound checked holds exactly.
    return float(value) * scale + (0 if scale == 1 else scale / 100)


def explain_rows(plan: str) -> int:
    """Rows the Parquet scans of an ``EXPLAIN ANALYZE`` plan decoded: the rows they
    produced plus those their pushed-down filter dropped (files, row groups and pages
    pruned by statistics are not read, so they do not count)."""
    total = 0.0
    for line in plan.splitlines():
        if "DataSourceExec" not in line or "metrics=[" not in line:
            continue
        metrics = dict(_METRIC.findall(line.split("metrics=[", 1)[1]))
        total += sum(_count(metrics[k]) for k in ("output_rows", "pushdown_rows_pruned") if k in metrics)
    return int(total)


def _builder(tables: dict[str, DeltaTable]) -> QueryBuilder:
    qb = QueryBuilder()
    for name, table in tables.items():
        qb.register(name, table)
    return qb


def run_sql(tables: dict[str, DeltaTable], sql: str) -> pa.Table:
    """Execute ``sql`` over the registered tables; audited when a tally is active."""
    try:
        qb = _builder(tables)
        result = arrow_table(qb.execute(sql).read_all())
        tally = _TALLY.get()
        if tally is not None:
            plan = arrow_table(_builder(tables).execute(f"EXPLAIN ANALYZE {sql}").read_all())
            tally.add(
                ",".join(tables), explain_rows("\n".join(str(p) for p in plan.column("plan").to_pylist()))
            )
    except DeltaError as exc:
        raise StorageError(f"query failed: {exc}; query: {sql}") from exc
    return result


def run_sql_on(
    name: str, schema: pa.Schema, read: Callable[[list[str]], tuple[pa.Table, int]], sql: str
) -> pa.Table:
    """Execute ``sql`` over the table ``name`` of ``schema`` whose rows ``read`` gives (the
    files of the partitions a query named, :mod:`storage.partitions`), in DataFusion:
    planned first over an empty table of the schema, to learn the columns it scans; then
    ``read`` reads those columns alone and the query runs on them in memory. Audited as
    the rows ``read`` says its files hold (every row of each file it opened)."""
    from datafusion import SessionConfig, SessionContext

    try:
        wanted = _scanned(name, schema, sql)
        data, rows = read(list(wanted))
        # The plan reads ``wanted`` only; the statement still names every column it wrote
        # (a predicate the planner folded away, ``WHERE false AND ...``), so the others are
        # there as nulls, which the same plan never reads.
        n = data.num_rows
        data = pa.table(
            {f.name: data.column(f.name) if f.name in wanted else pa.nulls(n, f.type) for f in schema},
            schema=pa.schema([f.with_nullable(True) for f in schema]),
        )
        ctx = SessionContext(SessionConfig().with_target_partitions(1))
        batches = data.to_batches() or [pa.RecordBatch.from_pylist([], schema=data.schema)]
        ctx.register_record_batches(name, [batches])
        result = ctx.sql(sql).to_arrow_table()
    except StorageError:
        raise
    except Exception as exc:  # DataFusion raises its own exception types
        raise StorageError(f"query failed: {exc}; query: {sql}") from exc
    tally = _TALLY.get()
    if tally is not None:
        tally.add(name, rows)
    return result


@functools.lru_cache(maxsize=1024)
def _scanned(name: str, schema: pa.Schema, sql: str) -> tuple[str, ...]:
    """The columns ``sql`` scans of the table ``name`` of ``schema``: planned once over an
    empty table, then known (a catalog route asks the same statements again and again; the
    plan was a tenth of a page query's time)."""
    from datafusion import SessionConfig, SessionContext

    ctx = SessionContext(SessionConfig().with_target_partitions(1))
    ctx.register_record_batches(name, [[pa.RecordBatch.from_pylist([], schema=schema)]])
    return tuple(_scanned_columns(ctx.sql(sql).optimized_logical_plan()) or schema.names[:1])


def _scanned_columns(plan: Any) -> list[str]:
    """The columns the table scans of a DataFusion logical plan read."""
    out: dict[str, None] = {}
    todo = [plan]
    while todo:
        node = todo.pop()
        variant = node.to_variant()
        if type(variant).__name__ == "TableScan":
            out.update((col, None) for _, col in variant.projection())
        todo.extend(node.inputs())
    return list(out)


def select_sql(
    table: str,
    columns: list[str] | None = None,
    where: str | None = None,
    order_by: list[str] | None = None,
    limit: int | None = None,
) -> str:
    cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    sql = f'SELECT {cols} FROM "{table}"'
    if where:
        sql += f" WHERE {where}"
    if order_by:
        sql += " ORDER BY " + ", ".join(order_by)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


def audit_scan(table: DeltaTable, name: str, columns: list[str] | None, where: str | None) -> None:
    """Within :func:`audit`, count what a ``DeltaTable.scan`` with this projection and
    predicate reads, by running the same scan as SQL under ``EXPLAIN ANALYZE``."""
    tally = _TALLY.get()
    if tally is None:
        return
    sql = select_sql(name, columns, where)
    plan = arrow_table(_builder({name: table}).execute(f"EXPLAIN ANALYZE {sql}").read_all())
    tally.add(name, explain_rows("\n".join(str(p) for p in plan.column("plan").to_pylist())))
