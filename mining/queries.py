"""The queries the CLI and the API serve: similar clips and corner cases."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from mining.embed import load_vectors
from mining.index import ClipIndex, IndexConfig
from mining.interfaces import ModelSpec
from mining.novelty import latest_scores
from mining.registry import resolve
from storage.config import Settings
from storage.errors import ConfigError, NotFoundError
from storage.lake import Lake
from storage.sql import literal

__all__ = ["Neighbour", "build_index", "corner_cases", "similar"]


@dataclass
class Neighbour:
    clip_id: str
    distance: float


def build_index(
    settings: Settings, model: str | None = None, cfg: IndexConfig | None = None
) -> dict[str, Any]:
    """Build (or extend with new clips) the persisted FAISS index of a model version."""
    lake = Lake.from_settings(settings)
    spec = resolve(lake, model)
    loc = ClipIndex.location(lake, spec)
    emb_version = lake.version("embeddings")
    index, added = _load_or_build(lake, spec, cfg)
    index.save(loc, emb_version)
    return {
        "model": spec.ref,
        "factory": index.factory,
        "vectors": len(index.clip_ids),
        "added": added,
        "uri": loc.uri,
    }


def _load_or_build(lake: Lake, spec: ModelSpec, cfg: IndexConfig | None = None) -> tuple[ClipIndex, int]:
    """The saved index topped up with clips embedded since it was saved (or a new
    one when none is saved), and how many vectors that added."""
    loaded = ClipIndex.load(ClipIndex.location(lake, spec))
    ids, vectors = load_vectors(lake, spec)
    if loaded is not None:
        index, _ = loaded
        return index, index.add(vectors, ids)
    if not ids:
        raise NotFoundError(f"no embeddings for {spec.ref}; run `fleetmine embed --model {spec.ref}` first")
    return ClipIndex.build(vectors, ids, cfg), len(ids)


_INDEXES: dict[tuple[str, str], tuple[int, ClipIndex]] = {}
_INDEXES_LOCK = threading.Lock()


def _index(lake: Lake, spec: ModelSpec) -> ClipIndex:
    """The model version's index, loaded once per process and per ``embeddings`` version.

    A search reads no vectors unless the embeddings table changed since the last one.
    """
    version = lake.version("embeddings")
    key = (lake.uri, spec.ref)
    with _INDEXES_LOCK:
        hit = _INDEXES.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        index, _ = _load_or_build(lake, spec)
        _INDEXES[key] = (version, index)
        return index


def similar(
    lake: Lake,
    *,
    clip_id: str | None = None,
    vector: list[float] | None = None,
    k: int = 10,
    where: str | None = None,
    model: str | None = None,
) -> list[Neighbour]:
    """The ``k`` clips nearest a clip or a vector, among clips matching ``where`` (SQL on clips)."""
    spec = resolve(lake, model)
    index = _index(lake, spec)
    if clip_id is not None:
        if clip_id not in index.position:
            raise NotFoundError(f"clip {clip_id} has no {spec.ref} embedding")
        q = index.vectors_of([clip_id])
    elif vector is not None:
        q = np.asarray([vector], np.float32)
        if q.shape[1] != spec.dim:
            raise ConfigError(f"vector has {q.shape[1]} dims; {spec.ref} has {spec.dim}")
    else:
        raise ConfigError("give a clip_id or a vector")
    allowed = None
    if where:
        allowed = lake.read("clips", columns=["clip_id"], where=where).column("clip_id").to_pylist()
    dist, names = index.search(q, k + 1, allowed)
    out = [Neighbour(c, float(d)) for d, c in zip(dist[0], names[0], strict=False) if c != clip_id]
    return out[:k]


def corner_cases(
    lake: Lake, *, k: int = 50, event: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Clips ranked by novelty (latest run for the model), duplicates left out."""
    spec = resolve(lake, model)
    rows = [r for r in latest_scores(lake, spec) if r["duplicate_of"] is None]
    if event:
        with_event = lake.read("clips", columns=["clip_id"], where=f"array_has(events, {literal(event)})")
        keep = set(with_event.column("clip_id").to_pylist())
        rows = [r for r in rows if r["clip_id"] in keep]
    rows.sort(key=lambda r: -r["novelty"])
    return rows[:k]
