"""The shared time grid of a drive: every camera's clips cut on the same windows.

A drive's cameras start recording at different moments (and drive.json may give
each an ``offset_s``). Windows are ``clip_seconds`` long and anchored at the
moment every camera is recording (the latest camera start), extending backwards
for cameras that started earlier. Window ``k`` of every camera covers the same
wall-clock interval, so its clips form one clip group (``clips.group_id``); a
camera's clip starts on its first frame inside the window, within one frame of
the others. Signals are cut on the same absolute times, so they align with all.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from ingest.video import ClipCut, VideoProbe

__all__ = ["CameraTrack", "TimeGrid"]


@dataclass(frozen=True)
class CameraTrack:
    """One camera's probe placed on the drive's clock: its first frame is at ``start``."""

    name: str
    path: str
    start: dt.datetime
    probe: VideoProbe


@dataclass(frozen=True)
class TimeGrid:
    origin: dt.datetime
    clip_seconds: float
    min_clip_s: float = 1.0

    @classmethod
    def for_cameras(cls, tracks: list[CameraTrack], clip_seconds: float, min_clip_s: float = 1.0) -> TimeGrid:
        return cls(max(t.start for t in tracks), clip_seconds, min_clip_s)

    def window_start(self, k: int) -> dt.datetime:
        return self.origin + dt.timedelta(seconds=k * self.clip_seconds)

    def cuts(self, track: CameraTrack) -> list[ClipCut]:
        """The camera's clips (see :meth:`windows`)."""
        return [cut for cut, kept in self.windows(track) if kept]

    def windows(self, track: CameraTrack) -> list[tuple[ClipCut, bool]]:
        """The camera's windows that hold frames, each with whether it is a clip;
        ``index`` is the window number.

        A first or last window shorter than ``min_clip_s`` on this camera is not (its
        frames are in no clip, which the drive's warnings say); a window inside the stream
        is kept however short: after a gap in the stream. ``end_s`` of the camera's last
        window is its last frame's end.
        """
        p = track.probe
        lead = (track.start - self.origin).total_seconds()  # < 0: started before the origin
        first = math.floor(lead / self.clip_seconds + 1e-9)
        last = math.ceil((lead + p.duration_s) / self.clip_seconds - 1e-9)
        out: list[tuple[ClipCut, bool]] = []
        for k in range(first, last):
            lo = max(k * self.clip_seconds - lead, 0.0)
            hi = min((k + 1) * self.clip_seconds - lead, p.duration_s)
            start = p.first_frame_at_or_after(lo)
            if start is None or start >= hi:
                continue
            end = p.first_frame_at_or_after(hi) if hi < p.duration_s else None
            end = p.duration_s if end is None else end
            # Only the camera's first and last windows may be too short to keep; one inside
            # the stream is short only after a gap in it (a route's missing segment, a
            # segment timed at its minute), and its frames must land somewhere
            edge = k in (first, last - 1)
            out.append((ClipCut(k, start, end), end - start >= self.min_clip_s - 1e-9 or not edge))
        return out
