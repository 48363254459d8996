"""Look closer where the signals say something happened: dense frames around a trigger.

A clip's keyframes are a few frames seconds apart: enough for what is in view, too
few for what moves in it (a person waving, the car creeping forward at a red light).
For the clips a signal trigger fired on (:class:`storage.config.LookCloser` names
which, :func:`ingest.features.clip_features` says when), ingest decodes a handful of
consecutive frames around that moment from the clip's own mp4 (one clip, never the
drive) and keeps them in ``clip_frames`` beside the keyframes, marked ``dense``. The
budget is the triggers': a few percent of clips, each ``frames`` small JPEGs.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ingest._reasons import reason
from ingest.video import KeyframeImage, VideoError
from storage.config import LookCloser

__all__ = ["dense_frames", "wants_closer_look"]


def wants_closer_look(events: Sequence[str], at_s: float | None, cfg: LookCloser) -> bool:
    return at_s is not None and any(e in cfg.events for e in events)


def dense_frames(mp4: bytes, at_s: float, cfg: LookCloser, short_side: int = 224) -> list[KeyframeImage]:
    """``cfg.frames`` frames evenly over ``[at_s - before_s, at_s + after_s]`` (clamped to
    the clip), decoded from the clip's mp4 from the keyframe before the window on."""
    import av

    from ingest.video import _image  # the keyframes' own scaling and JPEG settings

    lo, hi = max(0.0, at_s - cfg.before_s), at_s + cfg.after_s
    shown: list[tuple[float, Any]] = []
    try:
        with av.open(io.BytesIO(mp4), mode="r") as c:
            s = c.streams.video[0]
            tb = s.time_base
            if tb is not None and lo > 0:
                c.seek(round(lo / tb), stream=s, backward=True, any_frame=False)
            for frame in c.decode(s):
                t = float(frame.pts * tb) if frame.pts is not None and tb is not None else None
                if t is None or t < lo - 1e-6:
                    continue
                if t > hi + 1e-6:
                    break
                shown.append((t, frame))
    except av.FFmpegError as exc:
        raise VideoError(f"dense frames: decode failed: {reason(exc)}") from exc
    if len(shown) < 2:
        raise VideoError(f"dense frames: fewer than 2 frames between {lo:.2f}s and {hi:.2f}s")
    want = np.linspace(shown[0][0], shown[-1][0], min(cfg.frames, len(shown)))
    times = np.array([t for t, _ in shown])
    picks = sorted({int(np.abs(times - w).argmin()) for w in want})
    return [KeyframeImage(shown[i][0], *_image(shown[i][1], short_side)) for i in picks]
