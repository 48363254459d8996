"""Shard URLs any loader can fetch: grants in the manifest's URLs, for one version, expiring,
revoked with the token that minted them; ``wids`` and plain ``wds.WebDataset`` with no header."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import webdataset as wds
import wids

from api.auth import create_token, revoke_token
from api.grants import Grants
from jobs.export_job import export_version
from mining.datasets.curation import DatasetQuery, create_version
from storage import Lake, Settings
from tests.api.conftest import auth, serve
from tests.conftest import LOCAL


@pytest.fixture(scope="module")
def two_versions(server: tuple[str, Lake, dict[str, str]]) -> tuple[int, int]:
    _, lake, _ = server
    v1 = create_version(lake, "granted", DatasetQuery(limit=6))["version"]
    v2 = create_version(lake, "granted", DatasetQuery(limit=3))["version"]
    for v in (v1, v2):
        export_version(lake, "granted", v, shard_bytes=200_000, runner=LOCAL)
    return v1, v2


def _manifest(base: str, version: int, token: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(f"{base}/v1/datasets/granted/versions/{version}/manifest", headers=auth(token))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"].startswith("private")  # it holds credentials
    return r.json()  # type: ignore[no-any-return]


def test_wids_and_webdataset_read_a_saved_manifest_with_no_header(
    server: tuple[str, Lake, dict[str, str]], two_versions: tuple[int, int], tmp_path: Path
) -> None:
    base, lake, tokens = server
    v1, _ = two_versions
    doc = _manifest(base, v1, tokens["reader"])
    assert len(doc["shardlist"]) > 1 and all("?grant=g1." in s["url"] for s in doc["shardlist"])
    members = lake.read("dataset_clips", where=f"name = 'granted' AND version = {v1}")
    expected = sorted(members.column("clip_id").to_pylist())
    saved = tmp_path / "manifest.json"  # fetched once with the token, then no header ever again
    saved.write_text(json.dumps(doc))
    ds = wids.ShardListDataset(str(saved), cache_dir=str(tmp_path / "wids-cache"))
    assert len(ds) == doc["num_samples"] == len(expected)
    got = [ds[i] for i in range(len(ds))]
    assert sorted(s["__key__"] for s in got) == expected
    for s in got:  # wids's default decoding: JSON parsed, the rest as bytes
        assert s[".json"]["clip_id"] == s["__key__"] and s[".mp4"].read(8)[4:8] == b"ftyp"
    for entry in doc["shardlist"]:  # the shard bytes are what the manifest promises
        body = httpx.get(entry["url"])
        assert body.status_code == 200 and len(body.content) == entry["filesize"]
        assert body.headers["cache-control"].startswith("private")
    plain = list(wds.WebDataset([s["url"] for s in doc["shardlist"]], shardshuffle=False))
    assert sorted(s["__key__"] for s in plain) == expected
    sig = np.load(io.BytesIO(plain[0]["signals.npy"]))
    assert sig.ndim == 2 and sig.shape[0] > 0


def test_a_grant_is_for_one_version_unforgeable_and_needed(
    server: tuple[str, Lake, dict[str, str]], two_versions: tuple[int, int]
) -> None:
    base, _, tokens = server
    v1, v2 = two_versions
    url = _manifest(base, v1, tokens["reader"])["shardlist"][0]["url"]
    path, grant = url.split("?grant=")
    assert httpx.get(url).status_code == 200
    on_v2 = path.replace(f"/granted/{v1}/", f"/granted/{v2}/") + "?grant=" + grant
    r = httpx.get(on_v2)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    other = path.replace("/granted/", "/hard-braking-elsewhere/") + "?grant=" + grant
    assert httpx.get(other).status_code == 403
    head, _, sig = grant.rpartition(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert httpx.get(f"{path}?grant={head}.{flipped}").status_code == 403
    later = head.split(".")
    later[2] = str(int(later[2]) + 3600)  # a longer life is a different message
    assert httpx.get(f"{path}?grant={'.'.join(later)}.{sig}").status_code == 403
    assert httpx.get(f"{path}?grant=nonsense").status_code == 403
    assert httpx.get(path).status_code == 401  # neither grant nor token
    assert httpx.get(path, headers=auth(tokens["reader"])).status_code == 200  # the bearer path stays
    r = httpx.get(f"{base}/v1/datasets/granted/versions/{v1}/manifest?grant={grant}")
    assert r.status_code == 401  # a grant never opens the manifest


def test_grants_expire_and_die_with_their_token(
    server: tuple[str, Lake, dict[str, str]], two_versions: tuple[int, int]
) -> None:
    _, lake, _ = server
    v1, _ = two_versions
    minter = create_token(lake, "grant-minter", "reader")
    with serve(Settings(lake=lake.uri, shard_grant_ttl_s=2)) as base:
        url = _manifest(base, v1, minter)["shardlist"][0]["url"]
        expires = int(url.rsplit("?grant=", 1)[1].split(".")[2])
        assert 0 < expires - time.time() <= 3
        assert httpx.get(url).status_code == 200
        time.sleep(max(0.0, expires - time.time()) + 0.2)
        r = httpx.get(url)
        assert r.status_code == 403 and "expired" in r.json()["error"]["message"]
    with serve(Settings(lake=lake.uri)) as base:
        url = _manifest(base, v1, minter)["shardlist"][0]["url"]
        assert httpx.get(url).status_code == 200
        revoke_token(lake, "grant-minter")
        r = httpx.get(url)
        assert r.status_code == 403 and "revoked" in r.json()["error"]["message"]
        again = create_token(lake, "grant-minter", "reader")  # same name, new secret: still dead
        assert httpx.get(url).status_code == 403
        fresh = _manifest(base, v1, again)["shardlist"][0]["url"]
        assert httpx.get(fresh).status_code == 200


def test_grants_are_signed_with_the_lakes_own_key(
    server: tuple[str, Lake, dict[str, str]], two_versions: tuple[int, int]
) -> None:
    base, lake, tokens = server
    v1, _ = two_versions
    url = _manifest(base, v1, tokens["reader"])["shardlist"][0]["url"]
    grant = urlsplit(url).query.removeprefix("grant=")
    tid = Grants.of(lake).check(grant, "granted", v1)  # a second reader of the lake: same key
    assert Grants.of(lake).mint("granted", v1, tid, int(grant.split(".")[2])) == grant
    assert (Path(lake.uri) / "secrets" / "shard-grants").stat().st_mode & 0o077 == 0
    forged = Grants(b"not the lake key, but long enough").mint("granted", v1, tid, int(time.time()) + 60)
    assert httpx.get(url.split("?")[0] + "?grant=" + forged).status_code == 403
