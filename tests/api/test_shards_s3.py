"""Shards of a lake on S3 (a local moto server): presigned redirects, or streamed when asked."""

from __future__ import annotations

import importlib
from pathlib import Path

import httpx
import webdataset as wds

from jobs.export_job import export_version
from mining.datasets.curation import DatasetQuery, create_version
from mining.datasets.shards import shard_location
from storage import Lake, Settings
from storage.objectstore import Location
from tests.api.conftest import auth, serve
from tests.conftest import LOCAL


def test_shards_of_an_s3_lake_redirect_to_presigned_urls(
    server: tuple[str, Lake, dict[str, str]], s3_options: dict[str, str], s3_bucket: str
) -> None:
    _, local, tokens = server
    row = create_version(local, "on-s3", DatasetQuery(limit=8))
    export_version(local, "on-s3", row["version"], shard_bytes=300_000, runner=LOCAL)
    # The same lake, moved to S3 as it is (Delta tables hold only relative paths).
    Location(f"s3://{s3_bucket}/lake", s3_options).fs.put(
        local.root.path.rstrip("/") + "/", f"{s3_bucket}/lake", recursive=True
    )
    settings = Settings(lake=f"s3://{s3_bucket}/lake", storage_options=s3_options)
    assert Lake.from_settings(settings).read("datasets", where="name = 'on-s3'").num_rows == 1
    reader = auth(tokens["reader"])
    with serve(settings) as base:
        manifest = httpx.get(f"{base}/v1/datasets/on-s3/versions/{row['version']}/manifest", headers=reader)
        assert manifest.status_code == 200
        shards = manifest.json()["shardlist"]
        assert len(shards) > 1
        url = shards[0]["url"].split("?")[0]
        shard = url.rsplit("/", 1)[1]
        assert httpx.get(url).status_code == 401  # the token is still checked before the redirect
        hop = httpx.get(url, headers=reader)
        assert hop.status_code == 307 and hop.headers["location"].startswith(s3_options["AWS_ENDPOINT_URL"])
        granted = httpx.get(shards[0]["url"])  # or the manifest's grant, checked the same way
        assert granted.status_code == 307 and granted.headers["location"].startswith(
            s3_options["AWS_ENDPOINT_URL"]
        )
        plain = list(wds.WebDataset([s["url"] for s in shards], shardshuffle=False))  # no header at all
        assert len(plain) == row["clip_count"]
        on_disk = Path(shard_location(local, "on-s3", row["version"], shard).path).read_bytes()
        direct = httpx.get(hop.headers["location"])  # no token: the URL itself is the credential
        assert direct.status_code == 200 and direct.content == on_disk
        part = httpx.get(hop.headers["location"], headers={"Range": "bytes=100-611"})
        assert part.status_code == 206 and part.content == on_disk[100:612]
        # A training job's loader: curl -L follows the redirect (and drops our header on the way).
        gopen = importlib.import_module("webdataset.gopen")
        plain_http = gopen.gopen_schemes["http"]

        def with_token(u: str, mode: str = "rb", bufsize: int = 8192) -> object:
            cmd = ["curl", "-f", "-s", "-L", "-H", f"Authorization: Bearer {tokens['reader']}", u]
            return gopen.Pipe(cmd, mode=mode, bufsize=bufsize, ignore_status=[141, 23])

        gopen.gopen_schemes["http"] = with_token
        try:
            samples = list(wds.WebDataset([s["url"] for s in shards], shardshuffle=False))
        finally:
            gopen.gopen_schemes["http"] = plain_http
        assert len(samples) == row["clip_count"] == sum(s["nsamples"] for s in shards)
    with serve(settings.with_overrides(shard_url_ttl_s=0)) as base:  # streamed through the server
        streamed = httpx.get(f"{base}/v1/shards/on-s3/{row['version']}/{shard}", headers=reader)
        assert streamed.status_code == 200 and streamed.content == on_disk
