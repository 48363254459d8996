"""Where a job that arrives over the API may read raw trees and write exports.

A person's own CLI run may name any path or bucket; a job an API caller submits acts
with the server's (or the cluster's) rights, so its ``raw`` is read only under
``Settings.raw_roots`` and its ``out`` written only under ``Settings.export_roots``
(none configured: only under the lake). A location is compared after normalising it:
a local path is made absolute with ``..`` and symlinks resolved; a remote URI (``s3://``)
is compared component by component (scheme, bucket, then each key part), and one
holding ``.``, ``..`` or empty parts is refused rather than guessed at, so
``s3://lake-bucket-evil`` is not under ``s3://lake-bucket``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from storage.config import Settings
from storage.errors import ConfigError

__all__ = ["confine", "is_under"]

_REMOTE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


def _parts(uri: str) -> tuple[str, ...] | None:
    """The location as comparable parts (scheme first); None when it cannot be trusted."""
    if "\x00" in uri or "::" in uri:  # fsspec chains URLs at "::"
        return None
    m = _REMOTE.match(uri)
    if m and m.group(1).lower() != "file":
        scheme, rest = m.group(1).lower(), m.group(2).rstrip("/")
        parts = rest.split("/")
        if not parts[0] or any(p in ("", ".", "..") for p in parts):
            return None
        return (scheme, *parts)
    path = uri.removeprefix("file://")
    if "://" in path or not os.path.isabs(path):
        return None  # relative to what? the API's cwd is not the job's
    real = os.path.realpath(path)  # `..` and symlinks of the part that exists
    return ("file", *[p for p in real.split(os.sep) if p])


def is_under(uri: str, roots: Iterable[str]) -> bool:
    """Whether ``uri`` names a location inside one of ``roots`` (or a root itself)."""
    where = _parts(uri)
    if where is None:
        return False
    for root in roots:
        base = _parts(root)
        if base is not None and where[: len(base)] == base:
            return True
    return False


def confine(req: Any, settings: Settings) -> None:
    """Refuse (ConfigError) a request whose paths leave the configured roots.

    For jobs that arrive over the API; the message names the field, not the value.
    """
    raw = getattr(req, "raw", None)
    if isinstance(raw, str) and not is_under(raw, settings.raw_roots or (settings.lake,)):
        where = "FLEETMINE_RAW_ROOTS" if settings.raw_roots else "the lake"
        raise ConfigError(f"raw: not an absolute location under {where}")
    out = getattr(req, "out", None)
    if isinstance(out, str) and not is_under(out, settings.export_roots or (settings.lake,)):
        where = "FLEETMINE_EXPORT_ROOTS" if settings.export_roots else "the lake"
        raise ConfigError(f"out: not an absolute location under {where}")
