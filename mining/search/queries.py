"""The queries the CLI and the API serve: similar clips and corner cases.

Searches run on the process's live index of the model version
(:mod:`mining.search.serving`), current with the ``embeddings`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mining.encoders import behaviour_span, frame_span
from mining.encoders.registry import resolve
from mining.encoders.vectors import SubSpace
from mining.interfaces import ModelSpec
from mining.search import serving
from mining.search.index import ClipIndex, IndexConfig
from mining.search.index_build import stream_build
from mining.search.ready import read_corner_cases
from mining.search.serving import embedded_since, read_vectors, source_of
from storage.config import Settings
from storage.errors import ConfigError, NotFoundError
from storage.lake import Lake
from storage.resident import clip_rows

__all__ = [
    "SPACES",
    "Neighbour",
    "appearance_of",
    "behaviour_of",
    "build_index",
    "build_part",
    "corner_cases",
    "nearest",
    "own_index",
    "similar",
    "space_of",
]

SPACES = ("clip", "behaviour")
"""What "similar to a clip" compares: ``clip`` the whole vector (how it looked and what
the car did: near duplicates come first), ``behaviour`` what the car did and what moved
only (:func:`mining.encoders.behaviour_span`: "more like this" of a corner case)."""


@dataclass
class Neighbour:
    clip_id: str
    distance: float


def build_index(
    settings: Settings, model: str | None = None, cfg: IndexConfig | None = None
) -> dict[str, Any]:
    """Build (or extend with the clips embedded since) the persisted FAISS index of a
    model version; rebuilt when the kind ``cfg`` picks for its size has changed. A
    version whose vectors hold an appearance block gets that block's index too
    (``appearance``: what query by example searches, :mod:`mining.search.by_example`), and
    one with motion or signal blocks their index (``behaviour``: "more like this")."""
    lake = Lake.from_settings(settings)
    spec = resolve(lake, model)
    out = build_part(lake, spec, cfg)
    for sub in (own_index(spec, appearance_of(spec)), behaviour_of(spec)):
        if sub is not None:
            out[sub.name] = build_part(lake, spec, cfg, sub)
    serving.forget(lake, spec)  # this process serves the new build from its next search
    return out


def appearance_of(spec: ModelSpec) -> SubSpace | None:
    """The appearance block of the version's vectors as a sub-space (None: none)."""
    span = frame_span(spec)
    return None if span is None else SubSpace("appearance", span.start, span.stop)


def own_index(spec: ModelSpec, sub: SubSpace | None) -> SubSpace | None:
    """``sub`` where it has an index of its own; None where it is the whole vector (a
    version whose vectors are the frames' mean alone: ``text-image``, ``onnx`` without
    ``clip``), whose clip index answers for it: a unit vector projected on all of itself
    is itself, so a second index would be the same vectors twice."""
    if sub is None or (sub.start == 0 and sub.stop == spec.dim):
        return None
    return sub


def behaviour_of(spec: ModelSpec) -> SubSpace | None:
    """The motion, signals and dense blocks of the version's vectors as a sub-space."""
    span = behaviour_span(spec)
    return None if span is None else SubSpace("behaviour", span.start, span.stop)


def space_of(spec: ModelSpec, space: str) -> SubSpace | None:
    """The sub-space ``space`` (one of :data:`SPACES`) names for ``spec``; None: the
    whole vector. ConfigError for an unknown name or a version without that block."""
    if space not in SPACES:
        raise ConfigError(f"unknown space {space!r}; valid spaces: {list(SPACES)}")
    if space == "clip":
        return None
    sub = behaviour_of(spec)
    if sub is None:
        raise ConfigError(
            f"model {spec.ref} has no behaviour blocks (motion, signals): its vectors are the "
            "frames' mean alone; search it with space 'clip'"
        )
    return sub


