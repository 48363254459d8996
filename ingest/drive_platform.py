"""The platform a drive's ``drive.json`` names, confined to what the drive may reach.

``"platform"`` is a shipped platform's name (``toyota_rav4_2017``), never a path.
``"dbc"`` + ``"signals"`` is the drive's own car: ``dbc`` names a file of the drive
folder (as discovery found it, so never through a link out of the raw root; on S3 an
object under the drive, read with the raw tree's credentials) or a file in one of the
configured ``Settings.dbc_dirs``. Anything else (an absolute path, ``..``, a URI, ``~``)
is refused with a message that says what was wrong without echoing the value, and the
drive's CAN is kept raw. The DBC's bytes are parsed here, never opened by path elsewhere.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingest._reasons import reason
from ingest.drive_files import DriveFiles, LinkedOut
from ingest.platform import NAME, Platform, dbc_text, load_platform, parse_platform, shipped_platforms
from storage.errors import ConfigError

__all__ = ["drive_platform", "relative_name"]

_MAX_DBC_BYTES = 64 << 20


def relative_name(ref: object, what: str) -> str:
    """``ref`` as a plain relative path (``car.dbc``, ``dbc/car.dbc``), or ConfigError."""
    if not isinstance(ref, str) or not ref or len(ref) > 255:
        raise ConfigError(f"drive.json {what} must be a file name relative to the drive folder")
    bad = (
        ref.startswith(("/", "~"))
        or ":" in ref
        or "\\" in ref
        or any(ord(c) < 32 or c == "\x7f" for c in ref)
        or any(p in ("..", "") for p in ref.split("/"))
    )
    if bad:
        raise ConfigError(
            f"drive.json {what} must be a file of the drive folder "
            "(no absolute path, '..', URI or '~'); refused"
        )
    return posixpath.normpath(ref)


def _drive_file(files: DriveFiles, rel: str) -> bytes | None:
    """A file of the drive folder as discovery listed it (links out of the root are not)."""
    if rel not in files.src.other:
        return None
    path = posixpath.join(files.src.folder, rel)
    try:
        size = files.size(path)
    except LinkedOut:
        raise ConfigError(f"drive.json dbc {rel} is a symbolic link out of the raw root; refused") from None
    return _read(lambda: files.read(path), size, rel)


def _dir_file(dirs: Sequence[str], rel: str) -> bytes | None:
    """A file of a configured DBC directory, its real path inside that directory."""
    for d in dirs:
        base = os.path.realpath(d)
        path = os.path.realpath(os.path.join(base, rel))
        if path.startswith(base.rstrip("/") + "/") and os.path.isfile(path):
            return _read(Path(path).read_bytes, os.path.getsize(path), rel)
    return None


def _read(read: Callable[[], Any], size: int, rel: str) -> bytes:
    if size > _MAX_DBC_BYTES:
        raise ConfigError(f"DBC {rel} is larger than {_MAX_DBC_BYTES >> 20} MiB; refused")
    try:
        return bytes(read())
    except OSError as exc:
        raise ConfigError(f"DBC {rel} unreadable ({reason(exc)})") from None


def drive_platform(files: DriveFiles, doc: dict[str, Any], dbc_dirs: Sequence[str]) -> Platform | None:
    """The drive's platform, None if drive.json names none; ConfigError says what was refused."""
    if "platform" in doc:
        name = doc["platform"]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ConfigError(
                "drive.json platform must be a shipped platform name, not a path; "
                f"shipped: {shipped_platforms()}"
            )
        return load_platform(name)
    if "dbc" not in doc:
        return None
    rel = relative_name(doc["dbc"], "dbc")
    data = _drive_file(files, rel)
    if data is None:
        data = _dir_file(dbc_dirs, rel)
    if data is None:
        where = " or the configured DBC directories" if dbc_dirs else ""
        raise ConfigError(f"drive.json dbc {rel} is not a file of the drive folder{where}")
    label = doc.get("platform_name")
    name = label if isinstance(label, str) and NAME.fullmatch(label) else "custom"
    if name in shipped_platforms():  # a drive's own DBC never passes for a shipped platform
        name = f"custom_{name}"[:64]
    return parse_platform({"name": name, "dbc": rel, "signals": doc.get("signals", {})}, dbc_text(data))
