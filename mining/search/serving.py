"""What a process serves: one live index per lake and model version.

A :class:`LiveIndex` is the saved index and its id array, never the vectors,
plus an exact index of the clips embedded since. On a local lake the saved
index is mapped from its file, so a fresh server answers at once and pages in
only what searches touch. When the ``embeddings`` table
has moved, only the rows its new commits added are read, from the Delta log
(``load_cdf``: those commits' files), and the small exact part is replaced, not
changed: the big index is never mutated, so searches need no lock and a top-up
never regrows it. A newer saved build (``fleetmine index``, in this process or
another) replaces the whole. Vectors by clip id come from ``embeddings``, one
date partition per day the ids name.

The same holds for a sub-space of the version's vectors (:class:`SubSpace`, the
appearance block query by example searches): its own saved index, its own live
object, topped up with the same new rows seen through the sub-space.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.exceptions import DeltaError

from mining.encoders.vectors import EmbeddingSource, ProjectedSource, SubSpace, VectorSource
from mining.interfaces import ModelSpec
from mining.search import index as clip_index
from mining.search.holders import HeldIndex, ShardUnavailable
from mining.search.index import ClipIndex, Ids, RawVectors, as_ids, merge_nearest, names_at
from mining.search.index_build import stream_build
from storage.errors import NotFoundError, StorageError
from storage.lake import Lake
from storage.sql import in_list, literal

__all__ = [
    "LiveIndex",
    "current",
    "embedded_since",
    "forget",
    "hold_shards",
    "live",
    "read_vectors",
    "served_indexes",
]

log = logging.getLogger(__name__)
_READ_CHUNK = 5000
RECHECK_S = 30.0  # how often a server looks for a newer saved build (another process's `fleetmine index`)


@dataclass(frozen=True)
class LiveIndex:
    """A loaded index that is never mutated, plus an exact index of the clips
    embedded after it; both searched as one. Topping up makes a new object."""

    main: ClipIndex | HeldIndex  # held: shards in Ray actors' memory (hold_shards), not here
    fresh: ClipIndex | None = None  # never beside a held main: its newest shard's holder keeps them
    embeddings_version: int = -1  # the embeddings table version this covers
    build: str | None = None  # the saved build ``main`` was loaded from (None: built here)
    main_version: int = -1  # the embeddings table version ``main`` alone covers
    fresh_held: int = 0  # held: the clips embedded since the build its newest shard's holder keeps

    def __len__(self) -> int:
        return len(self.main) + (len(self.fresh) if self.fresh else 0) + self.fresh_held

    @property
    def parts(self) -> list[ClipIndex | HeldIndex]:
        return [self.main] + ([self.fresh] if self.fresh is not None else [])

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def with_added(self, vectors: np.ndarray, clip_ids: Ids, embeddings_version: int) -> LiveIndex:
        if isinstance(self.main, HeldIndex):
            raise StorageError("a held index is topped up in its newest shard's holder (HeldIndex.top_up)")
        ids = as_ids(clip_ids)
        new = np.flatnonzero(~self.main.holds(ids))
        if new.size == 0:
            return replace(self, embeddings_version=embeddings_version)
        vectors, ids = vectors[new], ids.take(pa.array(new))
        if self.fresh is not None:  # a copy: searches running on the old one go on
            old = self.fresh.index.reconstruct_n(0, len(self.fresh))
            keep = ~pc.is_in(self.fresh.ids, value_set=ids).to_numpy(zero_copy_only=False)
            vectors = np.vstack([old[keep], vectors])
            ids = pa.concat_arrays([self.fresh.ids.filter(pa.array(keep)), ids])
        fresh = _fresh_part(self.main, vectors, ids)
        return replace(self, fresh=fresh, embeddings_version=embeddings_version)

    def stored_vector(self, clip_id: str) -> np.ndarray | None:
        for part in self.parts:
            v = part.stored_vector(clip_id)
            if v is not None:
                return v
        return None

    def holds(self, clip_ids: Ids) -> np.ndarray:
        ids = as_ids(clip_ids)
        held = self.main.holds(ids)
        return held | self.fresh.holds(ids) if self.fresh is not None else held

    def search(
        self, queries: np.ndarray, k: int, allowed: Ids | None = None, raw: RawVectors | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """As :meth:`ClipIndex.search`, over both parts, merged by distance (in arrays:
        an incremental ``mine`` asks for ``reach * k`` of each of its new clips)."""
        allowed_ids = None if allowed is None else as_ids(allowed)
        if isinstance(self.main, HeldIndex):  # as of the commit this covers (a view may pin an older one)
            return self.main.search(queries, k, allowed_ids, raw, as_of=self.embeddings_version)
        if self.fresh is None:
            return self.main.search(queries, k, allowed_ids, raw)
        found = []
        offset = 0
        for part in self.parts:
            assert isinstance(part, ClipIndex)
            mask = None if allowed_ids is None else part.mask(allowed_ids)
            d2, pos = part.search_positions(queries, k, mask, raw)
            found.append((d2, np.where(pos >= 0, pos + offset, -1)))
            offset += len(part)
        d2, pos = merge_nearest([d for d, _ in found], [p for _, p in found], k)
        if d2.shape[1] < k:  # fewer allowed than k in both parts together
            d2 = np.hstack([d2, np.full((len(d2), k - d2.shape[1]), np.inf)])
            pos = np.hstack([pos, np.full((len(pos), k - pos.shape[1]), -1)])
        held = [p for p in self.parts if isinstance(p, ClipIndex)]
        chunks = [c for p in held for c in (p.ids.chunks if isinstance(p.ids, pa.ChunkedArray) else [p.ids])]
        names = names_at(pa.chunked_array(chunks, pa.string()), pos)
        return np.sqrt(np.maximum(d2, 0)).astype(np.float32), names


def _fresh_part(main: ClipIndex | HeldIndex, vectors: np.ndarray, ids: pa.Array) -> ClipIndex:
    """The exact index of the clips added after ``main`` was saved: flat while few; past
    :data:`~mining.search.index.FRESH_IVF_FROM`, inverted lists on ``main``'s trained
    centroids, probed with its ``nprobe``, so the two parts answer as one IVF index holding
    both would."""
    if main.ivf is None or not main.exact or len(vectors) < clip_index.FRESH_IVF_FROM:
        return ClipIndex.build(vectors, ids, replace(main.cfg, kind="flat"))
    assert isinstance(main, ClipIndex)
    return ClipIndex.ivf_beside(main, vectors, ids)


def _of_model(spec: ModelSpec) -> str:
    return f"model_name = {literal(spec.name)} AND model_version = {spec.version}"


def _day(clip_id: str) -> str | None:
    """The date partition a clip id names (``20180802-...`` -> ``2018-08-02``), if any."""
    try:
        return dt.date(int(clip_id[:4]), int(clip_id[4:6]), int(clip_id[6:8])).isoformat()
    except ValueError:
        return None


def _matrix(vectors: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros((0, dim), np.float32)
    flat = pc.list_flatten(vectors).to_numpy()
    return np.asarray(flat.reshape(len(vectors), dim), dtype=np.float32)


def read_vectors(lake: Lake, spec: ModelSpec, clip_ids: list[str]) -> np.ndarray:
    """The stored vectors of these clips, rows in the same order; NaN rows for
    clips without one. Reads only the date partitions the ids name."""
    out = np.full((len(clip_ids), spec.dim), np.nan, np.float32)
    for start in range(0, len(clip_ids), _READ_CHUNK):  # an IN list stays a few thousand long
        chunk = clip_ids[start : start + _READ_CHUNK]
        where = f"{_of_model(spec)} AND clip_id IN ({in_list(chunk)})"
        days = {_day(c) for c in chunk}
        if None not in days:
            where += f" AND date IN ({in_list(sorted(d for d in days if d))})"
        t = lake.read("embeddings", columns=["clip_id", "vector"], where=where)
        pos = pc.index_in(t.column("clip_id"), value_set=pa.array(chunk, pa.string()))
        out[start + np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64)] = _matrix(
            t.column("vector"), spec.dim
        )
    return out


def embedded_since(
    lake: Lake, spec: ModelSpec, since: int, until: int, held: ClipIndex | LiveIndex | HeldIndex
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Clip ids, vectors and the commit of each, of ``spec``'s rows added to ``embeddings``
    after version ``since`` (up to ``until``): the rows of those commits' files, from the
    Delta log. If the log no longer reaches back that far, the ids ``held`` lacks, by one
    id scan (each said to be of ``until``: no view older than that sees them)."""
    if until <= since:
        return pa.array([], pa.string()), np.zeros((0, spec.dim), np.float32), np.zeros(0, np.int64)
    try:
        changes = lake.delta("embeddings").load_cdf(
            starting_version=since + 1,
            ending_version=until,
            columns=["clip_id", "vector", "_change_type", "_commit_version"],
            predicate=_of_model(spec),
        )
        t = pa.RecordBatchReader.from_stream(changes).read_all()
        added = pc.is_in(t.column("_change_type").cast(pa.string()), pa.array(["insert", "update_postimage"]))
        ids = t.column("clip_id").cast(pa.string()).filter(added).combine_chunks()
        commits = t.column("_commit_version").filter(added).to_numpy()
        return ids, _matrix(t.column("vector").filter(added), spec.dim), np.asarray(commits, np.int64)
    except DeltaError as exc:
        log.warning("embeddings log from version %s unreadable (%s): diffing ids", since + 1, exc)
    ids = lake.read("embeddings", columns=["clip_id"], where=_of_model(spec)).column("clip_id")
    missing = ids.combine_chunks().filter(pa.array(~held.holds(ids)))
    names = missing.to_pylist()
    return pa.array(names, pa.string()), read_vectors(lake, spec, names), np.full(len(names), until, np.int64)


