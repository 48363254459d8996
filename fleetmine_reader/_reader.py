"""The reader: manifest, epoch deal, shards fetched ahead, tar samples, resume state."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import random
import tarfile
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fleetmine_reader._errors import ReaderError, ShardFetchError, ShardIntegrityError, StateMismatchError
from fleetmine_reader._fetch import Fetcher, Shard, safe
from fleetmine_reader._state import ReaderState, Work, work
from fleetmine_reader._tar import Member, members

log = logging.getLogger("fleetmine_reader")

Held = Path | bytearray  # a fetched, verified shard: a file, or its bytes in memory
_DEAL = "deal-2"  # how shards and samples are ordered; a state of another way is refused
ON_BAD_SHARD = ("fail", "skip")
_PREALLOC_FRAMES = 2400  # 2 min at 20 fps: a longer clip grows its array by doubling


@dataclass(frozen=True)
class ReaderConfig:
    """How one reader walks a manifest. ``rank``/``world_size`` are the trainer's processes,
    ``worker``/``num_workers`` the data-loader workers inside one (from PyTorch:
    ``torch.utils.data.get_worker_info()``).

    ``prefetch``: shards fetched ahead of the one being read (at most ``prefetch + 1``
    shards held per worker: in memory when the manifest lists one at ``memory_mb`` or
    less, else spooled to ``cache_dir``);
    ``timeout_s``: the deadline of one fetch attempt, request to last byte;
    ``retries``: failed attempts of one shard before it is bad, waiting ``backoff_s``
    doubling between them; ``on_bad_shard``: ``"fail"`` raises, ``"skip"`` records it in
    the state (``ReaderState.skipped``) and goes on."""

    seed: int = 0
    rank: int = 0
    world_size: int = 1
    worker: int = 0
    num_workers: int = 1
    shuffle: bool = True
    verify: bool = True
    decode: bool = False
    cache_dir: str | None = None
    timeout_s: float = 60.0
    retries: int = 3
    backoff_s: float = 0.5
    prefetch: int = 2
    on_bad_shard: str = "fail"
    memory_mb: float = 64.0

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(
                f"rank {self.rank} of {self.world_size}, worker {self.worker} of {self.num_workers}: "
                "need 0 <= rank < world_size and 0 <= worker < num_workers"
            )
        if self.on_bad_shard not in ON_BAD_SHARD:
            raise ValueError(f"on_bad_shard {self.on_bad_shard!r}: one of {', '.join(ON_BAD_SHARD)}")
        if self.prefetch < 0 or self.retries < 0 or self.timeout_s <= 0 or self.backoff_s < 0:
            raise ValueError("need prefetch >= 0, retries >= 0, timeout_s > 0 and backoff_s >= 0")

    @property
    def split(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def splits(self) -> int:
        return self.world_size * self.num_workers


_KNOWN = ("url", "nsamples", "filesize", "sha256", "md5sum")


class _Shards:
    """The manifest's shardlist seen as :class:`Shard` records, built on access: a
    manifest of 10^6 shards is held once, as parsed."""

    def __init__(self, entries: list[dict[str, Any]]):
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> Shard:
        s = self.entries[i]
        return Shard(s["url"], int(s["nsamples"]), i, s.get("filesize"), s.get("sha256"), s.get("md5sum"))


def load_manifest(
    source: str | os.PathLike[str], token: str | None = None, timeout_s: float = 60.0
) -> dict[str, Any]:
    """A manifest from a URL (with the bearer ``token``) or a file; relative shard paths
    (a manifest as export wrote it, in the lake) resolve against its location."""
    src = os.fspath(source)
    if _is_http(src):
        req = urllib.request.Request(src, headers={"Authorization": f"Bearer {token}"} if token else {})
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            doc: dict[str, Any] = json.loads(r.read())
    else:
        doc = json.loads(Path(src.removeprefix("file://")).read_text())
    base = src if _is_http(src) else str(Path(src.removeprefix("file://")).resolve())
    for s in doc.get("shardlist", []):
        if "url" not in s and "path" in s:
            s["url"] = _join(base, s["path"])
        if _is_http(src) and not _is_http(str(s.get("url", ""))):  # a server never names our files
            raise ReaderError("a manifest fetched over HTTP may list only http(s) shard URLs")
    return doc


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _join(base: str, rel: str) -> str:
    if _is_http(base):
        return urllib.parse.urljoin(base, rel)
    return posixpath.join(posixpath.dirname(base), rel)


def _dataset(manifest: dict[str, Any], entries: list[dict[str, Any]], config: ReaderConfig) -> str:
    """The same samples in the same shards, read in the same order, whatever URLs
    (grants) a manifest carries; hashed entry by entry (no copy of the list)."""
    h = hashlib.sha256(json.dumps([_DEAL, manifest.get("dataset"), manifest.get("version")]).encode())
    for s in entries:
        ident = s.get("sha256") or s.get("md5sum") or str(s["url"]).split("?")[0]
        n, size = s["nsamples"], s.get("filesize")
        if type(n) is not int or n < 0 or not (size is None or (type(size) is int and 0 <= size < 2**50)):
            raise ValueError("nsamples and filesize: non-negative integers")
        h.update(f"{n}:{ident};".encode())
    h.update(json.dumps([config.seed, config.shuffle]).encode())
    return h.hexdigest()[:16]


class ShardReader:
    """Iterates a manifest's samples, one epoch at a time, resumably (see the package doc).

    ``refresh``: a function returning a fresh manifest of the same version (e.g.
    ``lambda: load_manifest(URL, token=TOKEN)``), called when a shard's grant is
    refused (expired); without it a refused grant stops the reader."""

    def __init__(
        self,
        manifest: dict[str, Any],
        config: ReaderConfig | None = None,
        refresh: Callable[[], dict[str, Any]] | None = None,
    ):
        self.config = c = config or ReaderConfig()
        entries = manifest.get("shardlist") or []
        if not isinstance(entries, list) or not entries:
            raise ReaderError("a manifest needs a shardlist of {url, nsamples, ...} entries")
        try:
            self.dataset = _dataset(manifest, entries, c)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ReaderError("a manifest needs a shardlist of {url, nsamples, ...} entries") from None
        self._manifest = manifest
        self.shards = _Shards(entries)
        self._refresh_source = refresh
        self._refresh_lock = threading.Lock()
        self._fetcher = Fetcher(
            c.timeout_s,
            c.retries,
            c.backoff_s,
            c.verify,
            c.cache_dir,
            int(c.memory_mb * 2**20),
            self._refreshed if refresh else None,
        )
        self._orders: dict[int, np.ndarray] = {}
        self.state: ReaderState | None = None  # after the last sample handed out or shard skipped

    # The deal.
    def order(self, epoch: int) -> np.ndarray:
        """Every shard's position, in ``epoch``'s visiting order (one array per epoch)."""
        got = self._orders.get(epoch)
        if got is None:
            n = len(self.shards)
            if self.config.shuffle:
                key = hashlib.sha256(f"{_DEAL}:{self.config.seed}:{epoch}".encode()).digest()
                got = np.random.default_rng(int.from_bytes(key[:8], "little")).permutation(n)
            else:
                got = np.arange(n)
            self._orders = {epoch: got}  # one epoch at a time
        return got

    def work(self, state: ReaderState | int = 0) -> Work:
        """This split's items ``(shard, first sample)`` in the epoch ``state`` is in, in
        visiting order (lazily: nothing per item is built)."""
        st = self.bind(ReaderState.start(state) if isinstance(state, int) else state)
        return work(self.order(st.epoch), st.deal, self.config.split, self.config.splits)

    def plan(self, epoch: int) -> list[int]:
        """This split's shards for a fresh ``epoch`` (positions in the shardlist), in order."""
        w = self.work(epoch)
        return [w[i][0] for i in range(len(w))]

    def num_samples(self, state: ReaderState | int = 0) -> int:
        """Samples this split yields from ``state`` (an int: a whole fresh epoch)."""
        st = self.bind(ReaderState.start(state) if isinstance(state, int) else state)
        w = self.work(st)
        total = 0
        for i in range(st.shard, len(w)):
            shard, start = w[i]
            total += self.shards[shard].nsamples - max(start, st.offset if i == st.shard else 0)
        return total

    def bind(self, state: ReaderState) -> ReaderState:
        """``state`` tied to this reader's split, after checking it belongs here."""
        c = self.config
        if state.dataset is not None and state.dataset != self.dataset:
            raise StateMismatchError("this state was saved by a reader of another manifest, seed or shuffle")
        if state.split is None:
            if state.shard or state.offset:
                raise StateMismatchError("a state not bound to a split must be at its start")
            return state.bound(c.split, c.splits, self.dataset)
        if (state.split, state.splits) != (c.split, c.splits):
            raise StateMismatchError(
                f"this state is split {state.split} of {state.splits}; this reader is split {c.split} of "
                f"{c.splits}: to change the world size, resume from ReaderState.resize(every split's state)"
            )
        return state

    # Reading.
    def iterate(self, state: ReaderState | int = 0) -> Iterator[dict[str, Any]]:
        """The samples of one epoch from ``state`` on (an int: that epoch from its start).

        Each sample is a dict: ``__key__``, one entry per file of the sample (``mp4``,
        ``json`` parsed, ``signals.npy`` loaded, ...); with ``decode``, per video also
        ``frames`` (RGB ``uint8 (N, H, W, 3)``) and ``pts_s`` (``<camera>.frames`` ... for
        a group's videos); and ``__state__``: the state just after this sample.
        ``self.state`` is always the state after the last sample or skipped shard (at
        the end: the epoch's last, with every skip).
        """
        st = self.bind(ReaderState.start(state) if isinstance(state, int) else state)
        items = self.work(st)
        if not 0 <= st.shard <= len(items):
            raise StateMismatchError(f"state item {st.shard}: this split has {len(items)}")
        self.state = st
        cancelled = threading.Event()
        pool = ThreadPoolExecutor(self.config.prefetch + 1, thread_name_prefix="fleetmine-prefetch")
        ahead: deque[tuple[int, Future[Held]]] = deque()
        nxt = st.shard
        try:
            for pos in range(st.shard, len(items)):
                while nxt < len(items) and (nxt == pos or nxt - pos <= self.config.prefetch):
                    shard = self.shards[items[nxt][0]]
                    ahead.append((nxt, pool.submit(self._fetch, shard, cancelled)))
                    nxt += 1
                _, fut = ahead.popleft()
                shard_pos, start = items[pos]
                shard = self.shards[shard_pos]
                skip = max(start, st.offset if pos == st.shard else 0)
                try:
                    local = fut.result()
                except ShardFetchError as exc:
                    if self.config.on_bad_shard != "skip":
                        raise
                    log.warning("skipping shard %d from sample %d: %s", shard_pos, skip, exc)
                    st = replace(st, shard=pos + 1, offset=0, skipped=(*st.skipped, (shard_pos, skip)))
                    self.state = st
                    continue
                try:
                    for sample in self._samples(local, shard, st.epoch, skip):
                        j = sample.pop("__index__") + 1
                        done = j == shard.nsamples
                        st = replace(st, shard=pos + 1 if done else pos, offset=0 if done else j)
                        sample["__state__"] = self.state = st
                        yield sample
                except ShardFetchError as exc:  # its bytes passed (or skipped) the digest, not the parse
                    if self.config.on_bad_shard != "skip":
                        raise
                    if st.shard == pos:  # not every sample of it went out
                        at = max(skip, st.offset)
                        log.warning("skipping shard %d from sample %d: %s", shard_pos, at, exc)
                        st = replace(st, skipped=(*st.skipped, (shard_pos, at)))
                finally:
                    self._release(local, shard)
                st = self.state = replace(st, shard=pos + 1, offset=0)  # also when it had none left
        finally:
            cancelled.set()
            for _, fut in ahead:
                fut.cancel()
            pool.shutdown(wait=True)
            for pos, fut in ahead:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._release(fut.result(), self.shards[items[pos][0]])

    def _samples(self, local: Held, shard: Shard, epoch: int, skip: int) -> Iterator[dict[str, Any]]:
        try:
            yield from self._parsed(local, shard, epoch, skip)
        except (tarfile.TarError, EOFError, ValueError, UnicodeDecodeError) as exc:  # unverified bytes
            raise ShardIntegrityError(
                f"{safe(shard.url)}: not a readable tar ({type(exc).__name__})"
            ) from None

    def _parsed(self, local: Held, shard: Shard, epoch: int, skip: int) -> Iterator[dict[str, Any]]:
        with members(local) as found:
            groups: dict[str, list[Member]] = {}
            for m in found:
                base = posixpath.basename(m[0])
                key = posixpath.join(posixpath.dirname(m[0]), base.split(".", 1)[0])
                groups.setdefault(key, []).append(m)
            keys = list(groups)
            if len(keys) != shard.nsamples:
                why = f"{safe(shard.url)}: {len(keys)} samples, manifest says {shard.nsamples}"
                raise ShardIntegrityError(why)
            if skip > len(keys):
                raise StateMismatchError(f"a state after sample {skip} of a shard of {len(keys)}")
            order = self._sample_order(epoch, shard.position, len(keys))
            for j in range(skip, len(order)):
                key = keys[order[j]]
                sample: dict[str, Any] = {"__key__": key, "__url__": safe(shard.url), "__index__": j}
                for name, read in groups[key]:
                    base = posixpath.basename(name)
                    ext = base.split(".", 1)[1] if "." in base else ""
                    sample[ext] = _decode(ext, read())
                    if self.config.decode and ext.endswith("mp4"):
                        stem = ext[: -len("mp4")]  # "" or "<camera>."
                        sample[stem + "frames"], sample[stem + "pts_s"] = decode_frames(sample[ext])
                yield sample

    def _sample_order(self, epoch: int, shard: int, n: int) -> list[int]:
        order = list(range(n))
        if self.config.shuffle:
            random.Random(f"{self.config.seed}:{epoch}:{shard}").shuffle(order)
        return order

    # Fetching: a file is read in place; a URL is downloaded to the cache dir.
    def _fetch(self, shard: Shard, cancelled: threading.Event) -> Held:
        if _is_http(shard.url):
            return self._fetcher.download(shard, cancelled)
        return self._fetcher.local(shard)

    def _refreshed(self, position: int, refused: str) -> str:
        """The shard's URL from a fresh manifest (once for all the threads that were
        refused the same grant)."""
        assert self._refresh_source is not None
        with self._refresh_lock:
            current = self.shards.entries[position]["url"]
            if current != refused:  # another thread refreshed already
                return str(current)
            try:
                doc = self._refresh_source()
            except (OSError, ValueError) as exc:  # urllib's errors are OSErrors, JSON's ValueErrors
                raise ReaderError(f"fetching a fresh manifest: {type(exc).__name__}: {exc}") from None
            entries = doc.get("shardlist") or []
            for s in entries:
                if "url" not in s and "path" in s:
                    raise ReaderError("a refreshed manifest needs absolute shard URLs (load_manifest)")
            if _dataset(doc, entries, self.config) != self.dataset:
                raise StateMismatchError("the refreshed manifest lists other shards than the one being read")
            self._manifest, self.shards = doc, _Shards(entries)
            fresh = str(entries[position]["url"])
            if fresh == refused:
                raise ReaderError(f"{safe(refused)}: refused, and a fresh manifest grants the same URL")
            return fresh

    def _release(self, local: Held, shard: Shard) -> None:
        if isinstance(local, Path) and _is_http(shard.url):
            local.unlink(missing_ok=True)


