"""Where a full ``mine`` keeps its per-clip rows until the corpus-wide numbers are known.

A clip's novelty is its rank among every clip's evidence, and its rarity and signal
parts need the whole corpus first (the clusters' sizes, the signals' medians): a clip's
``mining_scores`` row cannot be written when its batch is searched. A :class:`Spill` is an
Arrow IPC file on local disk (``TMPDIR``) of what those rows need (id, date, start time,
events, signal features, k-NN distances), with each signal feature also in a raw float64
file of its own, so a median reads one feature of the corpus, not all seven. It is read
back a record batch at a time; nothing in it is held by the process that wrote it.

:func:`day_batches` is the pass that fills it: the embeddings and the ``clips`` feature rows
of one day at a time, joined by id within the day (both tables are partitioned by date),
so neither side's whole corpus is read into one table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders.vectors import EmbeddingSource
from mining.scores.novelty import SIGNALS, day_features, features_of, signal_values
from storage.lake import Lake

__all__ = ["Spill", "day_batches", "event_counts"]


def day_batches(
    lake: Lake, source: EmbeddingSource, days: list[str], *, features: bool
) -> Generator[tuple[str, pa.Array, np.ndarray, pa.Table | None], None, None]:
    """``(day, ids, vectors, feature rows)`` batches of ``source``, one day at a time in the
    order given; the feature rows (``clips``, in the ids' order) only when ``features``."""
    for day in days:
        rows = day_features(lake, day) if features else None
        for ids, vectors in dataclasses.replace(source, days=(day, day)).batches():
            yield day, ids, vectors, None if rows is None else features_of(lake, ids, rows)


def event_counts(rows: pa.Table) -> np.ndarray:
    """How many trigger events each row has (0 for none)."""
    return np.asarray(
        pc.list_value_length(rows.column("events")).fill_null(0).to_numpy(zero_copy_only=False), np.float64
    )


class Spill:
    """The rows of one full run, in the order they were added, in files under ``folder``
    (a temporary folder the run removes); ``k`` distances per row."""

    def __init__(self, folder: Path, k: int):
        self.folder = folder
        self.k = k
        self.path = folder / "rows.arrow"
        self.days: dict[str, tuple[int, int]] = {}  # each day's rows, first and past the last
        self._batch_days: list[str] = []
        self._sink: Any = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._signals: list[Any] = []
        self.rows = 0
        try:
            for j in range(len(SIGNALS)):
                self._signals.append(open(folder / f"signal{j}.f64", "wb"))  # noqa: SIM115
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, day: str, features: pa.Table, knn: np.ndarray) -> None:
        """One batch of a day: its ``clips`` feature rows and its k-NN distances (NaN past
        those found). A day's batches come together (:func:`day_batches`)."""
        if day in self.days and self.days[day][1] != self.rows:
            raise ValueError(f"rows of {day} added apart")
        knn = np.ascontiguousarray(knn, np.float32).reshape(len(features), self.k)
        wide = np.full((len(features), max(self.k, 1)), np.nan, np.float32)  # Arrow lists need a size
        wide[:, : self.k] = knn
        table = features.append_column(
            "knn", pa.FixedSizeListArray.from_arrays(pa.array(wide.ravel(), pa.float32()), wide.shape[1])
        ).combine_chunks()
        if self._writer is None:
            self._sink = pa.OSFile(str(self.path), "wb")
            self._writer = pa.ipc.new_file(self._sink, table.schema)
        for batch in table.to_batches():
            self._writer.write_batch(batch)
            self._batch_days.append(day)
        values = signal_values(features)
        for j, f in enumerate(self._signals):
            f.write(np.ascontiguousarray(values[:, j]).tobytes())
        first = self.days.get(day, (self.rows, self.rows))[0]
        self.rows += len(features)
        self.days[day] = (first, self.rows)

    @property
    def bytes(self) -> int:
        """What the spill takes on disk now."""
        return sum(f.stat().st_size for f in self.folder.iterdir() if f.is_file())

    def close(self) -> None:
        """Done adding (again: nothing); on an error, the files' handles let go, so their
        space is freed with the folder, not when the failed run's frames are."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
        for f in self._signals:
            f.close()

    def _batches(self, only: str | None = None) -> Iterator[pa.RecordBatch]:
        if not self._batch_days:
            return
        with pa.OSFile(str(self.path)) as f:  # read, not mapped: a batch held, then let go
            reader = pa.ipc.open_file(f)
            for i, day in enumerate(self._batch_days):
                if only is None or day == only:
                    yield reader.get_batch(i)

    def tables(self, columns: list[str]) -> Iterator[pa.Table]:
        """The rows' ``columns``, a batch at a time, in order."""
        for batch in self._batches():
            yield pa.Table.from_batches([batch]).select(columns)

    def ids(self) -> Iterator[pa.Array]:
        for batch in self._batches():
            yield batch.column("clip_id")

    def ids_of(self, day: str) -> pa.Array:
        """One day's ids, in order (positions ``days[day]``)."""
        parts = [b.column("clip_id") for b in self._batches(day)]
        return pa.concat_arrays(parts) if parts else pa.array([], pa.string())

    def knn_of(self, rows: pa.Table) -> np.ndarray:
        """``(rows, k)`` float32 distances of a table :meth:`tables` gave."""
        flat = rows.column("knn").combine_chunks().flatten()
        wide = np.asarray(flat.to_numpy(zero_copy_only=False), np.float32).reshape(rows.num_rows, -1)
        return wide[:, : self.k]

    signal_names = SIGNALS

    def signals(self) -> Iterator[np.ndarray]:
        """Each signal feature of every row in turn (float64, NaN for none), one held at a time."""
        for j in range(len(SIGNALS)):
            yield np.fromfile(self.folder / f"signal{j}.f64", np.float64)

    def start_times(self, clips: set[str]) -> dict[str, Any]:
        """The start time of each of ``clips`` that is a row here (near-duplicate groups'
        members: few, where the rows are the corpus)."""
        if not clips:
            return {}
        wanted = pa.array(sorted(clips), pa.string())
        out: dict[str, Any] = {}
        for t in self.tables(["clip_id", "start_time"]):
            hit = t.filter(pc.is_in(t.column("clip_id"), value_set=wanted))
            times = hit.column("start_time").to_pylist()
            out.update(zip(hit.column("clip_id").to_pylist(), times, strict=True))
        return out
