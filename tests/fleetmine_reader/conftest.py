"""One exported dataset version per test package: a synth drive, ingested, cut into small
shards, served by uvicorn; the manifest fetched once with a token and saved, as a trainer does."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.auth import create_token
from ingest.synth.fleet import SynthConfig
from jobs.export_job import export_version
from jobs.ingest_job import run_ingest
from mining.datasets.curation import DatasetQuery, create_version
from storage import Lake, Settings
from tests.api.conftest import auth, serve
from tests.conftest import LOCAL, synthesized


@dataclass(frozen=True)
class Exported:
    lake: Lake
    base: str
    manifest: Path  # saved from the API: shard URLs with grants
    in_lake: Path  # as export wrote it: shard paths relative to it
    keys: list[str]  # every sample of the version


@pytest.fixture(scope="package")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    root = tmp_path_factory.mktemp("reader")
    synthesized(
        root / "raw",
        SynthConfig(vehicles=1, drives=2, minutes=1, seed=5, width=320, height=180, duplicates=0, workers=2),
    )
    settings = Settings(lake=str(root / "lake"))
    assert run_ingest(str(root / "raw"), settings, runner=LOCAL).exit_code == 0
    lake = Lake.from_settings(settings)
    row = create_version(lake, "stream", DatasetQuery(val_fraction=0))
    doc = export_version(lake, "stream", row["version"], shard_bytes=250_000, runner=LOCAL)
    token = create_token(lake, "trainer", "reader")
    with serve(settings) as base:
        r = httpx.get(f"{base}/v1/datasets/stream/versions/{row['version']}/manifest", headers=auth(token))
        assert r.status_code == 200, r.text
        saved = root / "manifest.json"
        saved.write_bytes(r.content)
        keys = lake.read("dataset_clips", where="name = 'stream'").column("clip_id").to_pylist()
        assert len(doc["shardlist"]) >= 4 and len(keys) == doc["num_samples"]
        yield Exported(
            lake,
            base,
            saved,
            Path(lake.uri) / "datasets" / "stream" / str(row["version"]) / "manifest.json",
            sorted(keys),
        )
