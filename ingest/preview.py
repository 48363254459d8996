"""Browser previews: a small H.264 copy of a clip whose codec browsers do not play.

Chromium, Firefox and Safari agree on H.264, VP8, VP9 and AV1 in mp4 (Chromium and
Firefox play no HEVC at all: ``DEMUXER_ERROR_NO_SUPPORTED_STREAMS``), and openpilot's
road cameras record HEVC. For such a clip ingest writes a preview beside the original:
every frame of the clip decoded (from its remuxed mp4, so the preview shows exactly the
frames the clip plays, at their own times), scaled to at most :data:`SHORT_SIDE` pixels
on its short side and encoded with x264 at about :data:`KBIT_S` kbit/s. The clip page
plays the preview and says so; exports, shards and ``/video.mp4`` keep serving the
original, bit for bit. An openpilot route's road camera needs no transcode: its
``qcamera.ts`` (the same camera in H.264) cut on the clip's window is the preview
(:class:`ingest.drive_clips.ClipCutter`).

The cost is a decode and an encode of every frame, where the clip itself is a packet
copy: ``fleetmine bench`` measures the two side by side (``previews``).
"""

from __future__ import annotations

import io
from fractions import Fraction

from ingest._reasons import reason

__all__ = ["BROWSER_CODECS", "KBIT_S", "SHORT_SIDE", "needs_preview", "preview_mp4"]

BROWSER_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
"""Codecs (FFmpeg's names) every major browser plays in mp4: these clips need no preview."""

SHORT_SIDE = 480
KBIT_S = 400


def needs_preview(codec: str | None) -> bool:
    return bool(codec) and codec not in BROWSER_CODECS


def _even(x: float) -> int:
    return max(2, round(x / 2) * 2)


def preview_mp4(
    mp4: bytes, rotation_deg: int = 0, short_side: int = SHORT_SIDE, kbit_s: int = KBIT_S
) -> bytes:
    """The clip's H.264 preview: its shown frames (time >= 0; the pre-roll an edit list
    hides is left out) at their own times, scaled down (never up). Raises VideoError.

    PyAV is imported here, not above: the API server imports :func:`needs_preview` for
    the clip page and loads no decoder (tests/api/test_imports.py)."""
    import av

    from ingest.video import VideoError

    out_buf = io.BytesIO()
    try:
        with av.open(io.BytesIO(mp4), "r") as src:
            s = src.streams.video[0]
            s.thread_type = "AUTO"
            w, h = s.codec_context.width, s.codec_context.height
            if not w or not h:
                raise VideoError("frame size unknown")
            scale = min(1.0, short_side / min(w, h))
            ow, oh = _even(w * scale), _even(h * scale)
            tb = s.time_base or Fraction(1, 90000)
            rate = s.average_rate or s.guessed_rate or 30
            with av.open(out_buf, "w", format="mp4") as out:
                o = out.add_stream(
                    "libx264",
                    rate=rate,
                    options={
                        "preset": "veryfast",
                        "b": f"{kbit_s}k",
                        "maxrate": f"{kbit_s * 2}k",
                        "bufsize": f"{kbit_s * 4}k",
                        "profile": "main",
                        "threads": "2",
                    },
                )
                o.width, o.height, o.pix_fmt = ow, oh, "yuv420p"
                o.time_base = tb
                o.codec_context.time_base = tb
                if rotation_deg:
                    o.set_display_rotation(rotation_deg)
                last = None
                for frame in src.decode(s):
                    if frame.pts is None or frame.pts < 0 or frame.pts == last:
                        continue  # pre-roll before the clip's first frame (or a repeated time)
                    last = frame.pts
                    small = frame.reformat(width=ow, height=oh, format="yuv420p")
                    small.pts, small.time_base = frame.pts, tb
                    for pkt in o.encode(small):
                        out.mux(pkt)
                for pkt in o.encode():
                    out.mux(pkt)
                if last is None:
                    raise VideoError("no frame to preview")
    except av.FFmpegError as exc:
        raise VideoError(f"preview failed: {reason(exc)}") from exc
    return out_buf.getvalue()
