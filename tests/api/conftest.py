"""One live catalog server per test package: uvicorn on a free loopback port over a synth lake."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.app import create_app
from api.auth import create_token
from ingest.synth.fleet import SynthConfig
from jobs.embed_job import run_embed
from jobs.ingest_job import run_ingest
from jobs.mine_job import run_mine
from storage import Lake, Settings
from tests.api.cdp import Browser
from tests.conftest import LOCAL, free_port, synthesized

CALIBRATION = {
    "intrinsics": {"fx": 400.0, "fy": 400.0, "cx": 320.0, "cy": 180.0, "distortion": [0.01, -0.002, 0, 0]},
    "extrinsics": {"translation_m": [1.6, 0.0, 1.4], "rotation_quat_wxyz": [0.5, -0.5, 0.5, -0.5]},
}
"""What the first synth drive's drive.json says of its front camera."""


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Lake, dict[str, str]]]:
    root = tmp_path_factory.mktemp("api")
    synthesized(root / "raw", SynthConfig(vehicles=1, drives=2, minutes=1, seed=3, rare_rate=0.2, workers=2))
    calibrated = sorted((root / "raw").glob("*/*/drive.json"))[0]  # one drive says how its camera sits
    doc = json.loads(calibrated.read_text())
    doc["cameras"]["front"].update(CALIBRATION)
    calibrated.write_text(json.dumps(doc))
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    run_embed(settings, runner=LOCAL)
    run_mine(settings, runner=LOCAL)
    lake = Lake.from_settings(settings)
    tokens = {role: create_token(lake, f"{role}-1", role) for role in ("reader", "curator", "operator")}
    with serve(settings) as base:
        yield base, lake, tokens


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The catalog over ``settings`` on uvicorn, a free loopback port; yields its base URL."""
    port = free_port()
    srv = uvicorn.Server(
        # proxy_headers off, as `fleetmine serve` runs it: forwarded headers count only from
        # Settings.trusted_proxies (api.proxies), never from loopback by uvicorn's default
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", proxy_headers=False
        )
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


def session_cookie(base: str, token: str) -> dict[str, str]:
    """The web pages' cookie for ``token``: a session from signing in, as a browser gets it."""
    from api.sessions import COOKIE

    r = httpx.post(f"{base}/ui/login", data={"token": token, "next": "/ui/"}, headers={"Origin": base})
    assert r.status_code == 303, r.text[:300]
    return {COOKIE: r.cookies[COOKIE]}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium with a profile of the test's own, closed after it."""
    b = Browser(tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()