def _decode(ext: str, data: bytes) -> Any:
    if ext == "json" or ext.endswith(".json"):
        return json.loads(data)
    if ext.endswith("npy"):
        return np.load(io.BytesIO(data), allow_pickle=False)
    return data


def decode_frames(data: bytes, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of an mp4 as RGB ``uint8 (N, H, W, 3)``, and each frame's pts in
    seconds from the stream's first frame (presentation order). Frames are written into
    one array sized by the container's frame count (grown if it undercounts), not
    stacked from a list: stacking copied every frame a second time into fresh pages."""
    import av  # only here: a trainer that keeps the mp4 bytes never loads a decoder

    with av.open(io.BytesIO(data), mode="r") as c:
        vs = c.streams.video[stream]
        tb = float(vs.time_base or 0)
        out: np.ndarray | None = None
        pts: list[float] = []
        for fr in c.decode(vs):
            rgb = fr.to_ndarray(format="rgb24")
            if out is None:
                # the header's count sizes the array, within reason: it is the file's word
                out = np.empty((min(max(1, int(vs.frames or 0)), _PREALLOC_FRAMES), *rgb.shape), np.uint8)
            elif len(pts) == len(out):
                out = np.concatenate([out, np.empty_like(out)])
            out[len(pts)] = rgb
            pts.append(fr.pts * tb if fr.pts is not None else np.nan)
    if out is None:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0)
    t = np.asarray(pts)
    return out[: len(pts)], t - np.nanmin(t)
