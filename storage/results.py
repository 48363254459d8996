"""Query answers kept per table version: a version's rows never change, so neither does
the answer of a query run on it.

The API asks the same few queries again and again (the first page of clips, a clip by
id, the dataset list), and each costs the engine a plan and a scan (3-7 ms of CPU on
DataFusion) for an answer of a few kB. Keyed by ``(table, version, sql)``, an answer is
right for as long as anyone reads that version; a commit makes a new version, whose
queries miss and run. Least recently used answers go first past :attr:`max_bytes`.

The same holds one level down: a Delta data file is never rewritten (a compaction or an
overwrite adds new files and removes old ones from the log), so the columns a catalog
query read from a file are right for as long as the file is named. A lake keeps those too
(:meth:`storage.partitions.PartitionFiles.read`, keyed by file path and column): under
load a page of clips opened and decoded the same few Parquet files for every request
(py-spy on the load test's server: 53 % of the page route), and each ingest commit, by
adding files to the day being read, made every page read one file more.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

import pyarrow as pa

__all__ = ["ResultCache"]

Key = tuple[str, int | None, str]  # (table, version, sql); for a data file's column: (path, size, column)


class ResultCache:
    """Answers (Arrow tables, immutable, shared by threads) by ``(table, version, sql)``,
    at most ``max_bytes`` of them; one answer over ``max_bytes // 8`` is not kept."""

    def __init__(self, max_bytes: int = 16 << 20):
        self.max_bytes = max_bytes
        self._held: OrderedDict[Key, pa.Table] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._running: dict[Key, Future[pa.Table]] = {}

    def get(self, key: Key) -> pa.Table | None:
        with self._lock:
            hit = self._held.get(key)
            if hit is not None:
                self._held.move_to_end(key)
            return hit

    def get_or_run(self, key: Key, run: Callable[[], pa.Table]) -> pa.Table:
        """The answer kept for ``key``, else ``run()``'s, kept; callers asking a key that
        another is running wait for its answer instead of running it again. Under load a
        commit (a new version) or a server's first second sent some forty threads into
        the same cold query at once, each one planning and reading what the others did.
        A waiter whose runner failed runs it itself (the error, if it is one, is its own)."""
        with self._lock:
            hit = self._held.get(key)
            if hit is not None:
                self._held.move_to_end(key)
                return hit
            running = self._running.get(key)
            if running is None:
                mine: Future[pa.Table] = Future()
                self._running[key] = mine
        if running is not None:
            try:
                return running.result()
            except Exception:
                return run()
        try:
            answer = run()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            self.put(key, answer)  # kept before the runner leaves: a new caller finds it
            mine.set_result(answer)
            return answer
        finally:
            with self._lock:
                self._running.pop(key, None)

    def put(self, key: Key, answer: pa.Table) -> None:
        size = answer.nbytes
        if size > self.max_bytes // 8:
            return
        with self._lock:
            if key in self._held:
                return
            self._held[key] = answer
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._held.popitem(last=False)
                self._bytes -= old.nbytes

    def __len__(self) -> int:
        return len(self._held)
