"""Zero-shot tags: clips described in words (``night``, ``rain``, ``pedestrian``) and scored
by the text side of a ``text-image`` model version, with no labels and no image decoded.

- :mod:`.registry`: tag versions (``text_tags``), each a few prompts and a threshold pinned
  to one model version;
- :mod:`.scores`: a clip's score (the best cosine over the prompts, on its stored vector)
  and reading ``text_tag_scores`` back: the clips a tag holds, and how many.

``fleetmine tags run`` (:mod:`jobs.tags_job`) scores every clip a version has not scored.
"""

from mining.tags.registry import (
    DEFAULT_THRESHOLD,
    TagSpec,
    add_tag,
    latest_tags,
    list_tags,
    resolve_tag,
    resolve_tags,
)
from mining.tags.scores import (
    TagCount,
    UnscoredTag,
    cosine_scores,
    has_scores,
    passing_clips,
    scored_tags,
    tag_counts,
    tagged_clips,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "TagCount",
    "TagSpec",
    "UnscoredTag",
    "add_tag",
    "cosine_scores",
    "has_scores",
    "latest_tags",
    "list_tags",
    "passing_clips",
    "resolve_tag",
    "resolve_tags",
    "scored_tags",
    "tag_counts",
    "tagged_clips",
]
