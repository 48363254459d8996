"""A loopback shard server that misbehaves on purpose, for the reader's fault tests.

It serves ``/manifest.json`` (shard URLs carrying the current grant) and
``/shards/<name>?grant=g<N>`` with ``Range``, and fails a share of shard requests, drawn
from a seeded generator, in one of the ways a real store or catalog does: a connection
reset, a 503, the grant expiring (every later request with it is 403 until the client
fetches a fresh manifest), a body cut short, a flipped byte, a stall past the client's
deadline. ``bad`` shards always come back corrupt, ``gone`` ones are 404. It binds
127.0.0.1 only, stalls for a bounded time, and is stopped by :meth:`close`.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import socket
import struct
import tarfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

FAULTS = ("reset", "503", "expire", "cut", "flip", "stall")


def write_shards(root: Path, shards: int, per_shard: int, payload: int = 1500) -> dict[str, list[str]]:
    """``shards`` WebDataset tars of ``per_shard`` samples (``.json`` + ``.bin``); the
    keys of each."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    for i in range(shards):
        name = f"shard-{i:06d}.tar"
        keys = [f"s{i:06d}-{j:03d}" for j in range(per_shard)]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for k in keys:
                for ext, data in (
                    ("json", json.dumps({"key": k}).encode()),
                    ("bin", random.randbytes(payload)),
                ):
                    info = tarfile.TarInfo(f"{k}.{ext}")
                    info.size, info.mtime = len(data), 0
                    tar.addfile(info, io.BytesIO(data))
        (root / name).write_bytes(buf.getvalue())
        out[name] = keys
    return out


class FaultyServer:
    def __init__(
        self,
        root: Path,
        rate: float = 0.0,
        seed: int = 0,
        bad: frozenset[str] = frozenset(),
        gone: frozenset[str] = frozenset(),
        stall_s: float = 2.0,
        expiries: int = 3,
    ):
        self.root, self.rate, self.bad, self.gone, self.stall_s = root, rate, bad, gone, stall_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.grant = 1
        self.expiries = expiries  # grants that expire early (each one renews every reader's manifest)
        self.counts: Counter[str] = Counter()
        self.names = sorted(p.name for p in root.glob("*.tar"))
        self.digests = {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in self.names}
        self.samples = {n: len(self.keys(n)) for n in self.names}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms ACK wait

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                outer.handle(self)

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # 256 readers connect at once: no SYN dropped
            daemon_threads = True

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def manifest(self) -> dict[str, object]:
        with self.lock:
            grant = self.grant
        return {
            "dataset": "faulty",
            "version": 1,
            "shardlist": [
                {
                    "url": f"{self.base}/shards/{n}?grant=g{grant}",
                    "nsamples": self.samples[n],
                    "filesize": (self.root / n).stat().st_size,
                    "sha256": self.digests[n],
                }
                for n in self.names
            ],
        }

    def keys(self, name: str) -> list[str]:
        with tarfile.open(self.root / name) as tar:
            return sorted({m.name.split(".", 1)[0] for m in tar})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)

    # Serving.
    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        if url.path == "/manifest.json":
            self.count("manifest")
            self.send(h, 200, json.dumps(self.manifest()).encode(), "application/json")
            return
        name = url.path.removeprefix("/shards/")
        if name not in self.digests:
            self.send(h, 404, b"no such shard")
            return
        with self.lock:
            grant = f"g{self.grant}"
            fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
            if fault == "expire" and self.expiries > 0:
                self.expiries -= 1
                self.grant += 1  # this request's grant and every copy of it now refused
        if parse_qs(url.query).get("grant") != [grant] or f"g{self.grant}" != grant:
            self.count("403")
            self.send(h, 403, b"this shard grant has expired: fetch the manifest again")
            return
        if name in self.gone:
            self.count("404")
            self.send(h, 404, b"gone")
            return
        data = (self.root / name).read_bytes()
        if name in self.bad:
            data = _flip(data)
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        body = data[start:]
        if fault == "reset":
            self.count("reset")
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()  # RST: the client's read fails
            h.close_connection = True
            return
        if fault == "503":
            self.count("503")
            self.send(h, 503, b"busy")
            return
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/x-tar")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        self.count("range" if start else "200")
        if fault == "cut":
            self.count("cut")
            h.wfile.write(body[: len(body) // 2])
            h.close_connection = True
            return
        if fault == "flip":
            self.count("flip")
            body = _flip(body, at=len(body) // 3)  # not where a bad shard's flip is
        if fault == "stall":
            self.count("stall")
            h.wfile.write(body[: len(body) // 3])
            h.wfile.flush()
            time.sleep(self.stall_s)
            h.close_connection = True
            return
        h.wfile.write(body)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def send(self, h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "text/plain") -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def _flip(data: bytes, at: int | None = None) -> bytes:
    out = bytearray(data)
    out[len(out) // 2 if at is None else at] ^= 0xFF
    return bytes(out)
