"""The reader: manifest, epoch plan, shard fetch + sha256, tar samples, resume state."""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import random
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 1 << 20


class ReaderError(Exception):
    """The reader cannot go on (a shard that cannot be fetched, a malformed manifest)."""


class ShardIntegrityError(ReaderError):
    """A shard's bytes do not have the size or sha256 the manifest lists."""


class StateMismatchError(ReaderError):
    """A saved state that belongs to another manifest, seed or split."""


@dataclass(frozen=True)
class ReaderConfig:
    """How one reader walks a manifest. ``rank``/``world_size`` are the trainer's processes,
    ``worker``/``num_workers`` the data-loader workers inside one (from PyTorch:
    ``torch.utils.data.get_worker_info()``)."""

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

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.num_workers):
            raise ValueError(
                f"rank {self.rank} of {self.world_size}, worker {self.worker} of {self.num_workers}: "
                "need 0 <= rank < world_size and 0 <= worker < num_workers"
            )

    @property
    def split(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def splits(self) -> int:
        return self.world_size * self.num_workers


@dataclass(frozen=True)
class ReaderState:
    """Where a reader is: in ``epoch``, the ``shard``-th shard of its split's order, after
    ``offset`` of that shard's samples. ``fingerprint`` ties it to a manifest, seed and split."""

    epoch: int
    shard: int = 0
    offset: int = 0
    fingerprint: str | None = None

    @classmethod
    def start(cls, epoch: int) -> ReaderState:
        return cls(epoch=int(epoch))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ReaderState:
        return cls(**json.loads(text))


@dataclass
class _Shard:
    url: str
    nsamples: int
    filesize: int | None = None
    sha256: str | None = None
    md5sum: str | None = None
    position: int = 0  # in the manifest's shardlist
    extra: dict[str, Any] = field(default_factory=dict)


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
    return doc


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _join(base: str, rel: str) -> str:
    if _is_http(base):
        return urllib.parse.urljoin(base, rel)
    return posixpath.join(posixpath.dirname(base), rel)


class ShardReader:
    """Iterates a manifest's samples, one epoch at a time, resumably (see the package doc)."""

    def __init__(self, manifest: dict[str, Any], config: ReaderConfig | None = None):
        self.config = config or ReaderConfig()
        entries = manifest.get("shardlist") or []
        if not entries or any("url" not in s or "nsamples" not in s for s in entries):
            raise ReaderError("a manifest needs a shardlist of {url, nsamples, ...} entries")
        known = {"url", "nsamples", "filesize", "sha256", "md5sum"}
        self.shards = [
            _Shard(
                url=s["url"],
                nsamples=int(s["nsamples"]),
                filesize=s.get("filesize"),
                sha256=s.get("sha256"),
                md5sum=s.get("md5sum"),
                position=i,
                extra={k: v for k, v in s.items() if k not in known},
            )
            for i, s in enumerate(entries)
        ]
        # The same samples in the same shards, whatever URLs (grants) a manifest carries.
        ident = [
            manifest.get("dataset"),
            manifest.get("version"),
            [[s.nsamples, s.sha256 or s.md5sum or s.url.split("?")[0]] for s in self.shards],
        ]
        c = self.config
        ident += [c.seed, c.shuffle, c.split, c.splits]
        self.fingerprint = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]

    def plan(self, epoch: int) -> list[int]:
        """This split's shards for ``epoch`` (positions in the shardlist), in visiting order."""
        order = list(range(len(self.shards)))
        if self.config.shuffle:
            random.Random(f"{self.config.seed}:{epoch}").shuffle(order)
        return order[self.config.split :: self.config.splits]

    def num_samples(self, epoch: int) -> int:
        """Samples this split yields in ``epoch`` (splits differ by up to a shard's worth)."""
        return sum(self.shards[i].nsamples for i in self.plan(epoch))

    def _sample_order(self, epoch: int, shard: int, n: int) -> list[int]:
        order = list(range(n))
        if self.config.shuffle:
            random.Random(f"{self.config.seed}:{epoch}:{shard}").shuffle(order)
        return order

    def iterate(self, state: ReaderState | int = 0) -> Iterator[dict[str, Any]]:
        """The samples of one epoch from ``state`` on (an int: that epoch from its start).

        Each sample is a dict: ``__key__``, one entry per file of the sample (``mp4``,
        ``json`` parsed, ``signals.npy`` loaded, ...); with ``decode``, per video also
        ``frames`` (RGB ``uint8 (N, H, W, 3)``) and ``pts_s`` (``<camera>.frames`` ... for
        a group's videos); and ``__state__``: the state just after this sample.
        """
        st = ReaderState.start(state) if isinstance(state, int) else state
        if st.fingerprint is not None and st.fingerprint != self.fingerprint:
            raise StateMismatchError(
                "this state was saved by a reader of another manifest, seed, shuffle or split"
            )
        plan = self.plan(st.epoch)
        if st.shard > len(plan) or st.shard < 0:
            raise StateMismatchError(f"state shard {st.shard}: this split has {len(plan)} shards")
        pool = ThreadPoolExecutor(1, thread_name_prefix="fleetmine-prefetch")
        pending: Future[Path] | None = None
        try:
            for pos in range(st.shard, len(plan)):
                shard = self.shards[plan[pos]]
                local = (pending or pool.submit(self._fetch, shard)).result()
                pending = (
                    pool.submit(self._fetch, self.shards[plan[pos + 1]]) if pos + 1 < len(plan) else None
                )
                try:
                    skip = st.offset if pos == st.shard else 0
                    yield from self._samples(local, shard, st.epoch, pos, skip)
                finally:
                    self._release(local, shard)
        finally:
            if pending is not None:
                pending.cancel()
                if pending.done() and not pending.cancelled() and pending.exception() is None:
                    self._release(pending.result(), self.shards[plan[-1]])
            pool.shutdown(wait=True)

    def _samples(
        self, local: Path, shard: _Shard, epoch: int, pos: int, skip: int
    ) -> Iterator[dict[str, Any]]:
        with tarfile.open(local, "r:") as tar:
            groups: dict[str, list[tarfile.TarInfo]] = {}
            for m in tar.getmembers():
                if m.isfile():
                    base = posixpath.basename(m.name)
                    key = posixpath.join(posixpath.dirname(m.name), base.split(".", 1)[0])
                    groups.setdefault(key, []).append(m)
            keys = list(groups)
            if len(keys) != shard.nsamples:
                raise ShardIntegrityError(
                    f"{_safe(shard.url)}: {len(keys)} samples, manifest says {shard.nsamples}"
                )
            order = self._sample_order(epoch, shard.position, len(keys))
            for j in range(skip, len(order)):
                key = keys[order[j]]
                sample: dict[str, Any] = {"__key__": key, "__url__": _safe(shard.url)}
                for m in groups[key]:
                    ext = posixpath.basename(m.name).split(".", 1)[1] if "." in m.name else ""
                    f = tar.extractfile(m)
                    assert f is not None
                    sample[ext] = _decode(ext, f.read())
                    if self.config.decode and ext.endswith("mp4"):
                        stem = ext[: -len("mp4")]  # "" or "<camera>."
                        sample[stem + "frames"], sample[stem + "pts_s"] = decode_frames(sample[ext])
                sample["__state__"] = ReaderState(epoch, pos, j + 1, self.fingerprint)
                if j + 1 == len(order):  # the next shard's start: the same point, said plainly
                    sample["__state__"] = ReaderState(epoch, pos + 1, 0, self.fingerprint)
                yield sample

    # Fetching: a file is read in place; a URL is downloaded to the cache dir.
    def _fetch(self, shard: _Shard) -> Path:
        url = shard.url
        if not _is_http(url):
            path = Path(url.removeprefix("file://"))
            if self.config.verify:
                with open(path, "rb") as f:
                    self._check(shard, f)
            return path
        cache = Path(self.config.cache_dir or Path(tempfile.gettempdir()) / "fleetmine-reader")
        cache.mkdir(parents=True, exist_ok=True)
        last: Exception | None = None
        for attempt in range(max(1, self.config.retries)):
            fd, tmp = tempfile.mkstemp(prefix="shard-", suffix=".tar", dir=cache)
            try:
                with os.fdopen(fd, "w+b") as out:
                    with urllib.request.urlopen(url, timeout=self.config.timeout_s) as r:
                        shutil.copyfileobj(r, out, _CHUNK)
                    out.seek(0)
                    if self.config.verify:
                        self._check(shard, out)
                return Path(tmp)
            except urllib.error.HTTPError as exc:
                os.unlink(tmp)
                if exc.code in (401, 403, 404):
                    why = exc.read()[:300].decode(errors="replace")
                    raise ReaderError(
                        f"{_safe(url)}: HTTP {exc.code} {why} (a 403 on a grant: fetch the manifest again)"
                    ) from None
                last = exc
            except (urllib.error.URLError, OSError) as exc:
                os.unlink(tmp)
                last = exc
            except BaseException:
                os.unlink(tmp)
                raise
            time.sleep(min(10.0, 0.5 * 2**attempt))
        raise ReaderError(f"{_safe(url)}: {last}")

    def _check(self, shard: _Shard, f: Any) -> None:
        h = hashlib.sha256() if shard.sha256 else hashlib.md5() if shard.md5sum else None
        if h is None:
            return
        size = 0
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        want = shard.sha256 or shard.md5sum
        if shard.filesize is not None and size != int(shard.filesize):
            raise ShardIntegrityError(f"{_safe(shard.url)}: {size} bytes, manifest says {shard.filesize}")
        if h.hexdigest() != want:
            raise ShardIntegrityError(f"{_safe(shard.url)}: {h.name} {h.hexdigest()}, manifest says {want}")

    def _release(self, local: Path, shard: _Shard) -> None:
        if _is_http(shard.url):
            local.unlink(missing_ok=True)


def _safe(url: str) -> str:
    """A URL fit for a message: without its query (a grant is a credential)."""
    return url.split("?", 1)[0]


def _decode(ext: str, data: bytes) -> Any:
    if ext == "json" or ext.endswith(".json"):
        return json.loads(data)
    if ext.endswith("npy"):
        return np.load(io.BytesIO(data), allow_pickle=False)
    return data


def decode_frames(data: bytes, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of an mp4 as RGB ``uint8 (N, H, W, 3)``, and each frame's pts in
    seconds from the stream's first frame (presentation order)."""
    import av  # only here: a trainer that keeps the mp4 bytes never loads a decoder

    with av.open(io.BytesIO(data), mode="r") as c:
        vs = c.streams.video[stream]
        tb = float(vs.time_base or 0)
        frames, pts = [], []
        for fr in c.decode(vs):
            frames.append(fr.to_ndarray(format="rgb24"))
            pts.append(fr.pts * tb if fr.pts is not None else np.nan)
    if not frames:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0)
    t = np.asarray(pts)
    return np.stack(frames), t - np.nanmin(t)
