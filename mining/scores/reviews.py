"""Reviewers' verdicts: recorded append-only in ``reviews``, read back as the latest per clip.

Datasets select by them (``DatasetQuery.reviewed`` / ``tags``), the web UI filters the
grid by them, and :func:`verdict_precision` scores the novelty ranking against them:
the mining metric of a real fleet, where no synthetic labels exist.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from mining.encoders.registry import resolve
from mining.search.queries import corner_cases
from storage.errors import ConfigError
from storage.lake import Lake
from storage.sql import literal
from storage.tables.reviews import SPEC, VERDICTS

__all__ = ["VerdictReport", "clip_reviews", "latest_verdicts", "record_review", "verdict_precision"]

_MAX_TAGS = 32
_cache: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
_lock = threading.Lock()


def _clean_tags(tags: list[str]) -> list[str]:
    out = sorted({t.strip().lower() for t in tags if t and t.strip()})
    if len(out) > _MAX_TAGS or any(len(t) > 64 or "," in t for t in out):
        raise ConfigError(f"tags: at most {_MAX_TAGS}, each under 64 characters, no commas")
    return out


def record_review(
    lake: Lake,
    clip_id: str,
    reviewer: str,
    verdict: str,
    tags: list[str] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Append one verdict (the clip's row must exist: callers check); returns the row."""
    if verdict not in VERDICTS:
        raise ConfigError(f"unknown verdict {verdict!r}; verdicts: {list(VERDICTS)}")
    if note is not None and len(note) > 4000:
        raise ConfigError("note: at most 4000 characters")
    lake.create_tables([SPEC.name])
    row = {
        "clip_id": clip_id,
        "reviewer": reviewer,
        "at": dt.datetime.now(dt.UTC),
        "verdict": verdict,
        "tags": _clean_tags(tags or []),
        "note": note or None,
    }
    lake.append(SPEC.name, pa.Table.from_pylist([row], schema=SPEC.schema))
    return row


def latest_verdicts(lake: Lake, version: int | None = None) -> dict[str, dict[str, Any]]:
    """Per reviewed clip, its latest review row (at ``version`` of ``reviews``, else now).

    Reviews are what people typed, so the table stays small next to ``clips``; it is
    read whole once per table version and kept."""
    if not lake.exists(SPEC.name):
        return {}
    v = lake.version(SPEC.name) if version is None else version
    key = (lake.uri, v)
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    rows = lake.read(SPEC.name, version=v).to_pylist()
    latest: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["at"], r["reviewer"])):
        latest[r["clip_id"]] = r
    with _lock:
        if len(_cache) > 16:
            _cache.clear()
        _cache[key] = latest
    return latest


def clip_reviews(lake: Lake, clip_id: str) -> list[dict[str, Any]]:
    """Every review of one clip, newest first."""
    if not lake.exists(SPEC.name):
        return []
    rows = lake.read(SPEC.name, where=f"clip_id = {literal(clip_id)}").to_pylist()
    return sorted(rows, key=lambda r: (r["at"], r["reviewer"]), reverse=True)


@dataclass
class VerdictReport:
    model: str
    k: int
    ranked: int  # clips in the top k (fewer when fewer were mined)
    reviewed_in_top: int
    confirmed_in_top: int
    precision_judged: float | None  # confirmed / reviewed, among the top k; None: none reviewed
    precision_strict: float  # confirmed / k: an unreviewed clip counts as a miss
    reviewed_total: int
    confirmed_total: int
    base_rate: float | None  # confirmed / reviewed over every review: what a random ranking scores
    mislabelled_in_top: int

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def verdict_precision(lake: Lake, model: str | None = None, k: int = 50) -> VerdictReport:
    """Precision@k of the model's novelty ranking (duplicates left out) against the verdicts."""
    spec = resolve(lake, model)
    verdicts = latest_verdicts(lake)
    if not verdicts:
        raise ConfigError("no reviews yet: mark clips in the web UI (/ui/) or POST /v1/clips/{id}/reviews")
    top = [r["clip_id"] for r in corner_cases(lake, k=k, model=spec.ref)]
    if not top:
        raise ConfigError(f"no mining scores for {spec.ref}: run `fleetmine mine`")
    judged = [verdicts[c]["verdict"] for c in top if c in verdicts]
    confirmed = judged.count("confirmed")
    every = [r["verdict"] for r in verdicts.values()]
    return VerdictReport(
        model=spec.ref,
        k=k,
        ranked=len(top),
        reviewed_in_top=len(judged),
        confirmed_in_top=confirmed,
        precision_judged=confirmed / len(judged) if judged else None,
        precision_strict=confirmed / k,
        reviewed_total=len(every),
        confirmed_total=every.count("confirmed"),
        base_rate=every.count("confirmed") / len(every),
        mislabelled_in_top=judged.count("mislabelled"),
    )
