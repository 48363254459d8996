"""``mine``: one run scores a model version's clips (:mod:`mining.scores.novelty`), groups
its near duplicates (:mod:`mining.scores.dedup`) and writes ``mining_scores`` and the
ready corner-case lists (:mod:`mining.search.ready`).

Runs work in batches of ``batch_rows`` clips, so memory is the index plus one batch
plus a few numbers per clip: a full run's rows wait on local disk until the corpus-wide
ranks are known (:mod:`mining.scores.spill`). A *full* run scores every clip and ranks it in the whole
corpus (new quantile sketches of the scores), against the cluster model of the
:class:`~mining.scores.mining_model.MiningModel` it keeps; it fits that model (k-means on a
hashed sample of ``cluster_sample`` vectors, started from the last fit's centroids,
signal medians) when there is none, when asked (``refit``), or once the corpus has
grown past ``refit_growth`` times the one fitted. By default a run is *incremental*:
it scores the clips the latest full run's lineage lacks, against that fit,
re-scores the old clips whose ``k`` nearest they enter (:mod:`mining.scores.rescore`; the
rest keep their scores), and merges both into the ready corner-case lists. A clip's
current score is its newest row in the lineage (:mod:`mining.scores.lineage`). A run is
full when asked (``full``, ``refit``), when there is no fit yet, or when the corpus has
outgrown the fit.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.encoders.vectors import EmbeddingSource, read_by_ids
from mining.interfaces import ModelSpec
from mining.scores.clusters import FINE_SIZE, MAX_TOP, FanOut, cluster_counts, fit_sub_levels, fit_top
from mining.scores.dedup import Pairs, duplicate_column, duplicate_lookup, duplicates, start_times
from mining.scores.lineage import latest_run, lineage_of
from mining.scores.mining_model import MiningModel, percentile, sketch
from mining.scores.novelty import (
    Nearest,
    Neighbours,
    evidence,
    knn_mean,
    neighbours,
    read_features,
    score_table,
    signal_rarity,
    signal_stats_of,
    signal_values,
)
from mining.scores.rescore import Reached, kth_distance, newest_per_clip, rescore
from mining.scores.spill import Spill, day_batches, event_counts
from mining.search.holders import RESTART_WAIT_S, HeldIndex
from mining.search.ready import READY_K, corner_case_lists, merge_corner_cases, write_corner_cases
from mining.search.serving import current, read_vectors
from mining.search.shards import day_counts
from storage.errors import StorageError
from storage.faults import fault_point
from storage.lake import Lake

__all__ = ["MineConfig", "MineReport", "MineResult", "MineStage", "MineWork"]

_WRITE_ROWS = 262_144  # mining_scores rows per write of a full run

T = TypeVar("T")
R = TypeVar("R")


def ahead(items: Iterable[T], fn: Callable[[T], R], depth: int) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in the items' order, with up to ``depth`` calls of ``fn`` under
    way at once (threads; ``depth`` 1: each in turn, here). For a ``fn`` that waits on other
    processes (Ray actors holding shards): they are handed the next item while this thread
    takes in the last answer and reads the item after, and at most ``depth`` items' inputs
    and answers are held at once."""
    if depth <= 1:
        for item in items:
            yield item, fn(item)
        return
    window: deque[tuple[T, Future[R]]] = deque()
    with ThreadPoolExecutor(depth, thread_name_prefix="ahead") as pool:
        try:
            for item in items:
                window.append((item, pool.submit(fn, item)))
                if len(window) >= depth:
                    first, done = window.popleft()
                    yield first, done.result()
            while window:
                first, done = window.popleft()
                yield first, done.result()
        finally:
            for _, left in window:  # a failure or a consumer gone: no more asks
                left.cancel()


