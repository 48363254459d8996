"""The whole main job with raw and lake on S3 (a local moto server), read back by a trainer.

synth -> ingest -> embed -> index -> mine -> dataset -> export -> manifest -> webdataset,
every byte through the S3 protocol; the shards are read from their presigned URLs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import webdataset as wds

from api.auth import create_token
from ingest.synth.fleet import SynthConfig
from jobs.embed_job import run_embed
from jobs.export_job import export_version
from jobs.index_job import run_index
from jobs.ingest_job import run_ingest
from jobs.mine_job import run_mine
from mining.datasets.curation import DatasetQuery, create_version
from mining.search.queries import corner_cases
from storage import Lake, Settings
from storage.objectstore import Location
from tests.api.conftest import serve
from tests.conftest import LOCAL, synthesized


@pytest.mark.s3
def test_main_job_on_s3_end_to_end(
    tmp_path: Path, s3_options: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in s3_options.items():  # the standard AWS variables, as a user sets them
        monkeypatch.setenv(k, v)
    local = tmp_path / "raw"
    synthesized(local, SynthConfig(vehicles=1, drives=2, minutes=0.5, seed=5, rare_rate=0.2, workers=1))
    raw = Location(f"s3://{s3_bucket}/raw", s3_options)
    raw.fs.put(str(local) + "/", raw.path, recursive=True)
    settings = Settings(lake=f"s3://{s3_bucket}/lake")
    report = run_ingest(raw.uri, settings, runner=LOCAL)
    assert report.exit_code == 0 and len(report.ok) == 2
    assert run_embed(settings, runner=LOCAL).embedded == report.counts["clips"] > 0
    built = run_index(settings, runner=LOCAL)
    assert built["uri"].startswith(f"s3://{s3_bucket}/lake/") and built["vectors"] == report.counts["clips"]
    assert run_mine(settings, runner=LOCAL).scored == report.counts["clips"]
    lake = Lake.from_settings(settings)
    assert corner_cases(lake, k=3)
    row = create_version(lake, "s3-e2e", DatasetQuery(val_fraction=0))
    doc = export_version(lake, "s3-e2e", row["version"], shard_bytes=200_000, runner=LOCAL)
    assert doc["num_samples"] == report.counts["clips"] and len(doc["shardlist"]) > 1
    # A trainer: the manifest with a token, then the shards by their presigned URLs, no header.
    token = {"Authorization": f"Bearer {create_token(lake, 'trainer', 'reader')}"}
    with serve(settings) as base:
        manifest = httpx.get(f"{base}/v1/datasets/s3-e2e/versions/{row['version']}/manifest", headers=token)
        assert manifest.status_code == 200
        urls = []
        for s in manifest.json()["shardlist"]:
            hop = httpx.get(s["url"], headers=token)
            assert hop.status_code == 307 and "Signature=" in hop.headers["location"]
            urls.append(hop.headers["location"])
        samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert len(samples) == doc["num_samples"]
    clip_ids = set(lake.read("clips", columns=["clip_id"]).column("clip_id").to_pylist())
    for s in samples:
        assert s["__key__"] in clip_ids and json.loads(s["json"])["clip_id"] == s["__key__"]
        assert s["mp4"][4:8] == b"ftyp" and np.load(io.BytesIO(s["signals.npy"])).shape[0] > 0
