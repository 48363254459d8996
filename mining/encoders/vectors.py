"""Vectors of one model version read in passes of bounded size.

A :class:`VectorSource` is what the index build and ``mine`` stream: all its ids
(one narrow column), then its vectors in batches, optionally of chosen ids only.
:class:`EmbeddingSource` reads the ``embeddings`` table; :class:`ArraySource`
holds arrays already in memory (the same code path, for small inputs and tests).
A :class:`SubSpace` is one block of a model version's vectors, each row scaled back
to unit length (the appearance block that query by example searches on,
:func:`mining.encoders.frame_span`); :class:`ProjectedSource` reads any source
through one, so every index kind and build path serves a sub-space unchanged.
Samples are chosen by a seeded hash of the clip id (:func:`sample_ids`), so the
same clips are drawn whatever the row order, and a grown corpus keeps most of the
sample it had.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.interfaces import ModelSpec
from storage.lake import Lake
from storage.sql import in_list, literal

__all__ = [
    "ArraySource",
    "EmbeddingSource",
    "ProjectedSource",
    "SubSpace",
    "VectorSource",
    "day_of",
    "id_hashes",
    "lowest",
    "matrix",
    "of_model",
    "read_by_ids",
    "sample_ids",
]

_IN_CHUNK = 5000  # an IN list stays a few thousand long
_HASH_CHUNK = 1 << 20  # ids hashed at once by sample_ids


class VectorSource(Protocol):
    @property
    def dim(self) -> int: ...

    def ids(self) -> pa.Array:
        """Every clip id with a vector (one per clip)."""
        ...

    def batches(self, only: pa.Array | None = None) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """(ids, vectors) batches over every clip, or over ``only`` these ids."""
        ...


def of_model(spec: ModelSpec) -> str:
    return f"model_name = {literal(spec.name)} AND model_version = {spec.version}"


def matrix(vectors: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros((0, dim), np.float32)
    flat = pc.list_flatten(vectors).to_numpy()
    return np.asarray(flat.reshape(len(vectors), dim), dtype=np.float32)


def day_of(clip_id: str) -> str | None:
    """The date partition a clip id names (``20180802-...`` -> ``2018-08-02``), if any."""
    import datetime as dt

    try:
        return dt.date(int(clip_id[:4]), int(clip_id[4:6]), int(clip_id[6:8])).isoformat()
    except ValueError:
        return None


def read_by_ids(
    lake: Lake, table: str, columns: list[str], clip_ids: list[str], where: str | None = None
) -> Iterator[pa.Table]:
    """Rows of ``table`` for these clips, a few thousand ids per scan, each scan reading
    only the date partitions its ids name."""
    for start in range(0, len(clip_ids), _IN_CHUNK):
        chunk = clip_ids[start : start + _IN_CHUNK]
        pred = f"clip_id IN ({in_list(chunk)})"
        days = {day_of(c) for c in chunk}
        if None not in days:
            pred += f" AND date IN ({in_list(sorted(d for d in days if d))})"
        yield lake.read(table, columns=columns, where=pred if where is None else f"{where} AND {pred}")


def id_hashes(ids: pa.Array, seed: int | np.ndarray) -> np.ndarray:
    """Each id's CRC-32 seeded with ``seed`` (one for all, or one per id): the key a
    hashed sample keeps the lowest of."""
    names = ids.to_pylist()
    seeds = [seed] * len(names) if isinstance(seed, int) else seed.tolist()
    keys = (zlib.crc32(c.encode(), s) for c, s in zip(names, seeds, strict=True))
    return np.fromiter(keys, np.uint32, len(names))


def lowest(keys: np.ndarray, ids: pa.Array, n: int) -> np.ndarray:
    """Positions of the ``n`` lowest ``keys``, ties at the ``n``-th broken by the lower id:
    the same ``n`` whatever order or chunks the keys came in (32-bit keys tie: ~10^6 pairs
    among 10^8 ids)."""
    if len(keys) <= n:
        return np.arange(len(keys))
    if n <= 0:
        return np.zeros(0, np.int64)
    kth = np.partition(keys, n - 1)[n - 1]
    below = np.flatnonzero(keys < kth)
    tied = np.flatnonzero(keys == kth)
    by_id = pc.sort_indices(ids.take(pa.array(tied))).to_numpy()
    return np.concatenate([below, tied[by_id[: n - len(below)]]])


def sample_ids(ids: pa.Array | Iterable[pa.Array], n: int, seed: int) -> pa.Array:
    """The ``n`` ids with the lowest seeded hash (all of them if there are no more).

    ``ids`` may come in chunks (a scan of the ``clip_id`` column): the lowest ``n`` so far
    are kept between chunks, so a sample of a corpus never holds the corpus's ids, nor a
    Python string per clip (10^8 of them were ~6 GB), only a chunk's."""
    chunks = [ids] if isinstance(ids, pa.Array) else ids
    keys = np.zeros(0, np.uint32)
    kept = pa.array([], pa.string())
    for chunk in chunks:
        for start in range(0, len(chunk), _HASH_CHUNK):
            part = chunk.slice(start, _HASH_CHUNK)
            hashed = id_hashes(part, seed)
            keys = np.concatenate([keys, hashed])
            kept = pa.concat_arrays([kept, part.cast(pa.string())])
            if len(keys) > n:
                low = lowest(keys, kept, n)
                keys, kept = keys[low], kept.take(pa.array(low))
    return kept


