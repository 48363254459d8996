"""An index of a model version as shards by date range (``fleetmine index --shard-size N``).

One index per model version stops at one machine's memory: at 10^8 clips a 256-d
IVF-Flat is ~100 GB. Here the version's clips are cut, by day, into shards of about
``shard_size`` vectors; each shard is an ordinary saved index (the kind
:class:`~mining.search.index.IndexConfig` picks for the shard's size) with its own id
array. IVF shards share one coarse quantizer, trained once on a sample of the whole
corpus, so probing a list in every shard is probing it in the union: the shards answer
as one index of every vector would, and :class:`ShardSet` merges their top-k so (exact
kinds exactly; IVF-PQ refines each shard's candidates, a superset of one index's).

- **Cut by day, in order.** A day is never split (a shard may pass the size by its last
  day), so new days add to or grow the newest shard only and older shards' files stay
  as they were written: a top-up rewrites the newest shard, not the set.
- **Built where the runner puts each shard.** :func:`prepare_shards` trains the quantizer
  once, then each shard is an item of :class:`ShardStage` (``jobs.index_job`` runs them:
  Ray tasks spread over a cluster's nodes when one is named, this process otherwise),
  written to the lake by the worker that built it; :func:`name_shards` then names the
  whole set in ``meta.json`` at once, so a reader sees the old set or the new one, never a
  mix. A shard that failed fails the job before anything is named.
- **Read as one.** :func:`load_shards` maps every shard (local lakes) and
  :class:`ShardSet` answers what :class:`~mining.search.index.ClipIndex` answers, so
  search, mine and the API serve a sharded version unchanged. A small lake is one shard.
"""

from __future__ import annotations

import datetime as dt
import socket
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders.vectors import SubSpace, of_model, sample_ids
from mining.interfaces import ModelSpec
from mining.search.index import (
    ClipIndex,
    IndexConfig,
    RawVectors,
    as_ids,
    drop_unnamed,
    kind_of,
    merge_nearest,
    meta_files,
    new_build,
    refine,
    take_ids,
    write_meta,
)
from mining.search.index_build import gather
from storage.errors import StorageError
from storage.lake import Lake
from storage.objectstore import Location

__all__ = [
    "MAX_SHARDS",
    "ShardBuild",
    "ShardPlan",
    "ShardSet",
    "ShardStage",
    "load_shards",
    "name_shards",
    "nearest_each",
    "plan_shards",
    "prepare_shards",
    "sharded_as",
    "this_node",
]


MAX_SHARDS = 1024
"""Shards a version's index may have: a search asks each, so the count bounds its cost."""


@dataclass(frozen=True)
class ShardPlan:
    """One shard to build: its number, the days it holds (first and last, ISO) and how many
    vectors they have."""

    number: int
    first_day: str
    last_day: str
    n: int


def plan_shards(day_counts: list[tuple[str, int]], shard_size: int) -> list[ShardPlan]:
    """Consecutive days cut into shards of at most ``shard_size`` vectors (a day bigger than
    that is a shard of its own)."""
    out: list[ShardPlan] = []
    first = last = ""
    n = 0
    for day, count in sorted(day_counts):
        if n and n + count > shard_size:
            out.append(ShardPlan(len(out), first, last, n))
            n = 0
        if n == 0:
            first = day
        last, n = day, n + count
    if n:
        out.append(ShardPlan(len(out), first, last, n))
    return out


def day_counts(lake: Lake, spec: ModelSpec, version: int) -> list[tuple[str, int]]:
    """The version's embedded clips per day (one narrow column read)."""
    dates = lake.read("embeddings", columns=["date"], where=of_model(spec), version=version).column("date")
    counts = pc.value_counts(dates)  # by date (one per day), not a string per clip
    return sorted((v["values"].isoformat(), int(v["counts"])) for v in counts.to_pylist())


def this_node() -> str:
    """The Ray node this runs on (its id), or this host's name without Ray."""
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # no Ray, or not in a Ray process: the host names it
        pass
    return socket.gethostname()


def _shard_files(number: int, build: str) -> tuple[str, str]:
    return f"shard{number:05d}-{build}.faiss", f"shard{number:05d}-{build}.ids.arrow"


