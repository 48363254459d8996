"""A drive's files, read only through here, each confined to the raw root when read.

Discovery lists a drive's files (:mod:`ingest.discover`); everything the ingest then
takes from them (drive.json, the DBC it names, CAN logs, videos, their times) goes
through the one :class:`DriveFiles` a drive's stage builds. On a local tree a file whose
real path (symlinks resolved) lies outside the raw root is not read: it is checked when
it is read, since a link may appear after discovery; the root's own real path is
resolved once (:class:`RawRoot`, which discovery applies too). A file refused so raises
:class:`LinkedOut` before a byte of it is read, and the caller says so in the words of
:func:`linked_out`, so no file a link reaches is ever quoted.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from storage.objectstore import Location

if TYPE_CHECKING:
    from ingest.discover import DriveSource

__all__ = ["DriveFiles", "LinkedOut", "RawRoot", "linked_out"]


def linked_out(what: str) -> str:
    """The warning for a file not read because its real path lies outside the raw root."""
    return f"{what}: skipped, a symbolic link out of the raw root (links out are not followed)"


class LinkedOut(OSError):
    """A file of the drive whose real path lies outside the raw root: not read.

    An ``OSError``: a caller that does not tell it apart reports an unreadable file,
    never its content."""


class RawRoot:
    """The raw tree's root as the confinement rule sees it: on a local tree its real
    path; an object store has no symbolic links, so every key under it is inside."""

    def __init__(self, raw: Location):
        self._real = os.path.realpath(raw.path.rstrip("/") or "/") if raw.is_local else None

    def holds(self, path: str) -> bool:
        """Whether ``path`` (on a local tree: its real path, links resolved) is inside."""
        if self._real is None:
            return True
        real = os.path.realpath(path)
        return real == self._real or real.startswith(self._real.rstrip("/") + "/")


class DriveFiles:
    """One drive's files on the raw tree's filesystem (``src``: what discovery found)."""

    def __init__(self, src: DriveSource):
        self.src = src
        self.fs: Any = src.raw.fs
        self._root = RawRoot(src.raw)

    def confined(self, path: str) -> bool:
        return self._root.holds(path)

    def _check(self, path: str) -> None:
        if not self.confined(path):
            raise LinkedOut("a symbolic link out of the raw root")

    def read(self, path: str, end: int | None = None) -> bytes:
        """The file's bytes (its first ``end`` bytes if given); :class:`LinkedOut`, OSError."""
        self._check(path)
        return bytes(self.fs.cat_file(path) if end is None else self.fs.cat_file(path, start=0, end=end))

    def size(self, path: str) -> int:
        self._check(path)
        return int(self.fs.size(path) or 0)

    def opener(self, path: str) -> Callable[[], BinaryIO]:
        """Opens the file each time it is called (a video is read more than once)."""
        self._check(path)
        fs = self.fs
        return lambda: fs.open(path, "rb")

    def mtimes(self, paths: list[str]) -> list[dt.datetime]:
        """The files' modification times, those a filesystem gives (UTC)."""
        out = []
        for path in paths:
            try:
                self._check(path)
                info = self.fs.info(path)
            except OSError:
                continue
            stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
            if isinstance(stamp, dt.datetime):
                out.append(stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC))
            elif isinstance(stamp, int | float):
                try:
                    out.append(dt.datetime.fromtimestamp(float(stamp), dt.UTC))
                except (OverflowError, OSError, ValueError):  # a file dated past year 9999
                    continue
        return out