_SERVED: dict[tuple[str, str], LiveIndex] = {}
_CHECKED: dict[tuple[str, str], float] = {}  # when the saved build was last looked at
_AS_OF: dict[tuple[str, str, int], LiveIndex] = {}  # the served index as an older version saw it
_AS_OF_KEPT = 4
_SERVED_LOCK = threading.Lock()  # the dicts above, held briefly
_OPENING: dict[tuple[str, str], threading.Lock] = {}  # per index: one opens or tops it up at a time


def source_of(lake: Lake, spec: ModelSpec, sub: SubSpace | None = None, **kw: Any) -> VectorSource:
    """The version's rows of ``embeddings``, or their ``sub`` block."""
    source = EmbeddingSource(lake, spec, **kw)
    return source if sub is None else ProjectedSource(source, sub)


_HOLD = [False]  # hold_shards: sharded builds in shard holders on the connected Ray
_RETIRED: list[tuple[float, HeldIndex]] = []  # replaced holders, ended a while later
RETIRE_AFTER_S = 60.0  # searches that began on a replaced set finish on it


def hold_shards(on: bool = True) -> None:
    """From now, this process serves each set of shards (``fleetmine index --shard-size``)
    from :class:`~mining.search.holders.HeldIndex` actors on the Ray it is connected to
    (``fleetmine serve --address``), holding none of their vectors itself; an index that is
    one file is mapped here as ever. The clips embedded since the build are kept by the
    newest shard's holder (:class:`~mining.search.holders.ShardHolder`), one copy for every
    replica, each clip with the commit that added it.
    The holders are shared by every replica serving the same build (named; see
    :meth:`HeldIndex.start`): a search that met a dead one answers 503 and the next opens
    the set again."""
    _HOLD[0] = on