class ShardStage:
    """Stage: one item per :class:`ShardPlan`; builds the shard from the days' embeddings
    on the trained (empty) ``template`` and writes its two files to the index's folder."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}
    scheduling_strategy: ClassVar[str] = "SPREAD"  # on Ray: shards over the nodes, not packed on one

    def __init__(
        self,
        lake: Lake,
        spec: ModelSpec,
        sub: SubSpace | None,
        cfg: IndexConfig,
        factory: str,
        template: bytes,
        build: str,
        version: int,
    ):
        self.lake, self.spec, self.sub, self.cfg = lake, spec, sub, cfg
        self.factory, self.template, self.build, self.version = factory, template, build, version

    def setup(self) -> None:
        pass

    def process_batch(self, plans: list[ShardPlan]) -> list[dict[str, Any]]:
        from mining.search.serving import source_of

        out = []
        loc = ClipIndex.location(self.lake, self.spec, self.sub.name if self.sub else None)
        loc.fs.makedirs(loc.path, exist_ok=True)
        for p in plans:
            index = faiss.deserialize_index(np.frombuffer(self.template, np.uint8))
            shard = ClipIndex(index, pa.array([], pa.string()), self.factory, self.cfg)
            source = source_of(
                self.lake,
                self.spec,
                self.sub,
                version=self.version,
                batch_rows=self.cfg.batch_rows,
                days=(p.first_day, p.last_day),
            )
            for ids, vectors in source.batches():
                shard.add(vectors, ids)
            files = shard.write_files(loc, *_shard_files(p.number, self.build))
            out.append(
                {**asdict(p), "n": len(shard), "files": files, "node": this_node(), "bytes": shard.nbytes}
            )
        return out


def _template(source: Any, n: int, total: int, cfg: IndexConfig) -> tuple[str, bytes]:
    """The factory for shards of ``n`` vectors and that index, trained on a sample of the
    whole ``source`` (the quantizer every shard shares), empty, serialized.

    The kind is the one a shard's size calls for (its memory), the lists as many as one
    index of all ``total`` vectors has: probing ``nprobe`` lists in every shard then scans
    what one index's search scans, split over the shards. Lists sized for a quarter of the
    set (half as many, each twice as long in the union) scanned twice the vectors, and the
    set's p99 was 2.9x one index's (``bench --catalog 1000000 --only sharded-search``,
    four shards: 31 vs 10.6 ms)."""
    lists = cfg if cfg.nlist else replace(cfg, nlist=cfg.nlist_for(total))
    empty = ClipIndex.empty(n, source.dim, lists)
    want = lists.train_size(total, empty.factory)
    if want:
        empty.train(gather(source, sample_ids(source.ids(), want, cfg.seed)))
    return empty.factory, faiss.serialize_index(empty.index).tobytes()


@dataclass(frozen=True)
class ShardBuild:
    """What a job needs to build a version's shards: the plans (its items) and the
    arguments of the :class:`ShardStage` that builds each."""

    plans: list[ShardPlan]
    stage_args: tuple[Any, ...]
    factory: str
    build: str
    version: int
    dim: int


def prepare_shards(lake: Lake, spec: ModelSpec, sub: SubSpace | None, cfg: IndexConfig) -> ShardBuild:
    """Plan the version's shards (of its ``sub`` block) by day and train the quantizer they
    share, once, here; the job then runs a :class:`ShardStage` per plan and names them
    (:func:`name_shards`)."""
    from mining.search.serving import source_of

    if not cfg.shard_size or cfg.shard_size < 1:
        raise StorageError("a sharded build needs shard_size >= 1")
    version = lake.version("embeddings")
    plans = plan_shards(day_counts(lake, spec, version), cfg.shard_size)
    if not plans:
        raise StorageError(f"no embeddings for {spec.ref}; run `fleetmine embed --model {spec.ref}`")
    if len(plans) > MAX_SHARDS:  # every search asks every shard: a shard a day for years is no index
        raise StorageError(
            f"shard_size {cfg.shard_size:,} cuts {spec.ref}'s {sum(p.n for p in plans):,} vectors into "
            f"{len(plans):,} shards; at most {MAX_SHARDS:,}: give a larger shard size"
        )
    source = source_of(lake, spec, sub, version=version, batch_rows=cfg.batch_rows)
    factory, template = _template(source, max(p.n for p in plans), sum(p.n for p in plans), cfg)
    build = new_build()
    args = (lake, spec, sub, cfg, factory, template, build, version)
    return ShardBuild(plans, args, factory, build, version, source.dim)


def name_shards(
    lake: Lake,
    spec: ModelSpec,
    sub: SubSpace | None,
    cfg: IndexConfig,
    prepared: ShardBuild,
    shards: list[Any],
) -> dict[str, Any]:
    """``meta.json`` naming every shard the stage wrote (each one's result, in plan order),
    at once; the files of builds before the last go."""
    loc = ClipIndex.location(lake, spec, sub.name if sub else None)
    previous = ClipIndex.read_meta(loc)
    meta = _meta(prepared.build, shards, prepared.factory, cfg, prepared.dim, prepared.version)
    missing = [f for f in meta_files(meta) if not loc.fs.exists(loc.join(f).path)]
    if missing:  # removed meanwhile (another build's clean-up): a set is never named without its files
        raise StorageError(
            f"index of {spec.ref}: {len(missing)} shard file(s) gone before naming: {missing[:3]}"
        )
    write_meta(loc, meta)
    drop_unnamed(loc, meta_files(meta) | meta_files(previous))
    return meta


def sharded_as(loc: Location, cfg: IndexConfig) -> bool:
    """Whether the saved build at ``loc`` is shards of ``cfg``'s size and kind (a top-up
    grows it; another size or kind is a new set, and so is an IVF-PQ set saved before its
    shards kept their vectors: see :meth:`ClipIndex.fits`)."""
    meta = ClipIndex.read_meta(loc)
    if not (meta and meta.get("shards")):
        return False
    same_size = (meta.get("config") or {}).get("shard_size") == cfg.shard_size
    kept = meta.get("kind") != "ivf-pq" or all("vectors" in s["files"] for s in meta["shards"])
    return bool(same_size and kept and cfg.kind in ("auto", meta.get("kind")))


def _meta(
    build: str, shards: list[dict[str, Any]], factory: str, cfg: IndexConfig, dim: int, version: int
) -> dict[str, Any]:
    return {
        "build": build,
        "files": {},
        "shards": shards,
        "factory": factory,
        "kind": kind_of(factory),
        "n": sum(int(s["n"]) for s in shards),
        "dim": dim,
        "embeddings_version": version,
        "built_at": dt.datetime.now(dt.UTC).isoformat(),
        "config": asdict(cfg),
    }


def load_shards(loc: Location, meta: dict[str, Any], *, mmap: bool) -> ShardSet:
    """The saved shards of ``meta`` as one :class:`ShardSet`, each mapped (local lakes). To
    write (``mmap`` False: a top-up) only the newest is read into memory: a top-up adds to it
    or after it, never to the others, so their files stay mapped, not held."""
    last = len(meta["shards"]) - 1
    shards = [
        ClipIndex.open_files(loc, s["files"], meta, mmap=mmap or i < last)
        for i, s in enumerate(meta["shards"])
    ]
    return ShardSet(shards, [dict(s) for s in meta["shards"]], IndexConfig.from_dict(meta.get("config", {})))


def _day(clip_id: str) -> str | None:
    try:
        return dt.date(int(clip_id[:4]), int(clip_id[4:6]), int(clip_id[6:8])).isoformat()
    except ValueError:
        return None


def nearest_each(
    shards: list[ClipIndex], q: np.ndarray, k: int, *, rerank: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each shard's ``k`` nearest of every row of ``q`` (squared distances, the shard's own
    positions), no filter, as :meth:`ClipIndex.search_positions` answers them.

    IVF shards share one quantizer (:func:`_template`), and each holds a copy of its
    centroids: a search per shard read them once per shard (four 2.8 MB passes at 480,000
    vectors in 4 shards, where one index makes one): the set's unfiltered p99 was 6.2 ms,
    one index's 2.3.
    Here the lists to probe are found once and each shard scans them; a shard whose probed
    lists held fewer than ``k`` (or one not IVF) searches on its own, widening its probes.
    An IVF-PQ shard with its vector file scans for ``refine_factor`` x k candidates and
    re-ranks them on it, as its own search does (unless not ``rerank``: see
    :meth:`ClipIndex.search_positions`)."""
    first = shards[0].ivf if shards else None
    probed = None
    nprobe = shards[0].cfg.nprobe if shards else 0
    # (faiss's search_preassigned takes as many lists per row as the index's own nprobe)
    if first is not None and all(s.ivf is not None and s.ivf.nprobe == nprobe <= s.ivf.nlist for s in shards):
        probed = first.quantizer.search(q, nprobe)
    out = []
    for shard in shards:
        if probed is not None and len(shard) >= k:
            ivf: Any = shard.ivf  # faiss's Python wrapper, not the C++ signature its stubs give
            refining = rerank and shard.refines(None)
            fetch = min(len(shard), k * shard.cfg.refine_factor) if refining else k
            d2, pos = ivf.search_preassigned(q, fetch, probed[1], probed[0])
            if not (pos[:, -1] < 0).any():
                out.append(shard._refine(q, pos, k, None) if refining else (d2, pos))
                continue
        out.append(shard.search_positions(q, k, rerank=rerank))
    return out