@dataclass(frozen=True)
class MineConfig:
    k: int = 5
    clusters: int | None = None  # default: sqrt(n) to a power of two, at most 256
    dup_eps: float = 0.08
    dup_signal_z: float = 0.1  # and every signal feature within this share of its robust scale
    w_knn: float = 0.3
    w_rarity: float = 0.1
    w_signal: float = 0.6
    seed: int = 1234
    ready_k: int = READY_K  # clips per corner-case list kept ready (mining.search.ready)
    batch_rows: int = 16_384  # clips per batch: the bound on memory beyond the index
    cluster_sample: int = 65_536  # vectors k-means is fitted on (the top level; per task, the fine level)
    max_top: int = MAX_TOP  # top clusters at most: past it two levels (mining.scores.clusters)
    fine_size: int = FINE_SIZE  # clips per fine cluster at two levels
    full: bool = False  # re-score and re-rank every clip (default: score the new clips only)
    refit: bool = False  # fit the cluster model again (a full run), grown past refit_growth or not
    refit_growth: float = 1.5  # a run re-fits once the corpus outgrows the fitted one by this
    reach: int = 16  # a new clip may enter the knn of the old clips within its reach * k nearest


@dataclass
class MineReport:
    model: str
    run_id: str
    scored: int
    duplicates: int
    reference: str
    mode: str = "full"  # or "incremental"
    base_run: str | None = None
    rescored: int = 0


@dataclass(frozen=True)
class MineWork:
    """One mining run of one model version (the whole corpus is one item)."""

    spec: ModelSpec
    run_id: str
    cfg: MineConfig


@dataclass
class MineResult:
    actions: list[Any]
    scored: int
    duplicates: int
    reference: str
    ready_actions: list[Any] = field(default_factory=list)  # corner_cases files
    mode: str = "full"
    base_run: str | None = None
    rescored: int = 0  # old clips re-scored (incremental): new clips entered their knn
    holders: list[dict[str, Any]] = field(default_factory=list)  # on a cluster: who held which shards
    spilled: int = 0  # bytes a full run's rows took on local disk while they waited (mining.scores.spill)


def reference_clips(lake: Lake) -> pa.Array | None:
    lake.create_tables(["dataset_clips"])
    ids = lake.read("dataset_clips", columns=["clip_id"]).column("clip_id")
    return pc.unique(ids.combine_chunks()) if len(ids) else None


