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
import math
import threading
from typing import Any

import numpy as np

from mining.encoders import make_encoder
from mining.encoders.registry import resolve
from mining.encoders.vectors import SubSpace
from mining.interfaces import ClipInput, Encoder, ModelSpec
from mining.search.queries import Neighbour, appearance_of, nearest
from storage.errors import ConfigError, InputError
from storage.lake import Lake

__all__ = ["KEYFRAME_SHORT_SIDE", "ImageError", "encoder_of", "image_query", "keyframe", "similar_to_image"]

KEYFRAME_SHORT_SIDE = 224  # as ingest stores keyframes (ingest.video.keyframe_images)
_KEYFRAME_QUALITY = 85
_FORMATS = ("JPEG", "PNG")


class ImageError(InputError):
    """An uploaded image that cannot be used: not a JPEG or PNG, truncated or corrupt,
    too many pixels, or blank (no appearance to compare)."""


def keyframe(data: bytes, max_pixels: int = 16_000_000) -> bytes:
    """``data`` (JPEG or PNG) as a keyframe of the lake: upright (EXIF orientation),
    RGB, its short side 224 px, JPEG.

    Memory is what bounds this, not time: its dimensions are read from the header and
    checked before any pixel is decoded (a small file that unpacks to a huge bitmap is
    refused, and so is one longer than 16:1, which no camera frame is and whose
    keyframe alone would be a bitmap of tens of MB, past JPEG's 65535 px); a JPEG
    decodes at the smallest DCT scale that still covers the keyframe; anything larger
    than the keyframe is shrunk a band of rows at a time in its own mode, so the only
    full-size buffer is the decoded one. Decodes run on the fixed threads of
    :mod:`mining.search.decode_slots` (``Settings.image_decode_concurrency`` of them); the
    others wait holding only their compressed bytes."""
    from PIL import Image

    from mining.search import decode_slots

    try:
        img = Image.open(io.BytesIO(data))
        w, h = _checked_size(img, max_pixels)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image does not decode ({type(exc).__name__})") from None
    return decode_slots.run(_keyframe_of, img, w, h)


def _keyframe_of(img: Any, w: int, h: int) -> bytes:
    """The keyframe's JPEG bytes of an opened image (on a decode thread): any failure,
    of the decode or of the encode, is the image's (422), never the server's."""
    from PIL import Image

    try:
        small = _decoded_small(img, w, h)
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=_KEYFRAME_QUALITY)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"image does not decode ({type(exc).__name__})") from None
    return buf.getvalue()


_MAX_ASPECT = 16  # long side over short side: a camera frame is far from it (panoramas ~4)


def _checked_size(img: Any, max_pixels: int) -> tuple[int, int]:
    """The image's size from its header, if it is a JPEG or PNG within ``max_pixels``
    and no longer than 16:1."""
    if img.format not in _FORMATS:
        raise ImageError(f"not a JPEG or PNG image ({img.format or 'unknown format'})")
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"image is {w} x {h} px: over the limit of {max_pixels} pixels")
    if w < 2 or h < 2:
        raise ImageError(f"image is {w} x {h} px: too small to show a scene")
    if max(w, h) > _MAX_ASPECT * min(w, h):
        raise ImageError(f"image is {w} x {h} px: longer than {_MAX_ASPECT}:1, not a camera frame")
    return int(w), int(h)


# EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
            6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


_BAND_PIXELS = 1 << 20  # of the decoded image, converted and shrunk at a time (4 MB as RGB)


def _shrunk(img: Any, size: tuple[int, int]) -> Any:
    """``img`` box-filtered down to ``size``, as RGB, a band of rows at a time: a
    conversion or a resize of the whole image (RGBA is premultiplied first) would be a
    second full-size copy beside the decoded one, and a resize's first pass a third.
    Each band covers whole output rows, its source rows given exactly (``box``), so the
    result is the whole-image box filter's, with no seams (a source row whose centre
    lies exactly on a band's edge may count for the other side: a level or two)."""
    from PIL import Image

    w, h = img.size
    out_w, out_h = size
    rows_per_out = h / out_h  # source rows one output row averages (> 1: shrinking)
    band = max(1, int(_BAND_PIXELS / (w * rows_per_out)))  # output rows a band
    out = Image.new("RGB", size)
    for top in range(0, out_h, band):
        bottom = min(out_h, top + band)
        y0, y1 = top * rows_per_out, bottom * rows_per_out
        first, last = int(y0), min(h, math.ceil(y1))
        stripe = img.crop((0, first, w, last)).convert("RGB")
        part = stripe.resize((out_w, bottom - top), Image.Resampling.BOX, box=(0, y0 - first, w, y1 - first))
        out.paste(part, (0, top))
    return out


def _decoded_small(img: Any, w: int, h: int) -> Any:
    """``img`` decoded and brought to the keyframe size (short side 224), upright, RGB."""
    from PIL import Image

    orientation = img.getexif().get(0x0112)  # read before decoding: a resized copy has no EXIF
    scale = KEYFRAME_SHORT_SIDE / min(w, h)
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    if img.format == "JPEG":  # decode at the smallest scale that still covers the keyframe
        img.draft("RGB", size)
    img.load()
    if img.width > size[0] or img.height > size[1]:  # larger than the keyframe (a draft may be)
        small = _shrunk(img, size)
    else:  # no larger than the keyframe already: a whole conversion is keyframe-sized
        small = img.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    del img
    if orientation in _UPRIGHT:
        small = small.transpose(getattr(Image.Transpose, _UPRIGHT[orientation]))
    return small.convert("RGB")


_ENCODERS: dict[tuple[str, str], Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def encoder_of(lake: Lake, spec: ModelSpec) -> Encoder:
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
    still = encoder_of(lake, spec).process_batch([ClipInput("query", [frame], {})])
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
    max_pixels: int = 16_000_000,
) -> list[Neighbour]:
    """The ``k`` clips (among those matching ``where``) whose frames look most like
    ``image`` (JPEG or PNG bytes), in the model version's appearance block."""
    spec = resolve(lake, model)
    sub = _appearance(spec)  # before decoding anything
    q = image_query(lake, spec, keyframe(image, max_pixels))
    return nearest(lake, spec, q, k, where, sub=sub)
