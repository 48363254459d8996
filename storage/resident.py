"""A table's filter columns held in memory, current with its Delta log, for predicates
asked many times a second (a filtered similarity search asks one per request).

A filtered search used to read ``clips`` through the engine on every request to learn
which clips a filter allows: 2-14 ms of index work behind up to 1.2 s of scan (the
``events`` list column of every file, for ``hard_brake``). Here the columns filters
name are read once per process and kept as Arrow tables, one per ``date`` partition,
with the files each was read from. When the table moves, only the partitions whose
files changed (an ingest's new day, a re-ingested drive's day, a compacted day) are
read again; the rest are kept as they are, so a commit costs a process the days it
touched, not the table. The predicate runs on the held rows in DataFusion, the engine
the lake's own reads run (``DeltaTable.scan``), with the same dialect settings, so a
predicate means the same here as in a scan; its answer is kept with the version it was
asked of (a filter asked again before the table moves is answered as it was: 23 ms of
DataFusion at 10^6 clips once, not per search).

What stays on the engine path (:meth:`Resident.select` answers None and the caller
reads as before): a request whose read view pinned a version older than the one held
(it must see its own version), a predicate naming a column that is not held, and a
table larger than ``max_rows`` (a worker's memory is not for a 10^8-row table; a
cluster holds it per shard).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from storage.errors import StorageError
from storage.kept import Kept
from storage.lake import Lake
from storage.query import arrow_table
from storage.sql import in_list
from storage.tables import clips

__all__ = ["CLIP_FILTER_COLUMNS", "Resident", "clip_rows"]

log = logging.getLogger(__name__)

CLIP_FILTER_COLUMNS = (
    "clip_id",
    "date",
    "drive_id",
    "vehicle_id",
    "camera",
    "group_id",
    "start_time",
    "end_time",
    "duration_s",
    *clips.FEATURES,
    "events",
    "trigger_at_s",
)
"""The ``clips`` columns a clip filter (``storage.filters.ClipFilter``, a DatasetQuery)
names; no URIs or calibration text, which no filter reads and which would double the
bytes held."""

_ENCODED = ("drive_id", "vehicle_id", "camera")  # few distinct values: held dictionary-encoded
_DATES_PER_READ = 64  # changed partitions read per engine query
_LAKES_HELD = 4  # a server serves one lake; a process that opens many (tests, tools) keeps a few
_ANSWERS_BYTES = 64 << 20  # predicates' answers kept per held version (clip ids: ~30 B each)
_ANSWERS_HELD = 256  # ... and at most this many (an empty answer is a few bytes)
_VOLATILE = re.compile(
    r"\b(now|today|current_date|current_time|current_timestamp|localtime|localtimestamp|random|uuid)\b", re.I
)  # DataFusion's functions whose value is not the table's: a predicate naming one is run each time


@dataclass(frozen=True)
class _Held:
    """The rows of one table version: per partition value, its files and its rows; and
    the engine's session over them (made once per version: registering the batches cost
    more than a filter on them), shared by the threads that read this version."""

    version: int
    files: dict[str, frozenset[str]]
    rows: dict[str, pa.Table]
    count: int = 0
    session: Any = field(default=None, compare=False, repr=False)
    # The last predicates' answers on this version, by (predicate, column): a filter asked
    # of every search (a page of similar clips, each next query under the same filter) runs
    # once per version; an answer over a quarter of the budget (most clips) is not kept.
    answers: Kept[pa.Array] = field(
        default_factory=lambda: Kept(
            _answer_bytes, max_bytes=_ANSWERS_BYTES, items=_ANSWERS_HELD, largest=_ANSWERS_BYTES // 4
        ),
        compare=False,
        repr=False,
    )


def _answer_bytes(answer: pa.Array) -> int:
    return int(answer.get_total_buffer_size()) + 256  # its array, key and entry besides the bytes


class Resident:
    """The ``columns`` of ``table`` (partitioned by ``partition``) held for one lake."""

    def __init__(
        self, table: str, columns: Sequence[str], partition: str = "date", max_rows: int = 5_000_000
    ):
        self.table = table
        self.columns = list(columns)
        self.partition = partition
        self.max_rows = max_rows
        self._held: dict[str, _Held] = {}
        self._too_big: dict[str, int] = {}  # lake -> the version found past max_rows
        self._lock = threading.Lock()

    def select(self, lake: Lake, where: str, column: str = "clip_id") -> pa.Array | None:
        """``column`` of the rows matching ``where`` at the version ``lake`` reads (its read
        view's, if one pinned it), or None where the engine must answer (see the module)."""
        try:
            held = self.held(lake)
            return None if held is None else _run(held, where, column)
        except Exception as exc:  # a column not held, a function this engine lacks, a failed read
            log.debug("resident %s cannot run %r (%s): reading through the engine", self.table, where, exc)
            return None

    def held(self, lake: Lake) -> _Held | None:
        """The held rows at the version ``lake`` reads, read or brought up to it first;
        None for an older version than the one held, or a table past ``max_rows``."""
        snapshot = lake.snapshot(self.table)
        version = snapshot.version()
        if self._too_big.get(lake.uri) == version:  # said once per version, not under the lock per request
            return None
        with self._lock:
            held = self._held.get(lake.uri)
            if held is not None and held.version == version:
                return held
            if held is not None and held.version > version:
                return None  # a read view pinned before the last refresh: it reads its own
            files, count = _files(snapshot, self.partition)
            if count > self.max_rows:
                self._held.pop(lake.uri, None)
                self._too_big[lake.uri] = version
                return None
            fresh = self._refresh(lake, held, version, files)
            self._held.pop(lake.uri, None)
            self._held[lake.uri] = fresh  # the newest last: the least recently refreshed go first
            while len(self._held) > _LAKES_HELD:
                self._held.pop(next(iter(self._held)))
            return fresh

    def forget(self, lake: Lake) -> None:
        with self._lock:
            self._held.pop(lake.uri, None)

    def _refresh(
        self, lake: Lake, held: _Held | None, version: int, files: dict[str, frozenset[str]]
    ) -> _Held:
        before = held.files if held is not None else {}
        changed = sorted(p for p in files.keys() | before.keys() if files.get(p) != before.get(p))
        rows = {
            p: t
            for p, t in (held.rows if held is not None else {}).items()
            if p in files and p not in changed
        }
        wanted = [p for p in changed if p in files]
        for start in range(0, len(wanted), _DATES_PER_READ):
            chunk = wanted[start : start + _DATES_PER_READ]
            where = f"{self.partition} IN ({in_list(chunk)})"
            got = _encoded(lake.read(self.table, columns=self.columns, where=where, version=version))
            key = pc.cast(got.column(self.partition), pa.string())
            for p in chunk:
                rows[p] = got.filter(pc.equal(key, p))
        return _Held(version, files, rows, sum(t.num_rows for t in rows.values()), _session(rows))


def _files(snapshot: DeltaTable, partition: str) -> tuple[dict[str, frozenset[str]], int]:
    """Per partition value (as text), the data files of the snapshot; and its rows (from
    the files' statistics, where the log has them)."""
    actions = arrow_table(snapshot.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    values = pc.cast(actions.column(f"partition.{partition}"), pa.string()).to_pylist()
    out: dict[str, set[str]] = {}
    for path, value in zip(paths, values, strict=True):
        out.setdefault(str(value), set()).add(path)
    count = 0
    if "num_records" in actions.column_names:
        count = int(pc.sum(actions.column("num_records")).as_py() or 0)
    return {k: frozenset(v) for k, v in out.items()}, count


def _encoded(t: pa.Table) -> pa.Table:
    for name in _ENCODED:
        if name in t.column_names:
            i = t.column_names.index(name)
            t = t.set_column(i, name, pc.dictionary_encode(t.column(name)))
    return t


def _session(rows: dict[str, pa.Table]) -> Any:
    """A DataFusion session holding ``rows`` as the table ``t`` (None for no rows)."""
    from datafusion import SessionConfig, SessionContext

    batches = [b for t in rows.values() if t.num_rows for b in t.to_batches()]
    if not batches:
        return None
    config = (
        SessionConfig()
        .set("datafusion.sql_parser.dialect", "generic")  # as DeltaTable.scan parses predicates
        .set("datafusion.sql_parser.enable_ident_normalization", "false")
        .with_target_partitions(1)
    )
    ctx = SessionContext(config)
    ctx.register_record_batches("t", [batches])
    return ctx


def _run(held: _Held, where: str, column: str) -> pa.Array:
    if held.session is None:
        return pa.array([], pa.string())
    if _VOLATILE.search(where):  # its answer moves with the clock or the dice, not the table
        return _engine(held, where, column)
    return held.answers.answer((where, column), lambda: _engine(held, where, column))


def _engine(held: _Held, where: str, column: str) -> pa.Array:
    # parsed as one expression over the held columns (never spliced into a statement)
    result = held.session.table("t").filter(where).select(column).to_arrow_table()
    out = result.column(0)
    if not isinstance(out, pa.ChunkedArray | pa.Array):
        raise StorageError(f"resident {column} came back as {type(out)}")
    arr = out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out
    return arr if arr.type == pa.string() else arr.cast(pa.string())


_CLIPS = Resident("clips", CLIP_FILTER_COLUMNS)


def clip_rows() -> Resident:
    """The process's resident ``clips`` filter columns (one per process, every lake)."""
    return _CLIPS