class MineStage:
    """Stage: scores a model version's clips (all, or the new ones); writes ``mining_scores``
    and ``corner_cases`` files and, on a full run, the fit it scored against."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake, held: bool = False, fan_out: FanOut | None = None):
        """``held``: Ray actors of the cluster this process is connected to hold the
        version's saved shards (:class:`~mining.search.holders.HeldIndex`), so the k-NN of
        every batch fans out over them and no process here holds the index; otherwise, or
        for an index that is not a set of shards, the index is searched in this process.
        ``fan_out``: where the fine level of the cluster model is fitted, as tasks (none:
        in this process)."""
        self.lake = lake
        self.held = held
        self.fan_out = fan_out
        self._held: HeldIndex | None = None

    def setup(self) -> None:
        self.lake.create_tables(["mining_scores", "dataset_clips", "corner_cases"])

    def process_batch(self, items: list[MineWork]) -> list[MineResult]:
        return [self.process(w) for w in items]

    def process(self, w: MineWork) -> MineResult:
        if not self.held:
            return self._process(w, None)
        held = HeldIndex.start(self.lake, w.spec, wait_s=RESTART_WAIT_S)
        try:
            out = self._process(w, held)
            if held is not None:
                keep = ("node", "shards", "vectors", "bytes")
                out.holders = [{k: i[k] for k in keep} for i in held.infos]
            return out
        finally:
            if held is not None:
                held.stop()

    def _nearest(self, spec: ModelSpec) -> Nearest:
        """What the run searches: the held shards, else the index in this process (as of now)."""
        return self._held if self._held is not None else current(self.lake, spec)

    def _process(self, w: MineWork, held: HeldIndex | None) -> MineResult:
        fault_point("mine.started")
        self._held = held
        lake, spec, cfg = self.lake, w.spec, w.cfg
        reference = reference_clips(lake)
        kind = "datasets" if reference is not None else "corpus"
        # Held shards cover the embeddings of their build: the run scores those (clips
        # embedded since wait for the index's top-up, which `mine --address` runs first).
        version = held.embeddings_version if held is not None else lake.version("embeddings")
        source = EmbeddingSource(lake, spec, cfg.batch_rows, version=version)
        days = day_counts(lake, spec, version)  # a date a clip: no id held for a full run
        n = sum(c for _, c in days)
        if n < 2:
            return MineResult([], 0, 0, kind)
        prev = latest_run(lake, spec)
        model = None
        if prev is not None and prev[1] is not None:
            model = MiningModel.load(lake, spec, prev[1])
        if (
            model is None
            or cfg.full
            or cfg.refit
            or n > cfg.refit_growth * model.trained
            or len(model.q_novelty) == 0  # a fit from before novelty was ranked as evidence
        ):
            return self._full(w, source, days, reference, kind, model)
        assert prev is not None
        return self._incremental(w, source.ids(), reference, kind, model, prev[0])

    def _full(
        self,
        w: MineWork,
        source: EmbeddingSource,
        days: list[tuple[str, int]],
        reference: pa.Array | None,
        kind: str,
        prior: MiningModel | None = None,
    ) -> MineResult:
        """Every clip scored and ranked in the whole corpus, in passes that hold a few
        numbers per clip (its k-NN mean, cluster, rarity and signal, and while ranking their
        sorted copies and the evidence: at most ~112 bytes) and never the corpus's ids or
        feature rows.

        A clip's novelty is its rank among every clip's evidence, whose parts need the
        whole corpus first (cluster sizes, the signals' medians), so its row cannot be
        written when its batch is searched. The rows wait in a spill file on local disk
        (``TMPDIR``: id, date, start time, events, signals and k-NN distances, ~170 bytes a
        clip) and are written in a last pass; held in memory they were 1,357 bytes a clip
        on the driving process (136 GB at 10^8 clips)."""
        lake, spec, cfg = self.lake, w.spec, w.cfg
        n = sum(c for _, c in days)
        live = self._nearest(spec)
        ntop, nfine = cluster_counts(n, cfg.clusters, cfg.max_top, cfg.fine_size)
        keep = (
            prior is not None
            and not cfg.refit
            and prior.centroids.shape == (ntop, spec.dim)
            and prior.two_level == (nfine > ntop)
            and n <= cfg.refit_growth * prior.trained
        )
        if keep:
            assert prior is not None
            centroids, trained = prior.centroids, prior.trained
        else:
            # From the last fit's centroids where it has as many: k-means from a fresh random
            # start lands in another local optimum, which re-draws every clip's rarity and
            # cluster; from the last fit, clusters move only as far as the corpus has.
            warm = None
            if prior is not None and prior.centroids.shape == (ntop, spec.dim):
                warm = np.ascontiguousarray(prior.centroids, np.float32)
            centroids = fit_top(source, source.id_chunks(), ntop, cfg.seed, cfg.cluster_sample, warm)
            trained = n
        model = MiningModel(
            w.run_id,
            n,
            centroids,
            np.zeros(ntop, np.int64),
            *(np.zeros(0),) * 5,
            n_trained=trained,
        )
        if keep:
            assert prior is not None
            model.fine_offsets, model.fine_centroids = prior.fine_offsets, prior.fine_centroids
        with tempfile.TemporaryDirectory(prefix="fleetmine-mine-") as tmp, Spill(Path(tmp), cfg.k) as spill:
            pairs = Pairs()
            knn_parts: list[np.ndarray] = []
            cluster_parts: list[np.ndarray] = []

            def search(item: tuple[str, pa.Array, np.ndarray, pa.Table | None]) -> Neighbours:
                return neighbours(live, lake, spec, item[1].to_pylist(), item[2], reference, cfg)

            # Held shards: the next batch's k-NN is asked while this one's is taken in, so the
            # holders never wait on this process (its reads, merges and assignments were a
            # serial share that held two nodes' mine to one node's time).
            batches = contextlib.closing(day_batches(lake, source, [d for d, _ in days], features=True))
            with batches as items:  # a failed pass lets go of its scan and the day's rows at once
                passed = ahead(items, search, 2 if self._held is not None else 1)
                for (day, _, vectors, feats), nb in passed:
                    assert feats is not None
                    pairs.add(nb)
                    spill.add(day, feats, nb.knn)
                    knn_parts.append(knn_mean(nb.knn))
                    cluster_parts.append(model.assign(vectors))
            spill.close()
            knn_means = np.concatenate(knn_parts) if knn_parts else np.zeros(0)
            cluster = np.concatenate(cluster_parts) if cluster_parts else np.zeros(0, np.int64)
            del knn_parts, cluster_parts
            if not keep and nfine > ntop:  # the fine level, fitted in tasks under the top clusters
                model.fine_offsets, model.fine_centroids = fit_sub_levels(
                    source, spill.ids(), cluster, centroids, nfine, cfg.seed, cfg.cluster_sample, self.fan_out
                )
                for day, (lo, _) in spill.days.items():  # where each clip falls among them
                    held = spill.ids_of(day)
                    for _, batch_ids, vectors, _ in day_batches(lake, source, [day], features=False):
                        at = pc.index_in(batch_ids, value_set=held)
                        if at.null_count:
                            raise StorageError(f"embeddings of {day} changed within one mine run")
                        cluster[lo + np.asarray(at.to_numpy(zero_copy_only=False), np.int64)] = model.assign(
                            vectors
                        )
            if keep:  # the cluster model as fitted: a clip's rarity is what it was
                assert prior is not None
                model.sizes = prior.sizes
            else:
                model.sizes = np.bincount(cluster, minlength=model.clusters).astype(np.int64)
            rarity = model.rarity_of(cluster)
            if keep:
                assert prior is not None
                model.sig_median, model.sig_scale = prior.sig_median, prior.sig_scale
            else:
                model.sig_median, model.sig_scale = signal_stats_of(spill.signals())
            signal = np.concatenate(
                [np.zeros(0)]
                + [
                    signal_rarity(signal_values(t), event_counts(t), model.sig_median, model.sig_scale)
                    for t in spill.tables(["events", *spill.signal_names])
                ]
            )
            model.q_knn, model.q_rarity, model.q_signal = sketch(knn_means), sketch(rarity), sketch(signal)
            ev = evidence(
                cfg, (knn_means, rarity, signal), (np.sort(knn_means), np.sort(rarity), np.sort(signal))
            )
            del knn_means
            model.q_novelty = sketch(ev)
            novelty = percentile(ev, np.sort(ev))  # its rank in the corpus
            del ev
            groups = pairs.groups(lake, model.sig_scale, cfg.dup_signal_z)
            dup = duplicates(groups, spill.start_times(set(groups.parent)), {})
            actions, near = self._write_rows(w, spill, novelty, cluster, rarity, signal, dup)
            spilled = spill.bytes
        if near is None:
            raise StorageError(f"embeddings counted {n} clips and a pass over them found none")
        lists = corner_case_lists(near[0], near[1], cfg.ready_k)
        ready = write_corner_cases(lake, lists, w.run_id)
        model.save(lake, spec)  # named by the run: unused until the run's rows are committed
        return MineResult(actions, n, len(dup), kind, ready, "full", w.run_id, spilled=spilled)

    def _write_rows(
        self,
        w: MineWork,
        spill: Spill,
        novelty: np.ndarray,
        cluster: np.ndarray,
        rarity: np.ndarray,
        signal: np.ndarray,
        dup: dict[str, str],
    ) -> tuple[list[Any], tuple[pa.Table, pa.Array] | None]:
        """The run's ``mining_scores`` rows written from the spill, ``_WRITE_ROWS`` a file
        (one day or a few), and the rows that may rank in a corner-case list, with their
        events: each written slice's candidates merged with those so far and cut again, so
        what is kept is at most a list's ``ready_k`` (and ties) per list."""
        writer = self.lake.writer("mining_scores")
        duplicate_of = duplicate_lookup(dup)
        actions: list[Any] = []
        pending: list[pa.Table] = []
        near: tuple[pa.Table, pa.Array] | None = None
        at = held = 0

        def flush(rows: pa.Table) -> None:
            nonlocal near
            part = len(actions)
            actions.extend(writer.write(rows.drop_columns(["events"]), prefix=f"{w.run_id}-{part:06d}"))
            if near is not None:
                rows = pa.concat_tables([near[0].append_column("events", near[1]), rows])
            ev = rows.column("events").combine_chunks()
            novelty = rows.column("novelty").to_numpy()
            top = pa.array(_near_top(novelty, pc.is_null(rows.column("duplicate_of")), ev, w.cfg.ready_k))
            near = (rows.drop_columns(["events"]).take(top), ev.take(top))

        for t in spill.tables(["clip_id", "date", "knn", "events"]):
            end = at + t.num_rows
            ids = t.column("clip_id").combine_chunks()
            rows = score_table(
                w,
                w.run_id,
                ids,
                t.column("date"),
                novelty[at:end],
                spill.knn_of(t),
                cluster[at:end],
                rarity[at:end],
                signal[at:end],
                duplicate_of(ids),
            )
            pending.append(rows.append_column("events", t.column("events")))
            held, at = held + t.num_rows, end
            while held >= _WRITE_ROWS or (at == len(novelty) and held):
                both = pa.concat_tables(pending)
                flush(both.slice(0, _WRITE_ROWS))
                rest = both.slice(_WRITE_ROWS)
                pending, held = ([rest] if rest.num_rows else []), rest.num_rows
        return actions, near

    def _incremental(
        self,
        w: MineWork,
        ids: pa.Array,
        reference: pa.Array | None,
        kind: str,
        model: MiningModel,
        prev_run: str,
    ) -> MineResult:
        lake, spec, cfg = self.lake, w.spec, w.cfg
        base = model.base_run
        lineage = lineage_of(spec, prev_run, base)
        scored = _kth_of_scored(lake, lineage, max(1, cfg.k))
        held = scored.column("clip_id").combine_chunks()
        new = ids.filter(pc.invert(pc.is_in(ids, value_set=held))).to_pylist()
        if not new:
            return MineResult([], 0, 0, kind, [], "incremental", base)
        live = self._nearest(spec)
        k = max(1, min(cfg.k, len(live) - 1))
        if k != max(1, cfg.k):  # an index of at most k clips, a lineage as small: read again for its k
            scored = _kth_of_scored(lake, lineage, k)
            held = scored.column("clip_id").combine_chunks()
        knn_parts: list[np.ndarray] = []
        cluster_parts: list[np.ndarray] = []
        rarity_parts: list[np.ndarray] = []
        pairs = Pairs()
        reached = Reached(held, scored.column("kth").to_numpy())
        del scored
        # Each clip's reach * k neighbours come back as Python strings: a smaller batch
        # keeps that within what a scoring batch holds.
        step = max(256, cfg.batch_rows // cfg.reach)
        for start in range(0, len(new), step):
            names = new[start : start + step]
            vectors = read_vectors(lake, spec, names)
            nb = neighbours(live, lake, spec, names, vectors, reference, cfg, reached)
            pairs.add(nb)
            knn_parts.append(nb.knn)
            cluster_parts.append(model.assign(vectors))
            rarity_parts.append(model.rarity(vectors))
        knn = np.vstack(knn_parts)
        cluster = np.concatenate(cluster_parts)
        rarity = np.concatenate(rarity_parts)
        features = read_features(lake, pa.array(new, pa.string()))
        values = signal_values(features)
        signal = signal_rarity(values, event_counts(features), model.sig_median, model.sig_scale)

        def novelty_of(knn_mean: np.ndarray, rarity: np.ndarray, signal: np.ndarray) -> np.ndarray:
            ev = evidence(cfg, (knn_mean, rarity, signal), (model.q_knn, model.q_rarity, model.q_signal))
            return percentile(ev, model.q_novelty)

        novelty = novelty_of(knn_mean(knn), rarity, signal)
        groups = pairs.groups(lake, model.sig_scale, cfg.dup_signal_z)
        # Old clips keep their clusters and duplicate status: a group a new clip joins
        # keeps its old representative; their knn moves where the new clips came near.
        is_new = set(new)
        old = sorted({c for c in groups.parent if c not in is_new})
        old_rep: dict[str, str] = {}
        for t in read_by_ids(lake, "mining_scores", ["clip_id", "duplicate_of"], old, lineage):
            for c, d in zip(
                t.column("clip_id").to_pylist(), t.column("duplicate_of").to_pylist(), strict=True
            ):
                old_rep[c] = d or c
        new_ids = features.column("clip_id").combine_chunks()
        dup = duplicates(groups, start_times(groups, new_ids, features), old_rep)
        table = score_table(
            w,
            base,
            new_ids,
            features.column("date"),
            novelty,
            knn,
            cluster,
            rarity,
            signal,
            duplicate_column(new_ids, dup),
        )
        moved = rescore(lake, lineage, reached.table(), k, novelty_of, w.run_id, cfg.batch_rows)
        actions = lake.writer("mining_scores").write(pa.concat_tables([table, moved]), prefix=w.run_id)
        fresh = corner_case_lists(table, features.column("events"), cfg.ready_k)
        lists = merge_corner_cases(lake, spec.ref, prev_run, fresh, w.run_id, cfg.ready_k, moved)
        ready = write_corner_cases(lake, lists, w.run_id)
        return MineResult(actions, len(new), len(dup), kind, ready, "incremental", base, moved.num_rows)


def _kth_of_scored(lake: Lake, lineage: str, k: int) -> pa.Table:
    """Each clip the lineage scored, once (its newest run's row): ``clip_id`` and ``kth``,
    the ``k``-th distance of its stored k-NN list (inf where it holds fewer).

    Each slice read is cut to those columns before the next: the k-NN lists of every run of
    the lineage, every clip the corpus holds, were read all at once (a list of ``k``
    floats and a run id per clip and run, where a float is what an incremental run needs)."""
    parts = []
    for t in lake.scan("mining_scores", ["clip_id", "run_id", "knn_distances"], lineage, 1 << 20):
        kth = kth_distance(t.column("knn_distances"), k)
        parts.append(pa.table({"clip_id": t.column("clip_id"), "run_id": t.column("run_id"), "kth": kth}))
    if not parts:
        return pa.table({"clip_id": pa.array([], pa.string()), "kth": pa.array([], pa.float32())})
    return newest_per_clip(pa.concat_tables(parts)).select(["clip_id", "kth"])


def _near_top(novelty: np.ndarray, kept: pa.Array, events: pa.ChunkedArray | pa.Array, k: int) -> np.ndarray:
    """Rows that may rank in a corner-case list (all clips, one per event): per list, its
    rows that are not duplicates and score at least its ``k``-th (ties kept)."""
    keep = np.asarray(kept.to_numpy(zero_copy_only=False), bool)

    def top(rows: np.ndarray) -> np.ndarray:
        rows = rows[keep[rows]]
        if len(rows) <= k:
            return rows
        v = novelty[rows]
        return rows[v >= np.partition(v, len(v) - k)[len(v) - k]]

    ev = events.combine_chunks() if isinstance(events, pa.ChunkedArray) else events
    flat = pc.list_flatten(ev)
    parent = pc.list_parent_indices(ev).to_numpy()
    picked = [top(np.arange(len(novelty)))]
    for name in pc.unique(flat).drop_null().to_pylist():
        has = np.asarray(pc.equal(flat, name).to_numpy(zero_copy_only=False), bool)
        picked.append(top(np.unique(parent[has])))
    return np.unique(np.concatenate(picked))
