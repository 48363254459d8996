"""The catalog over real HTTP: uvicorn on a loopback port, a synth-fleet lake, tokens, shards."""

from __future__ import annotations

import importlib
import io
import json
import time

import av
import httpx
import numpy as np
import webdataset as wds

from api.auth import create_token, revoke_token
from storage import Lake
from storage.reads import read_clip_signals
from storage.tables.signals import SIGNAL_COLUMNS
from tests.api.conftest import auth


def test_dataset_through_the_api_streams_with_webdataset(server: tuple[str, Lake, dict[str, str]]) -> None:
    base, lake, tokens = server
    clips = httpx.get(f"{base}/v1/clips", params={"limit": 3}, headers=auth(tokens["reader"])).json()
    assert clips["count"] == 3 and clips["next_cursor"]
    more = httpx.get(
        f"{base}/v1/clips",
        params={"limit": 3, "cursor": clips["next_cursor"]},
        headers=auth(tokens["reader"]),
    ).json()
    assert {c["clip_id"] for c in more["data"]}.isdisjoint(c["clip_id"] for c in clips["data"])
    example = clips["data"][0]["clip_id"]
    body = {
        "name": "hard-braking",
        "query": {
            "events": ["hard_brake", "creep", "evasive_steer"],
            "similar_to": {"clip_ids": [example], "k": 8},
            "dedup": True,
        },
        "shard_mb": 1,
    }
    created = httpx.post(f"{base}/v1/datasets", json=body, headers=auth(tokens["curator"]), timeout=120)
    assert created.status_code == 201, created.text
    version = created.json()
    assert version["state"] == "exported" and version["clip_count"] >= 1
    manifest_url = version["manifest_url"]
    first = httpx.get(manifest_url, headers=auth(tokens["reader"]))
    second = httpx.get(manifest_url, headers=auth(tokens["reader"]))
    assert first.status_code == 200 and first.content == second.content
    assert first.headers["cache-control"].startswith("private, max-age=")  # its URLs carry grants
    etag = first.headers["etag"]
    assert (
        httpx.get(manifest_url, headers={**auth(tokens["reader"]), "If-None-Match": etag}).status_code == 304
    )
    manifest = first.json()
    assert manifest["__kind__"] == "wids-shard-index-v1" and manifest["num_samples"] == version["clip_count"]
    urls = [s["url"] for s in manifest["shardlist"]]
    gopen = importlib.import_module("webdataset.gopen")

    def with_token(url: str, mode: str = "rb", bufsize: int = 8192) -> object:
        cmd = ["curl", "-f", "-s", "-L", "-H", f"Authorization: Bearer {tokens['reader']}", url]
        return gopen.Pipe(cmd, mode=mode, bufsize=bufsize, ignore_status=[141, 23])

    plain_http = gopen.gopen_schemes["http"]
    gopen.gopen_schemes["http"] = with_token
    try:
        samples = list(wds.WebDataset(urls, shardshuffle=False))
    finally:  # other tests read shards by their presigned, header-free URLs
        gopen.gopen_schemes["http"] = plain_http
    assert len(samples) == manifest["num_samples"]
    for s in samples:
        meta = json.loads(s["json"])
        assert meta["clip_id"] == s["__key__"] and "." not in s["__key__"]
        with av.open(io.BytesIO(s["mp4"])) as c:
            assert sum(1 for _ in c.decode(video=0)) > 0
        sig = np.load(io.BytesIO(s["signals.npy"]))
        clip = lake.read("clips", where=f"clip_id = '{meta['clip_id']}'").to_pylist()[0]
        np.testing.assert_array_equal(sig, read_clip_signals(lake, clip))
        assert sig.shape[1] == len(SIGNAL_COLUMNS) and sig.shape[0] >= 190
    # Range on a shard
    shard = httpx.get(urls[0], headers={**auth(tokens["reader"]), "Range": "bytes=0-511"})
    assert shard.status_code == 206 and len(shard.content) == 512
    assert shard.headers["content-range"].startswith("bytes 0-511/")
    # A new version leaves the old manifest and shards untouched.
    again = httpx.post(
        f"{base}/v1/datasets",
        json={**body, "query": {"events": ["hard_brake"]}},
        headers=auth(tokens["curator"]),
        timeout=120,
    )
    assert again.json()["version"] == version["version"] + 1
    assert httpx.get(manifest_url, headers=auth(tokens["reader"])).content == first.content


def test_auth_roles_and_paths(server: tuple[str, Lake, dict[str, str]]) -> None:
    base, lake, tokens = server
    assert httpx.get(f"{base}/v1/health").status_code == 200
    for path in ("/v1/clips", "/v1/drives", "/v1/datasets", "/v1/jobs", "/v1/mining/corner-cases"):
        r = httpx.get(f"{base}{path}")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = httpx.post(f"{base}/v1/datasets", json={"name": "x"}, headers=auth(tokens["reader"]))
    assert r.status_code == 403 and "curator" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/v1/jobs", json={"kind": "mine"}, headers=auth(tokens["reader"]))
    assert r.status_code == 403
    temp = create_token(lake, "temp", "reader")
    assert httpx.get(f"{base}/v1/drives", headers=auth(temp)).status_code == 200
    revoke_token(lake, "temp")
    assert httpx.get(f"{base}/v1/drives", headers=auth(temp)).status_code == 401
    for bad in (
        "/v1/shards/hard-braking/1/..%2F..%2Fclips",
        "/v1/shards/../../etc/passwd",
        "/v1/shards/nope/1/000000.tar",
        "/v1/datasets/nope/versions/1/manifest",
        "/v1/clips/20990101-nope",
    ):
        r = httpx.get(f"{base}{bad}", headers=auth(tokens["reader"]))
        assert r.status_code == 404, (bad, r.status_code, r.text)
        assert "Traceback" not in r.text


def test_corner_cases_search_and_jobs(server: tuple[str, Lake, dict[str, str]]) -> None:
    base, _, tokens = server
    top = httpx.get(f"{base}/v1/mining/corner-cases", params={"k": 5}, headers=auth(tokens["reader"])).json()
    assert top["count"] == 5 and [r["novelty"] for r in top["data"]] == sorted(
        (r["novelty"] for r in top["data"]), reverse=True
    )
    near = httpx.post(
        f"{base}/v1/search/similar",
        json={"clip_id": top["data"][0]["clip_id"], "k": 3},
        headers=auth(tokens["reader"]),
    ).json()
    assert near["count"] == 3 and all(n["clip_id"] != top["data"][0]["clip_id"] for n in near["data"])
    # conftest mined every clip: a default (incremental) run would find none new
    job = httpx.post(
        f"{base}/v1/jobs", json={"kind": "mine", "params": {"full": True}}, headers=auth(tokens["operator"])
    )
    assert job.status_code == 202
    assert job.json()["status"] == "submitted"
    for _ in range(600):
        state = httpx.get(f"{base}/v1/jobs/{job.json()['id']}", headers=auth(tokens["reader"])).json()
        if state["status"] not in ("submitted", "running"):
            break
        time.sleep(0.2)
    assert state["status"] == "succeeded", state
    assert state["result"]["scored"] > 0
    assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "fleetmine"
    assert httpx.get(f"{base}/metrics").status_code == 401  # a token, as Prometheus sends one
    metrics = httpx.get(f"{base}/metrics", headers=auth(tokens["reader"]))
    assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
    assert "python_info" in metrics.text and "fleetmine_index_vectors{" in metrics.text  # searched above
