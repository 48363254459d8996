"""A sharded index held over a Ray cluster: each shard in the memory of one actor only.

With a cluster named, no process holds a model version's whole index (at 10^8 clips a
256-d IVF-Flat is ~100 GB). :meth:`HeldIndex.start` places :class:`ShardHolder` actors
over the cluster's nodes (dealt round robin, one CPU each, no more holders than shards or
the cluster's CPUs), deals the saved set's shards among them (round robin: consecutive date
ranges land on different nodes) and each opens only its own (mapped from the file on a
local lake, read once from an object store). A search sends the queries to every holder
(the Ray object store carries them once per node); each answers its shards' nearest
exactly as the shard answers inside :class:`~mining.search.shards.ShardSet`, and the
caller merges them in shard order (:func:`~mining.search.index.merge_nearest`; IVF-PQ
candidates re-ranked once on exact vectors, :func:`~mining.search.index.refine`): the
answer of the set searched in one process (the same clips in the same order; a distance
may differ in its last bit where FAISS's BLAS sums with another thread count).

A holder that dies is restarted by Ray (``max_restarts``) on its node and opens its shards
again (a holder whose node died is placed anew by the next open, see :func:`_affinity`). A
search that meets a dead or restarting holder raises :class:`ShardUnavailable` (the API
answers 503 with a retry hint; ``mine`` waits for the restart and asks again), never an
answer short of that holder's shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from mining.interfaces import ModelSpec
from mining.search import index as clip_index
from mining.search.index import (
    ClipIndex,
    Ids,
    IndexConfig,
    RawVectors,
    as_ids,
    digest,
    kind_of,
    merge_nearest,
    refine,
)
from mining.search.shards import nearest_each
from storage.errors import IndexUnavailableError, StorageError
from storage.kept import Kept
from storage.lake import Lake

__all__ = ["Fetch", "HeldIndex", "ShardHolder", "ShardUnavailable", "Stale", "placements", "sharded_meta"]

log = logging.getLogger(__name__)

Fetch = Callable[[int, int], tuple[pa.Array, np.ndarray, np.ndarray]]
"""``(since, until)`` -> the clips embedded by the commits after ``since`` up to ``until``:
their ids, vectors and the commit of each (:func:`mining.search.serving.embedded_since`)."""

RESTART_WAIT_S = 120.0
"""How long a caller that may wait (``mine``) waits for a restarted holder before failing."""
PLACE_WAIT_S = 300.0
"""How long :meth:`HeldIndex.start` waits for every holder to be placed and open its shards."""


INLINE_BYTES = 100 * 1024
"""Ray's ``max_direct_call_object_size``: an argument under it travels inside each call."""

NAMESPACE = "fleetmine-holders"
"""Where shared holders are named (``HeldIndex.start(shared=True)``)."""


def _holder_name(
    lake: Lake, spec: ModelSpec, part: str | None, meta: dict[str, Any], h: int, count: int
) -> str:
    """The name every replica gives holder ``h`` of ``count`` of this build (a digest: lake
    URIs and model names are not Ray's to parse)."""
    key = json.dumps([lake.uri, spec.ref, part, str(meta["build"]), h, count])
    return "holder-" + hashlib.sha256(key.encode()).hexdigest()[:32]


_KEPT: dict[str, Any] = {}
_KEPT_LOCK = threading.Lock()


def _keep(name: str, handle: Any) -> None:
    """Hold a handle to the shared holder ``name`` for as long as this process lives (or
    until :meth:`HeldIndex.stop`). Ray ends a named actor that is not detached once the
    handles its creator made are gone, whoever else holds one from ``get_if_exists``: a
    server dropping a set it served (re-opened after a failure, replaced) would otherwise
    end holders it placed that it and the other replicas still search. The handle of a
    holder placed anew under the same name (its predecessor gone for good) replaces the old."""
    with _KEPT_LOCK:
        kept = _KEPT.get(name)
        if kept is None or kept._actor_id != handle._actor_id:
            _KEPT[name] = handle


