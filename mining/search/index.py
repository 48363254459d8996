"""FAISS indexes per model version, persisted in the lake with their id array.

The kind is a typed setting (:class:`IndexConfig`), by default chosen by size:
exact (Flat) below ``exact_below`` vectors, IVF-Flat up to ``pq_above``, IVF-PQ
beyond. Vectors are L2-normalised, so L2 distance orders like cosine similarity.
Row ids in FAISS are positions in the id array (``ids``: an Arrow string array,
saved as Parquet); new clips are appended without retraining.

Every kind answers the same :meth:`ClipIndex.search`, with or without a filter,
and returns exactly ``min(k, allowed)`` neighbours:

- the allowed clips become a bitmap selector over positions;
- an IVF probe scales with ``1 / selectivity`` (so a filtered search sees about
  as many allowed candidates as an unfiltered one) and widens until every row
  has its ``k``; at ``nprobe == nlist`` every allowed vector is reachable;
- an allowed subset under ``brute_force_below`` is searched exactly over its
  stored vectors (IVF-Flat keeps a direct map for that, and for a clip's own
  vector; IVF-PQ reads them from its vector file);
- IVF-PQ holds codes in memory: its ``refine_factor * k`` candidates are
  re-ranked on the exact vectors it keeps in a file beside them
  (:mod:`mining.search.vector_file`); a build saved before it kept that file
  re-ranks on a :data:`RawVectors` source (the ``embeddings`` table).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeAlias

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.interfaces import ModelSpec
from mining.search.vector_file import SUFFIX, VectorFile, read_mapped
from storage.errors import ConfigError, StorageError
from storage.kept import Kept
from storage.lake import Lake
from storage.objectstore import Location

__all__ = [
    "KINDS",
    "MASKS_HELD",
    "SUBSETS_BYTES",
    "ClipIndex",
    "Ids",
    "IndexConfig",
    "RawVectors",
    "as_ids",
    "choose_factory",
    "digest",
    "drop_unnamed",
    "kind_of",
    "meta_files",
    "names_at",
    "new_build",
    "write_meta",
]

KINDS = ("auto", "flat", "ivf-flat", "ivf-pq")

MASKS_HELD = 4
"""Filters' allowed masks an index keeps (:meth:`ClipIndex.mask`): one byte per vector
each, 40 MB for a 10^7-vector shard beside its 10 GB of vectors."""
SUBSETS_BYTES = 64 << 20
"""Allowed subsets' vectors a process keeps for exact search (:meth:`ClipIndex._subset`),
every index and shard it serves together: a 1 % filter of 10^6 256-d vectors is 10 MB,
``brute_force_below`` of them 20 MB; a subset over half of it is not kept."""


def _nbytes(a: np.ndarray) -> int:
    return int(a.nbytes)


_SUBSETS: Kept[np.ndarray] = Kept(_nbytes, max_bytes=SUBSETS_BYTES, largest=SUBSETS_BYTES // 2)
_GENERATIONS = itertools.count()  # an index's generation: a new one each time its ids move

RawVectors = Callable[[list[str]], np.ndarray]
"""Exact vectors of these clips, one row each in the same order (NaN rows for unknown clips)."""

Ids: TypeAlias = "Sequence[str] | pa.Array | pa.ChunkedArray"


@dataclass(frozen=True)
class IndexConfig:
    kind: str = "auto"
    exact_below: int = 100_000
    pq_above: int = 10_000_000
    nlist: int | None = None  # default: 4 * sqrt(n), at most 65536
    nprobe: int = 32
    pq_m: int = 32
    refine_factor: int = 8  # IVF-PQ: candidates per result re-ranked on exact vectors
    brute_force_below: int = 20_000  # allowed subsets this small: exact search over them
    train_sample: int = 256 * 1024  # at most this many vectors train an IVF or PQ
    train_per_list: int = 40  # ... and no more than this many per inverted list (FAISS's advice)
    batch_rows: int = 16_384  # a streamed build holds the index plus one batch of vectors
    seed: int = 1234
    shard_size: int | None = None  # vectors per shard, by date range (mining.search.shards); None: one

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown index kind {self.kind!r}; valid kinds: {list(KINDS)}")

    def kind_for(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "flat" if n < self.exact_below else "ivf-flat" if n < self.pq_above else "ivf-pq"

    def nlist_for(self, n: int) -> int:
        return max(1, min(n, self.nlist or min(65536, int(4 * math.sqrt(n)))))

    def train_size(self, n: int, factory: str) -> int:
        """Vectors to train the ``factory`` index of ``n`` on: enough for its lists (and
        256 PQ centroids), never the whole corpus at scale."""
        if factory == "Flat":
            return 0
        want = self.train_per_list * self.nlist_for(n)
        if ",PQ" in factory:
            want = max(want, 39 * 256)
        return min(n, self.train_sample, want)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def choose_factory(n: int, dim: int, cfg: IndexConfig) -> str:
    match cfg.kind_for(n):
        case "flat":
            return "Flat"
        case "ivf-flat":
            return f"IVF{cfg.nlist_for(n)},Flat"
        case _:
            m = max(d for d in range(1, cfg.pq_m + 1) if dim % d == 0)
            trained_on = max(2, min(n, cfg.train_sample))
            nbits = min(8, max(1, int(math.log2(trained_on))))  # 2^nbits centroids need as many points
            return f"IVF{cfg.nlist_for(n)},PQ{m}x{nbits}"


def kind_of(factory: str) -> str:
    return "flat" if factory == "Flat" else "ivf-pq" if ",PQ" in factory else "ivf-flat"


def as_ids(ids: Ids) -> pa.Array:
    arr = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(list(ids), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr if arr.type == pa.string() else arr.cast(pa.string())


def _ids_file(ids: pa.Array) -> bytes:
    """The id array as an uncompressed Arrow IPC file (position -> clip id).

    Not Parquet: an IPC file is the array's own buffers, so a server maps it and
    reads it in place (no copy, no decode, pages shared between replicas) where a
    Parquet read of 2x10^5 ids cost 30 MB of decoder and allocator memory for a
    6 MB column, which alone put the API past its budget of twice the index.
    """
    sink = pa.BufferOutputStream()
    table = pa.table({"faiss_id": np.arange(len(ids), dtype=np.int64), "clip_id": ids})
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _read_ids(loc: Location, *, mmap: bool) -> pa.Array:
    """The saved id array: mapped in place when ``mmap`` (local lakes), else read
    whole; builds saved before the IPC file (``.parquet``) still load."""
    if loc.path.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(pa.BufferReader(loc.fs.cat_file(loc.path)), columns=["clip_id"])
    elif mmap:
        table = pa.ipc.open_file(pa.memory_map(loc.path)).read_all()
    else:
        table = pa.ipc.open_file(pa.BufferReader(loc.fs.cat_file(loc.path))).read_all()
    ids = table.column("clip_id")
    return ids.chunk(0) if ids.num_chunks == 1 else ids.combine_chunks()  # one chunk: still in place


def _no_prefetch(index: faiss.Index) -> None:
    """A mapped IVF's lists are read where they lie, without prefetch threads.

    FAISS maps an IVF's lists as ``OnDiskInvertedLists``, whose every search first starts
    ``prefetch_nthread`` (32) threads to page the probed lists in: meant for lists on slow
    storage, it cost ~2.3 ms per search of a 120,000-vector shard whose scan takes 0.16 ms
    (the pages were in the page cache), one index's single-query search paid it once and a
    set of shards once per shard. Pages not yet in come in as the scan touches them."""
    ivf = faiss.try_extract_index_ivf(index)
    lists: Any = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None and ivf.invlists else None
    if lists is not None and hasattr(lists, "prefetch_nthread"):
        lists.prefetch_nthread = 0


def _selector(mask: np.ndarray) -> faiss.IDSelector:
    # One bit per position. Given the array alone, faiss's wrapper keeps a reference to it.
    return faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))  # type: ignore[call-arg, arg-type]


class _FileRows:
    """Exact vectors of a mapped index read from its file by position, through a mapping
    of its own that is closed once they are copied out.

    A search scans whole inverted lists, so it maps runs of pages it uses. Reading
    scattered vectors through the index's mapping (a clip's own vector, the allowed
    subset of a selective filter) does not: each 1 KB vector faults in the page-cache
    folio around it, 64 KB or more on current kernels, whether or not MADV_RANDOM is
    set. 2,200 vectors of a 10^5+ index so mapped 115 MB into the server, for as long
    as it ran. A mapping per read gathers the rows in one NumPy fancy index and leaves with
    them (its folios are mapped only while it reads; the pages stay in the page cache,
    shared and evictable): a ``pread`` per row
    did the same in a Python loop, 4-8 us a row (40-80 ms of a 1 % filter at 10^6).
    Offsets come from where faiss mapped each list (or the flat array) in this
    process, so they are right for whatever layout faiss wrote.
    """

    def __init__(self, index: faiss.Index, ivf: faiss.IndexIVF | None, path: str):
        base, file_offset = None, 0
        if ivf is None:
            flat: Any = faiss.downcast_index(index)
            start = int(faiss.rev_swig_ptr(flat.get_xb(), 1).ctypes.data) if index.ntotal else 0
            self.code_size, starts, lists = index.d * 4, np.array([start], np.int64), None
        else:
            inv: Any = ivf.invlists
            self.code_size = ivf.code_size
            starts = np.array(
                [
                    int(faiss.rev_swig_ptr(inv.get_codes(i), 1).ctypes.data) if inv.list_size(i) else 0
                    for i in range(ivf.nlist)
                ],
                np.int64,
            )
            lists = faiss.vector_to_array(ivf.direct_map.array)
        path = os.path.realpath(path)
        probe = int(starts[starts > 0][0]) if (starts > 0).any() else 0
        for line in open("/proc/self/maps").read().splitlines():  # noqa: SIM115
            parts = line.split(maxsplit=5)
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if len(parts) == 6 and parts[5] == path and lo <= probe < hi:
                base, file_offset = lo, int(parts[2], 16)
        if base is None:
            raise StorageError(f"{path} is not mapped in this process")
        self.starts = np.where(starts > 0, starts - base + file_offset, -1)
        self.lists = lists
        self.fd = os.open(path, os.O_RDONLY)
        self.dim = index.d

    def __del__(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)

    def read(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, np.int64)
        if self.lists is None:
            offsets = self.starts[0] + pos * self.code_size
        else:
            lo = self.lists[pos]
            offsets = self.starts[lo >> 32] + (lo & 0xFFFFFFFF) * self.code_size
        if not len(pos):
            return np.empty((0, self.dim), np.float32)
        if (offsets < 0).any():  # a position past the index: a wrapped read would be another row
            raise StorageError(f"positions outside the index file: {pos[offsets < 0][:5].tolist()}")
        return read_mapped(self.fd, offsets, self.code_size).view(np.float32)


def digest(value: pa.Array | np.ndarray) -> bytes:
    """What identifies an allowed set: a digest of its bytes (an Arrow array's buffers as
    they lie, with its offset and length: the same ids laid out otherwise only miss)."""
    h = hashlib.blake2b(digest_size=16)
    if isinstance(value, np.ndarray):
        h.update(np.ascontiguousarray(value).tobytes())
    else:
        h.update(f"{value.type}:{value.offset}:{len(value)}:{value.null_count}".encode())
        for buf in value.buffers():  # each told apart from the next: a missing one, its size
            h.update(b"-" if buf is None else f"{buf.size}:".encode())
            if buf is not None:
                h.update(buf)
    return h.digest()


def take_ids(ids: pa.Array | pa.ChunkedArray, at: np.ndarray) -> list[str]:
    """``ids[at]`` as a list; a chunked array (a set of shards' ids, each mapped from its
    file) is read chunk by chunk: Arrow's take of a chunked array first joins its chunks,
    a copy of every id (2.2 ms of a 480,000-clip set's 4.3 ms search). A search's few are
    looked up one by one (0.02 ms for ten, where a take per chunk cost 0.27)."""
    at = np.asarray(at, np.int64)
    if isinstance(ids, pa.ChunkedArray) and ids.num_chunks == 1:
        ids = ids.chunk(0)
    if isinstance(ids, pa.Array):
        return list(ids.take(pa.array(at)).to_pylist())
    if len(at) <= _FEW_IDS:
        return [ids[i].as_py() for i in at.tolist()]
    bounds = np.cumsum([0, *(len(c) for c in ids.chunks)])
    which = np.searchsorted(bounds, at, side="right") - 1
    out: list[str] = [""] * len(at)
    for c in np.unique(which).tolist():
        rows = np.flatnonzero(which == c)
        for r, v in zip(
            rows.tolist(), ids.chunk(c).take(pa.array(at[rows] - bounds[c])).to_pylist(), strict=True
        ):
            out[r] = v
    return out


_FEW_IDS = 64
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def names_at(ids: pa.Array | pa.ChunkedArray, pos: np.ndarray) -> list[list[str]]:
    """Per row of ``pos`` (positions into ``ids``, -1 for none), the clip ids found."""
    flat = take_ids(ids, np.maximum(pos, 0).ravel())
    width = pos.shape[1]
    return [
        [c for c, p in zip(flat[i * width : (i + 1) * width], row, strict=True) if p >= 0]
        for i, row in enumerate(pos.tolist())
    ]


_REFINE_FLOATS = 1 << 23
"""Candidate vectors re-ranked at a time (32 MB): a ``mine`` batch asks 16,384 queries for
``refine_factor`` x (k + 1) candidates each, 1.4 GB of 256-d rows read and as much again
gathered per query if taken at once; in blocks of queries, each block's rows only."""


def refine(
    q: np.ndarray, cand: np.ndarray, k: int, read: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of the candidate positions ``cand`` (-1: none) by exact distance,
    ``read`` giving the exact vectors at sorted unique positions (NaN rows for none):
    IVF-PQ codes ranked the candidates, the stored vectors rank the answer. Taken in blocks
    of queries (:data:`_REFINE_FLOATS`), each block's candidates read once."""
    width = min(k, cand.shape[1])
    d2_out = np.full((len(q), width), np.inf, np.float32)
    pos_out = np.full((len(q), width), -1, np.int64)
    block = max(1, _REFINE_FLOATS // max(1, cand.shape[1] * q.shape[1]))
    for lo in range(0, len(q), block):
        c = cand[lo : lo + block]
        uniq = np.unique(c[c >= 0])
        if uniq.size == 0:
            continue
        vecs = np.asarray(read(uniq), np.float32)
        diff = vecs[np.searchsorted(uniq, np.maximum(c, 0))] - q[lo : lo + block, None, :]  # (nq, c, dim)
        d2 = np.einsum("qcd,qcd->qc", diff, diff)
        d2[(c < 0) | np.isnan(d2)] = np.inf
        order = np.argsort(d2, axis=1, kind="stable")[:, :width]
        d2_out[lo : lo + block] = np.take_along_axis(d2, order, 1)
        pos_out[lo : lo + block] = np.where(
            np.isinf(d2_out[lo : lo + block]), -1, np.take_along_axis(c, order, 1)
        )
    if not (pos_out >= 0).any():
        return np.full((len(q), 0), np.inf, np.float32), np.zeros((len(q), 0), np.int64)
    return d2_out, pos_out


def merge_nearest(d2s: list[np.ndarray], poss: list[np.ndarray], fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """Several parts' nearest (squared distances, positions; -1 past what a part found), as
    the ``fetch`` nearest of them all, ties in part order: what one index over every part
    answers. (Shards of a set, a served index and its fresh part, shard holders' answers.)"""
    d2 = np.hstack([np.where(p >= 0, d, np.inf) for d, p in zip(d2s, poss, strict=True)])
    pos = np.hstack(poss)
    order = np.argsort(d2, axis=1, kind="stable")[:, :fetch]
    return np.take_along_axis(d2, order, 1).astype(np.float32), np.take_along_axis(pos, order, 1)


def new_build() -> str:
    """A saved build's name: when, and a random part (two builds in a second differ)."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def write_meta(loc: Location, meta: dict[str, Any]) -> None:
    """``meta.json``, replaced at once: a reader sees the old build or the new one."""
    body = json.dumps(meta, indent=2).encode()
    if loc.is_local:  # a rename is atomic; S3 puts are
        tmp = loc.join(f".meta-{meta['build']}.json").path
        loc.fs.pipe_file(tmp, body)
        loc.fs.mv(tmp, loc.join("meta.json").path)
    else:
        loc.fs.pipe_file(loc.join("meta.json").path, body)


def meta_files(meta: dict[str, Any] | None) -> set[str]:
    """The files a saved build's meta names: its index and ids, or every shard's."""
    if not meta:
        return set()
    named = set((meta.get("files") or {}).values())
    for shard in meta.get("shards") or ():
        named |= set(shard["files"].values())
    return named


def drop_unnamed(loc: Location, keep: set[str]) -> None:
    """Remove the index files of builds older than the two ``keep`` names: the generation
    before the new one stays, for readers that opened its meta a moment ago."""
    for path in loc.fs.ls(loc.path, detail=False):
        name = str(path).rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(("index", "ids", "shard")) and name not in keep:
            loc.fs.rm(path)


FRESH_IVF_FROM = 16_384
"""Clips embedded since the saved build from which they are kept in an IVF on the build's
own coarse quantizer, not a flat index (in process: ``serving._fresh_part``; beside held
shards: the newest shard's holder): a flat part costs each query a scan of all of them,
and an incremental ``mine`` queries each of them (new clips x new clips)."""


class ClipIndex:
    """One FAISS index and its id array (position -> clip id)."""

    def __init__(
        self,
        index: faiss.Index,
        ids: Ids,
        factory: str,
        cfg: IndexConfig,
        *,
        read_only: bool = False,
        mapped_from: str | None = None,
        vectors: VectorFile | None = None,
    ):
        self.index = index
        self.ids = as_ids(ids)
        self.factory = factory
        self.cfg = cfg
        self.read_only = read_only  # mapped from its file: adding to it would abort the process
        self.ivf = faiss.try_extract_index_ivf(index)
        if self.ivf is not None and self.exact and self.ivf.direct_map.no():
            self.ivf.make_direct_map()  # saved before indexes kept one
        self.configure(cfg)
        self._changed()
        self._file_rows: _FileRows | None = None
        if mapped_from is not None and self.exact and sys.platform == "linux":
            self._file_rows = _FileRows(index, self.ivf, mapped_from)
        if len(self.ids) != index.ntotal:
            raise StorageError(f"index holds {index.ntotal} vectors but {len(self.ids)} ids")
        if vectors is None and not self.exact and index.ntotal == 0:
            vectors = VectorFile(index.d)  # IVF-PQ keeps the vectors it is given beside its codes
        if vectors is not None and len(vectors) != index.ntotal:
            raise StorageError(f"index holds {index.ntotal} vectors but its vector file {len(vectors)}")
        self.vectors = vectors  # IVF-PQ's exact vectors (None: a build before it kept them)

    def configure(self, cfg: IndexConfig) -> None:
        """Take ``cfg``'s search settings (nprobe, refine, exact subsets) for this index."""
        self.cfg = cfg
        if self.ivf is not None:
            self.ivf.nprobe = cfg.nprobe

    @classmethod
    def empty(cls, n: int, dim: int, cfg: IndexConfig | None = None) -> ClipIndex:
        """The untrained, empty index ``cfg`` picks for ``n`` vectors of ``dim``."""
        cfg = cfg or IndexConfig()
        factory = choose_factory(n, dim, cfg)
        index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
        if hasattr(index, "do_polysemous_training"):  # unused (no Hamming search), and slow
            index.do_polysemous_training = False
        return cls(index, pa.array([], pa.string()), factory, cfg)

    def train(self, sample: np.ndarray) -> None:
        if not self.index.is_trained:
            self.index.train(np.ascontiguousarray(sample, dtype=np.float32))

    @classmethod
    def build(cls, vectors: np.ndarray, clip_ids: Ids, cfg: IndexConfig | None = None) -> ClipIndex:
        cfg = cfg or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        out = cls.empty(n, dim, cfg)
        want = cfg.train_size(n, out.factory)
        if want:
            rng = np.random.default_rng(cfg.seed)
            out.train(vectors[rng.choice(n, want, replace=False)] if n > want else vectors)
        out.add(vectors, clip_ids)
        return out

    @property
    def kind(self) -> str:
        return kind_of(self.factory)

    @property
    def exact(self) -> bool:
        """Whether the index stores vectors exactly (so it can search and return them as they are)."""
        return self.kind != "ivf-pq"

    @property
    def has_vectors(self) -> bool:
        """Whether it can give its exact vectors: an exact kind, or IVF-PQ with its vector file."""
        return self.exact or self.vectors is not None

    def refines(self, raw: RawVectors | None) -> bool:
        """Whether a search re-ranks code-ranked candidates on exact vectors: IVF-PQ, on its
        own vector file, else on ``raw`` (a build saved before it kept one)."""
        return not self.exact and (self.vectors is not None or raw is not None)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def nbytes(self) -> int:
        """Memory the index and its ids hold (per vector: code, list id and direct map; centroids)."""
        n, d = len(self), self.index.d
        ids = self.ids.nbytes
        if self.ivf is None:
            return n * d * 4 + ids
        per_vector = self.ivf.code_size + 8 + (0 if self.ivf.direct_map.no() else 8)
        pq_tables = 256 * d * 4 if self.kind == "ivf-pq" else 0
        return n * per_vector + self.ivf.nlist * d * 4 + pq_tables + ids

    def fits(self, n: int, cfg: IndexConfig) -> bool:
        """Whether this is still the index ``cfg`` would build for ``n`` vectors
        (same kind; an IVF within 2x of the list count; IVF-PQ with its vector file: one
        saved before it kept its vectors is built again, not topped up)."""
        if cfg.kind_for(n) != self.kind or not self.has_vectors:
            return False
        return self.ivf is None or 0.5 <= self.ivf.nlist / cfg.nlist_for(n) <= 2.0

    def mask(self, clip_ids: Ids) -> np.ndarray:
        """Positions holding one of ``clip_ids``, as a boolean mask (read-only).

        Finding them hashes every id of the index (30 ms of a filtered search's 110 at
        10^6 clips). A filter allows the same clips on every search until its table moves
        (the resident filter columns answer a predicate once per version,
        :meth:`storage.resident.Resident.select`), so the last :data:`MASKS_HELD` masks
        are kept by a digest of the allowed ids (0.3 ms for 10,000 of them), which a
        holder asked from another process matches as well; dropped when the index grows."""
        ids = as_ids(clip_ids)
        held, masks = self.ids, self._masks  # as one: an add meanwhile keeps its masks apart

        def make() -> np.ndarray:
            hit = pc.is_in(held, value_set=ids)
            mask = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)
            mask.flags.writeable = False  # shared by every search that asks the same filter
            return mask

        return masks.answer(digest(ids), make)

    def _changed(self) -> None:
        """The id array moved (built, added to): no kept mask or subset holds for it."""
        self._masks: Kept[np.ndarray] = Kept(_nbytes, items=MASKS_HELD)
        self._generation = next(_GENERATIONS)  # what the process's kept subsets know it by

    def position(self, clip_id: str) -> int:
        """The clip's position, or -1 (a scan of the id array: no hash table is kept)."""
        return int(pc.index(self.ids, clip_id).as_py())

    def stored_vector(self, clip_id: str) -> np.ndarray | None:
        """The clip's vector ``(1, dim)`` as stored, when the index holds it exactly; else None."""
        pos = self.position(clip_id) if self.has_vectors else -1
        return None if pos < 0 else self.vectors_at(np.array([pos], np.int64))

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """The stored vectors at ``positions`` (:attr:`has_vectors`): IVF-PQ's from its vector
        file, an exact kind's from its file when it is mapped (see :class:`_FileRows`), else
        from the index."""
        if self.vectors is not None:
            return self.vectors.read(positions)
        if self._file_rows is not None:
            return self._file_rows.read(positions)
        return self.index.reconstruct_batch(np.asarray(positions, np.int64))

    def _subset(self, where: np.ndarray) -> np.ndarray:
        """The stored vectors of an allowed subset searched exactly: kept by the positions'
        digest (a filter asks the same subset of every search until its table moves), in
        at most :data:`SUBSETS_BYTES`, the least recently asked dropped first. Read again
        each time, a 1 % filter's 10,000 scattered vectors at 10^6 cost 40-50 ms of page
        faults (a row each), 20x its exact search over them."""

        def make() -> np.ndarray:
            vectors = self.vectors_at(where)
            vectors.flags.writeable = False
            return vectors

        return _SUBSETS.answer((self._generation, digest(where)), make)

    def add(self, vectors: np.ndarray, clip_ids: Ids) -> int:
        """Append the clips not held yet (first row of each); returns how many."""
        if self.read_only:
            raise StorageError("this index is mapped read-only from its file; load it with mmap=False")
        ids = as_ids(clip_ids)
        if len(ids) == 0:
            return 0
        first = pc.index_in(ids, value_set=ids).to_numpy() == np.arange(len(ids))
        fresh = np.flatnonzero(first & ~self.holds(ids))
        if fresh.size == 0:
            return 0
        rows = np.ascontiguousarray(vectors[fresh], dtype=np.float32)
        self.index.add(rows)
        if self.vectors is not None:
            self.vectors.append(rows)
        self.ids = pa.concat_arrays([self.ids, ids.take(pa.array(fresh))])
        self._changed()
        return int(fresh.size)

    def append(self, vectors: np.ndarray, clip_ids: Ids) -> None:
        """Append every row, a clip given twice or held already included (a holder's fresh
        part keeps a clip's older row for the views pinned before its newer commit)."""
        if self.read_only:
            raise StorageError("this index is mapped read-only from its file; load it with mmap=False")
        ids = as_ids(clip_ids)
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add(rows)
        if self.vectors is not None:
            self.vectors.append(rows)
        self.ids = pa.concat_arrays([self.ids, ids])
        self._changed()

    @classmethod
    def ivf_beside(cls, main: ClipIndex, vectors: np.ndarray, clip_ids: Ids) -> ClipIndex:
        """An exact IVF of ``vectors`` on ``main``'s trained coarse centroids, probed with its
        ``nprobe``: searched beside ``main``, the two answer as one IVF holding both would
        (``main`` must be an exact IVF)."""
        assert main.ivf is not None and main.exact
        ivf = main.ivf
        quantizer = faiss.IndexFlatL2(ivf.d)
        quantizer.add(ivf.quantizer.reconstruct_n(0, ivf.nlist))
        index = faiss.IndexIVFFlat(quantizer, ivf.d, ivf.nlist, faiss.METRIC_L2)
        index.make_direct_map()
        index.add(np.ascontiguousarray(vectors, np.float32))
        return cls(index, clip_ids, f"IVF{ivf.nlist},Flat", main.cfg)

    def holds(self, clip_ids: Ids) -> np.ndarray:
        """For each of ``clip_ids``, whether the index holds it.

        The hash table is built over the smaller side: asking about a top-up's
        thousand ids must not hash the whole id array (10^5+ strings) each time."""
        ids = as_ids(clip_ids)
        if len(ids) < len(self.ids):
            held = self.ids.filter(pc.is_in(self.ids, value_set=ids))
            hit = pc.is_in(ids, value_set=as_ids(held))
        else:
            hit = pc.is_in(ids, value_set=self.ids)
        return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)

    # -- search ------------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: Ids | None = None,
        raw: RawVectors | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """L2 distances and clip ids of the ``min(k, allowed)`` nearest, optionally
        among ``allowed`` clips only; ``raw`` re-ranks IVF-PQ candidates exactly."""
        mask = None if allowed is None else self.mask(allowed)
        d2, pos = self.search_positions(queries, k, mask, raw)
        return np.sqrt(np.maximum(d2, 0)), self.names(pos)

    def names(self, pos: np.ndarray) -> list[list[str]]:
        return names_at(self.ids, pos)

    def search_positions(
        self,
        queries: np.ndarray,
        k: int,
        mask: np.ndarray | None = None,
        raw: RawVectors | None = None,
        *,
        rerank: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Squared distances and positions, ``(nq, min(k, allowed))``, nearest first.
        ``rerank`` False: IVF-PQ's ``k`` nearest by their codes, as they are (a set of shards
        saved before they kept their vectors re-ranks them all at once; see ShardSet)."""
        refining = rerank and self.refines(raw)
        q, pool, want, fetch = self._asked(queries, k, mask, refining)
        if want <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        small = pool <= self.cfg.brute_force_below
        if mask is not None and small and self.has_vectors and (self.exact or refining):
            where = np.flatnonzero(mask)  # a subset this small: searched exactly over its vectors
            d2, i = faiss.knn(q, self._subset(where), want)
            return d2, where[i]
        d2, pos = self._candidates(q, fetch, mask, pool)
        if refining:
            d2, pos = self._refine(q, pos, want, raw)
        return d2, pos

    def _asked(
        self, queries: np.ndarray, k: int, mask: np.ndarray | None, refining: bool
    ) -> tuple[np.ndarray, int, int, int]:
        """The query rows (float32), the allowed pool, how many to answer (``min(k, pool)``)
        and how many candidates to fetch for them (``refine_factor`` times more when IVF-PQ
        codes are re-ranked on exact vectors)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        pool = len(self) if mask is None else int(mask.sum())
        want = min(k, pool)
        return q, pool, want, min(pool, want * self.cfg.refine_factor) if refining else want

    def _candidates(
        self, q: np.ndarray, k: int, mask: np.ndarray | None, pool: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest by the index (IVF-PQ: by their codes), among ``mask`` if given."""
        sel = None if mask is None else _selector(mask)
        if self.ivf is None:
            params = None if sel is None else faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
            return self.index.search(q, k, params=params)
        nlist = self.ivf.nlist
        nprobe = max(1, min(nlist, math.ceil(self.cfg.nprobe * len(self) / pool)))

        def probe(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)  # type: ignore[call-arg]
            return self.index.search(rows, k, params=params)

        d2, pos = probe(q)
        while nprobe < nlist:  # rows short of k: the probed lists held too few allowed vectors
            short = np.flatnonzero(pos[:, -1] < 0)
            if short.size == 0:
                break
            nprobe = min(nlist, nprobe * 4)
            d2[short], pos[short] = probe(q[short])
        return d2, pos

    def _refine(
        self, q: np.ndarray, cand: np.ndarray, k: int, raw: RawVectors | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Candidates re-ranked on the vector file, else on ``raw`` read by clip id."""
        if self.vectors is not None:
            return refine(q, cand, k, self.vectors_at)
        assert raw is not None
        return refine(q, cand, k, lambda uniq: raw(self.ids.take(pa.array(uniq)).to_pylist()))

    # -- persistence --------------------------------------------------------------------

    @staticmethod
    def location(lake: Lake, spec: ModelSpec, part: str | None = None) -> Location:
        """Where the model version's index lives; ``part``: the index of one sub-space of
        its vectors (:class:`mining.encoders.vectors.SubSpace`), in a folder inside it."""
        loc = lake.root.join("indexes", f"{spec.name}@{spec.version}")
        return loc.join(part) if part else loc

    @staticmethod
    def read_meta(loc: Location) -> dict[str, Any] | None:
        path = loc.join("meta.json").path
        if not loc.fs.exists(path):
            return None
        meta: dict[str, Any] = json.loads(loc.fs.cat_file(path))
        return meta

    def save(self, loc: Location, embeddings_version: int) -> dict[str, Any]:
        """Write a new generation of files, then ``meta.json`` naming them, so a
        reader never pairs one build's index with another's ids."""
        loc.fs.makedirs(loc.path, exist_ok=True)
        previous = self.read_meta(loc)
        build = new_build()
        files = self.write_files(loc, f"index-{build}.faiss", f"ids-{build}.arrow")
        meta = {
            "build": build,
            "files": files,
            "factory": self.factory,
            "kind": self.kind,
            "n": len(self),
            "dim": self.index.d,
            "embeddings_version": embeddings_version,
            "built_at": dt.datetime.now(dt.UTC).isoformat(),
            "config": asdict(self.cfg),
        }
        write_meta(loc, meta)
        drop_unnamed(loc, {*files.values(), *meta_files(previous)})
        return meta

    def write_files(self, loc: Location, index_name: str, ids_name: str) -> dict[str, str]:
        """The index and its id array as files ``index_name`` and ``ids_name`` in ``loc``
        (and IVF-PQ's exact vectors beside them, named after the index file)."""
        if loc.is_local:
            faiss.write_index(self.index, loc.join(index_name).path)
        else:
            loc.fs.pipe_file(loc.join(index_name).path, faiss.serialize_index(self.index).tobytes())
        loc.fs.pipe_file(loc.join(ids_name).path, _ids_file(self.ids))
        files = {"index": index_name, "ids": ids_name}
        if self.vectors is not None:
            files["vectors"] = index_name.rsplit(".", 1)[0] + SUFFIX
            self.vectors.write(loc.join(files["vectors"]))
        return files

    @classmethod
    def load(cls, loc: Location, *, mmap: bool = False) -> tuple[ClipIndex, dict[str, Any]] | None:
        """The saved build and its meta (None if there is none). ``mmap`` (local lakes):
        the vectors stay in the file, paged in as searches touch them and shared
        between processes; the index is then read-only."""
        meta = cls.read_meta(loc)
        if meta is None:
            return None
        if meta.get("shards"):  # a set of shards by date range (fleetmine index --shard-size)
            from mining.search.shards import load_shards

            return load_shards(loc, meta, mmap=mmap), meta
        files = meta.get("files") or {"index": "index.faiss", "ids": "ids.parquet"}
        return cls.open_files(loc, files, meta, mmap=mmap), meta

    @classmethod
    def open_files(
        cls, loc: Location, files: dict[str, str], meta: dict[str, Any], *, mmap: bool
    ) -> ClipIndex:
        """The index and ids ``files`` of a saved build (or of one of its shards)."""
        for name in files.values():  # names in the index's folder, as a build writes them
            if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
                raise StorageError(f"index meta names a file outside its folder: {str(name)[:80]!r}")
        fs, path = loc.fs, loc.join(files["index"]).path
        mapped = mmap and loc.is_local
        if mapped:
            flag = faiss.IO_FLAG_MMAP_IFC if kind_of(meta["factory"]) == "flat" else faiss.IO_FLAG_MMAP
            index = faiss.read_index(path, flag)
            _no_prefetch(index)
        elif loc.is_local:
            index = faiss.read_index(path)
        else:
            index = faiss.deserialize_index(np.frombuffer(fs.cat_file(path), dtype=np.uint8))
        ids = _read_ids(loc.join(files["ids"]), mmap=mapped)
        cfg = IndexConfig.from_dict(meta.get("config", {}))
        vectors = None
        if "vectors" in files:  # IVF-PQ's exact vectors (saved since they were kept beside it)
            vectors = VectorFile.open(loc.join(files["vectors"]), index.d, index.ntotal)
        return cls(
            index,
            ids,
            meta["factory"],
            cfg,
            read_only=mapped,
            mapped_from=path if mapped else None,
            vectors=vectors,
        )
