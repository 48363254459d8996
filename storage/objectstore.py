"""Object store access through fsspec: a location is a URI plus storage options.

deltalake takes ``storage_options`` in object_store's spelling (``AWS_ENDPOINT_URL``
...); s3fs takes its own keyword arguments. This module is the one place that
translates, so both libraries see the same credentials and endpoint.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fsspec
import pyarrow.fs as pafs

from storage.errors import StorageUnavailableError

__all__ = ["Location", "reachable"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextmanager
def reachable(uri: str) -> Iterator[None]:
    """Store calls on ``uri``; an ``OSError`` inside becomes :class:`StorageUnavailableError`.

    deltalake reports an object store that does not answer (refused connection,
    unknown endpoint, denied credentials) as a bare ``OSError``; callers of the
    lake get one error that says which location did not answer. A missing file
    (``FileNotFoundError``) is not the store's absence and passes through.
    """
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        chain = [ln.strip(" \t↳") for ln in _ANSI.sub("", str(exc)).splitlines()]
        why = ": ".join(ln for ln in chain if ln)[:500] or type(exc).__name__
        raise StorageUnavailableError(f"cannot reach {uri}: {why}") from exc


def _s3fs_kwargs(opts: dict[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if opts.get("AWS_ENDPOINT_URL"):
        kwargs["endpoint_url"] = opts["AWS_ENDPOINT_URL"]
    if opts.get("AWS_ACCESS_KEY_ID"):
        kwargs["key"] = opts["AWS_ACCESS_KEY_ID"]
    if opts.get("AWS_SECRET_ACCESS_KEY"):
        kwargs["secret"] = opts["AWS_SECRET_ACCESS_KEY"]
    if opts.get("AWS_SESSION_TOKEN"):
        kwargs["token"] = opts["AWS_SESSION_TOKEN"]
    if opts.get("AWS_REGION"):
        client["region_name"] = opts["AWS_REGION"]
    if client:
        kwargs["client_kwargs"] = client
    return kwargs


@dataclass(frozen=True)
class Location:
    """A URI (local absolute path or ``scheme://...``) plus its storage options."""

    uri: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri or self.uri.startswith("file://")

    @property
    def protocol(self) -> str:
        return "file" if self.is_local else self.uri.split("://", 1)[0]

    @property
    def path(self) -> str:
        """The URI without its scheme, as fsspec and pyarrow filesystems want it."""
        return self.uri.removeprefix("file://") if self.is_local else self.uri.split("://", 1)[1]

    def join(self, *parts: str) -> Location:
        return Location(posixpath.join(self.uri, *parts), self.storage_options)

    @cached_property
    def fs(self) -> fsspec.AbstractFileSystem:
        if self.protocol == "s3":
            return fsspec.filesystem("s3", **_s3fs_kwargs(self.storage_options))
        return fsspec.filesystem(self.protocol)

    def presigned_url(self, expires_s: int) -> str | None:
        """A URL anyone can GET (and Range-read) for ``expires_s``, signed with our
        credentials; None where the store has no such thing (local disk)."""
        if self.protocol != "s3":
            return None
        return str(self.fs.url(self.path, expires=int(expires_s)))

    @cached_property
    def arrow_fs(self) -> pafs.FileSystem:
        """A pyarrow filesystem: native for local disk, fsspec-backed otherwise."""
        if self.is_local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def __getstate__(self) -> dict[str, Any]:
        # Filesystems hold sockets and threads; rebuild them on the other side.
        return {"uri": self.uri, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "uri", state["uri"])
        object.__setattr__(self, "storage_options", state["storage_options"])