class ShardUnavailable(IndexUnavailableError):
    """A holder of some of the index's shards is dead or restarting: no whole answer now."""

    retry_after_s = 5


def sharded_meta(lake: Lake, spec: ModelSpec, part: str | None = None) -> dict[str, Any] | None:
    """The saved build's ``meta.json`` when it is a set of shards, else None."""
    meta = ClipIndex.read_meta(ClipIndex.location(lake, spec, part))
    return meta if meta and meta.get("shards") else None


_NEVER = np.iinfo(np.int64).max  # a fresh entry no newer one of its clip replaced


@dataclass(frozen=True)
class ShardHits:
    """One shard's answer to a batch of queries: squared distances and positions in the
    whole set (-1 past what it found), the clip ids at them, how many vectors it allowed."""

    number: int
    d2: np.ndarray
    pos: np.ndarray
    names: pa.Array  # row-major, one per (query, column); at -1 positions a stand-in
    pool: int


@dataclass(frozen=True)
class Stale:
    """A holder's answer when its fresh part covers fewer commits than asked: it was
    restarted (a new actor starts from the build), or nobody has topped it up that far."""

    covers: int


class ShardHolder:
    """A Ray actor holding some shards of one saved build (and nothing else); the holder of
    the newest shard also holds the clips embedded since the build (the *fresh* part).

    The fresh part is here, not in each API replica: new days grow the newest shard (the
    next ``fleetmine index`` adds them to it), so between builds its holder keeps them, one
    copy on the cluster, searched with its shards. Each fresh clip carries the ``embeddings``
    commit that added it, so a caller whose read view is pinned at an older commit searches
    the clips of that commit and none after it (``as_of``). A restarted holder opens its
    shards again with an empty fresh part and answers :class:`Stale` until a caller tops it
    up again (:meth:`HeldIndex.search` does): never an answer without clips it was asked for.
    Ray runs an actor's calls one at a time, so a top-up never meets a search midway."""

    def __init__(
        self, lake: Lake, spec: ModelSpec, part: str | None, meta: dict[str, Any], numbers: list[int]
    ):
        loc = ClipIndex.location(lake, spec, part)
        offsets = np.cumsum([0, *(int(s["n"]) for s in meta["shards"])])
        self.build = str(meta["build"])
        self.shards = [
            (n, int(offsets[n]), ClipIndex.open_files(loc, meta["shards"][n]["files"], meta, mmap=True))
            for n in numbers
        ]
        self.fresh_number = len(meta["shards"])  # after every shard: ties go to the shards
        self.newest = self.fresh_number - 1 in numbers
        self.total = int(offsets[-1])  # the fresh part's positions come after the set's
        self.covers = int(meta["embeddings_version"])  # the last commit the fresh part holds
        self.cfg = IndexConfig.from_dict(meta.get("config", {}))
        self.fresh: ClipIndex | None = None
        self.fresh_versions = np.zeros(0, np.int64)  # the commit that added each fresh entry
        self.fresh_until = np.zeros(0, np.int64)  # the commit that replaced it (int64 max: none)
        self._latest: dict[str, int] = {}  # clip id -> its newest fresh entry

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: pa.Array | None,
        as_of: int | None = None,
        rerank: bool = True,
    ) -> list[ShardHits] | Stale:
        """Each held shard's ``k`` nearest (of ``allowed`` clips only, when given): what
        :meth:`ShardSet.search_positions` asks of it (a shard with none allowed is skipped);
        with ``as_of``, the newest shard's holder adds the fresh clips of commits up to it
        (:class:`Stale` when it holds fewer). ``rerank`` False: IVF-PQ shards' candidates by
        their codes, re-ranked by the caller (a set saved before its vector files)."""
        if as_of is not None and self.newest and as_of > self.covers:
            return Stale(self.covers)
        q = np.ascontiguousarray(queries, np.float32)
        out = []
        parts: list[tuple[int, int, ClipIndex, np.ndarray | None]] = [
            (n, lo, s, None) for n, lo, s in self.shards
        ]
        if as_of is not None and self.fresh is not None:
            parts.append((self.fresh_number, self.total, self.fresh, self._visible(as_of)))
        # unfiltered: the lists to probe found once for the held shards (they share a quantizer)
        found = nearest_each([s for _, _, s in self.shards], q, k, rerank=rerank) if allowed is None else []
        for i, (number, lo, shard, visible) in enumerate(parts):
            mask = None if allowed is None else shard.mask(allowed)
            if visible is not None:
                mask = visible if mask is None else mask & visible
            pool = len(shard) if mask is None else int(mask.sum())
            if mask is not None and pool == 0:
                continue
            d2, pos = found[i] if i < len(found) else shard.search_positions(q, k, mask, None, rerank=rerank)
            names = shard.ids.take(pa.array(np.maximum(pos, 0).ravel()))
            out.append(ShardHits(number, d2, np.where(pos >= 0, pos + lo, -1), names, pool))
        return out

    def holds(self, clip_ids: pa.Array, fresh: bool = True) -> np.ndarray:
        """For each of ``clip_ids``, whether one of the held shards (or, with ``fresh``, the
        fresh part) holds it."""
        out = np.zeros(len(clip_ids), bool)
        for _, _, shard in self.shards:
            out |= shard.holds(clip_ids)
        if fresh and self.fresh is not None:
            out |= self.fresh.holds(clip_ids)
        return out

    def covered(self) -> int:
        return self.covers

    def top_up(
        self, clip_ids: pa.Array, vectors: np.ndarray, versions: np.ndarray, since: int, until: int
    ) -> int | Stale:
        """Add the clips embedded by commits ``since + 1 .. until`` (their vectors, and the
        commit of each; the caller leaves out those a shard holds): the fresh part then
        covers ``until``. A top-up from past what it covers would leave a gap: :class:`Stale`
        (ask from there). Commits it covers already (another replica's top-up) are skipped;
        a clip embedded again replaces its older vector from that commit on. Answers the
        fresh count."""
        if not self.newest:
            raise StorageError("only the newest shard's holder keeps the clips embedded since the build")
        if since > self.covers:
            return Stale(self.covers)
        versions = np.asarray(versions, np.int64)
        take = np.flatnonzero((versions > self.covers) & (versions <= until))
        if len(take):
            take = take[np.argsort(versions[take], kind="stable")]
            new = np.asarray(vectors, np.float32)[take]
            self._append(as_ids(clip_ids).take(pa.array(take)), new, versions[take])
        self.covers = max(self.covers, until)
        return len(self.fresh) if self.fresh is not None else 0

    def _append(self, ids: pa.Array, vectors: np.ndarray, versions: np.ndarray) -> None:
        """Add entries (in commit order) to the fresh part, in place: a top-up costs the
        clips it adds, not the part (Ray runs this actor's calls one at a time, so no
        search sees it half done). Every entry is kept, a clip's older ones too (not
        ``ClipIndex.add``, which keeps one row per clip): the views pinned before a clip's
        newer commit still see its older row. Flat while few; past
        :data:`~mining.search.index.FRESH_IVF_FROM`, inverted lists on the newest shard's
        trained centroids (as ``serving._fresh_part`` keeps them in one process)."""
        if self.fresh is None:
            flat = faiss.IndexFlatL2(vectors.shape[1])
            self.fresh = ClipIndex(flat, pa.array([], pa.string()), "Flat", replace(self.cfg, kind="flat"))
        newest = self._newest_shard()
        grown = len(self.fresh) + len(ids) >= clip_index.FRESH_IVF_FROM
        if self.fresh.ivf is None and newest is not None and grown:
            held = self.fresh.index.reconstruct_n(0, len(self.fresh)) if len(self.fresh) else vectors[:0]
            self.fresh = ClipIndex.ivf_beside(newest, held, self.fresh.ids)
        start = len(self.fresh_versions)
        self.fresh.append(vectors, ids)
        self.fresh_versions = np.concatenate([self.fresh_versions, versions])
        self.fresh_until = np.concatenate([self.fresh_until, np.full(len(ids), _NEVER, np.int64)])
        for i, clip in enumerate(ids.to_pylist(), start):  # a clip's older entry ends at its newer commit
            older = self._latest.get(clip)
            if older is not None:
                self.fresh_until[older] = self.fresh_versions[i]
            self._latest[clip] = i

    def _newest_shard(self) -> ClipIndex | None:
        """The newest shard when it is an exact IVF (its centroids are the set's); else None."""
        for number, _, shard in self.shards:
            if number == self.fresh_number - 1 and shard.ivf is not None and shard.exact:
                return shard
        return None

    def _visible(self, as_of: int) -> np.ndarray:
        """The fresh entries a search as of commit ``as_of`` sees: added by then, not yet replaced."""
        return (self.fresh_versions <= as_of) & (self.fresh_until > as_of)

    def info(self) -> dict[str, Any]:
        from mining.search.shards import this_node

        fresh = [self.fresh] if self.fresh is not None else []
        return {
            "build": self.build,
            "shards": [n for n, _, _ in self.shards],
            "vectors": sum(len(s) for _, _, s in self.shards),
            "bytes": sum(s.nbytes for s in [*(s for _, _, s in self.shards), *fresh]),
            "fresh": len(self.fresh) if self.fresh is not None else 0,
            "covers": self.covers,
            "node": this_node(),
            "pid": os.getpid(),
        }