def _retire(old: LiveIndex | None) -> None:
    """End the holders of sets replaced a while ago, and keep ``old``'s for a while. A
    holder that a served set still asks (the same shared actor, found again by name when a
    lost set was opened again) is not ended."""
    now = time.monotonic()
    with _SERVED_LOCK:
        ended = []
        while _RETIRED and now - _RETIRED[0][0] > RETIRE_AFTER_S:
            ended.append(_RETIRED.pop(0)[1])
        if old is not None and isinstance(old.main, HeldIndex):
            _RETIRED.append((now, old.main))
        serving = frozenset(
            h._actor_id for s in _SERVED.values() if isinstance(s.main, HeldIndex) for h in s.main.holders
        )
    for held in ended:
        held.stop(keep=serving)


def _open(
    lake: Lake, spec: ModelSpec, version: int, *, persist: bool = False, sub: SubSpace | None = None
) -> LiveIndex:
    loc = ClipIndex.location(lake, spec, sub.name if sub else None)
    if _HOLD[0] and not persist:
        # Shared: every replica serving this build asks the same named holders (one copy of
        # the index on the cluster); a top-up failing here leaves them to the others.
        held = HeldIndex.start(lake, spec, sub.name if sub else None, cpus=0.0, shared=True)
        if held is not None:
            saved = held.embeddings_version
            build = held.meta.get("build")
            opened = LiveIndex(held, embeddings_version=saved, build=build, main_version=saved)
            return _top_up(lake, spec, opened, version, sub)
    loaded = ClipIndex.load(loc, mmap=True)  # never added to: see LiveIndex
    if loaded is None:  # no `fleetmine index` yet: built here, once, from the table
        built = stream_build(source_of(lake, spec, sub, version=version))
        if len(built) == 0:
            raise NotFoundError(f"no embeddings for {spec.ref}; run `fleetmine embed --model {spec.ref}`")
        log.info("no saved index for %s: built one of %d vectors", spec.ref, len(built))
        meta = built.save(loc, version) if persist else {}
        return LiveIndex(built, embeddings_version=version, build=meta.get("build"), main_version=version)
    index, meta = loaded
    saved = int(meta["embeddings_version"])
    opened = LiveIndex(index, embeddings_version=saved, build=meta.get("build"), main_version=saved)
    return _top_up(lake, spec, opened, version, sub)


