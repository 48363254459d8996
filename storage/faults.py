"""Named fault-injection points, so tests can kill a real process at an exact step.

``FLEETMINE_FAULT=<point>[,<point>...]`` makes the process SIGKILL itself when it
reaches one of the named points: no ``finally``, no atexit, exactly what a node
losing power or the OOM killer does. ``<point>@<seconds>`` pauses there instead, so
two processes are sure to be inside the same window at once. ``<point>=spin`` loops
there forever and ``<point>=alloc`` allocates without bound, as a hostile input makes a
decoder do. Unset (always, outside tests) a point costs one environment lookup. The points:

- ``commit.before:<table>`` data files written, the Delta commit not yet tried
- ``commit.after:<table>``  the commit landed, the caller not yet told
- ``ingest.planned``        an ingest chose its run number and drives, not yet claimed
- ``claim.checked:<table>`` a claim saw its run number free, its commit not yet tried
- ``ingest.before_record``  every table of an ingest run committed, ``runs`` not yet updated
- ``page.planned``          a keyset page read its days from the Delta log, not yet their rows
- ``ingest.drive``          a drive stage began decoding a drive
- ``video.decode:<vehicle>/<drive>`` a clip of that drive about to be cut and decoded
- ``embed.batch``           an embedding stage began a work item
- ``mine.started``          a mining stage began its corpus
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
        p, _, behave = p.partition("=")
        point, _, pause = p.partition("@")
        if point != name:
            continue
        if behave == "spin":
            while True:
                pass
        if behave == "alloc":
            hoard = []
            while True:
                hoard.append(b"\x01" * (64 << 20))  # written, so resident: not lazily mapped zeros
        if pause:
            time.sleep(float(pause))
        else:
            os.kill(os.getpid(), signal.SIGKILL)
