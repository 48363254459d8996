"""Zero-shot tag scores: the arithmetic (:func:`cosine_scores`) and reading ``text_tag_scores``
back (the clips a tag holds, for filters; how many, for ``tags show``).

A clip's score for a tag version is the largest over its prompts of the cosine similarity
of the prompt's unit text embedding and the clip's stored vector of the tag's model,
read through the version's appearance block (:func:`mining.encoders.frame_span`: for a
``text-image`` version, the whole vector, the unit mean of its keyframes' image
embeddings), which is exactly the score :func:`mining.search.by_text.similar_to_text`
ranks by. Nothing is decoded: the vectors are the ones ``embed`` stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mining.encoders import frame_span
from mining.interfaces import ModelSpec
from mining.tags.registry import TagSpec, list_tags, resolve_tags
from storage.errors import ConfigError, TableNotFoundError
from storage.lake import Lake
from storage.objectstore import reachable
from storage.query import run_sql

__all__ = [
    "TagCount",
    "UnscoredTag",
    "clip_block",
    "cosine_scores",
    "forget_drives",
    "has_scores",
    "passing_clips",
    "scored_tags",
    "tag_counts",
    "tagged_clips",
]

TABLE = "text_tag_scores"


def clip_block(spec: ModelSpec, vectors: np.ndarray) -> np.ndarray:
    """``(n, block)`` float64: each stored vector's appearance block at unit length; a row
    that is all zeros or not finite (a clip with no keyframe) is NaN."""
    span = frame_span(spec)
    if span is None:
        raise ConfigError(f"model {spec.ref} keeps no appearance block in its vectors: no text scores them")
    part = np.asarray(vectors, np.float64)[:, span]
    norms = np.linalg.norm(part, axis=1, keepdims=True)
    ok = np.isfinite(norms) & (norms > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, part / np.where(ok, norms, 1.0), np.nan)


def cosine_scores(clips: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """``(n,)`` float64: per clip row (unit, NaN where unknown) the largest cosine with any
    prompt row (unit text embeddings); NaN where the clip's row is."""
    if clips.shape[0] == 0:
        return np.zeros(0, np.float64)
    sims = clips @ np.asarray(prompts, np.float64).T
    with np.errstate(invalid="ignore"):
        best = sims.max(axis=1)
    return np.where(np.isnan(clips).any(axis=1), np.nan, best)


def has_scores(lake: Lake, tag: TagSpec, version: int | None = None) -> bool:
    """Whether a ``tags run`` wrote any row of ``tag`` (at the table's ``version``)."""
    try:
        one = lake.query(TABLE, columns=["clip_id"], where=tag.rows(), limit=1, version=version)
    except TableNotFoundError:
        return False
    return one.num_rows > 0


def passing_clips(lake: Lake, tags: list[TagSpec], version: int | None = None) -> frozenset[str]:
    """The clips whose score passes the threshold of any of ``tags`` (``text_tag_scores`` at
    ``version``; None: latest)."""
    if not tags:
        return frozenset()
    where = " OR ".join(f"({t.rows()})" for t in tags)
    try:
        ids = lake.query(TABLE, columns=["clip_id"], where=f"({where}) AND passed", version=version)
    except TableNotFoundError:
        return frozenset()
    return frozenset(ids.column("clip_id").to_pylist())


@dataclass(frozen=True)
class TagCount:
    tag: TagSpec
    scored: int  # clips with a row (a null score counts: it was visited)
    passing: int

    @property
    def share(self) -> float | None:
        """Passing over scored (None when nothing was scored)."""
        return self.passing / self.scored if self.scored else None


def tag_counts(lake: Lake, tags: list[TagSpec]) -> list[TagCount]:
    """Per tag version, the clips scored and those passing: one GROUP BY the engine runs
    (only a row per version reaches Python)."""
    if not tags:
        return []
    try:
        snapshot = lake.snapshot(TABLE)
    except TableNotFoundError:
        return [TagCount(t, 0, 0) for t in tags]
    where = " OR ".join(f"({t.rows()})" for t in tags)
    sql = (
        "SELECT tag_name, tag_version, count(*) AS scored, "
        "sum(CASE WHEN passed THEN 1 ELSE 0 END) AS passing "
        f'FROM "{TABLE}" WHERE {where} GROUP BY tag_name, tag_version'
    )
    with reachable(lake.location(TABLE).uri):
        got: pa.Table = run_sql({TABLE: snapshot}, sql)
    found = {
        (r["tag_name"], int(r["tag_version"])): (int(r["scored"] or 0), int(r["passing"] or 0))
        for r in got.to_pylist()
    }
    return [TagCount(t, *found.get((t.name, t.version), (0, 0))) for t in tags]


class UnscoredTag(ConfigError):
    """A tag filter (the grid's, ``GET /v1/clips``') that is no ``NAME``/``NAME@V``, names no
    tag of the lake, or a version no run has scored: the message lists those scored."""


def scored_tags(lake: Lake) -> list[TagCount]:
    """The zero-shot tag versions a ``tags run`` has scored (every version, by name and
    version), each with its clips scored and passing: what the grid filters by."""
    return [c for c in tag_counts(lake, list_tags(lake)) if c.scored]


def tagged_clips(lake: Lake, refs: list[str]) -> tuple[list[TagSpec], frozenset[str]]:
    """The tag versions ``refs`` name (``NAME``: its latest) and the clips passing any of
    them. :class:`UnscoredTag` for a ref that is no ``NAME``/``NAME@V``, names no tag of
    the lake, or names a version no run has scored (a filter by it would show no clip, as
    if none looked so); the message lists the versions that have been scored."""

    def scored() -> str:
        if have := [c.tag.ref for c in scored_tags(lake)]:
            return f"the lake's scored tags: {have[:50]}"
        return "the lake has no scored tag (fleetmine tags add NAME --prompt TEXT, then fleetmine tags run)"

    try:
        tags = resolve_tags(lake, refs)
    except ConfigError as exc:
        raise UnscoredTag(f"{exc}; {scored()}") from None
    for c in tag_counts(lake, tags):  # one GROUP BY for them all
        if not c.scored:
            raise UnscoredTag(
                f"tag {c.tag.ref} has scored no clip yet (fleetmine tags run {c.tag.ref}); {scored()}"
            )
    return tags, passing_clips(lake, tags)


def forget_drives(lake: Lake, drive_ids: list[str]) -> None:
    """Forget the tag scores of the clips of re-ingested drives, before their ``clips`` rows
    are replaced: a re-cut drive's clips may have new ids, and rows of clips that are gone
    would count in ``tags show`` (and the grid's select) for clips no filter can return.
    The next ``tags run`` scores the drives' clips anew. Idempotent: a resumed ingest that
    finds the new clips already in place forgets theirs, which the next run redoes."""
    from storage.sql import in_list

    if not drive_ids or not lake.exists(TABLE) or not lake.exists("clips"):
        return
    for at in range(0, len(drive_ids), 1000):
        where = f"drive_id IN ({in_list(drive_ids[at : at + 1000])})"
        ids = lake.read("clips", columns=["clip_id"], where=where).column("clip_id").to_pylist()
        for j in range(0, len(ids), 1000):
            lake.delete(TABLE, f"clip_id IN ({in_list(ids[j : j + 1000])})")
