"""Fetching one shard over HTTP(S): held in memory (up to ``ReaderConfig.memory_mb``) or
spooled to a file while its digest is computed on the way, retried with backoff, resumed
by ``Range`` after a break, within a deadline.

A shard's samples are handed out only after its bytes passed the check (the whole shard
is held by then: a sample of a shard that later fails its digest is never released);
fetching ahead (``ReaderConfig.prefetch``) overlaps this with the consumer. What fails:

- connection refused or reset, a 5xx or 429, a body cut short, a stall past the
  deadline: retried after ``backoff_s * 2**n`` (capped at 10 s, with jitter), resuming
  from the bytes already on disk when the server answers the ``Range`` with 206 (a 200
  restarts the shard); ``retries`` such failures make the shard bad;
- a digest or size mismatch: the file is dropped and fetched again from its start;
- 401/403 (an expired or revoked grant): with a ``refresh`` (a fresh manifest), the
  shard's new URL is tried, keeping the bytes; without one, or when the fresh manifest
  carries the very URL that was refused, the reader stops (:class:`ReaderError`): a
  refused token is the job's problem, not the shard's;
- 404 or another 4xx: the shard is bad at once.

Every attempt has a deadline: ``timeout_s`` from its request to its last byte (each read
waits at most what is left of it), so a server that stalls or drips cannot hang a rank.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetmine_reader._errors import ReaderError, ShardFetchError, ShardIntegrityError

_CHUNK = 1 << 20
_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class Shard:
    url: str
    nsamples: int
    position: int  # in the manifest's shardlist
    filesize: int | None = None
    sha256: str | None = None
    md5sum: str | None = None

    def hasher(self) -> Any:
        return hashlib.sha256() if self.sha256 else hashlib.md5() if self.md5sum else None


def safe(url: str) -> str:
    """A URL fit for a message: without its query (a grant is a credential)."""
    return url.split("?", 1)[0]


class _Retry(Exception):
    """A failure worth another try; ``keep``: the bytes on disk are good so far."""

    def __init__(self, why: str, keep: bool = True):
        super().__init__(why)
        self.keep = keep


class _Refused(Exception):
    pass


class _Bad(Exception):
    pass


@dataclass
class Fetcher:
    """Fetches shards of one reader; ``refresh(position)`` gives the shard's URL from a
    fresh manifest (None: no way to get one)."""

    timeout_s: float
    retries: int
    backoff_s: float
    verify: bool
    cache_dir: str | None
    memory_bytes: int = 0
    refresh: Callable[[int, str], str] | None = None

    def local(self, shard: Shard) -> Path:
        path = Path(shard.url.removeprefix("file://"))
        if not path.is_file():
            raise ShardFetchError(f"{path}: no such shard file")
        if self.verify:
            h, size = shard.hasher(), 0
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    size += len(chunk)
                    if h is not None:
                        h.update(chunk)
            _check(shard, size, h)
        return path

    def download(self, shard: Shard, cancelled: threading.Event | None = None) -> Path | bytearray:
        """The shard's verified bytes: in memory when the manifest says it is at most
        ``memory_bytes`` (one buffer of its size: a growing ``BytesIO`` copied a 64 MB
        shard ~8 times over), else spooled to a file in ``cache_dir``."""
        if shard.filesize is not None and not 0 <= int(shard.filesize) < 2**50:
            raise ShardIntegrityError(
                f"{safe(shard.url)}: the manifest's filesize {shard.filesize} is not a size"
            )
        if shard.filesize is not None and int(shard.filesize) <= self.memory_bytes:
            buf = _Buffer(int(shard.filesize))
            self._into(shard, buf, cancelled)
            return buf.data
        cache = Path(self.cache_dir or Path(tempfile.gettempdir()) / "fleetmine-reader")
        cache.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="shard-", suffix=".tar", dir=cache)
        try:
            with os.fdopen(fd, "w+b") as out:
                self._into(shard, out, cancelled)
            return Path(name)
        except BaseException:
            os.unlink(name)
            raise

    def _into(self, shard: Shard, out: Any, cancelled: threading.Event | None) -> None:
        url, spool = shard.url, _Spool(shard, out, self.verify)
        failures = refreshes = 0
        rng = random.Random()
        while True:
            if cancelled is not None and cancelled.is_set():
                raise ShardFetchError(f"{safe(url)}: cancelled")
            try:
                if shard.filesize is None or spool.got < int(
                    shard.filesize
                ):  # else: all here, a range would 416
                    self._get(url, spool, cancelled)
                _check(shard, spool.got, spool.h)
                return
            except _Refused as exc:
                # A fresh manifest that hands out the refused grant again (refresh raises) or
                # grants that keep being refused: the token is revoked, not the grant expired.
                if self.refresh is None or refreshes > 10 * (self.retries + 1):
                    why = f"{safe(url)}: {exc} (a 403 on a grant: fetch the manifest again)"
                    raise ReaderError(why) from None
                refreshes += 1
                url = self.refresh(shard.position, url)
                continue
            except _Bad as exc:
                raise ShardFetchError(f"{safe(url)}: {exc}") from None
            except ShardIntegrityError as exc:
                last: Exception = exc
                spool.restart()
            except _Retry as exc:
                last = ShardFetchError(f"{safe(url)}: {exc}")
                if not exc.keep:
                    spool.restart()
            failures += 1
            if failures > self.retries:
                raise last
            wait = min(10.0, self.backoff_s * 2 ** (failures - 1)) * rng.uniform(0.5, 1.0)
            if cancelled is not None and cancelled.wait(wait):  # the consumer left: stop at once
                raise ShardFetchError(f"{safe(url)}: cancelled")
            if cancelled is None:
                time.sleep(wait)

    def _get(self, url: str, spool: _Spool, cancelled: threading.Event | None = None) -> None:
        """One request: the shard's bytes from ``spool.got`` on, appended to the spool."""
        deadline = time.monotonic() + self.timeout_s
        req = urllib.request.Request(url, headers={"Range": f"bytes={spool.got}-"} if spool.got else {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                if spool.got and r.status == 206:
                    m = _RANGE.fullmatch(r.headers.get("Content-Range", ""))
                    if m is None or int(m.group(1)) != spool.got:
                        raise _Retry("the server answered the range with other bytes", keep=False)
                elif r.status == 200:
                    spool.restart()  # no range (or none asked): from the start
                else:
                    raise _Retry(f"HTTP {r.status}")
                sock = _socket(r)
                while True:
                    left = deadline - time.monotonic()
                    if cancelled is not None and cancelled.is_set():
                        raise _Bad("cancelled")
                    if left <= 0:
                        raise _Retry(f"no whole body within {self.timeout_s:g} s ({spool.got} bytes)")
                    if sock is not None:
                        sock.settimeout(left)
                    chunk = r.read1(_CHUNK)
                    if not chunk:
                        break
                    spool.write(chunk)
                if r.length:  # Content-Length not reached: the connection ended early
                    raise _Retry(f"the body was cut short at {spool.got} bytes")
        except urllib.error.HTTPError as exc:
            code = exc.code
            exc.close()
            if code in (401, 403):
                raise _Refused(f"HTTP {code}") from None
            if code == 416:
                raise _Retry("HTTP 416 on a range", keep=False) from None
            if code in (408, 429) or code >= 500:
                raise _Retry(f"HTTP {code}") from None
            raise _Bad(f"HTTP {code}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise _Retry(f"{type(exc).__name__}: {why}") from None


class _Buffer:
    """A file-like target of exactly the manifest's size (a longer body is refused by
    :class:`_Spool` before it gets here)."""

    def __init__(self, size: int):
        self.data = bytearray(size)
        self.pos = 0

    def seek(self, pos: int) -> None:
        self.pos = pos

    def truncate(self) -> None:
        pass  # what is past pos is overwritten or never read

    def write(self, chunk: bytes) -> None:
        end = self.pos + len(chunk)
        if end > len(self.data):
            raise ShardIntegrityError(f"over {len(self.data)} bytes")
        self.data[self.pos : end] = chunk
        self.pos = end


class _Spool:
    """A shard's bytes so far: on disk, and hashed on the way in."""

    def __init__(self, shard: Shard, out: Any, verify: bool):
        self.shard, self.out, self.verify = shard, out, verify
        self.restart()

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.got = 0
        self.h = self.shard.hasher() if self.verify else None  # no digest asked: none computed

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        if self.h is not None:
            self.h.update(chunk)
        self.got += len(chunk)
        if self.shard.filesize is not None and self.got > int(self.shard.filesize):
            raise ShardIntegrityError(f"{safe(self.shard.url)}: over {self.shard.filesize} bytes")


def _socket(r: Any) -> Any:
    """The response's socket, so that each read waits only what the deadline leaves."""
    raw = getattr(getattr(r, "fp", None), "raw", None)
    return getattr(raw, "_sock", None)


def _check(shard: Shard, size: int, h: Any) -> None:
    if shard.filesize is not None and size != int(shard.filesize):
        raise ShardIntegrityError(f"{safe(shard.url)}: {size} bytes, manifest says {shard.filesize}")
    want = shard.sha256 or shard.md5sum
    if h is not None and h.hexdigest() != want:
        raise ShardIntegrityError(f"{safe(shard.url)}: {h.name} {h.hexdigest()}, manifest says {want}")
