"""The review grid's words: a page of the clips a text describes best, a stretch of their
ranking (:func:`mining.search.by_text.similar_to_text`, a ``text-image`` version's cosine
similarity, highest first).

Its own module because it is a walk of its own, beside the two :mod:`mining.scores.browse`
composes: the keyset walk in time order and the policy's ranking
(:mod:`mining.policies.views`). It has its own position (:class:`RankPosition`, a depth
in a ranking that exists only for these words, not a key of a table), its own bound
(:data:`MAX_TEXT_HITS`), its own choice of model (a version with a text side, which need
not be the grid's model) and one ranking every page reads (the top MAX_TEXT_HITS). The grid hands it
the page's predicate and a ``keep`` that decorates and drops rows (scores, verdicts,
bounds on other tables); it knows nothing of the grid's filters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mining.encoders.registry import resolve
from mining.encoders.text_image import has_text_side
from mining.interfaces import ModelSpec
from mining.search.by_text import similar_to_text, text_model, text_versions
from storage.errors import ConfigError
from storage.filters import ClipFilter
from storage.lake import Lake

__all__ = ["MAX_TEXT_HITS", "RankPosition", "card_rows", "ranked_page", "text_spec"]

MAX_TEXT_HITS = 1000
"""The deepest a grid pages into a text query's ranking (what ``POST /v1/search/text`` takes as k)."""

Keep = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
"""Ranked card rows in, the ones the page shows out (in the same order, decorated)."""


@dataclass(frozen=True)
class RankPosition:
    """Where a page of a text query's ranking starts: after its first ``offset`` clips."""

    offset: int

    def encode(self) -> str:
        return f"r{self.offset}"

    @classmethod
    def decode(cls, cursor: str) -> RankPosition:
        digits = cursor[1:]
        if cursor[:1] != "r" or not (0 < len(digits) <= 4 and digits.isascii() and digits.isdigit()):
            raise ConfigError("invalid cursor")
        if int(digits) >= MAX_TEXT_HITS:
            raise ConfigError("invalid cursor")
        return cls(int(digits))


def text_spec(lake: Lake, model: str | None) -> ModelSpec | None:
    """The version the words are read with: ``model`` (the grid's) if it has a text side,
    else the one a text query takes by default, else the text-image version registered
    last; None when no version of the lake reads words."""
    have = text_versions(lake)
    if not have:
        return None
    if model is not None:
        with contextlib.suppress(ConfigError):
            if has_text_side(spec := resolve(lake, model)):
                return spec
    try:
        return text_model(lake)
    except ConfigError:
        return resolve(lake, have[-1])


def card_rows(lake: Lake, ids: list[str], columns: list[str]) -> dict[str, dict[str, Any]]:
    """``columns`` (and ``date``) of these clips' ``clips`` rows, by clip id."""
    if not ids:
        return {}
    where = ClipFilter(clip_ids=ids).predicate()
    cols = list(dict.fromkeys([*columns, "date"]))
    return {r["clip_id"]: r for r in lake.read("clips", columns=cols, where=where).to_pylist()}


def ranked_page(
    lake: Lake,
    text: str,
    spec: ModelSpec,
    *,
    where: str | None,
    start: RankPosition | None,
    limit: int,
    columns: list[str],
    keep: Keep,
    sparse: bool = False,
) -> tuple[list[dict[str, Any]], RankPosition | None]:
    """Clips ``start.offset`` to ``+ limit`` of ``text``'s ranking among the clips ``where``
    admits, of those ``keep`` keeps; each row its card ``columns`` with ``match`` (the
    cosine similarity) and ``distance``.

    Every page reads the same ranking: the top :data:`MAX_TEXT_HITS` (ties by clip id there),
    whatever its offset. Searching ``offset + limit`` deep instead would let a deeper page
    re-rank what an approximate index (IVF probes widened under a filter, PQ candidates
    refined) returned to an earlier one, and a clip could show twice or never. Only the
    page's rows are read (all of them when ``sparse``: ``keep`` drops rows on another
    table's score, so where the page starts is known only after it)."""
    offset = start.offset if start else 0
    _, hits = similar_to_text(lake, text, k=MAX_TEXT_HITS, where=where, model=spec.ref)
    window = hits if sparse else hits[offset : offset + limit + 1]
    clips = card_rows(lake, [h.clip_id for h in window], columns)
    kept = keep(
        [
            {**r, "match": h.score, "distance": h.distance}
            for h in window
            if (r := clips.get(h.clip_id)) is not None
        ]
    )
    first = offset if sparse else 0  # where the page starts in what was read
    page = kept[first : first + limit]
    more = len(kept) > first + limit and offset + limit < MAX_TEXT_HITS
    return page, RankPosition(offset + limit) if more else None
