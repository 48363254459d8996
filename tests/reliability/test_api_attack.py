"""The catalog API under attack, on uvicorn over loopback: oversized and malformed bodies,
unknown routes, path traversal (``..`` and percent-encoded), token guessing, and where
tokens could leak (logs, answers).

Requests go out through ``http.client`` so paths reach the server byte for byte (httpx
would normalise ``..`` away before sending).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from api.app import create_app
from api.auth import create_token
from storage import Lake, Settings
from tests.conftest import free_port
from tests.reliability.conftest import Figures

SENTINEL = "fleetmine-sentinel-outside-the-lake"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + " " + " ".join(map(str, record.args or ())))


@contextmanager
def catalog(tmp_path: Path, **overrides: object) -> Iterator[tuple[int, dict[str, str], _Records]]:
    """A catalog over an empty lake beside a file it must never serve; access log on."""
    (tmp_path / "secret.txt").write_text(SENTINEL)
    settings = Settings(lake=str(tmp_path / "lake"), **overrides)
    lake = Lake.from_settings(settings)
    lake.create_tables()
    tokens = {role: create_token(lake, f"{role}-1", role) for role in ("reader", "curator", "operator")}
    records = _Records()
    loggers = [logging.getLogger(n) for n in ("", "uvicorn", "uvicorn.access", "uvicorn.error", "api")]
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="info", proxy_headers=False
        )
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    for lg in loggers:  # after uvicorn configured its loggers
        lg.addHandler(records)
    try:
        yield port, tokens, records
    finally:
        for lg in loggers:
            lg.removeHandler(records)
        srv.should_exit = True
        thread.join(10)


def call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def test_bodies_routes_and_traversal(tmp_path: Path, figures: Figures) -> None:
    with catalog(tmp_path, max_body_bytes=4096) as (port, tokens, _):
        cur = {**bearer(tokens["curator"]), "Content-Type": "application/json"}
        cases: dict[str, tuple[int, int]] = {}

        big = json.dumps({"name": "x", "query": {"vehicles": ["v" * 10_000]}}).encode()
        status, _, body = call(port, "POST", "/v1/datasets", big, cur)
        cases["declared oversized body"] = (status, 413)

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # chunked: no length declared
        conn.putrequest("POST", "/v1/datasets")
        for k, v in {**cur, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(k, v)
        conn.endheaders()
        for _ in range(10):
            conn.send(b"400\r\n" + b"x" * 0x400 + b"\r\n")
        conn.send(b"0\r\n\r\n")
        r = conn.getresponse()
        cases["streamed oversized body"] = (r.status, 413)
        conn.close()

        for name, raw in {
            "malformed JSON": b'{"name": "x", "query": ',
            "JSON of the wrong shape": b'["name", "x"]',
            "unknown field": b'{"name": "x", "query": {"nope": 1}}',
            "not UTF-8": b'{"name": "\xff\xfe"}',
        }.items():
            status, _, body = call(port, "POST", "/v1/datasets", raw, cur)
            cases[name] = (status, 422)
            assert error_code(body) == "invalid_request", body

        for path in ("/v1/nope", "/v2/clips", "/v1/clips/x/y/z", "/admin", "/.env"):
            status, _, body = call(port, "GET", path, headers=bearer(tokens["reader"]))
            cases[f"unknown route {path}"] = (status, 404)
            assert error_code(body) == "not_found"

        traversal = [
            "/v1/../secret.txt",
            "/v1/clips/../../secret.txt",
            "/v1/clips/..%2F..%2Fsecret.txt/video.mp4",
            "/v1/clips/%2e%2e%2f%2e%2e%2fsecret.txt/thumbnail.jpg",
            "/v1/shards/..%2F..%2F..%2Fsecret.txt/1/000000.tar",
            "/v1/shards/x/1/..%2F..%2F..%2F..%2Fsecret.txt",
            "/v1/shards/x/1/%2e%2e%252f%2e%2e%252fsecret.txt",
            "/v1/datasets/..%2F..%2F/versions/1/manifest",
            "/v1/drives/..%5C..%5Csecret.txt",
            "/ui/clips/..%2F..%2F..%2Fsecret.txt",
            "/ui/../secret.txt",
        ]
        for path in traversal:
            status, _, body = call(port, "GET", path, headers=bearer(tokens["reader"]))
            cases[f"traversal {path}"] = (status, 404)
            assert SENTINEL.encode() not in body, path
    wrong = {k: v for k, v in cases.items() if v[0] != v[1]}
    figures(
        group="API under attack",
        fault="oversized / malformed bodies, unknown routes, `..` and percent-encoded traversal",
        cases=len(cases),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"{len(cases) - len(wrong)}/{len(cases)} answered as expected; no byte outside the lake",
    )
    assert not wrong, wrong


def test_wrong_tokens_are_rate_limited_and_no_token_is_logged_or_echoed(
    tmp_path: Path, figures: Figures
) -> None:
    with catalog(tmp_path, auth_max_failures=5, auth_failure_window_s=2.0) as (port, tokens, records):
        answers: list[bytes] = []
        good = tokens["reader"]
        status, _, body = call(port, "GET", "/v1/drives", headers=bearer(good))
        assert status == 200
        answers.append(body)
        guesses = [good[:-1] + ("A" if good[-1] != "A" else "B"), "fm_" + "x" * 43, good + "x"]
        statuses = []
        for i in range(8):
            status, headers, body = call(port, "GET", "/v1/drives", headers=bearer(guesses[i % 3]))
            statuses.append(status)
            answers.append(body + json.dumps(headers).encode())
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3, statuses
        status, _, body = call(port, "GET", "/v1/drives", headers=bearer(good))
        assert status == 200, body  # a live token is never refused, however many guesses came first
        status, headers, _ = call(port, "GET", "/v1/drives", headers=bearer("fm_" + "y" * 43))
        assert status == 429 and int(headers["retry-after"]) >= 1  # a guesser waits
        time.sleep(2.1)
        status, _, body = call(port, "GET", "/v1/drives", headers=bearer("fm_" + "y" * 43))
        assert status == 401, body  # the window passed
        for path in ("/v1/nope", "/v1/clips/x", "/v1/datasets"):
            answers.append(call(port, "GET", path, headers=bearer(good))[2])
        answers.append(call(port, "POST", "/v1/datasets", b"{", {**bearer(tokens["curator"])})[2])
        time.sleep(0.2)  # the access log line of the last request
    secrets = [good, tokens["curator"], *guesses]
    leaked = [s for s in secrets for line in records.lines if s in line]
    echoed = [s for s in secrets for a in answers if s.encode() in a]
    figures(
        group="API under attack",
        fault="8 wrong tokens from one client (limit 5 per 2 s); logs and answers searched for tokens",
        cases=8 + len(answers),
        rows_lost=0,
        rows_duplicated=0,
        outcome=f"401 x5 then 429 x3 (Retry-After), a live token 200 throughout, 401 after the window; "
        f"{len(records.lines)} log lines, "
        f"{len(leaked)} with a token; {len(echoed)} answers echoing one",
    )
    assert records.lines, "the access log was not captured: the check would prove nothing"
    assert not leaked and not echoed
