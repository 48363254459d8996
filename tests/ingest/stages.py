"""Stages for fault-injection tests (importable by Ray workers: tests is a package)."""

from __future__ import annotations

import os

from ingest.discover import DriveSource
from ingest.drive import DriveIngest, DriveResult


class CrashingDriveIngest(DriveIngest):
    """Kills its worker process on one drive, as a segfault in a native decoder would."""

    crash_on = "rav4/2018-08-02--08-34-47--40"

    def process(self, src: DriveSource) -> DriveResult:
        if src.key == self.crash_on:
            os.abort()
        return super().process(src)
