"""Settings: one object, built once at the edge (CLI, API) and passed down.

Lake locations are a URI plus ``storage_options``; the same options go to
deltalake (object_store keys) and, translated, to fsspec/s3fs, so a lake on
``./fleet-lake``, ``file:///data/lake`` or ``s3://bucket/prefix`` is the same code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["LookCloser", "Settings", "Triggers", "aws_storage_options", "normalize_uri"]

_AWS_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
)

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def aws_storage_options(env: dict[str, str] | None = None) -> dict[str, str]:
    """The deltalake storage options taken from the standard AWS variables."""
    env = dict(os.environ) if env is None else env
    opts = {k: env[k] for k in _AWS_KEYS if env.get(k)}
    if "AWS_REGION" not in opts and env.get("AWS_DEFAULT_REGION"):
        opts["AWS_REGION"] = env["AWS_DEFAULT_REGION"]
    endpoint = opts.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://") and "AWS_ALLOW_HTTP" not in opts:
        opts["AWS_ALLOW_HTTP"] = "true"
    return opts


def normalize_uri(uri: str) -> str:
    """A local path becomes absolute (``file://`` stripped); remote URIs are kept."""
    if "://" in uri and not uri.startswith("file://"):
        return uri.rstrip("/")
    path = uri.removeprefix("file://")
    return str(Path(path).expanduser().resolve())


class Triggers(BaseModel):
    """Thresholds of the signal triggers that name a clip's ``events``."""

    model_config = ConfigDict(frozen=True)

    hard_brake_mps2: float = 3.0
    sharp_turn_lat_mps2: float = 3.0
    evasive_steer_rate_dps: float = 180.0
    evasive_min_speed_mps: float = 5.0
    stop_speed_mps: float = 0.3
    stop_min_s: float = 0.5
    stop_and_go_stops: int = 2
    creep_max_speed_mps: float = 2.5
    creep_min_s: float = 1.0
    creep_within_s: float = 3.0
    creep_max_accel_mps2: float = 0.5
    # A stop reached after braking for less than this was not anticipated (a light, a
    # sign or a queue is seen from afar and braked for longer): ``sudden_stop``.
    sudden_stop_notice_s: float = 4.0


class LookCloser(BaseModel):
    """Which clips ingest decodes extra frames of, and how many: the clips whose
    ``events`` hold one of ``events`` (signal triggers), ``frames`` frames evenly over
    ``[t - before_s, t + after_s]`` around the trigger's moment ``t``, from the clip's own
    mp4. Empty ``events``: none."""

    model_config = ConfigDict(frozen=True)

    events: tuple[str, ...] = ("sudden_stop", "creep", "hard_brake")
    frames: int = Field(default=10, ge=2, le=64)
    before_s: float = Field(default=0.5, ge=0)
    after_s: float = Field(default=3.0, gt=0)


class Settings(BaseSettings):
    """Everything configurable in fleetmine, from env (``FLEETMINE_*``) or flags."""

    model_config = SettingsConfigDict(env_prefix="FLEETMINE_", extra="ignore", frozen=True)

    lake: str = Field(default="./fleet-lake", description="Lake root URI")
    ray_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ray_address", "RAY_ADDRESS", "FLEETMINE_RAY_ADDRESS"),
        description="Ray cluster address; None starts a local Ray",
    )
    storage_options: dict[str, str] = Field(default_factory=dict)
    clip_seconds: float = 10.0
    signal_rate_hz: float = 20.0
    target_file_rows: int = 1_000_000
    commit_retries: int = 10
    vacuum_retention_hours: int = 168
    lease_ttl_s: float = 3600.0
    triggers: Triggers = Field(default_factory=Triggers)
    ingest_max_retries: int = 2
    drive_time_budget_s: float = Field(
        default=300.0,
        ge=0,
        description="Ingest: wall-clock seconds one drive may take to decode (plus "
        "drive_time_budget_per_gib_s per GiB of its raw files) before it is stopped and recorded "
        "failed; 0 with drive_memory_budget_mib 0 decodes in the worker itself, unbounded",
    )
    drive_time_budget_per_gib_s: float = Field(default=120.0, ge=0)
    drive_memory_budget_mib: int = Field(
        default=4096,
        ge=0,
        description="Ingest: resident memory the process decoding one drive may hold before it is "
        "stopped and the drive recorded failed (Linux); 0: unbounded",
    )
    query_cache_mib: float = Field(
        default=16.0,
        ge=0,
        description="Engine query answers kept per table version in each process (storage.results); "
        "0: every query runs the engine",
    )
    file_cache_mib: float = Field(
        default=64.0,
        ge=0,
        description="Columns of the data files a catalog query read, kept in each process (a Delta "
        "data file never changes: storage.results); 0: every query opens its files",
    )
    max_body_bytes: int = Field(default=1 << 20, ge=1, description="API: larger request bodies answer 413")
    max_image_bytes: int = Field(
        default=8 << 20,
        ge=1,
        description="API: the largest image POST /v1/search/similar takes (multipart upload, JPEG or "
        "PNG); a larger one answers 413. Its multipart body may exceed max_body_bytes by this much",
    )
    max_image_pixels: int = Field(
        default=16_000_000,
        ge=1,
        description="API: an uploaded image with more pixels answers 422, checked before it is decoded. "
        "16 MP holds a 4K frame or a 12 MP photo; a PNG decodes at full size (up to 64 MB at this "
        "limit, RGBA), so the limit times image_decode_concurrency bounds the decode memory",
    )
    auth_max_failures: int = Field(
        default=10, ge=1, description="API: wrong tokens from one client within the window before 429"
    )
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    cors_allow_origins: tuple[str, ...] = Field(
        default=(),
        description="API: the origins (scheme://host[:port]) whose web pages may call the API "
        "from a browser (CORS); none by default, so a page elsewhere cannot read an answer",
    )
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="API: addresses or CIDR networks of reverse proxies whose X-Forwarded-For / "
        "X-Forwarded-Proto / X-Forwarded-Host are believed; from anyone else those headers are ignored",
    )
    image_decode_concurrency: int = Field(
        default=2,
        ge=1,
        description="API: uploaded images decoded at once per process (image search); more wait",
    )
    session_ttl_s: int = Field(
        default=12 * 3600,
        ge=60,
        description="Web UI: a sign-in session lives this long (sign-out ends it sooner); the cookie "
        "holds the session, never the token",
    )
    raw_roots: tuple[str, ...] = Field(
        default=(),
        description="Jobs that arrive over the API read raw trees only under these URIs or paths "
        "(none: only under the lake); a person's own CLI run may read anywhere",
    )
    export_roots: tuple[str, ...] = Field(
        default=(),
        description="Jobs that arrive over the API write exports only under these URIs or paths "
        "(none: only under the lake); a person's own CLI run may write anywhere",
    )
    dbc_dirs: tuple[str, ...] = Field(
        default=(),
        description="Ingest: local directories a drive.json `dbc` may also name a file in (besides "
        "the drive's own folder)",
    )
    keyframes_per_clip: int = 4
    previews: bool = Field(
        default=True,
        description="Ingest: write a small H.264 preview beside each clip whose codec browsers do not "
        "play (HEVC), for the clip page; `fleetmine previews` back-fills a lake ingested without",
    )
    look_closer: LookCloser = Field(default_factory=LookCloser)
    shard_url_ttl_s: int = Field(
        default=900,
        ge=0,
        description="Lakes on S3: shard requests redirect (307) to a presigned URL valid this long, "
        "so training jobs read from the store directly; 0 streams shards through the API server",
    )

    scan_budget_rows: int = Field(
        default=100_000,
        ge=1_000,
        description="The most rows one page of a filtered list may scan; a rarer filter answers "
        "a shorter page whose cursor goes on where the scan stopped",
    )
    dataset_inline_rows: int = Field(
        default=100_000,
        ge=0,
        description="POST /v1/datasets creates (and exports) a version in the request when the "
        "Delta log bounds the rows its query reads by this; a larger one is submitted as a "
        "`dataset` job and answered 202 with the run id",
    )
    scan_audit: bool = Field(
        default=False,
        description="Count the rows each API request scans (engine metrics, one extra run per "
        "query) and answer them in X-Fleetmine-Rows-Scanned; for tests and benchmarks",
    )
    shard_grant_ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        description="Shard URLs in a manifest carry a grant (signed, read-only, for that dataset "
        "version) valid this long, so loaders fetch them with no header; revoking the token that "
        "fetched the manifest revokes them sooner",
    )
    public_url: str | None = Field(
        default=None,
        description="API: the scheme://host[:port] clients reach the server at, for the absolute "
        "URLs it answers (manifests, job links); unset, a URL names the address the connection came "
        "in on, or the Host a trusted proxy forwarded, never a Host header a client made up",
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is not None and not _ORIGIN.fullmatch(value.rstrip("/")):
            raise ValueError(f"{value!r} is not scheme://host[:port] (e.g. https://fleet.example.com)")
        return None if value is None else value.rstrip("/")

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], no path, no wildcard "
                    "(e.g. https://review.example.com)"
                )
        return value

    def model_post_init(self, __context: Any) -> None:
        object.__setattr__(self, "lake", normalize_uri(self.lake))
        if self.lake.startswith("s3://") and not self.storage_options:
            object.__setattr__(self, "storage_options", aws_storage_options())

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (``None`` values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        if "lake" in changes and changes["lake"] is not None and "storage_options" not in changes:
            data["storage_options"] = {}
        return Settings(**data)
