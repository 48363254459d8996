"""An HTTP proxy in front of moto that loses the acknowledgement of one request.

It forwards every request to the upstream S3 endpoint unchanged (signatures stay
valid: the Host header is passed through) and relays the answer, except for the
first request that ``drop(method, path)`` selects: that one reaches moto and lands,
then the proxy closes the client's connection without a byte of the response,
exactly what a client sees when a load balancer or a NAT drops the connection
after the server acted. The client must run in another process: deltalake holds
the GIL while it waits on the store, so a client in the proxy's process deadlocks it.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class LostAck:
    upstream: str
    drop: Callable[[str, str], bool]
    dropped: list[str] = field(default_factory=list)
    forwarded: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, method: str, path: str) -> bool:
        """Whether to drop this request's answer: the first one ``drop`` selects, once."""
        with self.lock:
            self.forwarded += 1
            if not self.dropped and self.drop(method, path):
                self.dropped.append(f"{method} {path}")
                return True
            return False


def _body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("transfer-encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(out)
            out += handler.rfile.read(size)
            handler.rfile.readline()
    n = int(handler.headers.get("content-length") or 0)
    return handler.rfile.read(n) if n else b""


def _handler(state: LostAck) -> type[BaseHTTPRequestHandler]:
    up = urlsplit(state.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _forward(self) -> None:
            body = _body(self)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"expect"}}
            headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            if state.take(self.command, self.path) and resp.status < 300:
                # The request landed upstream; the client never hears of it.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response_only(resp.status, resp.reason)
            head = self.command == "HEAD"  # its Content-Length is the object's, with no body
            for k, v in resp.getheaders():
                if k.lower() not in HOP and (head or k.lower() != "content-length"):
                    self.send_header(k, v)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


@contextlib.contextmanager
def lost_ack_proxy(upstream: str, drop: Callable[[str, str], bool]) -> Iterator[tuple[str, LostAck]]:
    """Yields the proxy's endpoint and its state; the server thread stops on exit."""
    state = LostAck(upstream, drop)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def first_commit_of(table: str) -> Callable[[str, str], bool]:
    """Selects the first PUT of a commit (version >= 1) to ``table``'s ``_delta_log``."""
    pattern = re.compile(rf"/{re.escape(table)}/_delta_log/(\d{{20}})\.json(\?|$)")

    def select(method: str, path: str) -> bool:
        m = pattern.search(path)
        return method == "PUT" and m is not None and int(m.group(1)) >= 1

    return select
