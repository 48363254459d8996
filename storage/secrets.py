"""Secrets the lake keeps for itself (the key that signs shard grants): made once, on
first use, and read by every API replica of the lake alike.

The first writer wins: the file is created only if absent (a hard link on local disk,
a conditional put on S3), and everyone then reads what landed, so two replicas that
start at once still sign with the same key.
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

from storage.objectstore import reachable

if TYPE_CHECKING:
    from storage.lake import Lake

__all__ = ["lake_secret"]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def lake_secret(lake: Lake, name: str, nbytes: int = 32) -> bytes:
    """The lake's secret ``name`` (under ``<lake>/secrets/``), created on first use."""
    if not name or not set(name) <= _NAME_CHARS:
        raise ValueError(f"secret name {name!r}: lowercase letters, digits and '-'")
    loc = lake.root.join("secrets", name)
    fs = loc.fs
    with reachable(loc.uri):
        if not fs.exists(loc.path):
            fs.makedirs(lake.root.join("secrets").path, exist_ok=True)
            _create_if_absent(loc.path, secrets.token_bytes(nbytes), fs, loc.is_local)
        data = bytes(fs.cat_file(loc.path))
    if len(data) < 16:
        raise ValueError(f"{loc.uri}: a secret of {len(data)} bytes is too short")
    return data


def _create_if_absent(path: str, data: bytes, fs: object, local: bool) -> None:
    if local:
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return
    try:
        fs.pipe_file(path, data, mode="create")  # type: ignore[attr-defined]
    except (FileExistsError, OSError) as exc:
        if isinstance(exc, FileExistsError) or fs.exists(path):  # type: ignore[attr-defined]
            return
        raise
