"""``fleetmine serve`` as a person starts it: it says where it listens, and logs one line
per request without the query string (shard grants live there) or any header."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from api.auth import create_token
from storage import Lake, Settings
from tests.conftest import serve_process


def test_serve_prints_its_url_and_a_line_per_request_without_queries_or_tokens(tmp_path: Path) -> None:
    lake = Lake.from_settings(Settings(lake=str(tmp_path / "lake")))
    lake.create_tables(["tokens"])
    token = create_token(lake, "reader-1", "reader")
    log = tmp_path / "serve.log"
    secret = "g1.secretgrant.1.sig"
    with serve_process(lake.uri, log) as (base, _):
        assert httpx.get(f"{base}/v1/clips", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        refused = httpx.get(f"{base}/v1/shards/x/1/000000.tar", params={"grant": secret})
        assert refused.status_code in (403, 404)
        assert httpx.get(f"{base}/v1/nope%0Aforged 200").status_code == 404
        time.sleep(0.5)
    text = log.read_text(errors="replace")
    assert f"on {base} " in text and f"{base}/docs" in text, text
    lines = text.splitlines()
    assert any("GET /v1/health 200" in ln for ln in lines), text
    assert any("GET /v1/clips 200" in ln for ln in lines), text
    shard = [ln for ln in lines if "/v1/shards/x/1/000000.tar?…" in ln]
    assert shard and shard[0].split()[-3] in ("403", "404"), text
    assert secret not in text and token not in text, text  # no query string, no header
    assert not any(ln.startswith("forged") for ln in lines), text  # a %0A in a path is escaped
