"""Novelty, rarity and near-duplicates per clip, written to ``mining_scores`` per run.

- ``knn``: mean L2 distance to the ``k`` nearest clips of the reference set (clips
  already in a dataset version, else the whole corpus), searched on the model
  version's index (:mod:`mining.serving`: the saved build plus what was embedded since);
- ``rarity``: how small a share of the corpus the clip's scenario is: -log of the share
  of its k-means cluster (:meth:`~mining.mining_model.MiningModel.rarity_of`);
- ``signal_rarity``: its trigger events plus the largest robust z-score (median/MAD)
  of its signal features, squashed below one;
- ``novelty``: the clip's percentile rank in the corpus by the evidence of the three
  together (:func:`_evidence`: each one's upper-tail surprisal, weighted);
- near duplicates (SemDeDup style): clips among each other's ``k`` nearest closer
  than ``dup_eps``, of two drives, that also drove alike (every signal feature within
  ``dup_signal_z`` of its robust scale) form a group; every member but the earliest gets
  ``duplicate_of``.

Runs work in batches of ``batch_rows`` clips, so memory is the index plus one batch
plus a few numbers per clip. A *full* run scores every clip and ranks it in the whole
corpus (new quantile sketches of the scores), against the cluster model of the
:class:`~mining.mining_model.MiningModel` it keeps; it fits that model (k-means on a
hashed sample of ``cluster_sample`` vectors, started from the last fit's centroids,
signal medians) when there is none, when asked (``refit``), or once the corpus has
grown past ``refit_growth`` times the one fitted. By default a run is *incremental*:
it scores the clips the latest full run's lineage lacks, against that fit,
re-scores the old clips whose ``k`` nearest they enter (:mod:`mining.rescore`; the
rest keep their scores), and merges both into the ready corner-case lists. A clip's
current score is its newest row in the lineage. A run is full when asked (``full``,
``refit``), when there is no fit yet, or when the corpus has outgrown the fit.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mining.index_build import gather
from mining.interfaces import ModelSpec
from mining.mining_model import SKETCH, MiningModel, percentile, sketch
from mining.ready import READY_K, corner_case_lists, merge_corner_cases, write_corner_cases
from mining.rescore import Reached, kth_distance, newest_per_clip, rescore
from mining.serving import LiveIndex, current, read_vectors
from mining.vectors import EmbeddingSource, read_by_ids, sample_ids
from storage.errors import TableNotFoundError
from storage.faults import fault_point
from storage.lake import Lake
from storage.schema import UTC_TS
from storage.sql import in_list, literal
from storage.tables import mining_scores

__all__ = [
    "MineConfig",
    "MineReport",
    "MineResult",
    "MineStage",
    "MineWork",
    "current_scores",
    "latest_run",
    "latest_scores",
    "lineage_predicate",
]

_WRITE_ROWS = 262_144  # mining_scores rows per write of a full run

SIGNALS = (
    "speed_mean",
    "speed_min",
    "max_decel_mps2",
    "max_lat_accel_mps2",
    "max_steering_rate_dps",
    "brake_presses",
    "stop_count",
)
_FEATURES = ["clip_id", "date", "start_time", "events", *SIGNALS]


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
    ready_k: int = READY_K  # clips per corner-case list kept ready (mining.ready)
    batch_rows: int = 16_384  # clips per batch: the bound on memory beyond the index
    cluster_sample: int = 65_536  # vectors k-means is fitted on
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


# -- scores of one batch ---------------------------------------------------------------


def _signal_values(features: pa.Table) -> np.ndarray:
    """(rows, len(SIGNALS)) float64, NaN for nulls."""
    cols = [pc.cast(features.column(n), pa.float64()).to_numpy(zero_copy_only=False) for n in SIGNALS]
    return np.vstack([np.asarray(c, np.float64) for c in cols]).T


def _signal_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    med = np.zeros(values.shape[1])
    scale = np.ones(values.shape[1])
    for j in range(values.shape[1]):
        v = values[:, j]
        if np.isnan(v).all():
            continue
        med[j] = np.nanmedian(v)
        mad = np.nanmedian(np.abs(v - med[j]))
        scale[j] = 1.4826 * mad if mad > 0 else (np.nanstd(v) or 1.0)
    return med, scale


def _signal_rarity(values: np.ndarray, events: np.ndarray, med: np.ndarray, scale: np.ndarray) -> np.ndarray:
    z = np.nan_to_num(np.abs(values - med) / scale)
    # Each trigger event outranks any amount of plain oddness (tanh caps it below 1).
    return np.asarray(np.tanh(z.max(axis=1) / 6.0) + events, np.float64)


@dataclass
class _Neighbours:
    knn: np.ndarray  # (rows, k) float32, NaN past the neighbours found
    dup_a: list[str]  # near-duplicate pairs (a, b), distance < dup_eps
    dup_b: list[str]


def _neighbours(
    live: LiveIndex,
    lake: Lake,
    spec: ModelSpec,
    ids: list[str],
    vectors: np.ndarray,
    reference: pa.Array | None,
    cfg: MineConfig,
    reached: Reached | None = None,
) -> _Neighbours:
    """The batch's knn distances and near-duplicate pairs; with ``reached``, also the
    clips within each one's ``reach * k`` nearest that it could enter the knn of (only
    clips of the reference set enter reference neighbour lists)."""
    k = max(1, min(cfg.k, len(live) - 1))

    def raw(c: list[str]) -> np.ndarray:
        return read_vectors(lake, spec, c)

    wide = k + 1 if reached is None else max(k + 1, cfg.reach * k + 1)
    dist, names = live.search(vectors, k + 1 if reference is not None else wide, reference, raw=raw)
    knn = np.full((len(ids), cfg.k), np.nan, np.float32)
    for i, c in enumerate(ids):
        row = [float(d) for d, m in zip(dist[i], names[i], strict=False) if m != c][:k]
        knn[i, : len(row)] = row
    if reference is not None:  # duplicates are among all clips, not the reference only
        dist, names = live.search(vectors, wide, raw=raw)
    dup_a: list[str] = []
    dup_b: list[str] = []
    for i, c in enumerate(ids):
        for d, m in zip(dist[i][: k + 1], names[i][: k + 1], strict=False):  # as in a full run
            if m != c and d < cfg.dup_eps:
                dup_a.append(c)
                dup_b.append(m)
    if reached is not None:
        enters = np.ones(len(ids), bool)
        if reference is not None:
            mask = pc.is_in(pa.array(ids, pa.string()), value_set=reference)
            enters = np.asarray(mask.to_numpy(zero_copy_only=False), bool)
        near: list[str] = []
        near_d: list[float] = []
        for i in np.flatnonzero(enters).tolist():
            for d, m in zip(dist[i], names[i], strict=False):
                if m != ids[i]:
                    near.append(m)
                    near_d.append(float(d))
        reached.add(near, near_d)  # once per batch: it looks the clips up among all held
    return _Neighbours(knn, dup_a, dup_b)


_TAIL = 1.0 / SKETCH  # the smallest upper-tail share a percentile rank resolves (mining_model)


def _evidence(
    cfg: MineConfig, scores: tuple[np.ndarray, np.ndarray, np.ndarray], refs: tuple[np.ndarray, ...]
) -> np.ndarray:
    """How strongly a clip's knn, rarity and signal scores together say it is novel: the
    weighted mean of each score's surprisal in the upper tail of ``refs`` (each sorted:
    the corpus's values, or the fit's sketch of them), ``log(1 / tail share)`` scaled
    into [0, 1] by the smallest share a rank resolves.

    Averaging the percentile ranks themselves would let a clip ordinary in one kind of
    evidence lose what it is extreme in: a hard brake whose look the fleet has seen a
    dozen times (its knn low) ranked below any stop at a light (knn middling, signals
    somewhat odd), since the top 4 % and the top 12 % of signals are 0.08 apart as ranks.
    As surprisal, like Fisher's combination of p-values, the top 4 % is worth half again
    the top 12 %, and being unremarkable costs little: on five 765-clip synthetic fleets
    the planted events' recall@k went from 0.91 to 0.95 with the same weights."""
    weights = (cfg.w_knn, cfg.w_rarity, cfg.w_signal)
    scale = math.log((1.0 + _TAIL) / _TAIL)
    out = np.zeros(len(scores[0]), np.float64)
    for w, x, ref in zip(weights, scores, refs, strict=True):
        tail = 1.0 - percentile(x, ref)
        out += w * np.log((1.0 + _TAIL) / (tail + _TAIL)) / scale
    return out