@dataclass
class EmbeddingSource:
    """The model version's rows of ``embeddings``, ``batch_rows`` at a time."""

    lake: Lake
    spec: ModelSpec
    batch_rows: int = 16_384
    version: int | None = None  # the embeddings table version read (None: the latest)
    days: tuple[str, str] | None = None  # only the clips of these days, first and last (an index shard's)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def where(self) -> str:
        if self.days is None:
            return of_model(self.spec)
        first, last = self.days
        return f"{of_model(self.spec)} AND date >= {literal(first)} AND date <= {literal(last)}"

    def ids(self) -> pa.Array:
        parts = list(self.id_chunks())
        ids = pa.concat_arrays(parts) if parts else pa.array([], pa.string())
        return pc.unique(ids)

    def id_chunks(self) -> Iterator[pa.Array]:
        """The ids in chunks of a scan (one per clip, as the table keys them): what a
        sample is drawn from without holding them all (:func:`sample_ids`)."""
        scans = self.lake.scan("embeddings", ["clip_id"], self.where, 1 << 20, self.version)
        for t in scans:
            yield t.column("clip_id").combine_chunks()

    def batches(self, only: pa.Array | None = None) -> Iterator[tuple[pa.Array, np.ndarray]]:
        scans = self.lake.scan("embeddings", ["clip_id", "vector"], self.where, self.batch_rows, self.version)
        for t in scans:
            if only is not None:
                t = t.filter(pc.is_in(t.column("clip_id"), value_set=only))
            if t.num_rows:
                yield t.column("clip_id").combine_chunks(), matrix(t.column("vector"), self.dim)


@dataclass
class ArraySource:
    """Vectors already in memory, as a source."""

    clip_ids: pa.Array
    vectors: np.ndarray
    batch_rows: int = 16_384

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def ids(self) -> pa.Array:
        return pc.unique(self.clip_ids)

    def batches(self, only: pa.Array | None = None) -> Iterator[tuple[pa.Array, np.ndarray]]:
        for start in range(0, len(self.clip_ids), self.batch_rows):
            ids = self.clip_ids.slice(start, self.batch_rows)
            vecs = self.vectors[start : start + self.batch_rows]
            if only is not None:
                keep = np.asarray(pc.is_in(ids, value_set=only).to_numpy(zero_copy_only=False), bool)
                ids, vecs = ids.filter(pa.array(keep)), vecs[keep]
            if len(ids):
                yield ids, vecs


@dataclass(frozen=True)
class SubSpace:
    """Positions ``[start, stop)`` of a vector, as their own unit vector: ``name`` says
    which block (it names the sub-space's index beside the model version's)."""

    name: str
    start: int
    stop: int

    @property
    def dim(self) -> int:
        return self.stop - self.start

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, dim)`` float32: each row's block, L2-normalised (an all-zero block
        stays zero; a NaN row, a clip without a vector, stays NaN)."""
        part = np.asarray(vectors, np.float32)[:, self.start : self.stop]
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        return np.ascontiguousarray(np.where(norms > 0, part / np.maximum(norms, 1e-12), part), np.float32)


@dataclass
class ProjectedSource:
    """A source's vectors seen through a :class:`SubSpace`."""

    source: VectorSource
    sub: SubSpace

    @property
    def dim(self) -> int:
        return self.sub.dim

    def ids(self) -> pa.Array:
        return self.source.ids()

    def batches(self, only: pa.Array | None = None) -> Iterator[tuple[pa.Array, np.ndarray]]:
        for ids, vectors in self.source.batches(only):
            yield ids, self.sub.project(vectors)
