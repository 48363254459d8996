"""FAISS indexes per model version, persisted in the lake with their id map.

The kind is chosen by size (:class:`IndexConfig`): exact below ``exact_below``
vectors, IVF-Flat up to ``pq_above``, IVF-PQ beyond. Vectors are L2-normalised,
so L2 distance orders like cosine similarity. Row ids in FAISS are positions in
the id map (``ids.parquet``: faiss_id -> clip_id); new clips are appended
incrementally without retraining.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import asdict, dataclass

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mining.interfaces import ModelSpec
from storage.lake import Lake
from storage.objectstore import Location

__all__ = ["ClipIndex", "IndexConfig", "choose_factory"]


@dataclass(frozen=True)
class IndexConfig:
    exact_below: int = 100_000
    pq_above: int = 10_000_000
    nlist: int | None = None  # default: 4 * sqrt(n), at most 65536
    nprobe: int = 32
    pq_m: int = 32
    train_sample: int = 256 * 1024
    seed: int = 1234


def choose_factory(n: int, dim: int, cfg: IndexConfig) -> str:
    if n < cfg.exact_below:
        return "Flat"
    nlist = cfg.nlist or min(65536, int(4 * math.sqrt(n)))
    if n < cfg.pq_above:
        return f"IVF{nlist},Flat"
    m = cfg.pq_m if dim % cfg.pq_m == 0 else 16
    return f"IVF{nlist},PQ{m}"


class ClipIndex:
    def __init__(self, index: faiss.Index, clip_ids: list[str], factory: str, cfg: IndexConfig):
        self.index = index
        self.clip_ids = clip_ids
        self.factory = factory
        self.cfg = cfg
        self.position = {c: i for i, c in enumerate(clip_ids)}

    @classmethod
    def build(cls, vectors: np.ndarray, clip_ids: list[str], cfg: IndexConfig | None = None) -> ClipIndex:
        cfg = cfg or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        factory = choose_factory(n, dim, cfg)
        index = faiss.index_factory(dim, factory, faiss.METRIC_L2)
        if not index.is_trained:
            rng = np.random.default_rng(cfg.seed)
            sample = (
                vectors[rng.choice(n, min(n, cfg.train_sample), replace=False)]
                if n > cfg.train_sample
                else vectors
            )
            index.train(sample)
        if hasattr(index, "nprobe"):
            index.nprobe = cfg.nprobe
        out = cls(index, [], factory, cfg)
        out.add(vectors, clip_ids)
        return out

    def add(self, vectors: np.ndarray, clip_ids: list[str]) -> int:
        fresh = [i for i, c in enumerate(clip_ids) if c not in self.position]
        if not fresh:
            return 0
        self.index.add(np.ascontiguousarray(vectors[fresh], dtype=np.float32))
        for i in fresh:
            self.position[clip_ids[i]] = len(self.clip_ids)
            self.clip_ids.append(clip_ids[i])
        return len(fresh)

    def search(
        self, queries: np.ndarray, k: int, allowed: list[str] | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Distances (L2) and clip ids of the ``k`` nearest, optionally among ``allowed`` clips only."""
        params = None
        if allowed is not None:
            ids = np.array(sorted(self.position[c] for c in allowed if c in self.position), dtype=np.int64)
            if len(ids) == 0:
                return np.zeros((len(queries), 0), np.float32), [[] for _ in range(len(queries))]
            sel = faiss.IDSelectorBatch(ids)
            params = (
                faiss.SearchParametersIVF(sel=sel, nprobe=self.cfg.nprobe)  # type: ignore[call-arg]
                if hasattr(self.index, "nprobe")
                else faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
            )
        d2, idx = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        dist = np.sqrt(np.maximum(d2, 0))
        names = [[self.clip_ids[i] for i in row if i >= 0] for row in idx]
        return dist, names

    def vectors_of(self, clip_ids: list[str]) -> np.ndarray:
        return np.stack([self.index.reconstruct(self.position[c]) for c in clip_ids])

    # -- persistence --------------------------------------------------------------------

    @staticmethod
    def location(lake: Lake, spec: ModelSpec) -> Location:
        return lake.root.join("indexes", f"{spec.name}@{spec.version}")

    def save(self, loc: Location, embeddings_version: int) -> None:
        fs = loc.fs
        fs.makedirs(loc.path, exist_ok=True)
        fs.pipe_file(loc.join("index.faiss").path, faiss.serialize_index(self.index).tobytes())
        ids = pa.table(
            {"faiss_id": pa.array(range(len(self.clip_ids)), pa.int64()), "clip_id": self.clip_ids}
        )
        sink = pa.BufferOutputStream()
        pq.write_table(ids, sink)
        fs.pipe_file(loc.join("ids.parquet").path, sink.getvalue().to_pybytes())
        meta = {
            "factory": self.factory,
            "n": len(self.clip_ids),
            "dim": self.index.d,
            "embeddings_version": embeddings_version,
            "built_at": dt.datetime.now(dt.UTC).isoformat(),
            "config": asdict(self.cfg),
        }
        fs.pipe_file(loc.join("meta.json").path, json.dumps(meta, indent=2).encode())

    @classmethod
    def load(cls, loc: Location) -> tuple[ClipIndex, dict[str, object]] | None:
        fs = loc.fs
        if not fs.exists(loc.join("meta.json").path):
            return None
        meta = json.loads(fs.cat_file(loc.join("meta.json").path))
        index = faiss.deserialize_index(
            np.frombuffer(fs.cat_file(loc.join("index.faiss").path), dtype=np.uint8)
        )
        ids = pq.read_table(pa.BufferReader(fs.cat_file(loc.join("ids.parquet").path)))
        cfg = IndexConfig(**meta.get("config", {}))
        if hasattr(index, "nprobe"):
            index.nprobe = cfg.nprobe
        return cls(index, ids.column("clip_id").to_pylist(), meta["factory"], cfg), meta
