"""``fleetmine eval-mining``: mining quality on a synthetic fleet, next to baselines."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mining.encoders.embed import load_vectors
from mining.encoders.registry import resolve
from mining.encoders.vectors import SubSpace
from mining.scores.lineage import latest_scores
from mining.search.index import ClipIndex, IndexConfig
from mining.search.queries import behaviour_of
from storage.errors import ConfigError
from storage.lake import Lake

__all__ = ["ConsistencyReport", "EvalReport", "drive_consistency", "evaluate"]


@dataclass
class EvalReport:
    model: str
    clips: int
    planted: int
    k: int
    recall: float
    ap: float
    recall_uniqueness: float
    ap_uniqueness: float
    recall_random: float
    ap_random: float
    per_type: dict[str, tuple[int, int]] = field(default_factory=dict)  # type -> (found, planted)
    # in the space "more like this" searches (mining.search.queries.SPACES: behaviour, where the
    # version's vectors have it); None: no type was planted twice, so no hit is possible
    more_like_this_p5: float | None = None
    # the same, over the hits a clip can have: min(5, other clips of its type) (a type
    # planted twice caps the plain p@5 at 0.2; this one reaches 1.0 for a perfect ranking)
    more_like_this_p5_attainable: float | None = None
    more_like_this_space: str = "clip"
    more_like_this_p5_clip: float | None = None  # in the whole vector
    more_like_this_p5_random: float | None = None  # 5 clips drawn at random (expected)
    dup_truth: int = 0
    dup_predicted: int = 0
    dup_recall: float = 0.0
    dup_precision: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _ap(ranking: list[str], relevant: set[str], k: int) -> float:
    hits, total = 0, 0.0
    for i, c in enumerate(ranking[:k]):
        if c in relevant:
            hits += 1
            total += hits / (i + 1)
    return total / max(len(relevant), 1)


def evaluate(lake: Lake, labels_path: Path, model: str | None = None, seed: int = 0) -> EvalReport:
    try:
        labels = json.loads(Path(labels_path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read labels {labels_path}: {exc} (write them with `fleetmine synth OUT`)"
        ) from exc
    spec = resolve(lake, model)
    drives = {(r["vehicle_id"], r["drive"]): r["drive_id"] for r in lake.read("drives").to_pylist()}
    clips = lake.read("clips", columns=["clip_id", "drive_id", "start_time", "end_time"]).to_pylist()
    by_drive: dict[str, list[dict[str, Any]]] = {}
    for c in clips:
        by_drive.setdefault(c["drive_id"], []).append(c)

    def clip_at(vehicle: str, drive: str, t: dt.datetime) -> str | None:
        for c in by_drive.get(drives.get((vehicle, drive), ""), []):
            if c["start_time"] <= t < c["end_time"]:
                return str(c["clip_id"])
        return None

    planted: dict[str, str] = {}
    for e in labels["events"]:
        cid = clip_at(e["vehicle_id"], e["drive"], _t(e["start_time"]))
        if cid:
            planted[cid] = e["type"]
    ids, vectors = load_vectors(lake, spec)
    scores = latest_scores(lake, spec)
    novelty = {r["clip_id"]: r["novelty"] for r in scores}
    dup_of = {r["clip_id"]: r["duplicate_of"] for r in scores}
    k = len(planted)
    relevant = set(planted)
    ranking = sorted(novelty, key=lambda c: -novelty[c])

    # Baseline: FiftyOne Brain's uniqueness, mean distance to the 3 nearest neighbours.
    index = ClipIndex.build(vectors, ids, IndexConfig(exact_below=10**12))
    dist, names = index.search(vectors, 4)
    unique = {
        c: float(np.mean([d for d, m in zip(dist[i], names[i], strict=False) if m != c][:3]))
        for i, c in enumerate(ids)
    }
    uniq_rank = sorted(unique, key=lambda c: -unique[c])
    rng = np.random.default_rng(seed)
    rand_recall, rand_ap = [], []
    for _ in range(50):
        perm = [ids[i] for i in rng.permutation(len(ids))]
        rand_recall.append(len(set(perm[:k]) & relevant) / max(k, 1))
        rand_ap.append(_ap(perm, relevant, k))
    per_type: dict[str, tuple[int, int]] = {}
    top = set(ranking[:k])
    for cid, typ in planted.items():
        found, total = per_type.get(typ, (0, 0))
        per_type[typ] = (found + (cid in top), total + 1)
    # "More like this": the 5 nearest of each planted clip; same type is a hit. Only
    # types planted more than once can score one. Measured in the space the UI's "more
    # like this" searches (behaviour, where the version has it) and in the whole vector.
    counts = Counter(planted.values())
    held = set(ids)
    queries = [c for c, typ in planted.items() if c in held and counts[typ] >= 2]
    behaviour = behaviour_of(spec)
    mlt = _more_like_this(vectors, ids, planted, queries, behaviour)
    mlt_clip = mlt if behaviour is None else _more_like_this(vectors, ids, planted, queries, None)
    # Duplicates: labelled pairs vs predicted duplicate_of links (grouped).
    truth = set()
    for d in labels["duplicates"]:
        a = clip_at(d["a"]["vehicle_id"], d["a"]["drive"], _t(d["a"]["start_time"]))
        b = clip_at(d["b"]["vehicle_id"], d["b"]["drive"], _t(d["b"]["start_time"]))
        if a and b:
            truth.add(frozenset((a, b)))
    predicted = {frozenset((c, p)) for c, p in dup_of.items() if p}
    group = {c: p or c for c, p in dup_of.items()}
    found = sum(1 for pair in truth if len({group.get(c, c) for c in pair}) == 1)
    correct = sum(1 for pair in predicted if pair in truth or any(pair <= {*t} for t in truth))
    return EvalReport(
        model=spec.ref,
        clips=len(ids),
        planted=k,
        k=k,
        recall=len(top & relevant) / max(k, 1),
        ap=_ap(ranking, relevant, k),
        recall_uniqueness=len(set(uniq_rank[:k]) & relevant) / max(k, 1),
        ap_uniqueness=_ap(uniq_rank, relevant, k),
        recall_random=float(np.mean(rand_recall)),
        ap_random=float(np.mean(rand_ap)),
        per_type=per_type,
        more_like_this_space="clip" if behaviour is None else behaviour.name,
        more_like_this_p5=mlt[0],
        more_like_this_p5_attainable=mlt[1],
        more_like_this_p5_clip=mlt_clip[0],
        more_like_this_p5_random=(
            float(np.mean([(counts[planted[c]] - 1) / max(len(ids) - 1, 1) for c in queries]))
            if queries
            else None
        ),
        dup_truth=len(truth),
        dup_predicted=len(predicted),
        dup_recall=found / max(len(truth), 1),
        dup_precision=correct / max(len(predicted), 1),
    )


def _more_like_this(
    vectors: np.ndarray,
    ids: list[str],
    planted: dict[str, str],
    queries: list[str],
    sub: SubSpace | None,
) -> tuple[float | None, float | None]:
    """Mean precision@5 of the 5 nearest of each query clip (same planted type is a hit),
    plain and over the hits it can have; in ``sub`` of the vectors, or all of them."""
    if not queries:
        return None, None
    space = vectors if sub is None else sub.project(vectors)
    index = ClipIndex.build(space, ids, IndexConfig(exact_below=10**12))
    row = {c: i for i, c in enumerate(ids)}
    _, nn = index.search(space[[row[c] for c in queries]], 6)
    counts = Counter(planted.values())
    p5, attainable = [], []
    for cid, near in zip(queries, nn, strict=True):
        typ = planted[cid]
        hits = sum(planted.get(c) == typ for c in [c for c in near if c != cid][:5])
        p5.append(hits / 5)
        attainable.append(hits / min(5, counts[typ] - 1))
    return float(np.mean(p5)), float(np.mean(attainable))


@dataclass
class ConsistencyReport:
    """Neighbours' consistency on footage without labels: a drive's two halves should be
    nearer each other than other drives' halves (the same road, light and car)."""

    model: str
    drives: int
    top1: float  # share of drives whose first half's nearest second half is its own
    auc: float  # chance that a drive's own other half is nearer than another drive's
    own_distance: float  # mean L2 distance between a drive's two halves
    other_distance: float  # mean L2 distance to other drives' second halves
    why_not: str = ""  # when the figures could not be computed (they are nan): why

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: a figure that could not be computed is null, never NaN (not JSON)."""
        return {k: None if isinstance(v, float) and v != v else v for k, v in self.__dict__.items()}


def drive_consistency(lake: Lake, model: str | None = None) -> ConsistencyReport:
    """Each drive (of >= 2 clips) split in time into halves, each half the normalised
    mean of its clips' vectors; the first halves are matched against all second halves."""
    spec = resolve(lake, model)
    ids, vectors = load_vectors(lake, spec)
    row = {c: i for i, c in enumerate(ids)}
    clips = lake.read("clips", columns=["clip_id", "drive_id", "start_time"]).to_pylist()
    by_drive: dict[str, list[tuple[Any, int]]] = {}
    for c in clips:
        if c["clip_id"] in row:
            by_drive.setdefault(c["drive_id"], []).append((c["start_time"], row[c["clip_id"]]))
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    for members in by_drive.values():
        if len(members) < 2:
            continue
        order = [i for _, i in sorted(members)]
        half = len(order) // 2
        for part, out in ((order[:half], firsts), (order[half:], seconds)):
            m = vectors[part].mean(axis=0)
            out.append(m / max(float(np.linalg.norm(m)), 1e-12))
    n = len(firsts)
    if n < 2:
        nan = float("nan")
        why = (
            "needs at least 2 drives with 2 or more embedded clips each (a drive's halves are "
            f"compared with other drives' halves); this lake has {n}"
        )
        return ConsistencyReport(spec.ref, n, nan, nan, nan, nan, why_not=why)
    a, b = np.stack(firsts), np.stack(seconds)
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=2)
    own = np.diag(d)
    others = d[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    auc = float(np.mean((own[:, None] < others) + 0.5 * (own[:, None] == others)))
    return ConsistencyReport(
        spec.ref,
        n,
        top1=float(np.mean(d.argmin(axis=1) == np.arange(n))),
        auc=auc,
        own_distance=float(own.mean()),
        other_distance=float(others.mean()),
    )