def placements(nodes: list[dict[str, Any]], count: int, cpus: float) -> list[str | None]:
    """The node for each of ``count`` holders: dealt round robin over the alive nodes with
    CPUs (consecutive holders, so consecutive date ranges, on different nodes), a node given
    no more holders than its CPUs hold at ``cpus`` each while another has room. Named, not
    left to Ray's ``SPREAD`` (best effort: with a node's CPU still held by a task just
    ended, it put every holder on the other node, and that node held the whole index).
    None where no node is known (Ray places it)."""
    alive = sorted(
        (n for n in nodes if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0),
        key=lambda n: str(n["NodeID"]),
    )
    if not alive:
        return [None] * count
    room = {str(n["NodeID"]): int(n["Resources"]["CPU"] // cpus) if cpus > 0 else count for n in alive}
    out: list[str | None] = []
    while len(out) < count:
        free = [node for node in room if room[node] > 0] or list(room)  # past every node's room: keep dealing
        for node in free[: count - len(out)]:
            out.append(node)
            room[node] -= 1
    return out


def _affinity(node: str | None) -> Any:
    """Run on ``node`` and nowhere else. Hard, not soft: Ray 2.60 placed 0-CPU actors
    (a server's holders) given a soft affinity on either node at random (two nodes, six
    tries: three went elsewhere, two holders on one node; hard: all six where named). So
    a holder whose node died is not restarted on another: a server's next search places
    the set again over the nodes alive then (:attr:`HeldIndex.lost`), a mine waits for it
    (``wait_s``) and fails, and its rerun does the same."""
    if node is None:
        return "DEFAULT"
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node, soft=False)


class HeldIndex:
    """The saved set of shards of a model version (or of one sub-space), held by
    :class:`ShardHolder` actors; answers :meth:`search` as the set in one process would."""

    def __init__(self, ray: Any, holders: list[Any], meta: dict[str, Any], *, wait_s: float = 0.0):
        self.ray = ray
        self.holders = holders
        self.meta = meta
        self.cfg = IndexConfig.from_dict(meta.get("config", {}))
        self.exact = kind_of(str(meta["factory"])) != "ivf-pq"
        # IVF-PQ shards saved with their vector files re-rank their candidates where they are
        # held: their answers' distances are exact, and the caller merges them as they come
        self.refined = all("vectors" in s["files"] for s in meta["shards"])
        self.embeddings_version = int(meta["embeddings_version"])
        self.wait_s = wait_s  # how long a search waits for a restarted holder (0: raise at once)
        self._fetch: Fetch | None = None  # where top_up read the fresh clips (to read them again)
        # A holder failed a call: dead for good (its owner, another replica, ended) or
        # restarting. A server then opens the set again (by name: the same holders where they
        # live or restart, new ones where they are gone) rather than keep dead handles.
        self.lost = False
        # The allowed ids of the last filters as the holders get them: a filter asks the same
        # ids of every search, put in the object store once (250 KB at 10,000 clip ids).
        self._allowed: Kept[Any] = Kept(lambda _: 1, items=4)

    @classmethod
    def start(
        cls,
        lake: Lake,
        spec: ModelSpec,
        part: str | None = None,
        *,
        holders: int | None = None,
        cpus: float = 1.0,
        wait_s: float = 0.0,
        shared: bool = False,
    ) -> HeldIndex | None:
        """Holders of the saved set on the Ray this process is connected to (the job layer
        connects: ``jobs.runtime.init_ray``), each with its shards open; None when the saved
        build is not a set of shards (one index: searched in-process). ``cpus`` per holder:
        one for a job whose k-NN is the work (``mine``); a server's holders hold memory and
        answer single queries, and ask for none, so every index of a version (its sub-spaces
        too) is placed on a cluster of few CPUs.

        ``shared`` (servers): the holders are named by the lake, the build and their place
        in the set, so every API replica on the cluster that serves this build finds the same
        ones rather than placing its own (memory for one copy of the index, not one per
        replica). They live as long as the replica that placed them (Ray's owner): when it
        ends, the others' next search answers 503 and the one after places them again
        (:attr:`lost`), never an answer short of a shard."""
        meta = sharded_meta(lake, spec, part)
        if meta is None:
            return None
        import ray

        if not ray.is_initialized():
            raise StorageError("shard holders need a Ray connection (jobs.runtime.init_ray) first")
        shards = len(meta["shards"])
        # As many holders as the cluster has CPUs (a job's ask for one each and wait for it;
        # a server's ask for none), never more than shards. (Not the CPUs free this moment:
        # a job's tasks just ended may not have handed theirs back yet.)
        cluster_cpus = ray.cluster_resources().get("CPU", 1)
        count = max(1, min(shards, holders or int(cluster_cpus // max(cpus, 1.0))))
        actor: Any = ray.remote(num_cpus=cpus, max_restarts=-1, max_task_retries=0)(ShardHolder)
        handles: list[Any] = []
        held = cls(ray, handles, meta, wait_s=wait_s)
        try:  # every shard open before the first query
            for h, node in enumerate(placements(ray.nodes(), count, cpus)):
                opts: dict[str, Any] = {"scheduling_strategy": _affinity(node)}
                if shared:
                    name = _holder_name(lake, spec, part, meta, h, count)
                    opts.update(name=name, namespace=NAMESPACE, get_if_exists=True)
                where = actor.options(**opts)
                handles.append(where.remote(lake, spec, part, meta, list(range(h, shards, count))))
                if shared:
                    _keep(name, handles[-1])
            held.infos = ray.get([h.info.remote() for h in handles], timeout=PLACE_WAIT_S)
        except (ray.exceptions.RayError, ValueError) as exc:
            # A shared set stays as it is: its holders serve other replicas too (one
            # restarting is no reason to end the rest), and the next open finds them. A
            # ValueError: get_if_exists met a holder being ended as it asked (Ray's race).
            if not shared:
                held.stop()
            if isinstance(exc, ValueError) and not shared:
                raise
            raise ShardUnavailable(
                f"{count} shard holder(s) of {spec.ref} not placed and open within {PLACE_WAIT_S:.0f} s "
                f"({type(exc).__name__}): too few CPUs or too little memory on the cluster's nodes?"
            ) from exc
        except BaseException:
            if not shared:
                held.stop()
            raise
        return held

    infos: list[dict[str, Any]]

    def __len__(self) -> int:
        return int(self.meta["n"])

    ivf = None  # what a served index's fresh part is built beside: a flat one (serving._fresh_part)

    @property
    def kind(self) -> str:
        return kind_of(str(self.meta["factory"]))

    @property
    def nbytes(self) -> int:
        """What the holders hold (none of it in this process)."""
        return sum(int(i["bytes"]) for i in self.infos)

    def stored_vector(self, clip_id: str) -> np.ndarray | None:
        return None  # read from the lake by the caller: a holder's vectors stay where they are

    def holds(self, clip_ids: Ids, fresh: bool = True) -> np.ndarray:
        """For each of ``clip_ids``, whether a shard (or, with ``fresh``, the newest shard's
        holder's fresh part) holds it (asked of every holder)."""
        ids = as_ids(clip_ids)
        ref = self._for_all(ids)
        found = self._call(lambda h: h.holds.remote(ref, fresh))
        out = np.zeros(len(ids), bool)
        for f in found:
            out |= np.asarray(f, bool)
        return out

    def stop(self, keep: frozenset[Any] = frozenset()) -> None:
        """End the holders (their CPUs go back to the cluster), but those whose actor ids
        are in ``keep`` (the same shared holders serving a newer open of the set). With the
        Ray connection gone (shut down), they went with it: nothing to end, and no call that
        would let Ray connect itself again, to whatever cluster the host ran last."""
        if not self.ray.is_initialized():
            self.holders = []
            return
        for h in self.holders:
            if h._actor_id in keep:
                continue
            self.ray.kill(h)
            with _KEPT_LOCK:
                for name in [n for n, k in _KEPT.items() if k._actor_id == h._actor_id]:
                    del _KEPT[name]
        self.holders = []

    @property
    def newest(self) -> Any:
        """The holder of the newest shard (dealt round robin: shard ``n`` to holder ``n % count``)."""
        return self.holders[(len(self.meta["shards"]) - 1) % len(self.holders)]

    def top_up(self, fetch: Fetch, until: int) -> int:
        """Bring the newest shard's holder's fresh part up to commit ``until``: ``fetch(since,
        until)`` gives the clips embedded by the commits after ``since`` (ids, vectors, the
        commit of each), from what the holder covers; those a shard holds are left out.
        Kept, to top a restarted holder up again. Answers how many fresh clips it holds."""
        self._fetch = fetch
        for _ in range(5):  # another replica may move it on meanwhile: then from there
            (covers,) = self._call(lambda h: h.covered.remote(), [self.newest])
            if covers >= until:
                (info,) = self._call(lambda h: h.info.remote(), [self.newest])
                return int(info["fresh"])
            ids, vectors, versions = fetch(covers, until)
            # A clip a shard holds keeps that vector (as beside a set in one process); one in
            # the fresh part embedded again is replaced there from its new commit on.
            new = ~self.holds(ids, fresh=False) if len(ids) else np.zeros(0, bool)
            args = (ids.filter(pa.array(new)), vectors[new], versions[new], covers, until)
            (got,) = self._call(lambda h, a=args: h.top_up.remote(*a), [self.newest])
            if not isinstance(got, Stale):
                return int(got)
        raise ShardUnavailable("the newest shard's holder could not be topped up: retry later")

    def _ask(
        self, q: np.ndarray, k: int, allowed: pa.Array | None, as_of: int | None, rerank: bool = True
    ) -> list[ShardHits]:
        q_ref = self._for_all(q)
        allowed_ref = None
        if allowed is not None:
            allowed_ref = self._allowed.answer(digest(allowed), lambda: self._for_all(allowed))
        for _ in range(3):
            answers = self._call(lambda h: h.search.remote(q_ref, k, allowed_ref, as_of, rerank))
            stale = [a for a in answers if isinstance(a, Stale)]
            if not stale:
                return sorted((hit for a in answers for hit in a), key=lambda h: h.number)
            # The newest shard's holder was restarted (its fresh part lost): topped up
            # again from the lake, then asked again; never an answer without those clips.
            if self._fetch is None or as_of is None:
                break
            log.warning(
                "the newest shard's holder covers commit %d of %d: topping it up again",
                stale[0].covers,
                as_of,
            )
            self.top_up(self._fetch, as_of)
        raise ShardUnavailable(
            f"the holder of the newest shard lacks the clips embedded up to commit {as_of}: "
            f"retry in {ShardUnavailable.retry_after_s} s"
        )

    def _for_all(self, value: np.ndarray | pa.Array) -> Any:
        """An argument every holder gets: put in the object store once when big (passed
        as it is, each call would copy it there); passed as it is when small, where Ray
        sends it inside each call and a put is a round trip of its own (one query's
        vector: ~1.5 of a held search's ~10 ms on loopback)."""
        size = value.nbytes if isinstance(value, np.ndarray) else value.get_total_buffer_size()
        return value if size < INLINE_BYTES else self.ray.put(value)

    def _call(self, ask: Any, holders: list[Any] | None = None) -> list[Any]:
        """``ask(holder)`` of every holder (or of ``holders``), their answers; a dead or
        restarting holder waits up to ``wait_s`` for its restart, then raises
        :class:`ShardUnavailable`."""
        ray = self.ray
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                return list(ray.get([ask(h) for h in (self.holders if holders is None else holders)]))
            except ray.exceptions.RayError as exc:
                # A holder (or its node, or the answer it left there) gone; an exception its
                # own code raised is a bug, not an absence: it goes up as it is.
                if isinstance(exc, ray.exceptions.RayTaskError):
                    raise
                self.lost = True
                if time.monotonic() >= deadline:
                    raise ShardUnavailable(
                        f"a holder of {self.meta.get('n')} vectors' shards is restarting: "
                        f"retry in {ShardUnavailable.retry_after_s} s"
                    ) from exc
                log.warning("a shard holder died (%s): waiting for its restart", type(exc).__name__)
                time.sleep(1.0)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: Ids | None = None,
        raw: RawVectors | None = None,
        as_of: int | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """As :meth:`ClipIndex.search` on the set: L2 distances and clip ids of the
        ``min(k, allowed)`` nearest; ``raw`` re-ranks IVF-PQ candidates exactly. With
        ``as_of`` (an ``embeddings`` commit), the clips embedded since the build up to it
        too (:meth:`top_up`)."""
        q = np.ascontiguousarray(queries, np.float32)
        refine_on = raw is not None and not self.exact and not self.refined
        hits = self._ask(
            q,
            k * self.cfg.refine_factor if refine_on else k,
            None if allowed is None else as_ids(allowed),
            as_of,
            rerank=not refine_on,
        )
        pool = sum(h.pool for h in hits)
        want = min(k, pool)
        if want <= 0:
            return np.zeros((len(q), 0), np.float32), [[] for _ in range(len(q))]
        fetch = min(pool, want * self.cfg.refine_factor) if refine_on else want
        d2, pos = merge_nearest([h.d2 for h in hits], [h.pos for h in hits], fetch)
        at: dict[int, str] = {}
        for h in hits:
            flat = h.pos.ravel()
            found = np.flatnonzero(flat >= 0)
            at.update(zip(flat[found].tolist(), h.names.take(pa.array(found)).to_pylist(), strict=True))
        if refine_on:
            assert raw is not None
            d2, pos = refine(q, pos, want, lambda uniq: raw([at[p] for p in uniq.tolist()]))
        else:
            d2, pos = d2[:, :want], pos[:, :want]
        names = [[at[p] for p in row if p >= 0] for row in pos.tolist()]
        return np.sqrt(np.maximum(d2, 0)), names
