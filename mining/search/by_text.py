"""Query in words: the clips a text describes, by a ``text-image`` version's two sides.

The words are embedded by the version's text side (:meth:`TextImageEncoder.embed_text`:
its own tokenizer, cut and padded as registered) and searched in its clip index, whose
vectors are the unit mean of each clip's keyframes' image embeddings
(:mod:`mining.encoders.text_image`). Both are unit vectors, so the index's L2 distance
``d`` and the cosine similarity CLIP and SigLIP score with are one number:
``score = 1 - d**2 / 2``; results come highest score first (ties by clip id), exactly
``min(k, allowed)`` of them, with every filter a similarity search takes; a clip with no
keyframe (a zero vector: nothing was seen) is not allowed, as ``tags run`` scores it not.
The encoder is the one query by example keeps per process
(:func:`mining.search.by_example.encoder_of`): the text side loads with the first text
query, not with the API.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mining.encoders.registry import list_models, resolve
from mining.encoders.text_image import TextImageEncoder, has_text_side
from mining.interfaces import ModelSpec
from mining.search.by_example import encoder_of
from mining.search.queries import Neighbour, appearance_of, nearest
from storage.errors import ConfigError
from storage.lake import Lake

__all__ = ["TextHit", "score_of", "similar_to_text", "text_model", "text_vectors", "text_versions"]


@dataclass
class TextHit:
    clip_id: str
    distance: float
    score: float  # cosine similarity of the text and the clip, 1 - distance**2 / 2


def score_of(distance: float) -> float:
    return 1.0 - distance * distance / 2.0


def text_versions(lake: Lake) -> list[str]:
    """The registered versions with a text side (``NAME@VERSION``)."""
    return [m.ref for m in list_models(lake) if has_text_side(m)]


def text_model(lake: Lake, model: str | None = None) -> ModelSpec:
    """The version a text query runs on: ``model`` (NAME@V, or NAME's current version), or
    without one the lake's current model if it has a text side, else the text-image
    version made current last. ConfigError (400) names the versions that have one."""
    if model is not None:
        spec = resolve(lake, model)
    else:
        spec = resolve(lake)
        if not has_text_side(spec):
            current = [m for m in list_models(lake) if has_text_side(m) and m.is_current]
            if current:
                spec = current[-1]
    if not has_text_side(spec):
        have = text_versions(lake)
        raise ConfigError(
            f"model {spec.ref} has no text side; versions with one: {have or 'none'}"
            + (
                ""
                if have
                else " (register one: fleetmine model register NAME --kind text-image --uri FOLDER)"
            )
        )
    return spec


def text_vectors(lake: Lake, spec: ModelSpec, texts: list[str]) -> np.ndarray:
    """``(len(texts), dim)`` float32: each text's unit embedding in ``spec``'s space."""
    enc = encoder_of(lake, spec)
    assert isinstance(enc, TextImageEncoder)
    return enc.embed_text(texts)


def similar_to_text(
    lake: Lake, text: str, *, k: int = 10, where: str | None = None, model: str | None = None
) -> tuple[ModelSpec, list[TextHit]]:
    """The ``k`` clips (among those matching ``where``) that ``text`` describes best, and
    the version that ranked them."""
    spec = text_model(lake, model)
    q = text_vectors(lake, spec, [text])
    sub = appearance_of(spec)  # the whole vector: the keyframes' mean, as registered
    q = sub.project(q) if sub else q
    want = k
    while True:
        hits: list[Neighbour] = nearest(lake, spec, q, want, where, sub=sub)
        blank = _blank(lake, spec, hits)
        kept = [h for h in hits if h.clip_id not in blank]
        if len(kept) >= k or len(hits) < want:  # enough, or every allowed clip seen
            out = [TextHit(h.clip_id, h.distance, score_of(h.distance)) for h in kept[:k]]
            return spec, sorted(out, key=lambda h: (-h.score, h.clip_id))  # ties in one order everywhere
        want = min(2 * want + len(blank), 1_000_000)


def _blank(lake: Lake, spec: ModelSpec, hits: list[Neighbour]) -> set[str]:
    """The hits whose stored vector is zero (a clip with no keyframe: nothing was seen).
    Its distance to any unit query is exactly 1, a cosine of 0.5 that would rank it over
    every real match (CLIP's sit near 0.3); ``tags run`` gives it no score either. Only
    hits at distance ~1 are read back, a handful at most."""
    from mining.search.serving import read_vectors

    suspects = [h.clip_id for h in hits if abs(h.distance - 1.0) < 1e-4]
    if not suspects:
        return set()
    vectors = read_vectors(lake, spec, suspects)
    norms = np.linalg.norm(np.nan_to_num(vectors), axis=1)
    return {c for c, n in zip(suspects, norms, strict=True) if n < 1e-6}
