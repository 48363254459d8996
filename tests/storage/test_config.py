from __future__ import annotations

from pathlib import Path

import pytest

from storage.config import Settings, aws_storage_options
from storage.objectstore import Location


def test_default_lake_is_local_and_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLEETMINE_LAKE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert Settings().lake == str(tmp_path / "fleet-lake")


def test_env_lake_and_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETMINE_LAKE", "s3://fleet/lake/")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    s = Settings()
    assert s.lake == "s3://fleet/lake"
    assert s.ray_address == "ray://head:10001"
    assert s.storage_options == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "eu-west-1",
        "AWS_ALLOW_HTTP": "true",
    }
    # A flag overrides the environment; a local lake carries no S3 options.
    local = s.with_overrides(lake="/data/lake")
    assert local.lake == "/data/lake" and local.storage_options == {}


def test_https_endpoint_does_not_allow_http() -> None:
    assert "AWS_ALLOW_HTTP" not in aws_storage_options({"AWS_ENDPOINT_URL": "https://s3.example"})


def test_location_translates_options_for_s3fs(s3_options: dict[str, str], s3_bucket: str) -> None:
    loc = Location(f"s3://{s3_bucket}/x", s3_options).join("a.txt")
    loc.fs.pipe_file(loc.path, b"hello")
    assert loc.fs.cat_file(loc.path) == b"hello"
    assert loc.protocol == "s3" and loc.path == f"{s3_bucket}/x/a.txt"
