"""Every branch of the exception tree answers its status as ``{"error": {code, message}}``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.auth import create_token
from storage import Lake, Settings, errors
from tests.api.conftest import auth
from tests.conftest import free_port


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    port = free_port()
    srv = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", proxy_headers=False)
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{base}/v1/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield base
    finally:
        srv.should_exit = True
        thread.join(10)


TREE = [
    ("ConfigError", 400, "bad_request"),
    ("NotFoundError", 404, "not_found"),
    ("TableNotFoundError", 404, "not_found"),
    ("ConflictError", 409, "conflict"),
    ("CommitError", 409, "conflict"),
    ("LeaseHeldError", 409, "conflict"),
    ("StorageUnavailableError", 503, "unavailable"),
    ("IndexUnavailableError", 503, "unavailable"),
    ("StorageError", 500, "internal_error"),
    ("SchemaError", 500, "internal_error"),
    ("JobError", 500, "internal_error"),
    ("InputError", 500, "internal_error"),
]


def test_each_error_class_has_its_status(tmp_path: Path) -> None:
    app = create_app(Settings(lake=str(tmp_path / "lake")), auth=False)

    @app.get("/raise/{name}")
    def boom(name: str) -> None:
        raise getattr(errors, name)(f"a {name} happened")

    assert {name for name, _, _ in TREE} == set(errors.__all__) - {"FleetError"}
    with _serve(app) as base:
        for name, status, code in TREE:
            r = httpx.get(f"{base}/raise/{name}")
            assert r.status_code == status, (name, r.text)
            said = r.json()["error"]
            assert said["code"] == code, (name, said)
            if status < 500:
                assert said["message"] == f"a {name} happened"
            else:  # a 5xx names no internals (engine errors carry SQL and paths): the log does
                assert "happened" not in said["message"], (name, said)
        assert httpx.get(f"{base}/raise/StorageUnavailableError").headers["retry-after"] == "5"


def test_missing_things_are_404(tmp_path: Path) -> None:
    app = create_app(Settings(lake=str(tmp_path / "lake")), auth=False)
    with _serve(app) as base:
        r = httpx.get(f"{base}/v1/datasets/nope/versions/3")
        assert r.status_code == 404
        assert r.json()["error"] == {"code": "not_found", "message": "no dataset nope version 3"}
        for clip in ("20180801-nope", "20991399-no-such-day", "nodate"):
            r = httpx.get(f"{base}/v1/clips/{clip}")
            assert r.status_code == 404 and r.json()["error"]["message"] == f"no clip {clip}"


@contextmanager
def _moto() -> Iterator[tuple[subprocess.Popen[bytes], str, dict[str, str]]]:
    """A moto S3 server of this test's own, so the test can take it away: (server, bucket, options)."""
    import boto3

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(endpoint, timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        bucket = f"fleet-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        opts = {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            "max_retries": "1",  # object_store's: an absent store fails in ms, not minutes
        }
        yield proc, bucket, opts
    finally:
        proc.kill()
        proc.wait(10)


def test_a_store_that_does_not_answer_is_503() -> None:
    with _moto() as (proc, bucket, opts):
        settings = Settings(lake=f"s3://{bucket}/lake", storage_options=opts)
        app = create_app(settings)
        token = create_token(Lake.from_settings(settings), "r", "reader")
        with _serve(app) as base:
            assert httpx.get(f"{base}/v1/drives", headers=auth(token)).status_code == 200
            proc.kill()
            proc.wait(10)
            for path in ("/v1/drives", "/v1/clips", "/v1/clips/20180801-x", "/v1/datasets"):
                r = httpx.get(f"{base}{path}", headers=auth(token), timeout=60)
                assert r.status_code == 503, (path, r.text)
                body = r.json()["error"]
                # says what to do; the store's address and its client's error stay in the log
                assert body["code"] == "unavailable" and "retry" in body["message"]
                assert bucket not in body["message"] and "127.0.0.1" not in body["message"]
                assert "Traceback" not in r.text