def build_part(
    lake: Lake, spec: ModelSpec, cfg: IndexConfig | None, sub: SubSpace | None = None
) -> dict[str, Any]:
    """Build, or top up with the clips embedded since, the saved index of the version (or of
    its ``sub`` block); rebuilt when it no longer fits ``cfg``."""
    loc = ClipIndex.location(lake, spec, sub.name if sub else None)
    version = lake.version("embeddings")
    index: ClipIndex | None = None
    added = None
    if (loaded := ClipIndex.load(loc)) is not None:
        index, meta = loaded
        ids, vectors, _ = embedded_since(lake, spec, int(meta["embeddings_version"]), version, index)
        added = index.add(sub.project(vectors) if sub else vectors, ids)
        if index.fits(len(index), cfg or index.cfg):
            index.configure(cfg or index.cfg)
        else:
            index = loaded = None  # let it go before the new one is built
    rebuilt = index is None
    if index is None:
        index = stream_build(source_of(lake, spec, sub, batch_rows=(cfg or IndexConfig()).batch_rows), cfg)
        if len(index) == 0:
            raise NotFoundError(f"no embeddings for {spec.ref}; run `fleetmine embed --model {spec.ref}`")
        added = len(index) if added is None else added
    meta = index.save(loc, version)
    return {
        "model": spec.ref,
        "factory": index.factory,
        "kind": index.kind,
        "vectors": len(index),
        "added": added,
        "rebuilt": rebuilt,
        "build": meta["build"],
        "uri": loc.uri,
    }


def similar(
    lake: Lake,
    *,
    clip_id: str | None = None,
    vector: list[float] | None = None,
    k: int = 10,
    where: str | None = None,
    model: str | None = None,
    space: str = "clip",
) -> list[Neighbour]:
    """The ``k`` clips nearest a clip or a vector, among clips matching ``where``
    (SQL on clips): exactly ``min(k, matching clips)`` of them, in the whole vector or
    in the ``space`` of :data:`SPACES` (a vector given is the whole one either way)."""
    spec = resolve(lake, model)
    sub = space_of(spec, space)
    if clip_id is not None:
        q = serving.live(lake, spec, sub).stored_vector(clip_id)  # already in the sub-space
        if q is None:
            q = read_vectors(lake, spec, [clip_id])
            if np.isnan(q).any():
                raise NotFoundError(f"clip {clip_id} has no {spec.ref} embedding")
            q = q if sub is None else sub.project(q)
    elif vector is not None:
        given = np.asarray([vector], np.float64)
        if given.ndim != 2 or given.shape[1] != spec.dim:
            raise ConfigError(f"vector has {given.shape[-1]} dims; {spec.ref} has {spec.dim}")
        if not (np.abs(given) <= np.finfo(np.float32).max).all():  # NaN fails this too
            raise ConfigError("vector has values that are not finite 32-bit floats")
        q = given.astype(np.float32) if sub is None else sub.project(given)
    else:
        raise ConfigError("give a clip_id or a vector")
    return nearest(lake, spec, q, k, where, sub=sub, exclude=clip_id)


def nearest(
    lake: Lake,
    spec: ModelSpec,
    q: np.ndarray,
    k: int,
    where: str | None = None,
    *,
    sub: SubSpace | None = None,
    exclude: str | None = None,
    index: serving.LiveIndex | None = None,
) -> list[Neighbour]:
    """The ``k`` clips nearest the query row ``q`` (``(1, dim)``), among clips matching
    ``where``, in the version's vectors or in their ``sub`` block (``q`` then in it).
    ``index``: the loaded index to search (``bench --only sharded-search`` asks one build
    and a set of shards of the same vectors in turn); by default the one this process serves."""
    sub = own_index(spec, sub)
    live = index if index is not None else serving.live(lake, spec, sub)
    allowed = None
    if where:  # the process's resident filter columns answer it; else a scan (storage.resident)
        allowed = clip_rows().select(lake, where)
        if allowed is None:
            allowed = lake.read("clips", columns=["clip_id"], where=where).column("clip_id")

    def raw(ids: list[str]) -> np.ndarray:
        vectors = read_vectors(lake, spec, ids)
        return vectors if sub is None else sub.project(vectors)

    dist, names = live.search(q, k + (exclude is not None), allowed, raw=raw)
    out = [Neighbour(c, float(d)) for d, c in zip(dist[0], names[0], strict=False) if c != exclude]
    return out[:k]


def corner_cases(
    lake: Lake, *, k: int = 50, event: str | None = None, model: str | None = None
) -> list[dict[str, Any]]:
    """Clips ranked by novelty (latest run for the model), duplicates left out: the
    lists ``mine`` keeps ready (:mod:`mining.search.ready`), so k rows are read."""
    return read_corner_cases(lake, resolve(lake, model).ref, k=k, event=event)