class ShardSet(ClipIndex):
    """Shards searched as one index: positions run over the shards in order (shard 0's
    first), so every :class:`ClipIndex` answer (a mask, a clip's position, its stored
    vector) means the same here; a search asks each shard for the ``k`` nearest and keeps
    the ``k`` nearest of them all."""

    def __init__(self, shards: list[ClipIndex], info: list[dict[str, Any]], cfg: IndexConfig):
        if not shards:
            raise StorageError("a shard set needs a shard")
        self.shards = shards
        self.info = info  # per shard: number, first_day, last_day, n, files (None: not written yet), node
        self.cfg = cfg
        self.factory = shards[0].factory
        self.index = shards[0].index
        self.ivf = shards[0].ivf  # the quantizer every shard shares
        self.read_only = any(s.read_only for s in shards)
        self._file_rows = None
        self.vectors = None  # each shard's own (IVF-PQ)
        self._positions()

    def _positions(self) -> None:
        self.offsets = np.cumsum([0, *(len(s) for s in self.shards)]).astype(np.int64)
        # chunked, not concatenated: each shard's ids stay where they are (mapped from their
        # files on a local lake), never copied onto the heap of every server
        self.ids = pa.chunked_array([s.ids for s in self.shards], pa.string())
        self._changed()

    def configure(self, cfg: IndexConfig) -> None:
        self.cfg = cfg
        for s in self.shards:
            s.configure(cfg)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.shards)

    def fits(self, n: int, cfg: IndexConfig) -> bool:
        """Still what ``cfg`` asks for: the same shard size and kind (shards grow by days)."""
        return cfg.shard_size == self.cfg.shard_size and cfg.kind in ("auto", self.kind)

    @property
    def has_vectors(self) -> bool:
        return all(s.has_vectors for s in self.shards)

    def refines(self, raw: RawVectors | None) -> bool:
        """Whether the set re-ranks its merged candidates once, on ``raw``: IVF-PQ shards
        saved before they kept their vector files (each one that keeps it re-ranks its own,
        and their distances merge as they are)."""
        return not self.exact and raw is not None and any(s.vectors is None for s in self.shards)

    def _refine(
        self, q: np.ndarray, cand: np.ndarray, k: int, raw: RawVectors | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merged candidates re-ranked: each on its shard's vector file, else on ``raw``."""

        kept = np.array([s.has_vectors for s in self.shards])

        def read(uniq: np.ndarray) -> np.ndarray:
            # rows of shards without their vectors: one read of the lake for them all
            lake = ~kept[np.searchsorted(self.offsets, uniq, side="right") - 1]
            out = np.empty((len(uniq), self.index.d), np.float32)
            if not lake.all():
                out[~lake] = self.vectors_at(uniq[~lake])
            if lake.any():
                assert raw is not None
                out[lake] = raw(take_ids(self.ids, uniq[lake]))
            return out

        return refine(q, cand, k, read)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        pos = np.asarray(positions, np.int64)
        which = np.searchsorted(self.offsets, pos, side="right") - 1
        out = np.empty((len(pos), self.index.d), np.float32)
        for i in np.unique(which).tolist():
            rows = which == i
            out[rows] = self.shards[i].vectors_at(pos[rows] - self.offsets[i])
        return out

    def add(self, vectors: np.ndarray, clip_ids: Any) -> int:
        """Append the clips not held yet to the newest shard, and past its size to new
        shards; the shards they reach are written again by :meth:`save`, no other."""
        if self.shards[-1].read_only:
            raise StorageError("this index is mapped read-only from its files; load it with mmap=False")
        ids = as_ids(clip_ids)
        if len(ids) == 0:
            return 0
        first = pc.index_in(ids, value_set=ids).to_numpy() == np.arange(len(ids))
        fresh = np.flatnonzero(first & ~self.holds(ids))
        size = self.cfg.shard_size or len(self) + len(fresh)
        start = 0
        while start < fresh.size:
            newest = self.shards[-1]
            room = size - len(newest)
            if room <= 0:
                empty = faiss.clone_index(newest.index)
                empty.reset()
                newest = ClipIndex(empty, pa.array([], pa.string()), self.factory, self.cfg)
                self.shards.append(newest)
                self.info.append({"number": len(self.info), "first_day": "", "last_day": "", "n": 0})
                room = size
            take = fresh[start : start + room]
            newest.add(np.ascontiguousarray(vectors[take]), ids.take(pa.array(take)))
            days = sorted(d for d in {_day(c) for c in ids.take(pa.array(take)).to_pylist()} if d)
            info = self.info[-1]
            if days:
                info["first_day"] = min(x for x in (info["first_day"], days[0]) if x)
                info["last_day"] = max(info["last_day"], days[-1])
            info.update(n=len(newest), files=None)
            start += len(take)
        self._positions()
        return int(fresh.size)

    def search_positions(
        self,
        queries: np.ndarray,
        k: int,
        mask: np.ndarray | None = None,
        raw: RawVectors | None = None,
        *,
        rerank: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each shard's nearest, merged; IVF-PQ shards re-rank their candidates on their vector
        files. Where one was saved before it kept its file, every shard gives ``refine_factor``
        x k candidates by their codes, re-ranked once on exact vectors (one read of the lake,
        not one per shard): shards re-ranked apart would merge exact distances with the
        codes' (smaller, on average) and crowd out their own candidates."""
        refine = rerank and self.refines(raw)
        q, _, want, fetch = self._asked(queries, k, mask, refine)
        if want <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        alone = rerank and not refine  # each shard re-ranks its own (or needs none)
        d2s, poss = [], []
        if mask is None:  # the probed lists found once for every shard
            found = nearest_each(self.shards, q, fetch, rerank=alone)
            for (d2, pos), lo in zip(found, self.offsets[:-1], strict=True):
                d2s.append(d2)
                poss.append(np.where(pos >= 0, pos + lo, -1))
        for shard, lo, hi in zip(self.shards, self.offsets[:-1], self.offsets[1:], strict=True):
            part = None if mask is None else mask[lo:hi]
            if part is None or not part.any():
                continue
            d2, pos = shard.search_positions(q, fetch, part, None if refine else raw, rerank=alone)
            d2s.append(d2)
            poss.append(np.where(pos >= 0, pos + lo, -1))
        d2, pos = merge_nearest(d2s, poss, fetch)
        if refine:
            return self._refine(q, pos, want, raw)
        return d2[:, :want], pos[:, :want]

    def save(self, loc: Location, embeddings_version: int) -> dict[str, Any]:
        """Write the shards a top-up reached (new files), then ``meta.json`` naming every shard."""
        loc.fs.makedirs(loc.path, exist_ok=True)
        previous = self.read_meta(loc)
        build = new_build()
        for shard, info in zip(self.shards, self.info, strict=True):
            if not info.get("files"):
                info.update(
                    files=shard.write_files(loc, *_shard_files(int(info["number"]), build)), node=this_node()
                )
                info["bytes"] = shard.nbytes
        meta = _meta(
            build, [dict(i) for i in self.info], self.factory, self.cfg, self.index.d, embeddings_version
        )
        write_meta(loc, meta)
        drop_unnamed(loc, meta_files(meta) | meta_files(previous))
        return meta
