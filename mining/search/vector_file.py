"""An IVF-PQ index's exact vectors, kept beside its codes in a file of its own.

IVF-PQ holds 32-byte codes per vector, not the vectors: its search ranks ``refine_factor``
x k candidates by code and re-ranks them on exact vectors. Read from the ``embeddings``
table by clip id, that second read cost a search 257 ms p50 at 2x10^5 clips (whole date
partitions read for a few dozen rows; IVF-Flat: 2.3 ms) and grew with the days the
candidates span. Here the index keeps them itself, as FAISS's ``IndexRefineFlat`` keeps
its refine vectors, but in a file of their own (``<index file>.vectors.f32``: float32
rows in position order, no header; ``meta.json`` names it with the index and ids) that
a search reads only the candidates' rows of, so the index in memory stays the codes:

- **a saved file** is read by position through a mapping made per read (one NumPy gather
  of the rows, :func:`gather_rows`; its pages stay in the page cache, shared and
  evictable, none held by the process). On a local lake that is the file itself, held
  open: a later build's clean-up removes its name, not the rows a server still reads. On
  an object store it is copied once, when opened, into an unnamed local file (disk, not
  the heap; and no request per search, nor a file a later build removed meanwhile);
- **rows added** since (a build streaming its batches, a top-up of the newest shard) go
  to an unnamed temporary file, not the heap: a build of 10^7 vectors holds one batch;
- **written** under a new build's name as the saved rows then the added ones, streamed
  in chunks from those open files (a top-up writes the newest shard again, as it writes
  its index).

Temporary files go where ``TMPDIR`` says (``/tmp``): a disk, not a tmpfs, on a node that
builds or serves IVF-PQ shards of 10^7 vectors (10 GB of rows each at 256-d).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
from typing import IO

import numpy as np
from numpy.lib.stride_tricks import as_strided

from storage.errors import StorageError
from storage.objectstore import Location

__all__ = ["SUFFIX", "VectorFile", "gather_rows", "read_mapped"]

SUFFIX = ".vectors.f32"
_CHUNK = 64 << 20  # bytes copied at a time when a file is written


def gather_rows(buf: mmap.mmap, offsets: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` bytes at each of ``offsets`` of ``buf``, copied out in one fancy index
    (every byte offset viewed as the start of a row; ``np.take`` would copy that view)."""
    whole = np.frombuffer(buf, np.uint8)
    rows = as_strided(whole, (len(whole) - size + 1, size), (1, 1), writeable=False)
    return rows[offsets]


def read_mapped(fd: int, offsets: np.ndarray, size: int) -> np.ndarray:
    """Rows of the file ``fd`` through a mapping of their own, closed once they are copied
    out: scattered rows read through a long-lived mapping would leave every page-cache folio
    they touched (64 KB or more each) mapped into the process for as long as it runs."""
    view = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    try:
        view.madvise(mmap.MADV_RANDOM)  # no read-ahead around a row of a file not cached
        return gather_rows(view, offsets, size)
    finally:
        with contextlib.suppress(BufferError):  # an error in flight still looks at it: freed with it
            view.close()


class VectorFile:
    """Exact float32 vectors by position: ``saved`` rows of a file in the lake, then the
    rows :meth:`append` added since (in a temporary file)."""

    def __init__(self, dim: int, saved: IO[bytes] | None = None, rows: int = 0, where: str = ""):
        self.dim = dim
        self.row = dim * 4
        self._saved = saved  # the saved rows, open (None: nothing saved yet)
        self.saved = rows if saved is not None else 0
        self.where = where  # the saved file's URI
        self.added = 0
        self._spill: IO[bytes] | None = None

    @classmethod
    def open(cls, loc: Location, dim: int, n: int) -> VectorFile:
        """The saved file at ``loc``, which must hold ``n`` rows of ``dim`` (else a
        StorageError: a truncated file would answer another clip's vector)."""
        name = loc.uri.rsplit("/", 1)[-1]
        size = int(loc.fs.size(loc.path))
        if size != n * dim * 4:
            raise StorageError(f"{name} holds {size:,} bytes; its index has {n:,} vectors of {dim}")
        if loc.is_local:
            return cls(dim, open(loc.path, "rb"), n, loc.uri)
        local = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as this object)
        try:
            with loc.fs.open(loc.path, "rb") as src:
                _copy(src, local, size)
            local.flush()
        except BaseException:
            local.close()
            raise
        return cls(dim, local, n, loc.uri)

    def __del__(self) -> None:
        for f in (getattr(self, "_saved", None), getattr(self, "_spill", None)):
            if f is not None:
                f.close()

    def __len__(self) -> int:
        return self.saved + self.added

    def append(self, vectors: np.ndarray) -> None:
        rows = np.ascontiguousarray(vectors, np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.dim:
            raise StorageError(f"vectors of shape {rows.shape} added to a file of {self.dim}-d rows")
        if self._spill is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as this object)
        self._spill.seek(0, os.SEEK_END)
        self._spill.write(rows.tobytes())
        self.added += len(rows)

    def read(self, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions`` ``(m, dim)``, in that order (StorageError past the end)."""
        pos = np.asarray(positions, np.int64).ravel()
        out = np.empty((len(pos), self.dim), np.float32)
        if not len(pos):
            return out
        if pos.min() < 0 or pos.max() >= len(self):
            bad = pos[(pos < 0) | (pos >= len(self))][:5].tolist()
            raise StorageError(f"vector positions outside 0..{len(self) - 1}: {bad}")
        old = pos < self.saved
        if old.any():
            assert self._saved is not None
            out[old] = read_mapped(self._saved.fileno(), pos[old] * self.row, self.row).view(np.float32)
        if (~old).any():
            assert self._spill is not None
            self._spill.flush()
            rows = read_mapped(self._spill.fileno(), (pos[~old] - self.saved) * self.row, self.row)
            out[~old] = rows.view(np.float32)
        return out

    def write(self, loc: Location) -> None:
        """The saved rows, then the added ones, as the file ``loc`` (streamed in chunks)."""
        if self._saved is not None and self.where == loc.uri:
            raise StorageError(f"{loc.uri} would be written over while it is read")
        with loc.fs.open(loc.path, "wb") as out:
            if self._saved is not None and self.saved:
                self._saved.seek(0)
                _copy(self._saved, out, self.saved * self.row)
            if self._spill is not None:
                self._spill.flush()
                self._spill.seek(0)
                _copy(self._spill, out, self.added * self.row)


def _copy(src: IO[bytes], out: IO[bytes], size: int) -> None:
    left = size
    while left > 0:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            raise StorageError(f"a vector file ended {left:,} bytes short while it was copied")
        out.write(chunk)
        left -= len(chunk)