def _top_up(
    lake: Lake, spec: ModelSpec, served: LiveIndex, version: int, sub: SubSpace | None = None
) -> LiveIndex:
    if isinstance(served.main, HeldIndex):  # the newest shard's holder keeps them
        main = served.main

        def fetch(since: int, until: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
            ids, vectors, commits = embedded_since(lake, spec, since, until, main)
            return ids, (vectors if sub is None else sub.project(vectors)), commits

        fresh = main.top_up(fetch, version)
        return replace(served, embeddings_version=max(version, served.embeddings_version), fresh_held=fresh)
    ids, vectors, _ = embedded_since(lake, spec, served.embeddings_version, version, served)
    if sub is not None:
        vectors = sub.project(vectors)
    return served.with_added(vectors, ids, max(version, served.embeddings_version))


def _key(lake: Lake, spec: ModelSpec, sub: SubSpace | None) -> tuple[str, str]:
    return lake.uri, spec.ref + (f"/{sub.name}" if sub else "")


def live(lake: Lake, spec: ModelSpec, sub: SubSpace | None = None) -> LiveIndex:
    """The model version's index in this process (or that of its ``sub`` block),
    current with the ``embeddings`` table (in a read view: with the version it reads,
    pinned here under the lock, so the index handed out covers that version exactly,
    never a later one)."""
    key = _key(lake, spec, sub)
    _retire(None)  # replaced holder sets past their grace end here, swap or no swap
    with _SERVED_LOCK:  # one lock per index: opening one (holders starting) stalls no other
        lock = _OPENING.setdefault(key, threading.Lock())
        served = _SERVED.get(key)
    if served is not None and isinstance(served.main, HeldIndex) and served.main.lost and lock.locked():
        # Another request is opening the set again (a holder may take a while to restart):
        # the others answer 503 at once rather than queue behind it.
        raise ShardUnavailable("the index's shard holders are being placed again; retry later")
    with lock:
        version = lake.version("embeddings")
        served = _SERVED.get(key)
        recheck = time.monotonic() - _CHECKED.get(key, 0.0) > RECHECK_S
        lost = served is not None and isinstance(served.main, HeldIndex) and served.main.lost
        if served is not None and served.embeddings_version > version and not lost:
            return _as_of(lake, spec, served, version, sub)  # a view pinned before the last top-up
        if served is not None and served.embeddings_version == version and not (recheck or lost):
            return served
        meta = ClipIndex.read_meta(ClipIndex.location(lake, spec, sub.name if sub else None))
        _CHECKED[key] = time.monotonic()
        if served is None or lost or (meta is not None and meta.get("build") != served.build):
            old, served = served, _open(lake, spec, version, sub=sub)
            _retire(old)  # only once its replacement is open (holders it shares with it stay)
        elif served.embeddings_version < version:
            served = _top_up(lake, spec, served, version, sub)
        with _SERVED_LOCK:
            _SERVED[key] = served
        return served


def _as_of(lake: Lake, spec: ModelSpec, served: LiveIndex, version: int, sub: SubSpace | None) -> LiveIndex:
    """``served`` as of an older embeddings ``version``: its main part topped up to that
    version only, so a request whose view pinned it searches the clips its view has rows
    for (another request may have topped the index up past it meanwhile). A few are kept:
    a commit's requests in flight ask for the same one. A saved build newer than
    ``version`` cannot be taken back: it is served as it is."""
    if served.main_version > version:
        return served
    if isinstance(served.main, HeldIndex):  # the holder answers as of any commit it covers
        return replace(served, embeddings_version=version)
    key = (*_key(lake, spec, sub), version)
    if (kept := _AS_OF.get(key)) is not None and kept.main is served.main:
        return kept
    base = replace(served, fresh=None, embeddings_version=served.main_version)
    older = _top_up(lake, spec, base, version, sub)
    _AS_OF[key] = older
    while len(_AS_OF) > _AS_OF_KEPT:
        _AS_OF.pop(next(iter(_AS_OF)))
    return older


def current(lake: Lake, spec: ModelSpec) -> LiveIndex:
    """The model version's index as of now, for one job (``mine``), not kept by the
    process; saved first if there is no saved build yet."""
    return _open(lake, spec, lake.version("embeddings"), persist=True)


def forget(lake: Lake, spec: ModelSpec, *, now: bool = False) -> None:
    """Drop what this process serves for ``spec`` (and its sub-spaces): its next search
    opens the saved build. Held shards' holders are retired (ended a while later), or with
    ``now`` ended at once (no search is running on them: a process about to leave Ray)."""
    with _SERVED_LOCK:
        keys = [k for k in _SERVED if k[0] == lake.uri and k[1].split("/", 1)[0] == spec.ref]
        dropped = [_SERVED.pop(k, None) for k in keys]
    for old in dropped:  # outside the lock: _retire takes it
        if now and old is not None and isinstance(old.main, HeldIndex):
            old.main.stop()
        else:
            _retire(old)


def served_indexes() -> list[dict[str, Any]]:
    """What this process holds, per lake and model version (for ``/metrics``)."""
    with _SERVED_LOCK:
        items = list(_SERVED.items())
    return [
        {
            "lake": lake,
            "model": ref.split("/", 1)[0],
            "part": ref.split("/", 1)[1] if "/" in ref else "clip",
            "kind": served.main.kind,
            "vectors": len(served),
            "fresh_vectors": len(served.fresh) if served.fresh else served.fresh_held,
            "bytes": served.nbytes,
            "embeddings_version": served.embeddings_version,
            **(
                {
                    "holders": [
                        {k: i[k] for k in ("node", "pid", "shards", "bytes")} for i in served.main.infos
                    ]
                }
                if isinstance(served.main, HeldIndex)
                else {}
            ),
        }
        for (lake, ref), served in items
    ]
