"""Named fault-injection points, so tests can kill a real process at an exact step.

``FLEETMINE_FAULT=<point>[,<point>...]`` makes the process SIGKILL itself when it
reaches one of the named points: no ``finally``, no atexit, exactly what a node
losing power or the OOM killer does. ``<point>@<seconds>`` pauses there instead, so
two processes are sure to be inside the same window at once. Unset (always,
outside tests) a point costs one environment lookup. The points:

- ``commit.before:<table>`` data files written, the Delta commit not yet tried
- ``commit.after:<table>``  the commit landed, the caller not yet told
- ``ingest.planned``        an ingest chose its run number and drives, not yet claimed
- ``claim.checked:<table>`` a claim saw its run number free, its commit not yet tried
- ``ingest.before_record``  every table of an ingest run committed, ``runs`` not yet updated
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["ENV", "fault_point"]

ENV = "FLEETMINE_FAULT"


def fault_point(name: str) -> None:
    points = os.environ.get(ENV)
    if not points:
        return
    for p in points.split(","):
        point, _, pause = p.partition("@")
        if point == name:
            if pause:
                time.sleep(float(pause))
            else:
                os.kill(os.getpid(), signal.SIGKILL)
