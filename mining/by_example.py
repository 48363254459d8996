"""Query by example: the clips whose frames look like one image.

A clip vector (:func:`mining.encoders.fusion.fuse`) is three kinds of evidence: what
was in view (the unit mean of its frames' appearance features), what changed from
frame to frame, and what the car did (signals, events); each block is weighted, and
the whole scaled to unit length. An image is evidence of the first kind only. So:

1. The upload becomes a keyframe as ingest stores one (:func:`keyframe`: upright,
   RGB, short side 224, JPEG), so the encoder sees it as it saw the lake's frames.
2. The version's own encoder embeds it through the clip contract, as a still clip of
   that one frame with no signals: the mean is the image's features, the change and
   the signals zero. No second code path that could drift from what ``embed`` does.
3. Only the appearance block is compared (:func:`mining.encoders.frame_span`),
   each side scaled back to unit length. For the query that is the image's feature;
   for a stored clip it is exactly its frames' mean feature, since fusion only scales
   the block (by its weight, then with the whole vector) and never turns it.

   The whole still-clip vector would be the wrong query: its zero change and zero
   signals pull towards clips in which nothing moved and nothing was measured, and
   since every clip vector is unit length with its signals in it, how long a clip's
   appearance part is depends on how hard it braked, so a full-space distance mixes
   how a clip looks with what the car did.
4. The block is searched in an index of its own (``indexes/<model>/appearance``),
   built by ``fleetmine index`` beside the clip index from the stored vectors (no
   decoding, no re-embedding) and served like it: mapped, topped up with new
   embeddings, the same kinds, filters and exact ``min(k, allowed)`` answers. Re-ranking
   candidates of a full-space search instead would miss, at any candidate count,
   clips that look alike but whose signals put them far apart.

Distances are L2 between unit appearance directions (cosine similarity
``1 - d**2 / 2``). PIL loads here, and an ONNX version's runtime with its first
query: the API imports neither for any other route.
"""

from __future__ import annotations

import io
import threading

import numpy as np

from mining.encoders import make_encoder
from mining.interfaces import ClipInput, Encoder, ModelSpec
from mining.queries import Neighbour, appearance_of, nearest
from mining.registry import resolve
from mining.vectors import SubSpace
from storage.errors import ConfigError, InputError
from storage.lake import Lake

__all__ = ["KEYFRAME_SHORT_SIDE", "ImageError", "image_query", "keyframe", "similar_to_image"]

KEYFRAME_SHORT_SIDE = 224  # as ingest stores keyframes (ingest.video.keyframe_images)
_KEYFRAME_QUALITY = 85
_FORMATS = ("JPEG", "PNG")


class ImageError(InputError):
    """An uploaded image that cannot be used: not a JPEG or PNG, truncated or corrupt,
    too many pixels, or blank (no appearance to compare)."""


def keyframe(data: bytes, max_pixels: int = 40_000_000) -> bytes:
    """``data`` (JPEG or PNG) as a keyframe of the lake: upright (EXIF orientation),
    RGB, its short side 224 px, JPEG. Its dimensions are checked before its pixels
    are decoded, so a small file that unpacks to a huge bitmap is refused, not decoded."""
    from PIL import Image, ImageOps

    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in _FORMATS:
            raise ImageError(f"not a JPEG or PNG image ({img.format or 'unknown format'})")
        w, h = img.size
        if w * h > max_pixels:
            raise ImageError(f"image is {w} x {h} px: over the limit of {max_pixels} pixels")
        if w < 2 or h < 2:
            raise ImageError(f"image is {w} x {h} px: too small to show a scene")
        if img.format == "JPEG":  # decode at the smallest scale that still covers the keyframe
            s = KEYFRAME_SHORT_SIDE / min(w, h)
            img.draft("RGB", (max(1, round(w * s)), max(1, round(h * s))))
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image does not decode: {exc}") from None
    scale = KEYFRAME_SHORT_SIDE / min(rgb.size)
    size = (max(2, round(rgb.width * scale)), max(2, round(rgb.height * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC
    buf = io.BytesIO()
    rgb.resize(size, resample).save(buf, format="JPEG", quality=_KEYFRAME_QUALITY)
    return buf.getvalue()


_ENCODERS: dict[tuple[str, str], Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def _encoder(lake: Lake, spec: ModelSpec) -> Encoder:
    """The version's encoder, set up once per process (an ONNX session is loaded from
    the lake on the first query, not with the API)."""
    key = (lake.uri, spec.ref)
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = make_encoder(spec, lake.root.storage_options)
            enc.setup()
            _ENCODERS[key] = enc
        return enc


def _appearance(spec: ModelSpec) -> SubSpace:
    sub = appearance_of(spec)
    if sub is None:
        raise ConfigError(
            f"model {spec.ref} has no frame encoder: its vectors hold no appearance block "
            "(appearance weight 0); search it by clip_id or vector, or pick another model"
        )
    return sub


def image_query(lake: Lake, spec: ModelSpec, frame: bytes) -> np.ndarray:
    """``(1, block dim)``: a keyframe's appearance direction in ``spec``'s vectors."""
    sub = _appearance(spec)
    still = _encoder(lake, spec).process_batch([ClipInput("query", [frame], {})])
    q = sub.project(still)
    if not np.isfinite(q).all() or not q.any():
        raise ImageError("the image is blank: it gives no appearance to compare")
    return q


def similar_to_image(
    lake: Lake,
    image: bytes,
    *,
    k: int = 10,
    where: str | None = None,
    model: str | None = None,
    max_pixels: int = 40_000_000,
) -> list[Neighbour]:
    """The ``k`` clips (among those matching ``where``) whose frames look most like
    ``image`` (JPEG or PNG bytes), in the model version's appearance block."""
    spec = resolve(lake, model)
    sub = _appearance(spec)  # before decoding anything
    q = image_query(lake, spec, keyframe(image, max_pixels))
    return nearest(lake, spec, q, k, where, sub=sub)
