"""An index built from a :class:`~mining.encoders.vectors.VectorSource` in bounded memory.

Passes over the source: its ids (one narrow column: how many vectors, so which
kind), the training sample (a hashed choice of ids, no more than the kind needs:
:meth:`IndexConfig.train_size`), for an IVF the list each vector falls in (counts
only), then every vector, one batch at a time. The counts size each inverted list
once: grown by appends, a list's buffer doubles, and the lists of a corpus hold up
to twice its vectors with a copy in flight. Peak memory is the index plus one batch
(or the sample, if larger), never the raw vectors of the corpus.
"""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders.vectors import VectorSource, sample_ids
from mining.search.index import ClipIndex, IndexConfig

__all__ = ["gather", "stream_build"]


def gather(source: VectorSource, chosen: pa.Array) -> np.ndarray:
    """The vectors of ``chosen`` ids, filled into one array (no list of batches and a
    stacked copy of them side by side), in clip id order.

    What trains on them (k-means, an IVF quantizer) depends on their order, and the
    order a scan yields is the order of the table's files, whose names are random: in
    id order, the same vectors train the same model on every run."""
    out = np.empty((len(chosen), source.dim), np.float32)
    ids: list[pa.Array] = []
    filled = 0
    for batch_ids, vectors in source.batches(chosen):
        take = min(len(vectors), len(out) - filled)
        out[filled : filled + take] = vectors[:take]
        ids.append(batch_ids.slice(0, take))
        filled += take
    if not ids:
        return out[:0]
    order = pc.sort_indices(pa.concat_arrays(ids)).to_numpy()
    return out[order]


def stream_build(source: VectorSource, cfg: IndexConfig | None = None) -> ClipIndex:
    cfg = cfg or IndexConfig()
    ids = source.ids()
    index = ClipIndex.empty(len(ids), source.dim, cfg)
    want = cfg.train_size(len(ids), index.factory)
    if want:
        index.train(gather(source, sample_ids(ids, want, cfg.seed)))
    del ids
    if index.ivf is not None:
        _presize(index.ivf, source)
    for batch_ids, vectors in source.batches():
        index.add(vectors, batch_ids)
    return index


def _presize(ivf: faiss.IndexIVF, source: VectorSource) -> None:
    """Reserve each inverted list's room for the vectors that will land in it."""
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf.invlists is not None else None
    if not isinstance(lists, faiss.ArrayInvertedLists):
        return
    counts = np.zeros(ivf.nlist, np.int64)
    for _, vectors in source.batches():
        _, assigned = ivf.quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
        counts += np.bincount(assigned.ravel(), minlength=ivf.nlist)
    for list_no in np.flatnonzero(counts).tolist():
        lists.resize(list_no, int(counts[list_no]))  # a vector's capacity stays when it shrinks
        lists.resize(list_no, 0)
