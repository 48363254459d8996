"""Dense frames around a trigger's moment come from the clip's own mp4."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from ingest.look_closer import dense_frames, wants_closer_look
from ingest.video import VideoError
from storage.config import LookCloser


def _clip(seconds: float = 6.0, fps: int = 20) -> bytes:
    """An mp4 whose frame k shows a white bar at column 4k (so a frame tells its time)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=fps, options={"g": str(fps), "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 320, 180, "yuv420p"
        for k in range(int(seconds * fps)):
            img = np.zeros((180, 320, 3), np.uint8)
            img[:, (4 * k) % 316 : (4 * k) % 316 + 4] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = k
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return buf.getvalue()


def test_dense_frames_cover_the_window_around_the_moment_evenly() -> None:
    cfg = LookCloser(frames=8, before_s=0.5, after_s=2.0)
    frames = dense_frames(_clip(), 2.7, cfg)
    times = [f.t_s for f in frames]
    assert len(frames) == 8 and times == sorted(times)
    assert times[0] == pytest.approx(2.2, abs=0.06) and times[-1] == pytest.approx(4.7, abs=0.06)
    assert all(f.jpeg[:2] == b"\xff\xd8" and min(f.width, f.height) == 224 for f in frames)
    late = dense_frames(_clip(), 5.5, cfg)  # the window runs past the clip: clamped to it
    assert late[-1].t_s < 6.0 and len(late) >= 2


def test_only_triggered_clips_are_looked_at_and_a_window_without_frames_is_an_error() -> None:
    cfg = LookCloser()
    assert wants_closer_look(["sudden_stop"], 3.0, cfg)
    assert not wants_closer_look(["sharp_turn"], 3.0, cfg) and not wants_closer_look(["creep"], None, cfg)
    assert not wants_closer_look(["hard_brake"], 1.0, LookCloser(events=()))
    with pytest.raises(VideoError):
        dense_frames(_clip(seconds=2.0), 9.0, cfg)
