"""An index built from a :class:`~mining.vectors.VectorSource` in bounded memory.

Three passes over the source: its ids (one narrow column: how many vectors, so
which kind), the training sample (a hashed choice of ids, no more than the kind
needs: :meth:`IndexConfig.train_size`), then every vector, one batch at a time.
Peak memory is the index plus one batch (or the sample, if larger), never the
raw vectors of the corpus.
"""

from __future__ import annotations

import numpy as np

from mining.index import ClipIndex, IndexConfig
from mining.vectors import VectorSource, sample_ids

__all__ = ["stream_build"]


def stream_build(source: VectorSource, cfg: IndexConfig | None = None) -> ClipIndex:
    cfg = cfg or IndexConfig()
    ids = source.ids()
    index = ClipIndex.empty(len(ids), source.dim, cfg)
    want = cfg.train_size(len(ids), index.factory)
    if want:
        chosen = sample_ids(ids, want, cfg.seed)
        sample = np.vstack([v for _, v in source.batches(chosen)])
        index.train(sample)
        del sample
    del ids
    for batch_ids, vectors in source.batches():
        index.add(vectors, batch_ids)
    return index
