"""Which files under the lake root may be served: the rule the API and exports apply.

Beside its tables the lake holds files it wrote (clip videos, thumbnails, exported
datasets), named in rows by URI. Serving a file by a URI a row holds must never serve a
file outside the lake: a URI that climbs out (``<root>/../x``), or a symlink planted
under the root that points at a file of the host. This is a rule about paths, not
tables, so it lives apart from :class:`storage.lake.Lake`, whose ``locate`` and
``confined`` apply it.
"""

from __future__ import annotations

import os

from storage.objectstore import Location

__all__ = ["confined", "locate"]


def locate(root: Location, uri: str) -> Location | None:
    """A file under ``root`` (a clip's video, a thumbnail), with the root's storage
    options; None for a URI outside it."""
    base = root.uri.rstrip("/")
    if not uri.startswith(base + "/"):
        return None
    rel = uri[len(base) + 1 :]
    if any(part in ("..", ".", "") for part in rel.split("/")):  # "<root>/../x" is outside
        return None
    loc = root.join(rel)
    return loc if confined(root, loc) else None


def confined(root: Location, loc: Location) -> bool:
    """Whether serving ``loc`` serves a file ``root`` holds: on local disk, no part of its
    path below the root is a symlink (the lake never writes one; one planted there could
    point at any file of the host) and it resolves inside the root. An object store has
    no symlinks."""
    if not (loc.is_local and root.is_local):
        return True
    top = os.path.abspath(root.path)
    path = os.path.abspath(loc.path)
    if not path.startswith(top.rstrip("/") + "/"):
        return False
    walked = top
    for part in path[len(top) :].strip("/").split("/"):
        walked = os.path.join(walked, part)
        if os.path.islink(walked):
            return False
    real_root = os.path.realpath(top)
    return os.path.realpath(path).startswith(real_root.rstrip("/") + "/")