def _knn_mean(knn: np.ndarray) -> np.ndarray:
    found = ~np.isnan(knn)
    total = np.where(found, knn, 0.0).sum(axis=1)
    return np.asarray(total / np.maximum(found.sum(axis=1), 1), np.float64)


def _knn_lists(knn: np.ndarray) -> pa.Array:
    found = ~np.isnan(knn)
    offsets = np.concatenate([[0], np.cumsum(found.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(knn[found], pa.float32()))


class _Groups:
    """Union-find over clip ids."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        p = self.parent.setdefault(a, a)
        while p != self.parent[p]:
            self.parent[p] = self.parent[self.parent[p]]
            p = self.parent[p]
        self.parent[a] = p
        return p

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for a in list(self.parent):
            out.setdefault(self.find(a), []).append(a)
        return out


class _Pairs:
    """The near-duplicate pairs a run's searches found, joined into groups once the
    signals' scale is known: only pairs of two recordings that drove alike (:meth:`groups`)."""

    def __init__(self) -> None:
        self.a: list[str] = []
        self.b: list[str] = []

    def add(self, nb: _Neighbours) -> None:
        self.a += nb.dup_a
        self.b += nb.dup_b

    def groups(self, lake: Lake, scale: np.ndarray, max_z: float) -> _Groups:
        """Union-find over the pairs of clips of two drives whose every signal feature
        differs by at most ``max_z`` of its robust scale (a pair with a feature one of
        them lacks is judged on the others).

        A near duplicate is the same moment recorded again (a drive uploaded twice under
        another name, exported again by a recorder): another drive, the same scene *and*
        the same driving. Two clips that look alike where the car drove differently (a
        bend taken a little faster, a stop with a harder brake) are two samples for a
        driving policy, whose targets are those controls: they are not one. Nor are two
        clips of one drive, which are two moments however alike (two stops at two lights
        a minute apart): redundancy within a drive is for sampling to thin, not for dedup
        to hide. On eleven synthetic fleets the recorded-again pairs differ by at most 0.097
        of a feature's scale (each copy's CAN log carries noise of its own) and look-alike
        pairs of two drives within ``dup_eps`` by 0.119 or more: a narrow margin, which a
        drive uploaded twice (one log, z = 0) does not need."""
        out = _Groups()
        if not self.a:
            return out
        ids = sorted({*self.a, *self.b})
        cols = ["clip_id", "drive_id", *SIGNALS]
        table = pa.concat_tables(list(read_by_ids(lake, "clips", cols, ids)))
        values = _signal_values(table)
        drive = table.column("drive_id").to_pylist()
        at = table.column("clip_id").combine_chunks()

        def rows(names: list[str]) -> np.ndarray:
            pos = pc.index_in(pa.array(names, pa.string()), value_set=at).fill_null(-1)
            return np.asarray(pos.to_numpy(zero_copy_only=False), np.int64)

        for a, b, i, j in zip(self.a, self.b, rows(self.a), rows(self.b), strict=True):
            if i < 0 or j < 0 or drive[i] == drive[j]:  # no clips row: not a pair anyone can check
                continue
            z = np.abs(values[i] - values[j]) / scale
            if not (z > max_z).any():  # NaN (a feature missing) is no evidence either way
                out.union(a, b)
        return out


def _features(lake: Lake, ids: pa.Array, everything: bool) -> pa.Table:
    """The ``clips`` rows of ``ids`` in that order (one scan of the narrow feature
    columns when ``everything``, else by id within the dates the ids name)."""
    if everything:
        rows = lake.read("clips", columns=_FEATURES)
    else:
        parts = list(read_by_ids(lake, "clips", _FEATURES, ids.to_pylist()))
        rows = pa.concat_tables(parts) if parts else lake.read("clips", columns=_FEATURES, where="false")
    pos = pc.index_in(ids, value_set=rows.column("clip_id"))
    if pos.null_count:
        missing = ids.filter(pc.is_null(pos)).to_pylist()[:5]
        raise TableNotFoundError(f"clips rows missing for embedded clips, e.g. {missing}")
    return rows.take(pos)


def _table(
    w: MineWork,
    base_run: str,
    ids: pa.Array,
    date: pa.Array | pa.ChunkedArray,
    novelty: np.ndarray,
    knn: np.ndarray,
    cluster: np.ndarray,
    rarity: np.ndarray,
    signal: np.ndarray,
    duplicate_of: pa.Array,
) -> pa.Table:
    n = len(ids)

    def repeat(value: Any, type_: pa.DataType) -> pa.Array:  # one value, no list of n
        return pa.array([value], type_).take(pa.array(np.zeros(n, np.int32)))

    return mining_scores.SPEC.conform(
        pa.table(
            {
                "clip_id": ids,
                "date": date,
                "model_version": repeat(w.spec.ref, pa.string()),
                "run_id": repeat(w.run_id, pa.string()),
                "novelty": pa.array(novelty, pa.float64()),
                "knn_distances": _knn_lists(knn),
                "cluster_id": pa.array(cluster.astype(np.int32), pa.int32()),
                "rarity": pa.array(rarity, pa.float64()),
                "signal_rarity": pa.array(signal, pa.float64()),
                "duplicate_of": duplicate_of,
                "computed_at": repeat(dt.datetime.now(dt.UTC), UTC_TS),
                "base_run": repeat(base_run, pa.string()),
            }
        )
    )


# -- which run the latest scores belong to ---------------------------------------------------


def latest_run(lake: Lake, spec: ModelSpec, version: int | None = None) -> tuple[str, str | None] | None:
    """The model version's newest run and the full run it was scored against, from the
    Delta log's file statistics (each data file holds one run): no data file is read."""
    try:
        delta = lake.delta("mining_scores", version)
    except TableNotFoundError:
        return None
    adds = pa.table(delta.get_add_actions(flatten=True))
    if adds.num_rows == 0 or "min.model_version" not in adds.column_names:
        return None
    mine = adds.filter(pc.equal(adds.column("min.model_version"), spec.ref))
    if mine.num_rows == 0:
        return None
    run = str(pc.max(mine.column("max.run_id")).as_py())
    if "max.base_run" not in mine.column_names:
        return run, None
    of_run = mine.filter(pc.equal(mine.column("max.run_id"), run))
    base = pc.max(of_run.column("max.base_run")).as_py()
    return run, None if base is None else str(base)


def _lineage(spec: ModelSpec, run: str, base: str | None) -> str:
    where = f"model_version = {literal(spec.ref)}"
    return where + (f" AND base_run = {literal(base)}" if base else f" AND run_id = {literal(run)}")


def latest_scores(lake: Lake, spec: ModelSpec, version: int | None = None) -> list[dict[str, Any]]:
    """The current score of every clip of ``spec``: of the rows of the latest full run and
    the incremental runs after it, each clip's newest (an incremental run re-scores the
    old clips its new ones came near)."""
    found = latest_run(lake, spec, version)
    if found is None:
        return []
    rows = lake.read("mining_scores", where=_lineage(spec, *found), version=version)
    return newest_per_clip(rows).to_pylist()


def current_scores(
    lake: Lake,
    spec: ModelSpec,
    ids: list[str],
    columns: list[str] | None = None,
    days: list[Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The current score row of each of ``ids`` (a page of clips, not the corpus): its newest
    row of the latest full run's lineage. A page must not filter on the newest run alone:
    after an incremental run that holds only the clips it added or re-scored."""
    found = latest_run(lake, spec) if ids else None
    if found is None:
        return {}
    where = _lineage(spec, *found) + f" AND clip_id IN ({in_list(ids)})"
    if days:
        where += f" AND date IN ({', '.join(literal(d) for d in sorted(set(days)))})"
    cols = None if columns is None else sorted({*columns, "clip_id", "run_id"})
    rows = newest_per_clip(lake.read("mining_scores", columns=cols, where=where))
    return {r["clip_id"]: r for r in rows.to_pylist()}


def lineage_predicate(lake: Lake, spec: ModelSpec) -> str | None:
    """The SQL predicate of the rows that hold the model version's current scores, or None."""
    found = latest_run(lake, spec)
    return None if found is None else _lineage(spec, *found)


def reference_clips(lake: Lake) -> pa.Array | None:
    lake.create_tables(["dataset_clips"])
    ids = lake.read("dataset_clips", columns=["clip_id"]).column("clip_id")
    return pc.unique(ids.combine_chunks()) if len(ids) else None


# -- the stage -----------------------------------------------------------------------------


class MineStage:
    """Stage: scores a model version's clips (all, or the new ones); writes ``mining_scores``
    and ``corner_cases`` files and, on a full run, the fit it scored against."""

    resources: ClassVar[dict[str, float]] = {"num_cpus": 1.0}

    def __init__(self, lake: Lake):
        self.lake = lake

    def setup(self) -> None:
        self.lake.create_tables(["mining_scores", "dataset_clips", "corner_cases"])

    def process_batch(self, items: list[MineWork]) -> list[MineResult]:
        return [self.process(w) for w in items]

    def process(self, w: MineWork) -> MineResult:
        fault_point("mine.started")
        lake, spec, cfg = self.lake, w.spec, w.cfg
        reference = reference_clips(lake)
        kind = "datasets" if reference is not None else "corpus"
        source = EmbeddingSource(lake, spec, cfg.batch_rows, version=lake.version("embeddings"))
        ids = source.ids()
        if len(ids) < 2:
            return MineResult([], 0, 0, kind)
        prev = latest_run(lake, spec)
        model = None
        if prev is not None and prev[1] is not None:
            model = MiningModel.load(lake, spec, prev[1])
        if (
            model is None
            or cfg.full
            or cfg.refit
            or len(ids) > cfg.refit_growth * model.trained
            or len(model.q_novelty) == 0  # a fit from before novelty was ranked as evidence
        ):
            return self._full(w, source, ids, reference, kind, model)
        assert prev is not None
        return self._incremental(w, ids, reference, kind, model, prev[0])

    def _full(
        self,
        w: MineWork,
        source: EmbeddingSource,
        ids: pa.Array,
        reference: pa.Array | None,
        kind: str,
        prior: MiningModel | None = None,
    ) -> MineResult:
        lake, spec, cfg = self.lake, w.spec, w.cfg
        n = len(ids)
        live = current(lake, spec)
        # sqrt(n) to a power of two: a corpus grown by a few % keeps its cluster count
        nclusters = min(n, cfg.clusters or max(2, min(256, 2 ** round(math.log2(math.sqrt(n))))))
        keep = (
            prior is not None
            and not cfg.refit
            and prior.centroids.shape == (nclusters, spec.dim)
            and n <= cfg.refit_growth * prior.trained
        )
        if keep:
            assert prior is not None
            centroids, trained = prior.centroids, prior.trained
        else:
            sample = gather(source, sample_ids(ids, cfg.cluster_sample, cfg.seed))
            km = faiss.Kmeans(
                spec.dim, nclusters, niter=25, seed=cfg.seed, verbose=False, min_points_per_centroid=1
            )
            # From the last fit's centroids where it has as many: k-means from a fresh random
            # start lands in another local optimum, which re-draws every clip's rarity and
            # cluster; from the last fit, clusters move only as far as the corpus has.
            warm = None
            if prior is not None and prior.centroids.shape == (nclusters, spec.dim):
                warm = np.ascontiguousarray(prior.centroids, np.float32)
            km.train(sample, init_centroids=warm)
            del sample
            centroids, trained = np.array(km.centroids, np.float32), n
        model = MiningModel(
            w.run_id,
            n,
            centroids,
            np.zeros(nclusters, np.int64),
            *(np.zeros(0),) * 5,
            n_trained=trained,
        )
        # What is held per clip until the rows are written: its id (Arrow), knn distances,
        # cluster and three scores, about 100 bytes; its feature row is read once all are.
        id_parts: list[pa.Array] = []
        knn_parts: list[np.ndarray] = []
        cluster_parts: list[np.ndarray] = []
        pairs = _Pairs()
        for batch_ids, vectors in source.batches():
            nb = _neighbours(live, lake, spec, batch_ids.to_pylist(), vectors, reference, cfg)
            pairs.add(nb)
            id_parts.append(batch_ids)
            knn_parts.append(nb.knn)
            cluster_parts.append(model.assign(vectors).astype(np.int32))
        order = pa.concat_arrays(id_parts)
        del id_parts
        knn = np.vstack(knn_parts)
        cluster = np.concatenate(cluster_parts)
        del knn_parts, cluster_parts
        if keep:  # the cluster model as fitted: a clip's rarity is what it was
            assert prior is not None
            model.sizes = prior.sizes
        else:
            model.sizes = np.bincount(cluster, minlength=nclusters).astype(np.int64)
        rarity = model.rarity_of(cluster)
        features = _features(lake, order, everything=True)
        values = _signal_values(features)
        events = pc.list_value_length(features.column("events")).fill_null(0).to_numpy(zero_copy_only=False)
        if keep:
            assert prior is not None
            model.sig_median, model.sig_scale = prior.sig_median, prior.sig_scale
        else:
            model.sig_median, model.sig_scale = _signal_stats(values)
        knn_mean = _knn_mean(knn)
        signal = _signal_rarity(values, events, model.sig_median, model.sig_scale)
        del values, events
        model.q_knn, model.q_rarity, model.q_signal = sketch(knn_mean), sketch(rarity), sketch(signal)
        evidence = _evidence(
            cfg, (knn_mean, rarity, signal), (np.sort(knn_mean), np.sort(rarity), np.sort(signal))
        )
        model.q_novelty = sketch(evidence)
        novelty = percentile(evidence, np.sort(evidence))  # its rank in the corpus
        del evidence
        del knn_mean
        groups = pairs.groups(lake, model.sig_scale, cfg.dup_signal_z)
        dup = _duplicates(groups, _starts(groups, order, features), {})
        duplicate_of = _duplicate_of(order, dup)
        date = features.column("date").combine_chunks()

        def rows(at: np.ndarray | None) -> pa.Table:
            def pick(a: Any) -> Any:
                return a if at is None else (a.take(pa.array(at)) if isinstance(a, pa.Array) else a[at])

            return _table(
                w,
                w.run_id,
                pick(order),
                pick(date),
                pick(novelty),
                pick(knn),
                pick(cluster),
                pick(rarity),
                pick(signal),
                pick(duplicate_of),
            )

        # Written in slices of one date range each: the run's rows are never one table.
        writer = lake.writer("mining_scores")
        by_date = np.asarray(pc.sort_indices(date).to_numpy(), np.int64)
        actions = []
        for i, start in enumerate(range(0, n, _WRITE_ROWS)):
            actions += writer.write(rows(by_date[start : start + _WRITE_ROWS]), prefix=f"{w.run_id}-{i:04d}")
        # Only rows at or above a list's k-th score can be in it: the lists are ranked from those.
        events_of = features.column("events")
        near_top = _near_top(novelty, pc.is_null(duplicate_of), events_of, cfg.ready_k)
        lists = corner_case_lists(rows(near_top), events_of.take(pa.array(near_top)), cfg.ready_k)
        ready = write_corner_cases(lake, lists, w.run_id)
        model.save(lake, spec)  # named by the run: unused until the run's rows are committed
        return MineResult(actions, n, len(dup), kind, ready, "full", w.run_id)

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
        lineage = _lineage(spec, prev_run, base)
        cols = ["clip_id", "run_id", "knn_distances"]
        parts = list(lake.scan("mining_scores", cols, lineage, 1 << 20))
        scored = newest_per_clip(
            pa.concat_tables(parts) if parts else mining_scores.SPEC.schema.empty_table()
        )
        del parts
        held = scored.column("clip_id").combine_chunks()
        new = ids.filter(pc.invert(pc.is_in(ids, value_set=held))).to_pylist()
        if not new:
            return MineResult([], 0, 0, kind, [], "incremental", base)
        live = current(lake, spec)
        k = max(1, min(cfg.k, len(live) - 1))
        knn_parts: list[np.ndarray] = []
        cluster_parts: list[np.ndarray] = []
        rarity_parts: list[np.ndarray] = []
        pairs = _Pairs()
        reached = Reached(held, kth_distance(scored.column("knn_distances"), k))
        del scored
        # Each clip's reach * k neighbours come back as Python strings: a smaller batch
        # keeps that within what a scoring batch holds.
        step = max(256, cfg.batch_rows // cfg.reach)
        for start in range(0, len(new), step):
            names = new[start : start + step]
            vectors = read_vectors(lake, spec, names)
            nb = _neighbours(live, lake, spec, names, vectors, reference, cfg, reached)
            pairs.add(nb)
            knn_parts.append(nb.knn)
            cluster_parts.append(model.assign(vectors))
            rarity_parts.append(model.rarity(vectors))
        knn = np.vstack(knn_parts)
        cluster = np.concatenate(cluster_parts)
        rarity = np.concatenate(rarity_parts)
        features = _features(lake, pa.array(new, pa.string()), everything=False)
        values = _signal_values(features)
        events = pc.list_value_length(features.column("events")).fill_null(0).to_numpy(zero_copy_only=False)
        signal = _signal_rarity(values, events, model.sig_median, model.sig_scale)

        def novelty_of(knn_mean: np.ndarray, rarity: np.ndarray, signal: np.ndarray) -> np.ndarray:
            evidence = _evidence(
                cfg, (knn_mean, rarity, signal), (model.q_knn, model.q_rarity, model.q_signal)
            )
            return percentile(evidence, model.q_novelty)

        novelty = novelty_of(_knn_mean(knn), rarity, signal)
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
        dup = _duplicates(groups, _starts(groups, new_ids, features), old_rep)
        table = _table(
            w,
            base,
            new_ids,
            features.column("date"),
            novelty,
            knn,
            cluster,
            rarity,
            signal,
            _duplicate_of(new_ids, dup),
        )
        moved = rescore(lake, lineage, reached.table(), k, novelty_of, w.run_id, cfg.batch_rows)
        actions = lake.writer("mining_scores").write(pa.concat_tables([table, moved]), prefix=w.run_id)
        fresh = corner_case_lists(table, features.column("events"), cfg.ready_k)
        lists = merge_corner_cases(lake, spec.ref, prev_run, fresh, w.run_id, cfg.ready_k, moved)
        ready = write_corner_cases(lake, lists, w.run_id)
        return MineResult(actions, len(new), len(dup), kind, ready, "incremental", base, moved.num_rows)


def _starts(groups: _Groups, ids: pa.Array, features: pa.Table) -> dict[str, Any]:
    """The start time of each clip scored now that is in a near-duplicate group (the
    groups are few; the clips are the corpus)."""
    members = pa.array(list(groups.parent), pa.string())
    at = pc.index_in(members, value_set=ids)
    held = members.filter(pc.is_valid(at))
    times = features.column("start_time").take(at.drop_null())
    return dict(zip(held.to_pylist(), times.to_pylist(), strict=True))


def _duplicate_of(ids: pa.Array, dup: dict[str, str]) -> pa.Array:
    """``duplicate_of`` per row of ``ids``: the kept clip, null for the clips kept."""
    keys = pa.array(list(dup), pa.string())
    kept = pa.array(list(dup.values()), pa.string())
    return kept.take(pc.index_in(ids, value_set=keys))


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


def _duplicates(groups: _Groups, starts: dict[str, Any], old_rep: dict[str, str]) -> dict[str, str]:
    """``duplicate_of`` of each clip scored now that has one: the group's earliest clip,
    or, where the group reaches clips scored before (``old_rep``: clip -> its kept clip),
    the kept clip of those."""
    latest = dt.datetime.max.replace(tzinfo=dt.UTC)
    out: dict[str, str] = {}
    for members in groups.members().values():
        if len(members) < 2:
            continue
        kept_before = sorted({old_rep[m] for m in members if m in old_rep})
        if kept_before:
            keep = kept_before[0]
        else:
            keep = min((m for m in members if m in starts), key=lambda m: (starts[m] or latest, m))
        for m in members:
            if m in starts and m != keep:
                out[m] = keep
    return out
